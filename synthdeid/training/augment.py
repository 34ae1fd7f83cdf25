"""Surrogate copies of the machine-labelled synthetic corpus.

The small scratch generator writes a narrow set of PII values: it repeats the
values it saw in the gold notes and never writes some common forms (none of
its dates has a month name, against a fifth of MEDDOCAN's test dates). A
surrogate copy keeps a labelled note's text and gives each entity a fresh
value of its label: the `pii_redactor`'s Faker surrogates (names, streets,
towns, hospitals, identifiers of the same shape, ...) and, for dates, a random
date written in one of the ways Spanish notes write dates. The labels move with
the values, so a copy needs no annotator, and it holds no gold PII value the
generator copied. Values the redactor has no surrogate for (a sex, an age in
words) stay as written.
"""

from __future__ import annotations

import datetime as dt
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from tqdm import tqdm

from .corpus import ID_KEY, RawDoc, corpus_stats, to_doc
from .behaviour import frame_values
from ..io import atomic_path, read_docs
from .narrative import filler_sentences, narrative_notes, usable_values
from ..redact import MONTHS, PIIRedactor
from .tokenizer import make_nlp

FIRST_DATE = dt.date(1930, 1, 1)
LAST_DATE = dt.date(2020, 12, 31)


def _month(date: dt.date) -> str:
    return MONTHS[date.month - 1]


# One way of writing a date each; `random_date_text` picks one uniformly, so
# forms with a month name, which the generator never writes, are 5 of the 12.
DATE_WRITINGS: Sequence[Callable[[dt.date], str]] = (
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",
    lambda d: f"{d.day}/{d.month}/{d.year}",
    lambda d: f"{d.day:02d}-{d.month:02d}-{d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}",
    lambda d: f"{d.month:02d}/{d.year}",
    lambda d: f"{d.day} de {_month(d)} de {d.year}",
    lambda d: f"{_month(d)} de {d.year}",
    lambda d: f"{_month(d).capitalize()} de {d.year}",
    lambda d: f"{_month(d)} del {d.year}",
    lambda d: f"{_month(d)} {d.year}",
    lambda d: str(d.year),
)


def random_date_text(rng: random.Random) -> str:
    """A random date between 1930 and 2020 in a random `DATE_WRITINGS` form."""
    date = FIRST_DATE + dt.timedelta(days=rng.randrange((LAST_DATE - FIRST_DATE).days + 1))
    return rng.choice(DATE_WRITINGS)(date)


def surrogate_copy(doc: Doc, redactor: PIIRedactor, rng: random.Random, nlp: Language, name: str) -> Doc:
    """`doc`'s text with every entity's value replaced by a surrogate of its
    label, tokenised by `nlp` with the entities at the new values."""
    text = doc.text
    labelled = redactor(doc.copy())  # the copy takes the redactor's extension values, not `doc`
    surrogates = {r["start"]: r["replacement"] for r in labelled._.pii_replacements if r["strategy"] == "surrogate"}
    pieces: List[str] = []
    spans = []
    cursor = written = 0
    for ent in doc.ents:
        original = text[ent.start_char : ent.end_char]
        if ent.label_ == "FECHAS":
            value = random_date_text(rng)
        else:
            value = surrogates.get(ent.start_char, original)  # no surrogate (masked): as written
        value = value.strip() or original  # spans never start or end with whitespace
        before = text[cursor : ent.start_char]
        pieces += [before, value]
        written += len(before)
        spans.append((written, written + len(value), ent.label_))
        written += len(value)
        cursor = ent.end_char
    pieces.append(text[cursor:])
    copy, _ = to_doc(nlp, RawDoc(name=name, text="".join(pieces), spans=spans))
    copy.user_data[ID_KEY] = name
    return copy


def augment_docbin(
    input_path: str | Path, output_path: str | Path, *, copies: int = 2, narrative: int = 1000, seed: int = 0
) -> Dict[str, Any]:
    """Write (atomically) the documents of `input_path` followed by `copies`
    surrogate copies of each and `narrative` narrative notes
    (`narrative.narrative_notes`, values from surrogate copies), and return
    the corpus statistics of input and output. With `copies` and `narrative`
    0 the output holds the input documents only. Seeded: the same input,
    settings and seed give the same output."""
    if copies < 0 or narrative < 0:
        raise ValueError(f"copies and narrative notes must be 0 or more, got {copies} and {narrative}")
    nlp = make_nlp()
    docs = read_docs(input_path, nlp.vocab)
    if not docs:  # an empty corpus would train nothing, and spaCy says so only much later
        raise ValueError(f"{input_path}: no documents to copy")
    out: List[Doc] = list(docs)
    for k in range(copies):
        redactor = PIIRedactor(strategy="surrogate", seed=seed + k)
        for doc in tqdm(docs, desc=f"surrogate copy {k + 1}/{copies}", unit="doc", disable=None):
            name = f"{doc.user_data.get('name', len(out))}~surrogate{k + 1}"
            out.append(surrogate_copy(doc, redactor, random.Random(f"{seed}\0{name}"), nlp, name))
    if narrative:
        surrogates = out[len(docs):]
        if not surrogates:  # the values come from surrogate copies, never from the notes as written
            redactor = PIIRedactor(strategy="surrogate", seed=seed)
            surrogates = [surrogate_copy(doc, redactor, random.Random(f"{seed}\0{k}"), nlp, f"values{k}")
                          for k, doc in enumerate(tqdm(docs, desc="surrogate values", unit="doc", disable=None))]
        values = frame_values(surrogates)
        if any(usable_values(values).values()):
            out += narrative_notes(values, filler_sentences(docs), nlp, notes=narrative, seed=seed)
        else:  # a corpus without PII values has nothing to put in prose: train on it as it is
            warnings.warn(f"{input_path}: no PII values for the narrative frames; no narrative notes added")
            narrative = 0
    with atomic_path(output_path) as tmp:
        DocBin(store_user_data=True, docs=out).to_disk(tmp)
    return {"input": corpus_stats(docs), "output": corpus_stats(out), "copies": copies, "narrative": narrative,
            "seed": seed}
