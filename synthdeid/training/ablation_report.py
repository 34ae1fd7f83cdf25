"""Aggregate an ablation study's condition results into report.md, report.json
and PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .ablation import Study
from ..io import atomic_path, write_json, write_text

MEASURES = {
    "synthetic_entity": ("synthetic", "entity"),
    "synthetic_token": ("synthetic", "token"),
    "gold_entity": ("gold", "entity"),
    "gold_token": ("gold", "token"),
    "annotator_entity": ("annotator", "entity"),
    "annotator_token": ("annotator", "token"),
}


def mean_sd(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(values)}


def condition_figures(result: Mapping[str, Any]) -> Dict[str, float]:
    scores = result["scores"]
    figures = {name: scores[model][measure]["f"] for name, (model, measure) in MEASURES.items()}
    gold_entity = figures["gold_entity"]
    figures["ratio_entity"] = figures["synthetic_entity"] / gold_entity if gold_entity else 0.0
    figures["ngram5_recall"] = result["privacy"]["ngram_recall"]["5"]
    figures["distinctive_pii_reused"] = result["privacy"]["distinctive_pii_reused"]
    return figures


def aggregate(study: Study, results: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per axis, per value: mean/sd of every figure over the finished seeds."""
    axes = []
    for axis in study.axes:
        rows = []
        for value in axis.values:
            members = [r for r in results if {"axis": axis.name, "value": value.label} in r["axes"]]
            finished = [r for r in members if r["status"] == "finished"]
            row: Dict[str, Any] = {"value": value.label, "settings": value.settings,
                                   "conditions": [r["key"] for r in members]}
            if finished:
                per_seed = [condition_figures(r) for r in finished]
                row["figures"] = {name: mean_sd([f[name] for f in per_seed]) for name in per_seed[0]}
                row["seconds"] = sum(r.get("seconds", 0.0) for r in finished)
            else:
                row["status"] = members[0].get("reason", "not run yet") if members else "not run yet"
            rows.append(row)
        axes.append({"name": axis.name, "title": axis.title, "parameter": axis.parameter,
                     "paper": axis.paper, "rows": rows})
    return axes


