"""Surrogate copies of the labelled synthetic train corpus: each note again
with fresh PII values of the same labels (Faker surrogates of each label's
kind in the corpus's language; dates as random dates in the language's
writings). No annotator runs: the labels move with the values. Optionally,
narrative notes put surrogate values into prose frames
(synthdeid/training/narrative.py; frames: synthdeid/frames/<lang>.json).

    python scripts/augment.py SYNTHETIC_TRAIN_DOCBIN OUT_DOCBIN [--copies 1] [--narrative 0] [--seed 0]
        [--lang es] [--label-kinds KINDS.json] [--frames FRAMES.json] [--name-pool script|locale]

OUT_DOCBIN holds the input notes, their copies, then the narrative notes.
"""

from pathlib import Path

import typer

from synthdeid.kinds import read_label_kinds
from synthdeid.training.augment import augment_docbin


def main(
    synthetic: Path = typer.Argument(..., help="Labelled synthetic train DocBin (scripts/annotate.py)"),
    output: Path = typer.Argument(..., help="DocBin to write: the input notes, then their surrogate copies"),
    copies: int = typer.Option(2, min=0, help="Surrogate copies of each note (0: the notes alone)"),
    narrative: int = typer.Option(1000, min=0, help="Narrative notes: surrogate PII values in prose frames"),
    seed: int = typer.Option(0, help="Seed of the surrogate values"),
    lang: str = typer.Option("es", help="Language of the notes: their tokenizer, surrogates, dates and frames"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
    frames: str = typer.Option("", help="JSON file of narrative frames instead of the language's"),
    name_pool: str = typer.Option("locale", help="Surrogate names from the language's Faker locale (locale) or "
                                                  "from every locale of its script (script)"),
):
    try:
        stats = augment_docbin(synthetic, output, copies=copies, narrative=narrative, seed=seed, lang=lang,
                               label_kinds=read_label_kinds(label_kinds) if label_kinds else None,
                               frames=frames or None, name_pool=name_pool)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    before, after = stats["input"], stats["output"]
    typer.echo(
        f"Wrote {output}: {after['documents']} notes ({before['documents']} labelled, {copies} surrogate "
        f"cop{'y' if copies == 1 else 'ies'} of each, {stats['narrative']} narrative), {after['words']} words, "
        f"{after['entities']} entities"
    )


if __name__ == "__main__":
    typer.run(main)
