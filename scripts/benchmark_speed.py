"""De-identification speed of a pipeline: words/s per redactor strategy with
one and two processes on a corpus built from test texts, time per note at
10k / 100k / 1M characters (linear, or not), `spacy benchmark speed`, and
Presidio's analyzer with the same pipeline as its engine.

    python scripts/benchmark_speed.py packages/es_deid_meddocan-0.1.0 corpus/test.spacy training/speed

Run it on an otherwise idle machine: the figures are wall-clock.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import typer

from synthdeid.deidentify import load_redacting_pipeline
from synthdeid.io import doc_words, read_docs, write_json, write_text

STRATEGIES = ("mask", "surrogate", "hash")


def pipeline_folder(model: Path) -> Path:
    """A pipeline folder, or the one inside a `spacy package` output folder."""
    if (model / "config.cfg").exists():
        return model
    found = [p for p in model.glob("*/*") if (p / "config.cfg").exists()]
    if not found:
        raise typer.BadParameter(f"{model}: no spaCy pipeline (config.cfg) in it", param_hint="MODEL")
    return found[0]


def corpus_of(texts: List[str], characters: int) -> List[str]:
    """Test notes repeated in order until they hold `characters` characters."""
    corpus, total, i = [], 0, 0
    while total < characters:
        corpus.append(texts[i % len(texts)])
        total += len(corpus[-1])
        i += 1
    return corpus


def words_per_second(nlp, texts: List[str], n_process: int, batch_size: int) -> Dict[str, float]:
    start = time.perf_counter()
    words = sum(doc_words(doc) for doc in nlp.pipe(texts, n_process=n_process, batch_size=batch_size))
    seconds = time.perf_counter() - start
    return {"words": words, "seconds": round(seconds, 2), "words_per_second": round(words / seconds, 1)}


def main(
    model: Path = typer.Argument(..., help="Pipeline folder or `spacy package` output folder"),
    test_path: Path = typer.Argument(..., help="DocBin whose texts make the corpus (MEDDOCAN dev)"),
    output_dir: Path = typer.Argument(..., help="Folder for speed.json and speed.md"),
    megabytes: float = typer.Option(5.0, help="Size of the corpus built from the test texts"),
    lengths: List[int] = typer.Option([10_000, 100_000, 1_000_000], help="Note lengths (characters) for the linearity check"),
    # The command line's default. Larger batches ran slower here (1.5 MB, mask,
    # 2 processes: 32: 10,409, 64: 9,154, 256: 7,463, 1000: 4,958 words/s).
    batch_size: int = typer.Option(32, help="Documents per nlp.pipe batch"),
    presidio_documents: int = typer.Option(200, help="Notes for the Presidio comparison (0: skip)"),
    speed_batches: int = typer.Option(30, help="Batches of 16 notes timed by `spacy benchmark speed` (at least 30; 0: skip it)"),
):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("SYNTHDEID_HASH_KEY", "benchmark")  # the hash strategy's key
    folder = pipeline_folder(model)
    texts = [doc.text for doc in read_docs(test_path)]
    corpus = corpus_of(texts, int(megabytes * 1_000_000))
    size = sum(len(t.encode("utf-8")) for t in corpus)
    typer.echo(f"Corpus: {len(corpus)} notes, {size / 1e6:.2f} MB; pipeline {folder}")
    results: Dict = {"pipeline": str(folder), "corpus": {"notes": len(corpus), "bytes": size}, "cpus": os.cpu_count(),
                     "throughput": {}, "linearity": {}, "batch_size": batch_size}
    for strategy in STRATEGIES:
        nlp = load_redacting_pipeline(str(folder), {"strategy": strategy})
        nlp(texts[0])  # load lazily built parts (Faker's locale) outside the timing
        for n_process in (1, 2):
            figures = words_per_second(nlp, corpus, n_process, batch_size)
            results["throughput"][f"{strategy}/n_process={n_process}"] = figures
            typer.echo(f"{strategy:9s} n_process={n_process}: {figures['words_per_second']:,.0f} words/s")
        if strategy in ("mask", "surrogate"):
            nlp.max_length = max(lengths) + 1
            long_text = "\n".join(corpus_of(texts, max(lengths)))
            for length in lengths:
                start = time.perf_counter()
                nlp(long_text[:length])
                seconds = time.perf_counter() - start
                results["linearity"][f"{strategy}/{length}"] = {"seconds": round(seconds, 3),
                                                                "seconds_per_100k_chars": round(seconds / length * 1e5, 3)}
                typer.echo(f"{strategy:9s} one note of {length:,} characters: {seconds:.2f} s")
    speed = speed_batches and subprocess.run(
        [sys.executable, "-m", "spacy", "benchmark", "speed", str(folder), str(test_path), "--code",
         str(Path(__file__).resolve().parents[1] / "synthdeid" / "redact.py"),
         "--batch-size", "16", "--batches", str(speed_batches), "--warmup", "3"],
        capture_output=True, text=True,
    )
    if speed and speed.returncode:
        raise RuntimeError(f"spacy benchmark speed failed: {speed.stderr[-2000:]}")
    if speed:
        results["spacy_benchmark_speed"] = [line.strip() for line in speed.stdout.splitlines() if "words/s" in line]
    if presidio_documents:
        from synthdeid.presidio import analyzer_engine

        sample = corpus[:presidio_documents]
        analyzer = analyzer_engine(str(folder))
        analyzer.analyze(sample[0], language="es")
        start = time.perf_counter()
        for text in sample:
            analyzer.analyze(text, language="es")
        presidio_seconds = time.perf_counter() - start
        nlp = load_redacting_pipeline(str(folder), {"strategy": "mask"})
        ours = words_per_second(nlp, sample, 1, batch_size)
        results["presidio"] = {"notes": len(sample), "analyzer_seconds": round(presidio_seconds, 2),
                               "words_per_second": round(ours["words"] / presidio_seconds, 1),
                               "pipeline_alone_words_per_second": ours["words_per_second"],
                               "overhead": round(presidio_seconds / ours["seconds"], 2)}
        typer.echo(f"Presidio analyzer: {results['presidio']['words_per_second']:,.0f} words/s "
                   f"({results['presidio']['overhead']}x the pipeline's time on the same notes)")
    write_json(output_dir / "speed.json", results)
    write_text(output_dir / "speed.md", markdown(results))
    typer.echo(markdown(results))


def markdown(results: Dict) -> str:
    mask = results["throughput"]["mask/n_process=1"]["words_per_second"]
    lines = [
        f"Corpus: {results['corpus']['notes']} notes, {results['corpus']['bytes'] / 1e6:.2f} MB; "
        f"{results['cpus']} CPUs; batch size {results['batch_size']}.",
        "",
        "| strategy | processes | words/s | vs mask (1 process) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, figures in results["throughput"].items():
        strategy, processes = key.split("/n_process=")
        lines.append(f"| {strategy} | {processes} | {figures['words_per_second']:,.0f} | "
                     f"{figures['words_per_second'] / mask:.2f} |")
    lines += ["", "| strategy | note length (characters) | seconds | seconds per 100k characters |",
              "| --- | ---: | ---: | ---: |"]
    for key, figures in results["linearity"].items():
        strategy, length = key.split("/")
        lines.append(f"| {strategy} | {int(length):,} | {figures['seconds']} | {figures['seconds_per_100k_chars']} |")
    if "presidio" in results:
        p = results["presidio"]
        lines += ["", f"Presidio analyzer with this pipeline as its engine, {p['notes']} notes: "
                      f"{p['words_per_second']:,.0f} words/s against {p['pipeline_alone_words_per_second']:,.0f} "
                      f"for the pipeline alone ({p['overhead']}x the time)."]
    if results.get("spacy_benchmark_speed"):
        lines += ["", "`spacy benchmark speed`: " + " ".join(results["spacy_benchmark_speed"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
