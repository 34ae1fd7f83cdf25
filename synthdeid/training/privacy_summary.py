"""A one-page privacy summary for whoever signs off the sharing: what was
checked, against which threshold, and what was found, in words, from the
privacy report (`privacy.py`) and the membership inference (`membership.py`),
with one plot.

Thresholds:

- identifying values (names, streets, towns, organisations, identifiers,
  contacts): no distinctive gold value in the synthetic corpus (0);
- short values (dates, ages and the rest): no more distinctive gold values
  than an independent surrogated copy of the gold corpus holds by chance,
  give or take two standard deviations of a Poisson count;
- quasi-identifiers: no more unique combinations, and passages with their
  note's date, than chance, on the same terms;
- every count by chance is scaled to the synthetic corpus's size: the chance
  copy is as large as the gold corpus, and a larger corpus holds more by
  chance. Values are written in proportion to the text (tokens); a
  combination in one note, or a passage with its note's date, once per note
  (notes);
- membership inference on the shared pipeline: AUC within 0.02 of 0.5.

n-gram recall and the longest copied passage are reported without a
threshold: the synthetic notes are meant to read like the gold ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..io import atomic_path, write_text
from ..kinds import IDENTIFYING_KINDS

MEMBERSHIP_MARGIN = 0.02
CHANCE_THRESHOLD = "no more than chance + 2 sqrt(chance)"


def within_chance(found: int, chance: float) -> bool:
    """At most two standard deviations above `chance`, read as a Poisson
    count: 8 unique combinations against 5 by chance is no finding."""
    return found <= chance + 2 * math.sqrt(max(chance, 1))


def chance_scale(privacy: Mapping[str, Any], unit: str) -> float:
    """The synthetic corpus's size over the chance copy's, in `unit`
    ("tokens" or "documents"): what a chance count is multiplied by to be
    read against the synthetic corpus's count."""
    baseline = privacy["pii_reuse"].get("baseline")
    if not baseline or not baseline.get(unit):  # no chance copy, or a report from before it counted tokens
        return 1.0
    return privacy["synthetic"][unit] / baseline[unit]


def _verdict(passed: bool) -> str:
    return "passed" if passed else "**not passed**"


def summary_checks(privacy: Mapping[str, Any], membership: Optional[Mapping[str, Any]],
                   kind_of: Callable[[str], Optional[str]], shared_pipeline: str = "synthetic") -> List[Dict[str, Any]]:
    """One row per check: what, threshold, found, by chance (or None), passed."""
    reuse = privacy["pii_reuse"]
    chance = reuse.get("baseline", {}).get("labels", {})
    rows = []

    def distinctive(labels: List[str], counts: Mapping[str, Any]) -> int:
        return sum(counts.get(label, {}).get("distinctive_reappearing", 0) for label in labels)

    def scaled(count: int, unit: str = "tokens") -> float:
        return round(count * chance_scale(privacy, unit), 1)

    identifying = [label for label in reuse["labels"] if kind_of(label) in IDENTIFYING_KINDS]
    short = [label for label in reuse["labels"] if label not in identifying]
    found = distinctive(identifying, reuse["labels"])
    rows.append({"check": "distinctive gold names, places, organisations, identifiers and contacts in the "
                          "synthetic notes", "threshold": "0", "found": found,
                 "chance": scaled(distinctive(identifying, chance)) if chance else None, "passed": found == 0})
    if chance:
        found, expected = distinctive(short, reuse["labels"]), scaled(distinctive(short, chance))
        rows.append({"check": f"distinctive gold dates, ages and other short values ({', '.join(short)})",
                     "threshold": CHANCE_THRESHOLD, "found": found, "chance": expected,
                     "passed": within_chance(found, expected)})
    quasi = privacy.get("quasi_identifiers")
    if quasi and "baseline" in quasi:
        for key, what in (("unique_reappearing", f"unique gold {quasi['combination']} together in one note"),
                          ("passages_with_date", f"a passage of {quasi['passage_tokens']}+ tokens of one gold note "
                                                 "with its date")):
            expected = scaled(quasi["baseline"][key], "documents")
            rows.append({"check": what, "threshold": CHANCE_THRESHOLD, "found": quasi[key], "chance": expected,
                         "passed": within_chance(quasi[key], expected)})
    if membership and shared_pipeline in membership.get("pipelines", {}):
        value = membership["pipelines"][shared_pipeline]["auc"]
        rows.append({"check": f"membership inference on the shared ({shared_pipeline}) pipeline: AUC",
                     "threshold": f"0.5 ± {MEMBERSHIP_MARGIN}", "found": value, "chance": 0.5,
                     "passed": abs(value - 0.5) <= MEMBERSHIP_MARGIN})
    return rows


