"""Machine annotation of generated texts: the synthetic training corpus.

`annotate_generated` reads the generation step's JSONL (one document per
line; `id`, `text` and, from a generator adapted with inline tags,
`tag_spans` are used), runs a labelling pipeline over the
texts (the annotator's `hf_ner` pipeline, or a spaCy NER pipeline such as
the labeller distilled from it), splits the documents (seeded, by id) into
synthetic train and validation DocBins and writes entity statistics next to
those of the gold train corpus:

    OUT/train.spacy, OUT/validation.spacy   docs with doc.ents; user_data
                                            {"name": id, "synthdeid_id": id}
    OUT/stats.md                            label table (Markdown)
    OUT/stats.json                          written last: the step finished

Where the notes carry inline tags, each note's tag spans are compared with
the pipeline's (`inline_tags.tag_agreement`, per label in stats.md and
stats.json) and the two are merged by `tag_policy` (`inline_tags.TAG_POLICIES`).

Counts are comparable across corpora of different sizes through their
density: entities per 1,000 words, where words are the non-whitespace tokens
of the docs (for the synthetic docs: the labelling pipeline's tokenizer; for
the gold docs: the tokenizer they were converted with, the same one in this
project).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from contextlib import closing
from typing import Any, Dict, Iterator, List, Optional, Sequence

import spacy
from spacy.tokens import Doc, DocBin
from spacy.util import filter_spans
from tqdm import tqdm
from wasabi import msg

from . import hf_ner  # noqa: F401 (registers the hf_ner factory without the entry point)
from .corpus import ID_KEY, corpus_stats, split_train_validation
from .inline_tags import TAG_POLICIES, UNALIGNED, Span, agreement_table, combine_spans, entity_spans, tag_agreement
from ..io import (
    PipelineFolderError,
    atomic_path,
    folder_digest,
    load_ner_pipeline,
    ResumeState,
    read_docs,
    read_text_docs,
    write_json,
    write_text,
)
from .metrics import doc_spans, entity_scores
from ..parallel import ENGINES


# user_data key of a tagged note's `tag_agreement` counts.
TAG_OUTCOMES_KEY = "synthdeid_tag_outcomes"


class AnnotateError(ValueError):
    """Bad input of the annotation step; about a file, the message names it
    (and the line)."""


def load_labeller(pipeline_dir: str | Path, gpu_id: int = -1) -> spacy.Language:
    """`spacy.load` a labelling pipeline (the annotator's, or any spaCy NER
    pipeline) on GPU `gpu_id` (-1: the CPU), checking that some component
    assigns `doc.ents`."""
    try:
        return load_ner_pipeline(pipeline_dir, gpu_id=gpu_id)
    except PipelineFolderError as error:
        raise AnnotateError(
            f"{error}; expected an NER pipeline (the annotator's, scripts/build_annotator_pipeline.py, or a trained one)"
        ) from error


class Labeller:
    """A labelling pipeline loaded once (in a Ray actor): a batch of texts ->
    their labelled Docs as DocBin bytes."""

    def __init__(self, pipeline_dir: str, gpu_id: int, batch_size: int) -> None:
        self.nlp = load_labeller(pipeline_dir, gpu_id)
        self.batch_size = batch_size

    def __call__(self, texts: List[str]) -> bytes:
        return DocBin(docs=list(self.nlp.pipe(texts, batch_size=self.batch_size))).to_bytes()


def labelled_docs(nlp: spacy.Language, texts: Sequence[str], pipeline_dir: str | Path, *, batch_size: int,
                  gpu_id: int, engine: str, num_workers: int,
                  ray_address: Optional[str]) -> Iterator[Doc]:
    """`texts` labelled, in order: by `nlp` here (engine "local"), or in
    batches by `num_workers` Ray actors that each load the pipeline at
    `pipeline_dir` once (engine "ray"; `ray_address` a cluster's), each on
    a GPU of its own when `gpu_id` is not -1 (Ray assigns it)."""
    if engine == "local":
        yield from nlp.pipe(texts, batch_size=batch_size)
        return
    from ..parallel import actor_map

    batches = ((list(texts[start : start + batch_size]), None) for start in range(0, len(texts), batch_size))
    on_gpu = gpu_id >= 0
    # An actor sees only the GPU Ray gave it, as device 0.
    results = actor_map(Labeller, (str(Path(pipeline_dir).resolve()), 0 if on_gpu else -1, batch_size), batches,
                        num_workers=num_workers, address=ray_address, gpus_per_worker=int(on_gpu))
    with closing(results):
        for data, _ in results:
            yield from DocBin().from_bytes(data).get_docs(nlp.vocab)


class AnnotationCheckpoints:
    """Annotated documents saved in chunks while a run goes (`folder`), so an
    interrupted run resumes after the last chunk instead of starting over;
    chunks of other inputs or settings (`fingerprint`) are discarded."""

    CHUNK = 64

    def __init__(self, folder: Path, fingerprint: Dict[str, Any], vocab: Any):
        self.folder, self.vocab = folder, vocab
        self.state = ResumeState(folder / "state.json", fingerprint)
        self.pending: List[Doc] = []
        self.chunks = 0

    def load(self) -> List[Doc]:
        progress = self.state.load()
        if progress is not None:
            try:
                self.chunks = int(progress["chunks"])
                return [doc for i in range(self.chunks) for doc in read_docs(self._chunk(i), self.vocab)]
            except (OSError, ValueError, KeyError, TypeError):  # chunks missing or not this code's
                pass
        self.chunks = 0  # start afresh
        shutil.rmtree(self.folder, ignore_errors=True)
        return []

    def add(self, doc: Doc) -> None:
        self.pending.append(doc)
        if len(self.pending) == self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._chunk(self.chunks)) as tmp:
            DocBin(store_user_data=True, docs=self.pending).to_disk(tmp)
        self.chunks += 1
        self.pending = []
        self.state.save({"chunks": self.chunks})

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _chunk(self, i: int) -> Path:
        return self.folder / f"chunk-{i:05d}.spacy"


def annotate_generated(
    generated_path: str | Path,
    pipeline_dir: str | Path,
    gold_path: str | Path,
    output_dir: str | Path,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int = 16,
    gpu_id: int = -1,
    tag_policy: str = "annotator",
    engine: str = "local",
    num_workers: int = 2,
    ray_address: Optional[str] = None,
) -> Dict[str, Any]:
    """Annotate the generated documents with a labelling pipeline and write
    `output_dir/{train,validation}.spacy`, `stats.md` and `stats.json`
    (each atomically, stats.json last); returns the stats. The split is
    `split_train_validation` on the document ids. A policy other than
    "annotator" needs notes with inline tags. `engine` "ray" labels the
    notes on `num_workers` Ray actors (`labelled_docs`), with the same
    outputs, so a run resumes on either engine. `gpu_id` (-1: the CPU)
    places the pipeline, or each actor's, on a GPU."""
    began = time.perf_counter()
    if not 0 < validation_fraction < 1:
        raise AnnotateError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    if batch_size < 1:
        raise AnnotateError(f"batch_size must be at least 1, got {batch_size}")
    if engine not in ENGINES:
        raise AnnotateError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if tag_policy not in TAG_POLICIES:
        raise AnnotateError(f"unknown tag policy {tag_policy!r}; expected one of {', '.join(TAG_POLICIES)}")
    output_dir = Path(output_dir)
    generated = read_text_docs(generated_path, AnnotateError)
    tagged_notes = sum(record.tag_spans is not None for record in generated)
    if tag_policy != "annotator" and tagged_notes < len(generated):
        raise AnnotateError(
            f"{generated_path}: tag policy {tag_policy!r} needs inline tags, but {len(generated) - tagged_notes} "
            f"of {len(generated)} notes carry none (adapt the generator with --inline-tags)"
        )
    gold = read_gold_docbin(gold_path)
    nlp = load_labeller(pipeline_dir, gpu_id if engine == "local" else -1)  # on Ray the actors label
    msg.info(f"Read {len(generated)} generated documents from {generated_path}")

    try:
        train, validation = split_train_validation(generated, validation_fraction, seed)
    except ValueError as err:  # e.g. a single document
        raise AnnotateError(f"{generated_path}: {err}") from None
    records = train + validation
    fingerprint = {
        "generated_sha256": hashlib.sha256(Path(generated_path).read_bytes()).hexdigest(),
        "pipeline": str(pipeline_dir), "pipeline_sha256": folder_digest(pipeline_dir),
        "validation_fraction": validation_fraction, "seed": seed, "tag_policy": tag_policy,
    }
    checkpoints = AnnotationCheckpoints(output_dir / ".annotate_partial", fingerprint, nlp.vocab)
    docs = checkpoints.load()
    if docs:
        msg.info(f"Resuming after {len(docs)} annotated documents")
    started = time.perf_counter()
    todo = records[len(docs):]
    with tqdm(total=len(records), initial=len(docs), desc="annotate", unit="doc", disable=None) as bar:
        labelled = labelled_docs(nlp, [record.text for record in todo], pipeline_dir, batch_size=batch_size,
                                 gpu_id=gpu_id, engine=engine, num_workers=num_workers, ray_address=ray_address)
        with closing(labelled):
            for record, doc in zip(todo, labelled):
                doc.user_data["name"] = record.name
                doc.user_data[ID_KEY] = record.name
                if record.tag_spans is not None:
                    apply_tags(doc, record.tag_spans, tag_policy)
                docs.append(doc)
                checkpoints.add(doc)
                bar.update()
    checkpoints.flush()
    annotate_seconds = time.perf_counter() - started
    annotated = {"train": docs[: len(train)], "validation": docs[len(train):]}

    synthetic = annotated["train"] + annotated["validation"]
    stats = {
        "inputs": {
            "generated": str(generated_path),
            "pipeline": str(pipeline_dir),
            "pipeline_name": nlp.meta.get("name"),
            "gold": str(gold_path),
        },
        "validation_fraction": validation_fraction,
        "seed": seed,
        "batch_size": batch_size,
        "splits": {
            "train": corpus_stats(annotated["train"]),
            "validation": corpus_stats(annotated["validation"]),
            "synthetic": corpus_stats(synthetic),
            "gold": corpus_stats(gold),
        },
        "annotate_seconds": round(annotate_seconds, 2),
        # This run's documents only: resumed ones took no time here.
        "documents_per_second": round(len(todo) / annotate_seconds, 2) if annotate_seconds else None,
    }
    if len(docs) > len(todo):
        stats["resumed_after"] = len(docs) - len(todo)
    table = label_table_markdown(stats)
    if tagged_notes:
        outcomes: Dict[str, Counter] = defaultdict(Counter)
        for doc in synthetic:
            for label, counts in doc.user_data.get(TAG_OUTCOMES_KEY, {}).items():
                outcomes[label].update(counts)
        stats["inline_tags"] = {"policy": tag_policy, "notes": tagged_notes,
                                "agreement": {label: dict(counts) for label, counts in sorted(outcomes.items())}}
        table += (f"\nInline tags of {tagged_notes:,} notes against the labelling pipeline's spans "
                  f"(policy: {tag_policy}):\n\n" + agreement_table(outcomes))
    print(table)

    # The old stats would say the step finished beside half-replaced outputs.
    for marker in ("stats.json", "stats.md"):
        (output_dir / marker).unlink(missing_ok=True)
    for split, docs in annotated.items():
        docbin = DocBin(store_user_data=True, docs=docs)
        with atomic_path(output_dir / f"{split}.spacy") as tmp:
            docbin.to_disk(tmp)
    write_text(output_dir / "stats.md", table)
    stats["seconds"] = round(time.perf_counter() - began, 2)
    write_json(output_dir / "stats.json", stats)  # last: its presence means the step finished
    checkpoints.remove()
    msg.good(
        f"Wrote {output_dir}/{{train,validation}}.spacy ({len(train)} + {len(validation)} documents), "
        f"stats.md and stats.json in {stats['seconds']:.1f} s"
    )
    return stats


def apply_tags(doc: Doc, tags: List[Span], policy: str) -> None:
    """Compare a note's tag spans with the pipeline's entities (the counts go
    to `doc.user_data[TAG_OUTCOMES_KEY]`) and set the entities `policy`
    gives. A span whose edges fall inside a token takes the tokens it
    touches; one that then overlaps another is lost, and counted
    (`UNALIGNED`)."""
    labelled = entity_spans(doc)
    outcomes = tag_agreement(labelled, tags)
    combined = combine_spans(labelled, tags, policy)
    if combined != sorted(labelled):
        aligned = [doc.char_span(start, end, label, alignment_mode="expand") for start, end, label in combined]
        doc.ents = filter_spans([span for span in aligned if span is not None])
        kept = {(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents}
        for (_, _, label), span in zip(combined, aligned):
            if span is None or (span.start_char, span.end_char, label) not in kept:
                outcomes.setdefault(label, Counter())[UNALIGNED] += 1
    doc.user_data[TAG_OUTCOMES_KEY] = {label: dict(counts) for label, counts in outcomes.items()}


def read_gold_docbin(path: str | Path) -> List[Doc]:
    try:
        docs = read_docs(path)
    except (FileNotFoundError, ValueError) as err:
        raise AnnotateError(str(err)) from err
    if not docs:
        raise AnnotateError(f"{path}: the gold DocBin holds no documents")
    return docs


def label_table_markdown(stats: Dict[str, Any]) -> str:
    """The label table of `stats`: counts per split and density (entities per
    1,000 words) of the synthetic corpus (train + validation) and the gold."""
    splits = stats["splits"]
    syn, gold = splits["synthetic"], splits["gold"]
    labels = sorted(
        set(syn["labels"]) | set(gold["labels"]),
        key=lambda label: (-gold["labels"].get(label, 0), -syn["labels"].get(label, 0), label),
    )
    lines = [
        "| label | synthetic train | synthetic validation | gold train | synthetic per 1k words | gold per 1k words |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        lines.append(
            f"| {label} | {splits['train']['labels'].get(label, 0)} | "
            f"{splits['validation']['labels'].get(label, 0)} | {gold['labels'].get(label, 0)} | "
            f"{syn['per_1000_words'].get(label, 0.0):.2f} | {gold['per_1000_words'].get(label, 0.0):.2f} |"
        )
    lines.append(
        f"| **all entities** | {splits['train']['entities']} | {splits['validation']['entities']} | "
        f"{gold['entities']} | {syn['entities_per_1000_words']:.2f} | {gold['entities_per_1000_words']:.2f} |"
    )
    for key in ("documents", "words"):
        lines.append(
            f"| ({key}) | {splits['train'][key]} | {splits['validation'][key]} | {gold[key]} | | |"
        )
    return "\n".join(lines) + "\n"


def relabel_docbin(
    gold_path: str | Path, pipeline_dir: str | Path, output_path: str | Path, *, batch_size: int = 16,
    gpu_id: int = -1,
) -> Dict[str, Any]:
    """Write (atomically) the documents of `gold_path` with the annotator's
    entities in place of the hand-made ones: the labeller's training data and
    the gap decomposition's middle corpus (real text, machine labels).
    Returns how the machine labels compare with the hand labels (strict
    entity scores) and label counts. `gpu_id` -1 runs the annotator on the CPU."""
    gold = read_gold_docbin(gold_path)
    nlp = load_labeller(pipeline_dir, gpu_id)
    relabelled: List[Doc] = []
    for reference, doc in zip(
        gold,
        tqdm(nlp.pipe((d.text for d in gold), batch_size=batch_size), total=len(gold), desc="relabel", unit="doc"),
    ):
        doc.user_data.update(reference.user_data)
        relabelled.append(doc)
    with atomic_path(output_path) as tmp:
        DocBin(store_user_data=True, docs=relabelled).to_disk(tmp)
    agreement = entity_scores(doc_spans(gold), doc_spans(relabelled))["micro"]
    return {"documents": len(relabelled), "agreement_with_hand_labels": agreement, "machine": corpus_stats(relabelled)}
