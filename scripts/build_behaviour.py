"""Build a behavioural test set: PII values of the gold test split in narrative
frames (those of the language, synthdeid/frames/<lang>.json, or a --frames
file), or sentences written by hand (a JSONL file, see
synthdeid.training.behaviour.read_sentences)."""

from pathlib import Path

import typer

from synthdeid.io import read_docs
from synthdeid.kinds import LabelKinds, read_label_kinds
from synthdeid.training.behaviour import build_behaviour_set, read_sentences, save_behaviour_set
from synthdeid.training.frames import load_frames


def main(
    test_path: Path = typer.Argument(..., help="Gold test DocBin (where the values come from), or a .jsonl "
                                               "file of written sentences"),
    output: Path = typer.Argument(..., help="DocBin of the sentences to write"),
    per_frame: int = typer.Option(20, min=1, help="Values drawn for each frame"),
    seed: int = typer.Option(0, help="Seed of the draw"),
    lang: str = typer.Option("es", help="Language of the corpus: its frames are synthdeid/frames/<lang>.json"),
    frames: str = typer.Option("", help="JSON file of frames (synthdeid/training/frames.py) instead of the "
                                        "language's; empty: the language's"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
):
    frames_found = None
    try:
        if test_path.suffix == ".jsonl":
            docs = read_sentences(test_path)
        else:
            frames_found = load_frames(lang, frames)
            kinds = LabelKinds(read_label_kinds(label_kinds) if label_kinds else None)
            docs = build_behaviour_set(read_docs(test_path), frames_found, kinds.kind, per_frame=per_frame, seed=seed)
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    if not docs:  # a corpus whose labels no frame covers: evaluate reports the set as empty
        typer.echo(f"warning: {test_path}: no entity of a label or kind the frames cover ({frames_found.source}); "
                   "writing an empty behavioural set", err=True)
    save_behaviour_set(docs, output)
    frames = len({doc.user_data["frame"] for doc in docs})
    typer.echo(f"Wrote {output}: {len(docs)} sentences, {frames} frames")


if __name__ == "__main__":
    typer.run(main)
