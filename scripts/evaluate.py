"""Evaluate de-identification pipelines on a gold test DocBin."""

from pathlib import Path
from typing import List, Optional

import typer

from synthdeid.io import write_json, write_text
from synthdeid.kinds import read_label_kinds
from synthdeid.training.evaluation import evaluate_pipelines, gap_report, markdown_report


def main(
    test_path: Path = typer.Argument(..., help="Gold DocBin to evaluate on"),
    output_dir: Path = typer.Argument(..., help="Folder for evaluation.json and evaluation.md"),
    pipeline: List[str] = typer.Option(..., help="NAME=PATH of a pipeline; repeat for several"),
    batch_size: int = typer.Option(16, help="Documents per batch"),
    gap: bool = typer.Option(False, help="Also write gap.md: pipelines named gold, relabelled and synthetic"),
    behaviour: Optional[Path] = typer.Option(None, help="Behavioural test set (scripts/build_behaviour.py): also "
                                                        "score recall outside the corpus's template"),
    rules: List[str] = typer.Option([], help="NAME of a pipeline to score also with the pii_rules safety net "
                                            "(as NAME+rules); repeat for several"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses: "
                                             "the rules' labels and the groups of the behavioural scores"),
    gpu_id: int = typer.Option(-1, help="GPU to run the pipelines on (-1: the CPU), as spacy train's --gpu-id"),
):
    pipelines = {}
    for item in pipeline:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"expected NAME=PATH, got {item!r}", param_hint="--pipeline")
        pipelines[name] = path
    try:
        kinds = read_label_kinds(label_kinds) if label_kinds else None
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--label-kinds") from None
    try:
        results = evaluate_pipelines(test_path, pipelines, batch_size, behaviour, rules, kinds, gpu_id)
    except (ValueError, OSError) as err:  # a missing or unreadable DocBin or pipeline, a GPU it cannot use
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    report = markdown_report(results)
    write_json(output_dir / "evaluation.json", results)
    write_text(output_dir / "evaluation.md", report)
    typer.echo(report)
    if gap:
        write_text(output_dir / "gap.md", gap_report(results))
        typer.echo(gap_report(results))


if __name__ == "__main__":
    typer.run(main)
