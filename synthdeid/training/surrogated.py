"""Gold notes with surrogate PII: the text the generator adapts on.

The generator learns the gold notes' language, form and topics; it need not
learn their identifiers, and what it never sees it cannot copy into the
synthetic corpus. The annotations say where every identifier is, so each
gold entity is replaced before adaptation:

- by the `pii_redactor`'s surrogate of its label's kind, consistent within a
  note (the same name, the same fake), in the corpus's language; dates move
  by the note's own shift and keep their writing; identifiers keep their
  shape;
- a date the redactor cannot read (or one a shift leaves as written, `1989`
  by a few days), by a random date in one of the language's writings;
- a country written in at least `COMMON_NOTES` gold notes (`España`), by a
  draw from those common countries of its label, weighted by how often the
  corpus writes each: Faker draws every country alike and would put
  Myanmar where the corpus writes España nine times in ten. A country that
  common singles out no note, and drawn apart from the note it tells
  nothing about it;
- a value with nothing identifying in it (`madre`, `veinte años`: no word but
  those a surrogate keeps, `synthdeid.redact.identifying_words`), as written;
- any other value the redactor has no surrogate for (an age over 89, a
  street whose fake repeats one of the note's words), by another note's
  surrogate of the same label, or, where there is none, by the label's mask.

A mention of a real value that the annotation missed (the note labels a name
once and writes it again unlabelled) takes that value's surrogate too. No
gold value is kept unless it holds nothing identifying; the stats count each
case. The labels move with the values, so the surrogated notes are a
labelled corpus like the gold one.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from tqdm import tqdm

from ..io import atomic_path, read_docs, write_json
from ..redact import PIIRedactor, faker_locale, holds_any, identifying_words, shareable_words, word_sequence
from .augment import date_writings, random_date_text, with_values
from .corpus import corpus_stats
from .privacy import MIN_DISTINCTIVE_CHARS
from .tokenizer import make_nlp

# How each gold entity got its value (the stats' keys).
HOW = ("surrogate", "common_country", "random_date", "as_written", "other_note", "mask", "unannotated_mention")
# A value written in this many notes singles out none of them (the usual
# minimum cell size of statistical disclosure control).
COMMON_NOTES = 5


def common_countries(docs: Sequence[Doc],
                     kind_of: Callable[[str], Optional[str]]) -> Dict[str, Tuple[List[str], List[int]]]:
    """label -> (countries, weights): each country of a label of kind
    "country" written in at least `COMMON_NOTES` of `docs`, as most often
    written, weighted by its number of entities."""
    notes: Dict[Tuple[str, Tuple[str, ...]], set] = {}
    writings: Dict[Tuple[str, Tuple[str, ...]], Counter] = {}
    for i, doc in enumerate(docs):
        for ent in doc.ents:
            if kind_of(ent.label_) == "country":
                key = (ent.label_, word_sequence(ent.text))
                notes.setdefault(key, set()).add(i)
                writings.setdefault(key, Counter())[ent.text] += 1
    pools: Dict[str, Tuple[List[str], List[int]]] = {}
    for key in sorted(key for key, found in notes.items() if len(found) >= COMMON_NOTES):
        countries, weights = pools.setdefault(key[0], ([], []))
        countries.append(writings[key].most_common(1)[0][0])
        weights.append(sum(writings[key].values()))
    return pools


def surrogate_values(doc: Doc, redactor: PIIRedactor, rng: random.Random,
                     writings: Sequence[Callable[[dt.date], str]],
                     countries: Optional[Mapping[str, Tuple[List[str], List[int]]]] = None
                     ) -> List[Tuple[str, Optional[str]]]:
    """(value, how) per entity of `doc`; `how` None where the redactor gave
    no surrogate free of its `forbidden_values` and the value is not to be
    kept (`surrogated_docs` fills those in). A common country (one of
    `countries`, `common_countries`) gets one draw per note."""
    labelled = redactor(doc.copy())  # the copy takes the redactor's extension values, not `doc`
    surrogates = {r["start"]: r["replacement"] for r in labelled._.pii_replacements if r["strategy"] == "surrogate"}
    values: List[Tuple[str, Optional[str]]] = []
    drawn: Dict[Tuple[str, ...], str] = {}
    for ent in doc.ents:
        kind = redactor.kind_of(ent.label_)[0]
        surrogate = surrogates.get(ent.start_char)
        common, weights = (countries or {}).get(ent.label_, ([], [])) if kind == "country" else ([], [])
        sequence = word_sequence(ent.text) if common else ()
        if common and sequence in map(word_sequence, common):
            values.append((drawn.setdefault(sequence, rng.choices(common, weights)[0]), "common_country"))
        elif surrogate is not None and not holds_any(surrogate, redactor.forbidden_values):
            values.append((surrogate, "surrogate"))
        elif kind == "date":
            values.append((random_date_text(rng, writings), "random_date"))
        elif not identifying_words(kind, ent.text, lang=redactor.language):
            values.append((ent.text, "as_written"))
        else:
            values.append((ent.text, None))
    return values


def surrogated_docs(docs: List[Doc], nlp: Language, *, lang: str, seed: int,
                    label_kinds: Optional[Mapping[str, Any]] = None,
                    forbidden: FrozenSet[Tuple[str, ...]] = frozenset(),
                    countries: Optional[Mapping[str, Tuple[List[str], List[int]]]] = None,
                    desc: str = "surrogating") -> Tuple[List[Doc], Counter]:
    """`docs` with every entity's value replaced (the module's rules), and
    how many entities got their value each way (`HOW`). No value but a date
    or a common country (`countries`, `common_countries`) holds one of
    `forbidden` (`word_sequence`s of real values). Seeded."""
    redactor = PIIRedactor(strategy="surrogate", seed=seed, locale=faker_locale(lang), label_kinds=label_kinds)
    redactor.forbidden_values = forbidden
    writings = date_writings(lang)
    chosen = [surrogate_values(doc, redactor, random.Random(f"{seed}\0{i}"), writings, countries)
              for i, doc in enumerate(tqdm(docs, desc=desc, unit="doc", disable=None))]
    by_label: Dict[str, List[str]] = {}
    for doc, values in zip(docs, chosen):
        for ent, (value, how) in zip(doc.ents, values):
            if how == "surrogate":
                by_label.setdefault(ent.label_, []).append(value)
    rng = random.Random(f"{seed}\0other notes")
    how_many: Counter = Counter()
    out = []
    for i, (doc, values) in enumerate(zip(docs, chosen)):
        filled, taken = [], {}  # one fallback per value of the note: the same name, the same stand-in
        for ent, (value, how) in zip(doc.ents, values):
            if how is None:
                key = (ent.label_, word_sequence(ent.text))
                if key not in taken:
                    pool = by_label.get(ent.label_)
                    taken[key] = (rng.choice(pool), "other_note") if pool else (f"[{ent.label_}]", "mask")
                value, how = taken[key]
            how_many[how] += 1
            filled.append(value)
        unlabelled = unannotated_mentions(doc, filled, forbidden)
        how_many["unannotated_mention"] += len(unlabelled)
        out.append(with_values(doc, filled, nlp, doc.user_data.get("name", str(i)), unlabelled))
    return out, how_many


def unannotated_mentions(doc: Doc, values: Sequence[str],
                         forbidden: FrozenSet[Tuple[str, ...]]) -> List[Tuple[int, int, str]]:
    """(start, end, value) of each mention of one of `doc`'s real entity
    values (one of `forbidden`) that the annotation missed, outside every
    entity, with that entity's new value: a note that labels `Sheila` once
    and writes her name again unlabelled keeps no trace of it."""
    text = doc.text
    inside = [(ent.start_char, ent.end_char) for ent in doc.ents]
    found: Dict[int, Tuple[int, str]] = {}
    for ent, value in sorted(zip(doc.ents, values), key=lambda pair: -len(pair[0].text)):  # longest first
        if word_sequence(ent.text) not in forbidden:
            continue
        for match in re.finditer(rf"(?<!\w){re.escape(ent.text)}(?!\w)", text, flags=re.IGNORECASE):
            start, end = match.span()
            free = not any(s < end and start < e for s, e in inside)
            if free and not any(s < end and start < e for s, (e, _) in found.items()):
                found[start] = (end, value)
    return [(start, end, value) for start, (end, value) in sorted(found.items())]


def real_values(docs: Iterable[Doc], lang: str,
                label_kinds: Optional[Mapping[str, Any]] = None) -> FrozenSet[Tuple[str, ...]]:
    """The `word_sequence`s of every entity of `docs` that holds an
    identifying word (`synthdeid.redact.identifying_words`: a name, a
    street, a town, an identifier; not a date, a sex, an age under 90 or a
    bare kinship word) and is no shorter than the privacy report's
    distinctive strings (two words or six characters: `12` or `Ana` may
    recur by chance, `Valeria` or `Roca Caballero` may not)."""
    locale = faker_locale(lang)
    redactor = PIIRedactor(strategy="mask", locale=locale, label_kinds=label_kinds)
    found = set()
    for doc in docs:
        for ent in doc.ents:
            kind, template = redactor.kind_of(ent.label_)
            sequence = word_sequence(ent.text)
            distinctive = len(sequence) >= 2 or len(ent.text) >= MIN_DISTINCTIVE_CHARS
            if distinctive and identifying_words(kind, ent.text, shareable_words(kind, template, locale, ent.text),
                                                 redactor.language):
                found.add(sequence)
    return frozenset(found)


def surrogate_gold(inputs: Mapping[str, str | Path], output_dir: str | Path, *, lang: str = "es", seed: int = 0,
                   label_kinds: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write `output_dir/<split>.spacy` for each split -> DocBin of `inputs`,
    with surrogate values (`surrogated_docs`; each split its own seed
    stream), and `output_dir/stats.json`; returns the stats. Every file is
    written atomically."""
    nlp = make_nlp(lang)
    output_dir = Path(output_dir)
    stats: Dict[str, Any] = {"seed": seed, "lang": lang, "splits": {}}
    corpus = {}
    for split, path in inputs.items():
        corpus[split] = read_docs(path, nlp.vocab)
        if not corpus[split]:
            raise ValueError(f"{path}: no documents to surrogate")
    every_doc = [doc for docs in corpus.values() for doc in docs]
    forbidden = real_values(every_doc, lang, label_kinds)
    kinds = PIIRedactor(strategy="mask", locale=faker_locale(lang), label_kinds=label_kinds)
    countries = common_countries(every_doc, lambda label: kinds.kind_of(label)[0])
    for split, docs in corpus.items():
        out, how_many = surrogated_docs(docs, nlp, lang=lang, seed=seed, label_kinds=label_kinds,
                                        forbidden=forbidden, countries=countries, desc=f"surrogating {split}")
        with atomic_path(output_dir / f"{split}.spacy") as tmp:
            DocBin(store_user_data=True, docs=out).to_disk(tmp)
        stats["splits"][split] = {"input": corpus_stats(docs), "output": corpus_stats(out),
                                  "values": {how: how_many[how] for how in HOW}}
    write_json(output_dir / "stats.json", stats)
    return stats
