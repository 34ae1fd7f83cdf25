"""Workflow runs side by side: the default chain, the generator adapted on
surrogated notes, with inline tags, each in its own project folder.

Each run is read from the files its steps write (`RUN_FILES`); a figure whose
file a run lacks is left blank. The rows: the synthetic pipeline's F1 and its
ratio to gold, the F1 of the labels it loses most on, the generator's
perplexity, what of the gold notes reappears (n-grams, distinctive values,
quasi-identifiers), the membership inference AUCs and, for tagged notes, how
often the generator's tags agree with the labeller's entities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..kinds import IDENTIFYING_KINDS
from .inline_tags import TAG_OUTCOMES

RUN_FILES = {
    "evaluation": "training/evaluation/evaluation.json",
    "privacy": "training/privacy/privacy.json",
    "membership": "training/membership/membership.json",
    "generator": "training/generator/adapt_config.json",
    "synthetic": "corpus/synthetic/stats.json",
}
LABELS_SHOWN = 5


def read_run(folder: str | Path) -> Dict[str, Any]:
    """The JSON outputs of a run's folder (None for a file it lacks); a
    folder with none of them, or a file that is no JSON, is an error naming it."""
    folder = Path(folder)
    run: Dict[str, Any] = {}
    for key, relative in RUN_FILES.items():
        path = folder / relative
        try:
            run[key] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except ValueError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
    if all(value is None for value in run.values()):
        raise ValueError(f"{folder}: none of {', '.join(RUN_FILES.values())}")
    return run


def _f1(run: Mapping[str, Any], pipeline: str, level: str = "entity", label: Optional[str] = None) -> Optional[float]:
    scores = ("micro",) if label is None else ("per_label", label)
    return _get(run, "evaluation", "pipelines", pipeline, level, *scores, "f")


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    return numerator / denominator if numerator is not None and denominator else None


def losing_labels(run: Mapping[str, Any], n: int = LABELS_SHOWN) -> List[str]:
    """The `n` labels on which the synthetic pipeline loses the most test
    entities against gold in `run`: F1 lost times the label's entities."""
    gold = _get(run, "evaluation", "pipelines", "gold", "entity", "per_label") or {}
    lost = {}
    for label, scores in gold.items():
        synthetic = _f1(run, "synthetic", label=label)
        if synthetic is not None:
            lost[label] = (scores["f"] - synthetic) * (scores.get("tp", 0) + scores.get("fn", 0))
    return sorted(lost, key=lambda label: -lost[label])[:n]


def _distinctive(run: Mapping[str, Any], keep: Callable[[str], bool]) -> Optional[int]:
    privacy = run.get("privacy")
    if not privacy:
        return None
    labels = privacy["pii_reuse"]["labels"]
    return sum(counts["distinctive_reappearing"] for label, counts in labels.items() if keep(label))


def _get(run: Mapping[str, Any], key: str, *path: str) -> Any:
    value = run.get(key)
    for step in path:
        if not isinstance(value, Mapping) or step not in value:
            return None
        value = value[step]
    return value


def _pair(run: Mapping[str, Any], label: str) -> Optional[tuple]:
    pair = (_f1(run, "synthetic", label=label), _f1(run, "gold", label=label))
    return None if pair == (None, None) else pair


def _tag_agreement(run: Mapping[str, Any]) -> Optional[float]:
    agreement = _get(run, "synthetic", "inline_tags", "agreement")
    if not agreement:
        return None
    tags = sum(counts.get(outcome, 0) for counts in agreement.values() for outcome in TAG_OUTCOMES)
    return sum(counts.get("agree", 0) for counts in agreement.values()) / tags if tags else None


def comparison_rows(runs: Mapping[str, Mapping[str, Any]], kind_of: Callable[[str], Optional[str]],
                    labels: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """One row per figure: {"figure", "values": {run name: value or None}}.
    `labels` empty: the labels the synthetic pipeline of the first run with
    both pipelines' scores loses most entities on."""
    if not labels:
        labels = next((found for found in map(losing_labels, runs.values()) if found), [])
    figures: List[tuple] = [
        ("synthetic entity F1", lambda run: _f1(run, "synthetic")),
        ("gold entity F1", lambda run: _f1(run, "gold")),
        ("synthetic / gold entity F1", lambda run: _ratio(_f1(run, "synthetic"), _f1(run, "gold"))),
        ("synthetic / gold token F1",
         lambda run: _ratio(_f1(run, "synthetic", "token"), _f1(run, "gold", "token"))),
        *((f"{label} F1, synthetic / gold", lambda run, label=label: _pair(run, label)) for label in labels),
        ("generator validation perplexity (on the notes as it learnt them)",
         lambda run: _get(run, "generator", "validation_perplexity")),
        ("inline tags agreeing with the labeller", _tag_agreement),
        ("5-gram recall", lambda run: _get(run, "privacy", "ngram_recall", "5", "recall")),
        ("8-gram recall", lambda run: _get(run, "privacy", "ngram_recall", "8", "recall")),
        ("distinctive gold values reappearing", lambda run: _distinctive(run, lambda label: True)),
        ("of them names, places, organisations, identifiers, contacts",
         lambda run: _distinctive(run, lambda label: kind_of(label) in IDENTIFYING_KINDS)),
        ("unique age + sex + town together in one note",
         lambda run: _get(run, "privacy", "quasi_identifiers", "unique_reappearing")),
        ("a passage of one gold note with its date",
         lambda run: _get(run, "privacy", "quasi_identifiers", "passages_with_date")),
        ("membership AUC, synthetic pipeline", lambda run: _get(run, "membership", "pipelines", "synthetic", "auc")),
        ("membership AUC, gold pipeline", lambda run: _get(run, "membership", "pipelines", "gold", "auc")),
        ("membership AUC, generator: whole notes",
         lambda run: _get(run, "membership", "generator", "whole_note", "auc")),
        ("membership AUC, generator: entity tokens",
         lambda run: _get(run, "membership", "generator", "entity_tokens", "auc")),
    ]
    return [{"figure": name, "values": {run_name: figure(run) for run_name, run in runs.items()}}
            for name, figure in figures]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return " / ".join(_cell(part) or "-" for part in value)
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.4f}"
    return f"{value:,}"


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    names = list(rows[0]["values"]) if rows else []
    lines = ["| figure | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    lines += [f"| {row['figure']} | " + " | ".join(_cell(row["values"][name]) for name in names) + " |"
              for row in rows if any(value is not None for value in row["values"].values())]
    return "\n".join(lines) + "\n"
