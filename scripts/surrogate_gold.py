"""Replace every gold entity's value with a surrogate of its kind
(synthdeid/training/surrogated.py), so the generator adapts on notes that
hold no real identifier.

    python scripts/surrogate_gold.py TRAIN_DOCBIN VALIDATION_DOCBIN OUT_DIR [--lang es] [--seed 0]
        [--label-kinds KINDS.json]

OUT_DIR gets train.spacy, validation.spacy and stats.json.
"""

from pathlib import Path

import typer

from synthdeid.kinds import read_label_kinds
from synthdeid.training.surrogated import surrogate_gold


def main(
    train: Path = typer.Argument(..., help="Gold train DocBin"),
    validation: Path = typer.Argument(..., help="Gold validation DocBin"),
    output_dir: Path = typer.Argument(..., help="Folder for train.spacy, validation.spacy and stats.json"),
    lang: str = typer.Option("es", help="Language of the notes: their tokenizer, surrogates and dates"),
    seed: int = typer.Option(0, help="Seed of the surrogate values"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
):
    try:
        stats = surrogate_gold({"train": train, "validation": validation}, output_dir, lang=lang, seed=seed,
                               label_kinds=read_label_kinds(label_kinds) if label_kinds else None)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    for split, numbers in stats["splits"].items():
        values = ", ".join(f"{count} {how.replace('_', ' ')}" for how, count in numbers["values"].items())
        typer.echo(f"{output_dir / split}.spacy: {numbers['output']['documents']} notes; values: {values}")


if __name__ == "__main__":
    typer.run(main)
