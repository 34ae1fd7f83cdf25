"""Relabel a gold DocBin with the annotator: gold texts with machine labels,
the labeller's training data and the gap decomposition's middle corpus.

    python scripts/relabel.py GOLD_DOCBIN ANNOTATOR_PIPELINE OUT_DOCBIN
"""

from pathlib import Path

import typer

from synthdeid.io import DeviceError
from synthdeid.training.labelling import AnnotateError, relabel_docbin


def main(
    gold: Path = typer.Argument(..., help="Gold DocBin whose texts to relabel"),
    pipeline: Path = typer.Argument(..., help="Annotator pipeline folder (scripts/build_annotator_pipeline.py)"),
    output: Path = typer.Argument(..., help="DocBin to write: the same texts with the annotator's entities"),
    batch_size: int = typer.Option(16, help="Documents per nlp.pipe batch"),
    gpu_id: int = typer.Option(-1, help="GPU to run the pipeline on (-1: the CPU), as spacy train's --gpu-id"),
):
    try:
        stats = relabel_docbin(gold, pipeline, output, batch_size=batch_size, gpu_id=gpu_id)
    except (AnnotateError, DeviceError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    agreement = stats["agreement_with_hand_labels"]
    typer.echo(
        f"Relabelled {stats['documents']} documents into {output}: {stats['machine']['entities']} entities; "
        f"against the hand labels P {agreement['p']:.4f} R {agreement['r']:.4f} F1 {agreement['f']:.4f}"
    )


if __name__ == "__main__":
    typer.run(main)
