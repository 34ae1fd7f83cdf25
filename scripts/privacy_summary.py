"""A one-page privacy summary with one plot, from the privacy report and the
membership inference (synthdeid/training/privacy_summary.py): each check,
its threshold, what was found and what chance gives.

    python scripts/privacy_summary.py PRIVACY_JSON MEMBERSHIP_JSON OUT_MD [--label-kinds KINDS.json]

Writes OUT_MD and its plot, OUT_MD with the suffix .png.
"""

import json
from pathlib import Path

import typer

from synthdeid.kinds import LabelKinds, read_label_kinds
from synthdeid.training.privacy_summary import write_summary


def main(
    privacy: Path = typer.Argument(..., help="privacy.json of scripts/privacy_report.py (with --baseline)"),
    membership: Path = typer.Argument(..., help="membership.json of scripts/membership.py"),
    output: Path = typer.Argument(..., help="Markdown file to write; the plot goes beside it"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
):
    try:
        reports = [json.loads(path.read_text(encoding="utf-8")) for path in (privacy, membership)]
        kind_of = LabelKinds(read_label_kinds(label_kinds) if label_kinds else None).kind
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(write_summary(reports[0], reports[1], kind_of, output))


if __name__ == "__main__":
    typer.run(main)
