"""Assemble the committee annotator: a saved tokenizer + the ner_committee component
over member pipelines (each stored inside the saved folder)."""

from pathlib import Path
from typing import List

import typer

from synthdeid.training.committee import build_committee_pipeline


def main(
    tokenizer_dir: Path = typer.Argument(..., help="Saved spaCy pipeline whose tokenizer to use"),
    output_dir: Path = typer.Argument(..., help="Folder to save the committee pipeline to"),
    members: List[Path] = typer.Argument(..., help="Member pipelines (saved spaCy NER pipelines)"),
    min_votes: int = typer.Option(0, help="Members that must predict a span; 0: a majority"),
):
    try:
        build_committee_pipeline(members, tokenizer_dir, output_dir, min_votes=min_votes)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"Saved the committee of {len(members)} pipelines to {output_dir}")


if __name__ == "__main__":
    typer.run(main)
