"""Score the annotator pipeline's Viterbi `break_penalty` on gold DocBins.

The model runs once per DocBin; each penalty only re-decodes its scores.
Choose on validation data; a test DocBin shows what the choice gives there.
Apply a value with `build_annotator_pipeline.py --break-penalty`.
"""

from pathlib import Path
from typing import List

import typer

import synthdeid.training.hf_ner  # noqa: F401  registers the hf_ner factory
from synthdeid.training.annotator import score_break_penalties
from synthdeid.io import DeviceError, PipelineFolderError, load_pipeline, read_docs, write_json

DEFAULT_PENALTIES = "0,0.5,1,1.5,2,2.5,3,3.5,4,5"


def main(
    pipeline_dir: Path = typer.Argument(..., help="Annotator pipeline (scripts/build_annotator_pipeline.py)"),
    docbins: List[Path] = typer.Argument(..., help="Gold DocBins to score (validation first)"),
    output: Path = typer.Option(None, help="Also write the scores here as JSON"),
    penalties: str = typer.Option(DEFAULT_PENALTIES, help="Comma-separated penalties to score"),
    gpu_id: int = typer.Option(-1, help="GPU to run the pipeline on (-1: the CPU), as spacy train's --gpu-id"),
):
    try:
        grid = [float(value) for value in penalties.split(",")]
    except ValueError:
        raise typer.BadParameter(f"not a comma-separated list of numbers: {penalties!r}", param_hint="--penalties")
    try:
        nlp = load_pipeline(pipeline_dir, gpu_id=gpu_id)
    except (PipelineFolderError, DeviceError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    component = next((pipe for name, pipe in nlp.pipeline if nlp.get_pipe_meta(name).factory == "hf_ner"), None)
    if component is None:
        raise typer.BadParameter(f"{pipeline_dir}: the pipeline has no hf_ner component", param_hint="PIPELINE_DIR")
    results = {}
    for path in docbins:
        docs = read_docs(path, nlp.vocab)
        if not any(doc.ents for doc in docs):
            raise typer.BadParameter(f"{path}: no gold entities to score against", param_hint="DOCBINS")
        results[str(path)] = score_break_penalties(component, docs, grid)
    header = "| break_penalty | " + " | ".join(f"{path} P / R / F1" for path in results) + " |"
    lines = [header, "| ---: |" + " ---: |" * len(results)]
    for i, penalty in enumerate(grid):
        cells = [f"{rows[i]['p']:.4f} / {rows[i]['r']:.4f} / {rows[i]['f']:.4f}" for rows in results.values()]
        lines.append(f"| {penalty:g} | " + " | ".join(cells) + " |")
    typer.echo("\n".join(lines))
    if output:
        write_json(output, {"pipeline": str(pipeline_dir), "scores": results})


if __name__ == "__main__":
    typer.run(main)
