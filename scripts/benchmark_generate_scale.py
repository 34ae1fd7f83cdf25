"""Notes per second of `generate` on the local engine (one process, torch's
threads on every core) against the Ray engine with 1 and 2 actors (one
core each), for one generator and one word target. Every run writes its
own corpus from scratch; the script says whether they are the same. Run it
alone: the figures are only comparable on otherwise idle cores.

    python scripts/benchmark_generate_scale.py corpus/validation.spacy corpus/train.spacy training/generator \
        [--corpus-multiple 0.1] [--workers 1 --workers 2]
"""

import os
import tempfile
import time
from pathlib import Path
from typing import List

import typer

from synthdeid.training.synthesis import generate


def main(
    validation: Path = typer.Argument(..., help="Held-out DocBin: the prompts"),
    gold_train: Path = typer.Argument(..., help="Gold train DocBin: the word target and the gold-value screen"),
    generator: Path = typer.Argument(..., help="Generator folder (adapt_generator output)"),
    config: Path = typer.Option(Path("configs/generate.cfg"), help="spacy-llm generation config"),
    corpus_multiple: float = typer.Option(0.1, help="Target size: this share of the gold train words"),
    workers: List[int] = typer.Option([1, 2], help="Ray actors to try (repeat)"),
    seed: int = typer.Option(0, help="Generation seed"),
):
    typer.echo(f"{os.cpu_count()} CPUs\n")
    typer.echo("| engine | workers | notes | words | seconds | notes/s | words/s |\n|---|---:|---:|---:|---:|---:|---:|")
    outputs = []
    with tempfile.TemporaryDirectory() as tmp:
        for engine, count in [("local", 1)] + [("ray", count) for count in workers]:
            output = Path(tmp) / f"{engine}{count}.jsonl"
            start = time.perf_counter()
            stats = generate(validation, gold_train, output, config_path=config, generator=generator,
                             model_options={"seed": seed}, size_multiple=corpus_multiple, resume=False,
                             progress=False, engine=engine, num_workers=count)
            seconds = time.perf_counter() - start  # Ray's start and the actors' model loads included
            typer.echo(f"| {engine} | {count} | {stats['kept']} | {stats['words_kept']} | {seconds:.1f} | "
                       f"{stats['kept'] / seconds:.2f} | {stats['words_kept'] / seconds:,.0f} |")
            outputs.append(output.read_bytes())
    typer.echo(f"\nevery run wrote the same corpus: {all(out == outputs[0] for out in outputs)}")


if __name__ == "__main__":
    typer.run(main)
