"""Score de-identification pipelines on a gold DocBin; JSON and Markdown reports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Mapping

import spacy
from spacy.tokens import Doc
from tqdm import tqdm

from .io import read_docs
from .metrics import doc_words, score_docs


def evaluate_pipeline(pipeline: str | Path, references: List[Doc], batch_size: int = 16) -> Dict:
    """Run a pipeline over the reference texts and score what it predicts."""
    if not Path(pipeline).exists():
        raise FileNotFoundError(f"{pipeline}: no such pipeline folder")
    nlp = spacy.load(pipeline)
    start = time.perf_counter()
    predictions = list(
        tqdm(
            nlp.pipe((ref.text for ref in references), batch_size=batch_size),
            total=len(references),
            desc=f"evaluate {Path(pipeline).name}",
            unit="doc",
        )
    )
    seconds = time.perf_counter() - start
    words = sum(doc_words(ref) for ref in references)
    scores = score_docs(references, predictions)
    scores["speed"] = {"seconds": seconds, "words_per_second": words / seconds if seconds else 0.0}
    return scores


def evaluate_pipelines(test_path: str | Path, pipelines: Mapping[str, str | Path], batch_size: int = 16) -> Dict:
    references = read_docs(test_path)
    results = {
        "test_set": str(test_path),
        "documents": len(references),
        "gold_entities": sum(len(doc.ents) for doc in references),
        "pipelines": {
            name: evaluate_pipeline(path, references, batch_size) for name, path in pipelines.items()
        },
    }
    if {"synthetic", "gold"} <= set(pipelines):
        results["synthetic_gold_ratio"] = synthetic_gold_ratio(results["pipelines"])
    return results


def synthetic_gold_ratio(scores: Mapping[str, Dict]) -> Dict[str, float]:
    """How much of the gold pipeline's F1 the synthetic pipeline keeps (the paper's headline)."""
    synthetic, gold = scores["synthetic"], scores["gold"]
    return {
        measure: synthetic[measure]["micro"]["f"] / gold[measure]["micro"]["f"] if gold[measure]["micro"]["f"] else 0.0
        for measure in ("entity", "token")
    }


def _f(value: float) -> str:
    return f"{value:.4f}"


def markdown_report(results: Dict) -> str:
    """Overall and per-label tables for every evaluated pipeline."""
    pipelines = results["pipelines"]
    lines = [
        f"# Evaluation on `{results['test_set']}`",
        "",
        f"{results['documents']} documents, {results['gold_entities']} gold entities.",
        "",
        "| pipeline | entity P | entity R | entity F1 | token P | token R | token F1 "
        "| MEDDOCAN span F1 (strict) | MEDDOCAN span F1 (merged) | words/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in pipelines.items():
        ent, tok, med = s["entity"]["micro"], s["token"]["micro"], s["meddocan"]
        lines.append(
            f"| {name} | {_f(ent['p'])} | {_f(ent['r'])} | {_f(ent['f'])} "
            f"| {_f(tok['p'])} | {_f(tok['r'])} | {_f(tok['f'])} "
            f"| {_f(med['subtrack2_strict']['f'])} | {_f(med['subtrack2_merged']['f'])} "
            f"| {s['speed']['words_per_second']:.0f} |"
        )
    if "synthetic_gold_ratio" in results:
        ratio = results["synthetic_gold_ratio"]
        lines += [
            "",
            f"Synthetic/gold F1 ratio: entity {_f(ratio['entity'])}, token {_f(ratio['token'])}.",
        ]
    labels = sorted({label for s in pipelines.values() for label in s["entity"]["per_label"]})
    names = list(pipelines)
    lines += [
        "",
        "Entity-level strict F1 per label (support = gold entities):",
        "",
        "| label | support | " + " | ".join(names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for label in labels:
        support = next(
            (
                s["entity"]["per_label"][label]["tp"] + s["entity"]["per_label"][label]["fn"]
                for s in pipelines.values()
                if label in s["entity"]["per_label"]
            ),
            0,
        )
        cells = [
            _f(s["entity"]["per_label"][label]["f"]) if label in s["entity"]["per_label"] else "-"
            for s in pipelines.values()
        ]
        lines.append(f"| {label} | {support} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


GAP_ROLES = ("gold", "relabelled", "synthetic")


def gap_report(results: Dict) -> str:
    """Where the synthetic pipeline loses F1 against the gold one, overall and
    per label: (a) gold, the pipeline trained on hand labels; (b) relabelled,
    the same config trained on the gold train texts labelled by the annotator;
    (c) synthetic. (a)-(b) is what the annotator's noise costs, (b)-(c) what
    generated text instead of real text costs."""
    pipelines = results["pipelines"]
    missing = [name for name in GAP_ROLES if name not in pipelines]
    if missing:
        raise ValueError(f"the gap decomposition needs pipelines named {GAP_ROLES}; missing {missing}")
    a, b, c = (pipelines[name] for name in GAP_ROLES)

    def row(name: str, fa: float, fb: float, fc: float) -> str:
        return f"| {name} | {_f(fa)} | {_f(fb)} | {_f(fc)} | {fa - fb:+.4f} | {fb - fc:+.4f} |"

    header = [
        "| measure / label | (a) gold | (b) relabelled | (c) synthetic | annotator cost (a)-(b) | generator cost (b)-(c) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines = [f"# Gap decomposition on `{results['test_set']}`", "", *header]
    for measure in ("entity", "token"):
        lines.append(row(f"**{measure} F1**", *(p[measure]["micro"]["f"] for p in (a, b, c))))
    labels = sorted(
        a["entity"]["per_label"],
        key=lambda label: -(a["entity"]["per_label"][label]["tp"] + a["entity"]["per_label"][label]["fn"]),
    )
    lines += ["", "Entity F1 per label (most frequent first):", "", *header]
    for label in labels:
        lines.append(row(label, *(p["entity"]["per_label"].get(label, {"f": 0.0})["f"] for p in (a, b, c))))
    return "\n".join(lines) + "\n"
