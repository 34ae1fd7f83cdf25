"""Write a seeded subset of a DocBin holding a given share of its words (the
corpus-size measurement: train the same config on part of the synthetic corpus).

    python scripts/subset_corpus.py corpus/synthetic/train.spacy corpus/synthetic_half/train.spacy --fraction 0.5
"""

import random
from pathlib import Path

import typer
from spacy.tokens import DocBin

from synthdeid.io import atomic_path, read_docs


def main(
    docbin: Path = typer.Argument(..., help="DocBin to take documents from"),
    output: Path = typer.Argument(..., help="DocBin to write"),
    fraction: float = typer.Option(0.5, help="Share of the words to keep (documents in a seeded order until reached)"),
    seed: int = typer.Option(0, help="Seed of the document order"),
):
    if not 0 < fraction <= 1:
        raise typer.BadParameter(f"must be in (0, 1], not {fraction}", param_hint="--fraction")
    try:
        docs = read_docs(docbin)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not docs:
        typer.echo(f"error: {docbin}: the DocBin holds no documents", err=True)
        raise typer.Exit(1)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    words = [sum(not token.text.isspace() for token in doc) for doc in docs]
    target, kept, total = fraction * sum(words), [], 0
    for i in order:
        if total >= target:
            break
        kept.append(docs[i])
        total += words[i]
    with atomic_path(output) as tmp:
        DocBin(store_user_data=True, docs=kept).to_disk(tmp)
    typer.echo(f"Wrote {len(kept)} of {len(docs)} documents ({total} of {sum(words)} words) to {output}")


if __name__ == "__main__":
    typer.run(main)
