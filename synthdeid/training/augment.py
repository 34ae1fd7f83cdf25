"""Surrogate copies of the machine-labelled synthetic corpus.

The small scratch generator writes a narrow set of PII values: it repeats the
values it saw in the gold notes and never writes some common forms (none of
its dates has a month name, against a fifth of MEDDOCAN's test dates). A
surrogate copy keeps a labelled note's text and gives each entity a fresh
value of its label's kind: the `pii_redactor`'s Faker surrogates in the
corpus's language (names, streets, towns, hospitals, identifiers of the same
shape, ...) and, for dates, a random date written in one of the ways the
language writes dates (Spanish notes' own forms; CLDR's elsewhere). The
labels move with the values, so a copy needs no annotator, and it holds no gold PII value the
generator copied. Values the redactor has no surrogate for (a sex, an age in
words) stay as written. Names come from the language's Faker locale, or,
with `name_pool` "script", from every Faker locale of the language's script
(no_NO alone has 200 first names and 101 surnames; docs/languages.md has
what each choice gives on Nor-DeID).
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from tqdm import tqdm

from .corpus import ID_KEY, RawDoc, corpus_stats, to_doc
from .behaviour import frame_values
from ..io import atomic_path, read_docs
from .narrative import filler_sentences, narrative_notes, usable_values
from ..kinds import LabelKinds
from ..redact import MONTHS, PIIRedactor, faker_locale, locale_names
from .frames import load_frames
from .tokenizer import make_nlp

NAME_POOLS = ("locale", "script")
FIRST_DATE = dt.date(1930, 1, 1)
LAST_DATE = dt.date(2020, 12, 31)


def _month(date: dt.date) -> str:
    return MONTHS[date.month - 1]


# One way of writing a date each, in Spanish notes; `random_date_text` picks
# one uniformly, so forms with a month name, which the generator never writes,
# are 5 of the 12.
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


# CLDR's date formats (Babel): the language's numeric, abbreviated and long
# forms, month and year, and the year, and ISO; skeletons: day and month in
# the language's order ("10. mars", "March 10").
CLDR_DATE_FORMATS = ("short", "medium", "long", "MMMM y", "MMM y", "y", "yyyy-MM-dd")
CLDR_DATE_SKELETONS = ("MMMMd",)


def date_writings(lang: str) -> Sequence[Callable[[dt.date], str]]:
    """The ways dates are written in `lang`: `DATE_WRITINGS` in Spanish,
    CLDR's forms in any other language."""
    if lang == "es":
        return DATE_WRITINGS
    from babel.dates import format_date, format_skeleton

    return (tuple(lambda d, form=form: format_date(d, form, locale=lang) for form in CLDR_DATE_FORMATS)
            + tuple(lambda d, form=form: format_skeleton(form, d, locale=lang) for form in CLDR_DATE_SKELETONS))


def random_date_text(rng: random.Random, writings: Sequence[Callable[[dt.date], str]] = DATE_WRITINGS) -> str:
    """A random date between 1930 and 2020 in a random form of `writings`."""
    date = FIRST_DATE + dt.timedelta(days=rng.randrange((LAST_DATE - FIRST_DATE).days + 1))
    return rng.choice(writings)(date)


def _script(name: str) -> str:
    """The writing system of a name's first letter (LATIN, CYRILLIC, ...)."""
    letter = next((c for c in name if c.isalpha()), "")
    return unicodedata.name(letter, "?").split()[0] if letter else "?"


def same_script_locales(locale: str) -> List[str]:
    """Faker's locales whose first names are written mostly in the script of
    `locale`'s (every Latin-script locale for no_NO)."""
    from faker.config import AVAILABLE_LOCALES

    def script_of(code: str) -> Optional[str]:
        try:
            pool = locale_names((code,))
        except ValueError:  # a locale without names of its own
            return None
        names = pool.female + pool.male
        return Counter(map(_script, names)).most_common(1)[0][0] if names else None

    own = script_of(locale)
    return [code for code in sorted(AVAILABLE_LOCALES) if own and script_of(code) == own]


def surrogate_copy(doc: Doc, redactor: PIIRedactor, rng: random.Random, nlp: Language, name: str,
                   writings: Sequence[Callable[[dt.date], str]] = DATE_WRITINGS) -> Doc:
    """`doc`'s text with every entity's value replaced by a surrogate of its
    label's kind (`redactor`'s; a date: a random date in one of `writings`),
    tokenised by `nlp` with the entities at the new values."""
    labelled = redactor(doc.copy())  # the copy takes the redactor's extension values, not `doc`
    surrogates = {r["start"]: r["replacement"] for r in labelled._.pii_replacements if r["strategy"] == "surrogate"}
    values = []
    for ent in doc.ents:
        if redactor.kind_of(ent.label_)[0] == "date":
            values.append(random_date_text(rng, writings))
        else:
            values.append(surrogates.get(ent.start_char, ent.text))  # no surrogate (masked): as written
    return with_values(doc, values, nlp, name)


