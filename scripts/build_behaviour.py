"""Build a behavioural test set: PII values of the gold test split in narrative
frames, or sentences written by hand (a JSONL file, see
synthdeid.training.behaviour.read_sentences)."""

from pathlib import Path

import typer

from synthdeid.training.behaviour import build_behaviour_set, read_sentences, save_behaviour_set
from synthdeid.io import read_docs


def main(
    test_path: Path = typer.Argument(..., help="Gold test DocBin (where the values come from), or a .jsonl "
                                               "file of written sentences"),
    output: Path = typer.Argument(..., help="DocBin of the sentences to write"),
    per_frame: int = typer.Option(20, min=1, help="Values drawn for each frame"),
    seed: int = typer.Option(0, help="Seed of the draw"),
):
    try:
        if test_path.suffix == ".jsonl":
            docs = read_sentences(test_path)
        else:
            docs = build_behaviour_set(read_docs(test_path), per_frame=per_frame, seed=seed)
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not docs:  # a corpus whose labels no frame covers: evaluate reports the set as empty
        typer.echo(f"warning: {test_path}: no entity of a label the frames cover (they are written for MEDDOCAN's "
                   "labels); writing an empty behavioural set", err=True)
    save_behaviour_set(docs, output)
    frames = len({doc.user_data["frame"] for doc in docs})
    typer.echo(f"Wrote {output}: {len(docs)} sentences, {frames} frames")


if __name__ == "__main__":
    typer.run(main)
