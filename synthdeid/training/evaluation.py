"""Score de-identification pipelines on a gold DocBin; JSON and Markdown reports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from ..kinds import LabelKinds, pipeline_labels
from .behaviour import TARGET_GROUPS, score_behaviour
from ..io import doc_words, load_pipeline, read_docs
from .metrics import score_docs


def predict(nlp, references: List[Doc], batch_size: int, desc: str) -> Tuple[List[Doc], float]:
    """The pipeline's docs of the reference texts, and the seconds they took."""
    start = time.perf_counter()
    predictions = list(tqdm(nlp.pipe((ref.text for ref in references), batch_size=batch_size),
                            total=len(references), desc=desc, unit="doc"))
    return predictions, time.perf_counter() - start


def with_rules(nlp, kinds: LabelKinds):
    """`nlp` with the `pii_rules` safety net after its last entity setter
    (before the redactor, if it has one), its spans labelled with the
    pipeline's labels of their kinds, as `package` adds it."""
    setters = [name for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns]
    kind_labels = kinds.kind_labels(pipeline_labels(nlp))
    nlp.add_pipe("pii_rules", after=setters[-1] if setters else None, config={"kind_labels": kind_labels})
    return nlp


def load_evaluated(pipeline: str | Path, gpu_id: int = -1) -> Language:
    """A saved pipeline to score, on GPU `gpu_id` (-1: the CPU)."""
    if not Path(pipeline).exists():
        raise FileNotFoundError(f"{pipeline}: no such pipeline folder")
    from .. import rules  # noqa: F401  a pipeline may hold pii_rules

    return load_pipeline(pipeline, gpu_id=gpu_id)


def evaluate_pipeline(nlp: Language, name: str, references: List[Doc], batch_size: int = 16,
                      behaviour: Optional[List[Doc]] = None, kinds: Optional[LabelKinds] = None) -> Dict:
    """Run a pipeline over the reference texts and score what it predicts;
    with `behaviour` (sentences of `synthdeid.training.behaviour`) also its
    recall outside the corpus's template, grouped by the labels' `kinds`."""
    predictions, seconds = predict(nlp, references, batch_size, f"evaluate {name}")
    words = sum(doc_words(ref) for ref in references)
    scores = score_docs(references, predictions)
    scores["speed"] = {"seconds": seconds, "words_per_second": words / seconds if seconds else 0.0}
    if behaviour:
        sentences, _ = predict(nlp, behaviour, batch_size, f"behaviour {name}")
        scores["behaviour"] = score_behaviour(behaviour, sentences, (kinds or LabelKinds()).kind)
    return scores


def evaluate_pipelines(test_path: str | Path, pipelines: Mapping[str, str | Path], batch_size: int = 16,
                       behaviour_path: Optional[str | Path] = None, rules_for: Sequence[str] = (),
                       label_kinds: Optional[Mapping[str, object]] = None, gpu_id: int = -1) -> Dict:
    """Score each pipeline (on GPU `gpu_id`; -1: the CPU); those named in
    `rules_for` also with the `pii_rules` safety net (as "<name>+rules").
    `label_kinds` (label -> kind, over the shipped schemes and guesses) gives
    the labels of the rules' spans and the groups of the behavioural scores."""
    unknown = sorted(set(rules_for) - set(pipelines))
    if unknown:
        raise ValueError(f"rules asked for pipelines {unknown} that are not evaluated ({sorted(pipelines)})")
    references = read_docs(test_path)
    behaviour = read_docs(behaviour_path) if behaviour_path else None
    kinds = LabelKinds(label_kinds)
    scores = {}
    for name, path in pipelines.items():
        nlp = load_evaluated(path, gpu_id)
        scores[name] = evaluate_pipeline(nlp, name, references, batch_size, behaviour, kinds)
        if name in rules_for:
            if "pii_rules" not in nlp.pipe_names:
                with_rules(nlp, kinds)
            scores[f"{name}+rules"] = evaluate_pipeline(nlp, f"{name}+rules", references, batch_size, behaviour,
                                                        kinds)
    results = {
        "test_set": str(test_path),
        "documents": len(references),
        "gold_entities": sum(len(doc.ents) for doc in references),
        "pipelines": scores,
    }
    if behaviour is not None:
        results["behaviour_set"] = {"path": str(behaviour_path), "sentences": len(behaviour)}
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
    if results.get("behaviour_set", {}).get("sentences"):
        lines += ["", *behaviour_report(results)]
    elif "behaviour_set" in results:
        lines += ["", f"Recall outside the template: `{results['behaviour_set']['path']}` holds no sentences "
                      "(no frame covers this corpus's labels)."]
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


def behaviour_report(results: Dict) -> List[str]:
    """Recall outside the template: caught (every character redacted, any
    label) and strict recall of the target groups, and every label's."""
    pipelines = {name: s["behaviour"] for name, s in results["pipelines"].items() if "behaviour" in s}
    lines = [
        f"Recall outside the template (`{results['behaviour_set']['path']}`, "
        f"{results['behaviour_set']['sentences']} sentences; caught = every letter and digit inside a predicted "
        "entity of any label / strict = offsets and label):",
        "",
        "| pipeline | " + " | ".join(TARGET_GROUPS) + " | all labels | precision (caught / strict) |",
        "| --- | " + " | ".join("---:" for _ in TARGET_GROUPS) + " | ---: | ---: |",
    ]
    for name, b in pipelines.items():
        cells = [f"{_f(b['groups'][g]['caught']['r'])} / {_f(b['groups'][g]['strict']['r'])}"
                 if g in b["groups"] else "-" for g in TARGET_GROUPS]
        micro = b["micro"]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {_f(micro['caught']['r'])} / {_f(micro['strict']['r'])}"
                     + f" | {_f(micro['caught']['p'])} / {_f(micro['strict']['p'])} |")
    labels = sorted({label for b in pipelines.values() for label in b["per_label"]})
    lines += ["", "Caught recall per label outside the template:", "",
              "| label | sentences | " + " | ".join(pipelines) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in pipelines) + " |"]
    for label in labels:
        support = next(b["per_label"][label]["support"] for b in pipelines.values() if label in b["per_label"])
        lines.append(f"| {label} | {support} | " + " | ".join(
            _f(b["per_label"][label]["caught"]["r"]) if label in b["per_label"] else "-" for b in pipelines.values())
            + " |")
    return lines


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