def with_values(doc: Doc, values: Sequence[str], nlp: Language, name: str,
                unlabelled: Sequence[Tuple[int, int, str]] = ()) -> Doc:
    """`doc`'s text with its entities' values replaced by `values` (one per
    entity, in order) and the (start, end, value) character spans of
    `unlabelled` (outside every entity) too, tokenised by `nlp` with the
    entities at the new values."""
    text = doc.text
    edits = sorted([(ent.start_char, ent.end_char, value.strip() or ent.text, ent.label_)
                    for ent, value in zip(doc.ents, values)]  # spans never start or end with whitespace
                   + [(start, end, value, None) for start, end, value in unlabelled])
    pieces: List[str] = []
    spans = []
    cursor = written = 0
    for start, end, value, label in edits:
        before = text[cursor:start]
        pieces += [before, value]
        written += len(before)
        if label is not None:
            spans.append((written, written + len(value), label))
        written += len(value)
        cursor = end
    pieces.append(text[cursor:])
    copy, _ = to_doc(nlp, RawDoc(name=name, text="".join(pieces), spans=spans))
    copy.user_data[ID_KEY] = name
    return copy


def augment_docbin(
    input_path: str | Path, output_path: str | Path, *, copies: int = 2, narrative: int = 1000, seed: int = 0,
    lang: str = "es", label_kinds: Optional[Mapping[str, Any]] = None, frames: Optional[str | Path] = None,
    name_pool: str = "locale",
) -> Dict[str, Any]:
    """Write (atomically) the documents of `input_path` followed by `copies`
    surrogate copies of each and `narrative` narrative notes
    (`narrative.narrative_notes`, values from surrogate copies, in the
    frames of `frames` or of `lang`), and return the corpus statistics of
    input and output. Surrogates are of each label's kind (`label_kinds`
    over the shipped schemes and guesses) in `lang`. With `copies` and
    `narrative` 0 the output holds the input documents only. Names come from
    the language's Faker locale (`name_pool` "locale") or from every locale
    of its script ("script"). Seeded: the same input, settings and seed give
    the same output."""
    if copies < 0 or narrative < 0:
        raise ValueError(f"copies and narrative notes must be 0 or more, got {copies} and {narrative}")
    if name_pool not in NAME_POOLS:
        raise ValueError(f"name_pool must be one of {', '.join(NAME_POOLS)}, got {name_pool!r}")
    nlp = make_nlp(lang)
    frames_found = load_frames(lang, frames) if narrative else None
    docs = read_docs(input_path, nlp.vocab)
    if not docs:  # an empty corpus would train nothing, and spaCy says so only much later
        raise ValueError(f"{input_path}: no documents to copy")
    writings = date_writings(lang)
    kind_of = LabelKinds(label_kinds).kind

    locale = faker_locale(lang)
    name_locales = same_script_locales(locale) if name_pool == "script" else []

    def surrogates_of(seed_k: int) -> PIIRedactor:
        return PIIRedactor(strategy="surrogate", seed=seed_k, locale=locale, label_kinds=label_kinds,
                           name_locales=name_locales)

    out: List[Doc] = list(docs)
    for k in range(copies):
        redactor = surrogates_of(seed + k)
        for doc in tqdm(docs, desc=f"surrogate copy {k + 1}/{copies}", unit="doc", disable=None):
            name = f"{doc.user_data.get('name', len(out))}~surrogate{k + 1}"
            out.append(surrogate_copy(doc, redactor, random.Random(f"{seed}\0{name}"), nlp, name, writings))
    if narrative:
        surrogates = out[len(docs):]
        if not surrogates:  # the values come from surrogate copies, never from the notes as written
            redactor = surrogates_of(seed)
            surrogates = [surrogate_copy(doc, redactor, random.Random(f"{seed}\0{k}"), nlp, f"values{k}", writings)
                          for k, doc in enumerate(tqdm(docs, desc="surrogate values", unit="doc", disable=None))]
        values = frame_values(surrogates, kind_of)
        if any(usable_values(values, frames_found.by_label("narrative", values, kind_of), kind_of).values()):
            out += narrative_notes(values, filler_sentences(docs), nlp, notes=narrative, frames=frames_found,
                                   kind_of=kind_of, seed=seed)
        else:  # nothing to put in prose (no PII values, or no frames): train on the corpus as it is
            warnings.warn(f"{input_path}: no PII values for the narrative frames ({frames_found.source}); "
                          "no narrative notes added")
            narrative = 0
    with atomic_path(output_path) as tmp:
        DocBin(store_user_data=True, docs=out).to_disk(tmp)
    return {"input": corpus_stats(docs), "output": corpus_stats(out), "copies": copies, "narrative": narrative,
            "seed": seed, "name_locales": len(name_locales)}
