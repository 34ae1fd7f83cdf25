"""Annotate generated texts with a labelling pipeline: synthetic train and
validation DocBins, plus entity counts per label next to the gold counts.

    python scripts/annotate.py GENERATED_JSONL LABELLER_PIPELINE GOLD_TRAIN_DOCBIN OUT_DIR \
        [--validation-fraction 0.1] [--seed 0] [--batch-size 16] [--gpu-id 0] [--tag-policy annotator]

Writes OUT_DIR/train.spacy, validation.spacy, stats.md and stats.json.
"""

from pathlib import Path

import typer

try:
    from synthdeid.training.labelling import annotate_generated
except ImportError:  # run from a checkout where the package is not installed
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthdeid.training.labelling import annotate_generated


def main(
    generated: Path = typer.Argument(..., help="Generated documents (.jsonl with 'id' and 'text' per line)"),
    pipeline: Path = typer.Argument(..., help="Labelling pipeline folder: the annotator's (scripts/build_annotator_pipeline.py) or a trained spaCy NER pipeline"),
    gold: Path = typer.Argument(..., help="Gold train DocBin, for the label counts to compare with"),
    output_dir: Path = typer.Argument(..., help="Folder for train.spacy, validation.spacy, stats.md, stats.json"),
    validation_fraction: float = typer.Option(0.1, help="Share of generated documents held out for validation"),
    seed: int = typer.Option(0, help="Seed of the train/validation split"),
    batch_size: int = typer.Option(16, help="Documents per nlp.pipe batch"),
    gpu_id: int = typer.Option(-1, help="GPU to run the pipeline on (-1: the CPU), as spacy train's --gpu-id; "
                               "on Ray, each actor gets a GPU of its own"),
    tag_policy: str = typer.Option(
        "annotator",
        help="Notes with inline tags: 'annotator' keeps the pipeline's entities (the tags only compared), 'union' adds "
        "the tag spans it missed, 'tags' keeps the tags and adds the pipeline's entities no tag overlaps",
    ),
    engine: str = typer.Option("local", help="local: label here; ray: label on Ray actors (the same outputs; "
                               "pip install 'synthdeid[ray]')"),
    num_workers: int = typer.Option(2, help="Ray actors (engine ray), each with the pipeline loaded once"),
    ray_address: str = typer.Option("", help="Ray cluster address (engine ray); empty starts a local Ray"),
):
    try:
        annotate_generated(
            generated,
            pipeline,
            gold,
            output_dir,
            validation_fraction=validation_fraction,
            seed=seed,
            batch_size=batch_size,
            gpu_id=gpu_id,
            tag_policy=tag_policy,
            engine=engine,
            num_workers=num_workers,
            ray_address=ray_address or None,
        )
    except ValueError as err:  # AnnotateError: bad input, named by file; or a failed Ray actor
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
