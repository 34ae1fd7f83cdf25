"""Assemble the annotator spaCy pipeline: a saved tokenizer + the hf_ner component."""

from pathlib import Path
from typing import Optional

import typer

from synthdeid.training.annotator import build_annotator_pipeline


def main(
    model_dir: Path = typer.Argument(..., help="Trained model folder (scripts/train_annotator.py)"),
    tokenizer_dir: Path = typer.Argument(..., help="Saved spaCy pipeline whose tokenizer to use"),
    output_dir: Path = typer.Argument(..., help="Folder to save the pipeline to"),
    name: str = typer.Option("deid_meddocan_annotator", help="Pipeline name (nlp.meta)"),
    description: Optional[str] = typer.Option(None, help="Pipeline description (nlp.meta)"),
    batch_size: int = typer.Option(8, help="hf_ner: windows per forward pass"),
    window_words: Optional[int] = typer.Option(
        None, help="hf_ner: words per window [default: as validated, from training_log.json]"
    ),
    max_length: Optional[int] = typer.Option(
        None, help="hf_ner: sub-tokens per window [default: as validated]"
    ),
    stride: Optional[int] = typer.Option(None, help="hf_ner: words shared by consecutive windows [default: as validated]"),
    decoding: Optional[str] = typer.Option(None, help="hf_ner: viterbi or greedy [default: viterbi]"),
    break_penalty: Optional[float] = typer.Option(
        None, help="hf_ner: Viterbi's charge for an entity that begins right after another [default: 2.0]"
    ),
):
    overrides = {
        "batch_size": batch_size, "window_words": window_words, "max_length": max_length, "stride": stride,
        "decoding": decoding, "break_penalty": break_penalty,
    }
    try:
        build_annotator_pipeline(
            model_dir,
            tokenizer_dir,
            output_dir,
            name=name,
            description=description,
            component_config={key: value for key, value in overrides.items() if value is not None},
        )
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"Saved the annotator pipeline to {output_dir}")


if __name__ == "__main__":
    typer.run(main)
