"""Workflow runs side by side (synthdeid/training/run_comparison.py): F1 and
its ratio to gold, the labels lost most, what of the gold notes reappears and
the membership AUCs, one column per run's project folder.

    python scripts/compare_runs.py NAME=FOLDER [NAME=FOLDER ...] [--label LABEL ...] [--output OUT.md]

Prints the Markdown table; with --output writes it and OUT.json beside it.
"""

from pathlib import Path
from typing import List, Optional

import typer

from synthdeid.io import write_json, write_text
from synthdeid.kinds import LabelKinds, read_label_kinds
from synthdeid.training.run_comparison import comparison_markdown, comparison_rows, read_run


def main(
    runs: List[str] = typer.Argument(..., help="NAME=FOLDER: a project folder after `weasel run all`, per column"),
    label: List[str] = typer.Option([], help="Labels to show the F1 of [default: the five the first run loses most]"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
    output: Optional[Path] = typer.Option(None, help="Markdown file to write; the JSON goes beside it"),
):
    try:
        named, folders = {}, {}
        for run in runs:
            name, separator, folder = run.partition("=")
            if not separator or not name or not folder:
                raise ValueError(f"{run!r}: expected NAME=FOLDER")
            if name in named:
                raise ValueError(f"{name!r} names two runs")
            named[name], folders[name] = read_run(folder), folder
        kind_of = LabelKinds(read_label_kinds(label_kinds) if label_kinds else None).kind
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    rows = comparison_rows(named, kind_of, label)
    markdown = comparison_markdown(rows)
    if output:
        write_json(output.with_suffix(".json"), {"runs": folders, "rows": rows})
        write_text(output, markdown)
    typer.echo(markdown)


if __name__ == "__main__":
    typer.run(main)
