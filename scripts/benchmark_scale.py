"""Words per second of `synthdeid-deidentify` on one corpus: the local
engine (`nlp.pipe`, `--n-process` 1 and 2) against the Ray engine (1 and 2
actors on a local Ray). The corpus is the DocBin's notes repeated, each
copy a new id, up to `--megabytes` of text, as one JSONL file; keyed
surrogates, so the engines write the same output. Run it alone: the figures
are only comparable on otherwise idle cores."""

import json
import os
import tempfile
import time
from pathlib import Path
from typing import List

import typer

from synthdeid.deidentify import deidentify_files, load_redacting_pipeline
from synthdeid.io import read_docs


def write_corpus(docbin: Path, megabytes: float, path: Path) -> int:
    texts = [doc.text for doc in read_docs(docbin)]
    size, count = 0, 0
    with path.open("w", encoding="utf-8") as out:
        while size < megabytes * 1_000_000:
            text = texts[count % len(texts)]
            out.write(json.dumps({"id": f"n{count}", "text": text}, ensure_ascii=False) + "\n")
            size += len(text.encode("utf-8"))
            count += 1
    return count


def main(
    model: str = typer.Argument(..., help="Pipeline folder or package"),
    docbin: Path = typer.Argument(..., help="DocBin whose notes make the corpus"),
    megabytes: float = typer.Option(5.0, help="Size of the corpus's text"),
    workers: List[int] = typer.Option([1, 2], help="Processes / actors to try (repeat)"),
    batch_size: int = typer.Option(32, help="Documents per batch"),
):
    os.environ.setdefault("SYNTHDEID_HASH_KEY", "benchmark key")
    redactor = {"strategy": "surrogate", "consistency": "keyed"}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "notes.jsonl"
        notes = write_corpus(docbin, megabytes, corpus)
        typer.echo(f"{notes} notes, {megabytes} MB; {os.cpu_count()} CPUs\n")
        typer.echo("| engine | workers | documents | words | seconds | words/s |\n|---|---:|---:|---:|---:|---:|")
        outputs = []
        for engine in ("local", "ray"):
            for count in workers:
                nlp = load_redacting_pipeline(model, redactor)
                output = Path(tmp) / f"{engine}{count}.jsonl"
                start = time.perf_counter()
                summary = deidentify_files(
                    nlp, corpus, output, output_format="jsonl", model=model, engine=engine,
                    n_process=count if engine == "local" else 1, num_workers=count, batch_size=batch_size,
                    progress=False)
                seconds = time.perf_counter() - start  # Ray's start and the actors' pipeline loads included
                typer.echo(f"| {engine} | {count} | {summary.documents} | {summary.words} | {seconds:.1f} | "
                           f"{summary.words / seconds:,.0f} |")
                outputs.append(output.read_bytes())
        same = all(out == outputs[0] for out in outputs)
        typer.echo(f"\nevery run wrote the same output: {same}")


if __name__ == "__main__":
    typer.run(main)
