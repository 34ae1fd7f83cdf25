"""Run (or resume) an ablation study and write its report.

    python scripts/ablation.py configs/ablation_cpu.yml training/ablation --corpus corpus
"""

from pathlib import Path
from typing import List

import typer

from synthdeid.training.ablation import Paths, StudyError, collect_results, load_study, run_study
from synthdeid.training.ablation_report import write_report


def main(
    study_file: Path = typer.Argument(..., help="Study file (YAML): seeds, defaults and axes"),
    output_dir: Path = typer.Argument(..., help="Study folder: shared/ artifacts, conditions/, report.*"),
    corpus: Path = typer.Option(Path("corpus"), help="The main workflow's corpus folder (train/validation/test, tokenizer)"),
    project: Path = typer.Option(Path("project.yml"), help="project.yml whose vars are the default settings"),
    axis: List[str] = typer.Option([], help="Run only these axes (repeat); the report shows the rest as not run"),
    report_only: bool = typer.Option(False, help="Only rewrite the report from the finished conditions"),
):
    try:
        study = load_study(study_file, project)
    except StudyError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    unknown = set(axis) - {a.name for a in study.axes}
    if unknown:
        raise typer.BadParameter(f"not in {study_file}: {', '.join(sorted(unknown))}", param_hint="--axis")
    # Absolute: the same study gives the same commands from any working directory.
    paths = Paths(corpus.resolve(), output_dir.resolve(), project=project.resolve())
    if not report_only:
        run_study(study, paths, axes=axis or None, log=typer.echo,
                  on_result=lambda results: write_report(study, results, output_dir))
    plots = write_report(study, collect_results(study, paths), output_dir)
    typer.echo(f"Wrote {output_dir / 'report.md'}, report.json and {len(plots)} plot(s)")


if __name__ == "__main__":
    typer.run(main)
