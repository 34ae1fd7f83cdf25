"""Convert a gold corpus to DocBins: train, a seeded validation split carved
from train, and test; plus the customised tokenizer and stats.json.

    python scripts/convert_corpus.py TRAIN TEST OUTPUT_DIR [--validation-fraction 0.1] [--seed 0] [--limit N]

TRAIN and TEST are brat folders, `.jsonl` files or `.spacy` DocBins.
"""

from pathlib import Path

import typer

try:
    from synthdeid.training.corpus import CorpusError, convert_corpus
except ImportError:  # run from a checkout where the package is not installed
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthdeid.training.corpus import CorpusError, convert_corpus


def main(
    train_path: Path = typer.Argument(..., help="Gold train corpus (brat folder, .jsonl or .spacy)"),
    test_path: Path = typer.Argument(..., help="Gold test corpus (brat folder, .jsonl or .spacy)"),
    output_dir: Path = typer.Argument(..., help="Folder for the DocBins, tokenizer/ and stats.json"),
    validation_fraction: float = typer.Option(0.1, help="Share of train documents held out for validation"),
    seed: int = typer.Option(0, help="Seed of the train/validation split"),
    limit: int = typer.Option(0, help="Read only the first N documents of each input (0: all)"),
):
    try:
        convert_corpus(
            train_path,
            test_path,
            output_dir,
            validation_fraction=validation_fraction,
            seed=seed,
            limit=limit or None,
        )
    except CorpusError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
