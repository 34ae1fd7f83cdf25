"""De-identification on Ray (the `synthdeid[ray]` extra): the same pipeline,
redactor settings and outputs as the local engine, on the actors of a local
Ray instance or of a cluster (`address`).

- `ray_pipe`: what `synthdeid-deidentify --engine ray` runs. The input is
  read and checked where the command runs (bad records are reported by the
  same reader, by file and line), batches go to a pool of actors that each
  load the pipeline once, and results come back in input order, with a
  bounded number of batches in flight, so memory stays flat.
- `deidentify_dataset`: for data already in Ray (Parquet, a data lake): a
  Ray Dataset of `id` and `text` rows mapped with `map_batches` through the
  same callable class.

Surrogates agree across actors only with `consistency = "keyed"` (or per
document, the default); `corpus` keeps its mapping in one process and is
refused. Every actor gets the hash key (`SYNTHDEID_HASH_KEY`) through its
runtime environment, not through the pipeline's config; Ray keeps a runtime
environment with the job's metadata, where whoever can inspect the cluster's
jobs can read it: on a shared cluster, give the pipeline a `hash_key_file`
on storage only its nodes read, and unset the variable.
"""

from __future__ import annotations

import json
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from .io import doc_words
from .parallel import actor_map, runtime_env

ROW = Tuple[str, Any]  # (text, the caller's context for it)


class Deidentified:
    """One document's result, as the writers read it."""

    __slots__ = ("deidentified", "replacements", "words")

    def __init__(self, deidentified: str, replacements: List[Dict[str, Any]], words: int):
        self.deidentified = deidentified
        self.replacements = replacements
        self.words = words

    @classmethod
    def of_doc(cls, doc) -> "Deidentified":
        return cls(doc._.deidentified, doc._.pii_replacements, doc_words(doc))


class Deidentifier:
    """Loads the pipeline, with its `pii_redactor` configured, once per actor;
    called on a batch of `id` and `text` columns (Ray Data's `map_batches`)
    or on a list of texts (`texts`)."""

    def __init__(self, model: str, redactor: Mapping[str, Any], max_length: int = 0, batch_size: int = 32):
        from .deidentify import load_redacting_pipeline

        self.nlp = load_redacting_pipeline(model, redactor)
        refuse_corpus_consistency(self.nlp)
        if max_length:
            self.nlp.max_length = max_length
        self.batch_size = batch_size

    def texts(self, texts: List[str]) -> List[Tuple[str, List[Dict[str, Any]], int]]:
        return [(doc._.deidentified, doc._.pii_replacements, doc_words(doc))
                for doc in self.nlp.pipe(texts, batch_size=self.batch_size)]

    def __call__(self, batch: Mapping[str, Any]) -> Dict[str, List[Any]]:
        results = self.texts([str(text) for text in batch["text"]])
        return {"id": [str(doc_id) for doc_id in batch["id"]],
                "text": [text for text, _, _ in results],
                "replacements": [json.dumps(replacements, ensure_ascii=False) for _, replacements, _ in results],
                "words": [words for _, _, words in results]}


def refuse_corpus_consistency(nlp) -> None:
    if nlp.get_pipe_config("pii_redactor").get("consistency") == "corpus":
        raise ValueError("pii_redactor: consistency 'corpus' keeps one mapping in one process; on several "
                         "workers use 'keyed' (the same surrogate for a value everywhere the key is)")


def ray_pipe(rows: Iterable[ROW], model: str, redactor: Mapping[str, Any], *, num_workers: int = 2,
             batch_size: int = 32, max_length: int = 0, address: Optional[str] = None
             ) -> Iterator[Tuple[Deidentified, Any]]:
    """(result, context) for each (text, context) of `rows`, in their order,
    de-identified by `num_workers` actors (`actor_map`)."""
    if Path(model).exists():  # a folder: the same path on every node
        model = str(Path(model).resolve())

    def batches() -> Iterator[Tuple[List[str], Tuple[Any, ...]]]:
        remaining = iter(rows)
        while batch := list(islice(remaining, batch_size)):
            texts, contexts = zip(*batch)
            yield list(texts), contexts

    results = actor_map(Deidentifier, (model, dict(redactor), max_length, batch_size), batches(),
                        num_workers=num_workers, address=address, method="texts")
    with closing(results):
        for batch, contexts in results:
            for (text, replacements, words), context in zip(batch, contexts):
                yield Deidentified(text, replacements, words), context


def deidentify_dataset(dataset, model: str, redactor: Optional[Mapping[str, Any]] = None, *,
                       num_workers: int = 2, batch_size: int = 32, max_length: int = 0):
    """A Ray Dataset of `id` and `text` rows de-identified: `id`, `text` (the
    de-identified text), `replacements` (the mapping, JSON) and `words`, by
    `num_workers` actors that each load the pipeline once. Lazy, as Ray
    Datasets are: write it (`write_parquet`, `write_json`) or iterate it."""
    return dataset.map_batches(
        Deidentifier, fn_constructor_kwargs={"model": model, "redactor": dict(redactor or {}),
                                             "max_length": max_length, "batch_size": batch_size},
        batch_size=batch_size, concurrency=num_workers, num_cpus=1, runtime_env=runtime_env())