def summary_markdown(privacy: Mapping[str, Any], membership: Optional[Mapping[str, Any]],
                     kind_of: Callable[[str], Optional[str]], plot: Optional[str] = None) -> str:
    rows = summary_checks(privacy, membership, kind_of)
    passed = sum(row["passed"] for row in rows)
    gold, synthetic = privacy["gold"], privacy["synthetic"]
    lines = [
        "# Privacy summary",
        "",
        f"What is shared: a synthetic corpus of {synthetic['documents']} notes ({synthetic['tokens']} tokens) and "
        f"the pipeline trained on it alone. What it came from: {gold['documents']} gold train notes "
        f"({gold['tokens']} tokens), which stay where they are. {passed} of {len(rows)} checks passed.",
        "",
        "| check | threshold | found | by chance | verdict |",
        "|---|---|---:|---:|---|",
    ]
    for row in rows:
        chance = "" if row["chance"] is None else row["chance"]
        lines.append(f"| {row['check']} | {row['threshold']} | {row['found']} | {chance} | "
                     f"{_verdict(row['passed'])} |")
    recall = privacy["ngram_recall"]
    longest = privacy["copied_passages"]["longest"]
    lines += [
        "",
        "By chance: the same measure on an independent copy of the gold notes with every annotated value "
        "replaced by a surrogate, which holds some gold dates, ages and towns only because there are few of them. "
        "It is scaled to the synthetic corpus's size, since a larger corpus holds more by chance: values by its "
        f"tokens (x{chance_scale(privacy, 'tokens'):.2f}), combinations and passages, found once per note, by its "
        f"notes (x{chance_scale(privacy, 'documents'):.2f}).",
        "",
        "Reported without a threshold (the synthetic notes are meant to read like the gold ones): "
        + ", ".join(f"{n}-gram recall {r['recall']:.4f}" for n, r in recall.items())
        + (f"; the longest passage shared with one gold note: {longest[0]['tokens']} tokens "
           f"(gold note {longest[0]['gold_document']})" if longest else "") + ".",
    ]
    if membership:
        attacks = [f"{name} pipeline {attack['auc']:.4f}" for name, attack in membership["pipelines"].items()]
        if "generator" in membership:
            generator = membership["generator"]
            attacks.append(f"generator, whole notes {generator['whole_note']['auc']:.4f}, entity tokens "
                           f"{generator['entity_tokens']['auc']:.4f}")
        lines += ["", "Membership inference (threshold attack; 0.5: a coin toss): " + "; ".join(attacks) + "."]
        if "gold" in membership["pipelines"]:
            lines.append("The gold pipeline trained on the member notes: it is the reference that did see them.")
    shipped = privacy.get("shipped_strings")
    if shipped:
        lines += ["", f"The wheel stores {shipped['shipped']} of the tokens that occur in the gold notes only "
                      f"inside PII spans ({shipped['shipped_alphabetic']} alphabetic)."]
    if plot:
        lines += ["", f"![Distinctive gold values in the synthetic notes and by chance]({plot})"]
    lines += ["", "Details: the privacy report (`privacy.md`) and the membership report (`membership.md`)."]
    return "\n".join(lines) + "\n"


def summary_plot(privacy: Mapping[str, Any], path: str | Path) -> None:
    """Distinctive gold values reappearing per label: the synthetic notes and chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reuse = privacy["pii_reuse"]
    chance = reuse.get("baseline", {}).get("labels", {})
    labels = [label for label, counts in reuse["labels"].items() if counts["distinctive"]]
    found: List[Tuple[str, List[int]]] = [("synthetic notes", [reuse["labels"][label]["distinctive_reappearing"]
                                                               for label in labels])]
    if chance:
        found.append(("by chance", [chance.get(label, {}).get("distinctive_reappearing", 0) for label in labels]))
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.2))
    height = 0.8 / len(found)
    for i, (name, values) in enumerate(found):
        axes.barh([y + i * height for y in range(len(labels))], values, height=height, label=name)
    axes.set_yticks([y + height * (len(found) - 1) / 2 for y in range(len(labels))], labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("distinctive gold values reappearing")
    axes.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def write_summary(privacy: Mapping[str, Any], membership: Optional[Mapping[str, Any]],
                  kind_of: Callable[[str], Optional[str]], markdown_path: str | Path) -> str:
    """Write the summary and its plot (`<name>.png` beside it); returns the Markdown."""
    markdown_path = Path(markdown_path)
    plot = markdown_path.with_suffix(".png")
    summary_plot(privacy, plot)
    markdown = summary_markdown(privacy, membership, kind_of, plot.name)
    write_text(markdown_path, markdown)
    return markdown