def _cell(stat: Optional[Mapping[str, Any]]) -> str:
    if not stat:
        return "-"
    if stat["sd"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def _paper_cell(paper: Mapping[str, Any], series: str, value: str) -> str:
    figure = (paper.get(series) or {}).get(value)
    return f"{figure:.3f}" if isinstance(figure, (int, float)) else "-"


def study_seconds(results: Sequence[Mapping[str, Any]]) -> float:
    """Step time of the builds behind these conditions, each build counted once.
    A growing corpus records each extension as a build of its own (its time
    is that extension's), so a build is an (artifact, seconds) pair. Not the
    `reused` flags: an artifact built by a run that stopped before its
    condition finished is marked reused in every result that records it."""
    builds = {(step["step"], step["key"], step["seconds"]) for result in results for step in result["steps"]}
    return sum(seconds for _, _, seconds in builds)


def markdown(study: Study, axes: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
             plots: Mapping[str, str]) -> str:
    finished = [r for r in results if r["status"] == "finished"]
    built = study_seconds(finished)
    lines = [
        "# Ablation study",
        "",
        f"Study file `{study.path}`; seeds {study.seeds}; {len(finished)} of {len(results)} conditions finished, "
        f"{len(results) - len(finished)} skipped or not run; {built / 3600:.2f} h of step time spent on them "
        "(each build of a shared artifact counted once).",
        "",
        "F1 on the gold test set: entity = strict entity-level micro F1, token = token-level micro F1 (as in "
        "the paper). Gold = the same spaCy config trained on the gold train data the annotator saw. "
        "Mean ± sample standard deviation where a condition ran with several seeds. Paper = token F1 on "
        "MEDDOCAN from a secondary summary of Vakili et al. (2025), not from the paper itself.",
        "",
    ]
    for axis in axes:
        paper = axis["paper"] or {}
        lines += [f"## {axis['title']}", "", f"Varies: {axis['parameter']}.", ""]
        header = ("| value | synthetic entity F1 | synthetic token F1 | gold entity F1 | gold token F1 | "
                  "annotator entity F1 | synthetic/gold (entity) | 5-gram recall | distinctive PII reused | "
                  "paper synthetic token F1 | paper gold token F1 |")
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for row in axis["rows"]:
            paper_cells = [_paper_cell(paper, "synthetic", row["value"]), _paper_cell(paper, "gold", row["value"])]
            if "figures" not in row:
                # the status fills the first of the 8 figure columns
                lines.append(f"| {row['value']} | {row['status']} |" + " |" * 7 + " " + " | ".join(paper_cells) + " |")
                continue
            f = row["figures"]
            cells = [_cell(f[name]) for name in ("synthetic_entity", "synthetic_token", "gold_entity", "gold_token",
                                                 "annotator_entity", "ratio_entity", "ngram5_recall")]
            reused = f["distinctive_pii_reused"]
            cells.append(f"{reused['mean']:.0f}" if reused["sd"] is None else _cell(reused))
            lines.append(f"| {row['value']} | " + " | ".join(cells + paper_cells) + " |")
        if paper.get("note"):
            lines += ["", f"Paper: {paper['note']}"]
        if axis["name"] in plots:
            lines += ["", f"![{axis['title']}]({plots[axis['name']]})"]
        lines.append("")
    for name, title in (("annotator_vs_synthetic", "Synthetic F1 against the annotator's F1"),
                        ("privacy", "Privacy against adaptation data"),
                        ("per_label", "Per-label entity F1 of the default condition")):
        if name in plots:
            lines += [f"## {title}", "", f"![{title}]({plots[name]})", ""]
    lines += ["## Conditions", "", "| condition | status | wall time (s) | built here (s) | settings changed |",
              "|---|---|---|---|---|"]
    for r in results:
        changed = r["key"].rsplit("-seed", 1)[0]
        lines.append(f"| {r['key']} | {r['status']} | {r.get('seconds', '-')} | {r.get('seconds_built', '-')} | "
                     f"{changed if changed != 'default' else '(defaults)'} |")
    return "\n".join(lines) + "\n"


def _x_positions(rows: Sequence[Mapping[str, Any]]):
    """Numeric axis values where every value is a number; categories otherwise."""
    try:
        return [float(row["value"]) for row in rows], None
    except ValueError:
        return list(range(len(rows))), [row["value"] for row in rows]


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> bool:
    """Label, grid, legend outside the plot (it never hides a point), save atomically."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _close(fig)
    return True


def plot_axis(axis: Mapping[str, Any], path: Path) -> bool:
    rows = [row for row in axis["rows"] if "figures" in row]
    if not rows:
        return False
    xs, categories = _x_positions(axis["rows"])
    position = {row["value"]: x for row, x in zip(axis["rows"], xs)}
    fig, ax = _figure(7, 4.5)
    styles = {"synthetic_entity": ("tab:blue", "-", "o"), "synthetic_token": ("tab:blue", "--", "s"),
              "gold_entity": ("tab:orange", "-", "o"), "gold_token": ("tab:orange", "--", "s"),
              "annotator_entity": ("tab:green", "-.", "^")}
    for name, (color, line, marker) in styles.items():
        x = [position[row["value"]] for row in rows]
        y = [row["figures"][name]["mean"] for row in rows]
        err = [row["figures"][name]["sd"] or 0.0 for row in rows]
        ax.errorbar(x, y, yerr=err, color=color, linestyle=line, marker=marker, capsize=3,
                    label=name.replace("_", " ") + " F1 (ours)")
    paper = axis["paper"] or {}
    for series, color in (("synthetic", "tab:blue"), ("gold", "tab:orange")):
        points = [(position[v], f) for v, f in (paper.get(series) or {}).items() if v in position]
        if points:
            ax.plot(*zip(*sorted(points)), color=color, linestyle=":", marker="x", markersize=8,
                    label=f"{series} token F1 (paper, secondary summary)")
    if categories:
        ax.set_xticks(xs, categories)
    return _finish(fig, ax, path, axis["parameter"], "F1 on the gold test set", axis["title"])


def plot_annotator_vs_synthetic(results: Sequence[Mapping[str, Any]], path: Path) -> bool:
    finished = [r for r in results if r["status"] == "finished"]
    if not finished:
        return False
    fig, ax = _figure(5.5, 5)
    for measure, marker in (("entity", "o"), ("token", "s")):
        xs = [r["scores"]["annotator"][measure]["f"] for r in finished]
        ys = [r["scores"]["synthetic"][measure]["f"] for r in finished]
        ax.scatter(xs, ys, marker=marker, label=f"{measure} F1, one point per condition")
    values = [r["scores"][m][k]["f"] for r in finished for m in ("annotator", "synthetic") for k in ("entity", "token")]
    low, high = min(values) - 0.02, min(1.0, max(values) + 0.02)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", label="synthetic = annotator")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    return _finish(fig, ax, path, "annotator F1 on the gold test set", "synthetic pipeline F1 on the gold test set",
                   "Synthetic pipeline against its annotator")


def plot_privacy(axes: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """5-gram recall against the generator's adaptation fraction (axes that set it)."""
    fig, ax = _figure(6, 4)
    # Axes that share generators share corpora, so their points coincide: a
    # large hollow marker first, then smaller filled ones keep each visible.
    styles = iter([
        {"marker": "o", "markersize": 11, "markerfacecolor": "none", "linestyle": "-"},
        {"marker": "s", "markersize": 5, "linestyle": "--"},
        {"marker": "^", "markersize": 5, "linestyle": "-."},
    ])
    drawn = False
    for axis in axes:
        rows = [row for row in axis["rows"] if "figures" in row and "generator_fraction" in row["settings"]]
        if not rows:
            continue
        xs = [row["settings"]["generator_fraction"] for row in rows]
        ax.errorbar(xs, [row["figures"]["ngram5_recall"]["mean"] for row in rows],
                    yerr=[row["figures"]["ngram5_recall"]["sd"] or 0.0 for row in rows],
                    capsize=3, label=f"ours: {axis['title']}", **next(styles, {"marker": "o", "linestyle": "-"}))
        paper = (axis["paper"] or {}).get("ngram5_recall") or {}
        if paper:
            ax.plot([float(v) for v in paper], list(paper.values()), linestyle=":", marker="x",
                    label=f"paper (secondary summary): {axis['title']}")
        drawn = True
    if not drawn:
        _close(fig)
        return False
    return _finish(fig, ax, path, "share of gold train words the generator was adapted on",
                   "5-gram recall of the gold text in the synthetic corpus",
                   "Privacy: how much gold text the synthetic corpus repeats")


def plot_per_label(result: Mapping[str, Any], path: Path) -> bool:
    scores = result["scores"]
    labels = sorted(scores["gold"]["per_label"], key=lambda label: -scores["gold"]["per_label"][label])
    fig, ax = _figure(10, 4.8)
    width = 0.27
    for i, model in enumerate(("gold", "annotator", "synthetic")):
        values = [scores[model]["per_label"].get(label, 0.0) for label in labels]
        ax.bar([j + (i - 1) * width for j in range(len(labels))], values, width, label=model)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    return _finish(fig, ax, path, "", "entity F1 on the gold test set", f"Per-label entity F1 ({result['key']})")


def portable_paths(result: Mapping[str, Any], output_dir: Path) -> Dict[str, Any]:
    """The result with its corpus path relative to the study folder, so that a
    published report.json names no folder of the machine it ran on."""
    corpus = result.get("synthetic_corpus")
    if not corpus or "path" not in corpus:
        return dict(result)
    path, root = Path(corpus["path"]), output_dir.resolve()
    if path.is_absolute() and path.resolve().is_relative_to(root):
        path = path.resolve().relative_to(root)
    return {**result, "synthetic_corpus": {**corpus, "path": str(path)}}


def write_report(study: Study, results: Sequence[Mapping[str, Any]], output_dir: Path) -> Dict[str, str]:
    """report.md, report.json and the plots; returns {plot name: file name}."""
    axes = aggregate(study, results)
    plots: Dict[str, str] = {}
    for axis in axes:
        name = f"axis_{axis['name']}.png"
        if plot_axis(axis, output_dir / name):
            plots[axis["name"]] = name
    if plot_annotator_vs_synthetic(results, output_dir / "annotator_vs_synthetic.png"):
        plots["annotator_vs_synthetic"] = "annotator_vs_synthetic.png"
    if plot_privacy(axes, output_dir / "privacy.png"):
        plots["privacy"] = "privacy.png"
    default = next((r for r in results if r["key"].startswith("default-") and r["status"] == "finished"), None)
    if default and plot_per_label(default, output_dir / "per_label.png"):
        plots["per_label"] = "per_label.png"
    conditions = [portable_paths(result, output_dir) for result in results]
    write_json(output_dir / "report.json", {"study": str(study.path), "seeds": study.seeds,
                                            "defaults": study.defaults, "axes": axes, "conditions": conditions})
    write_text(output_dir / "report.md", markdown(study, axes, results, plots))
    return plots
