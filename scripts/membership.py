"""Membership inference against the pipelines and the generator: can a
threshold on a model's score tell gold train notes from gold test notes
(synthdeid/training/membership.py)? AUC 0.5: it cannot.

    python scripts/membership.py GOLD_TRAIN GOLD_TEST OUT_DIR [--pipeline name=PATH ...] [--generator DIR]
        [--seed 0] [--device cpu]

Writes OUT_DIR/membership.json and OUT_DIR/membership.md.
"""

from pathlib import Path
from typing import List, Optional

import typer

from synthdeid.io import write_json, write_text
from synthdeid.training.membership import membership_markdown, membership_report


def main(
    train: Path = typer.Argument(..., help="Gold train DocBin: the members"),
    test: Path = typer.Argument(..., help="Gold test DocBin: the non-members"),
    output_dir: Path = typer.Argument(..., help="Folder for membership.json and membership.md"),
    pipeline: List[str] = typer.Option([], help="name=PATH of a spaCy pipeline to attack (repeat the option)"),
    generator: Optional[Path] = typer.Option(None, help="Generator folder (scripts/adapt_generator.py) to attack"),
    seed: int = typer.Option(0, help="Seed of the draw of train notes"),
    device: str = typer.Option("cpu", help="torch device of the generator"),
    gpu_id: int = typer.Option(-1, help="GPU to run the pipelines on (-1: the CPU), as spacy train's --gpu-id"),
):
    pipelines = {}
    for item in pipeline:
        name, _, path = item.partition("=")
        if not name or not path:
            typer.echo(f"error: --pipeline {item!r}: expected name=PATH", err=True)
            raise typer.Exit(1)
        pipelines[name] = path
    try:
        report = membership_report(train, test, pipelines=pipelines, generator=generator, seed=seed, device=device,
                                   gpu_id=gpu_id)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    markdown = membership_markdown(report)
    write_text(output_dir / "membership.md", markdown)
    write_json(output_dir / "membership.json", report)
    typer.echo(markdown)


if __name__ == "__main__":
    typer.run(main)
