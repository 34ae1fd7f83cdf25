"""Narrative training notes: PII in running prose, built from synthetic values.

MEDDOCAN's notes, and so the generator's, put most identifiers in a fixed
header; a pipeline trained on them learns the header and misses a name in
prose (docs/recall_outside_template.md). Gold data cannot fix that; synthetic
data can. `narrative_notes` writes short notes that mix sentences of the
labelled synthetic notes that hold no entity with sentences that put a PII
value into a narrative frame: names after verbs and prepositions, at the start
and end of a sentence, in lower and upper case; places, identifiers, phones,
e-mails and dates in prose.

The values come from the surrogate copies (`augment.surrogate_copy`), never
from gold text. The frames are the "narrative" ones of the language's frames
file (`frames.py`), which shares no sentence with its behavioural frames, so
the behavioural set still measures sentences the pipeline has not seen.
Frames hold no PII of their own: an unlabelled age or place in a frame would
teach the pipeline to leave it.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .corpus import ID_KEY, RawDoc, to_doc

if TYPE_CHECKING:
    from .frames import Frames

# Of the values of "cased" keys (names, places), this share is written in
# lower case, and as many in upper case.
CASE_SHARE = 0.1
SENTENCE = re.compile(r"[^.\n]+[.]")


def filler_sentences(docs: Sequence[Doc], min_words: int = 5, max_words: int = 40) -> List[str]:
    """Sentences of `docs` that overlap no entity, as running prose for the
    narrative notes (a sentence is a run of text up to a full stop, within a line)."""
    found: Dict[str, None] = {}
    for doc in docs:
        taken = [(ent.start_char, ent.end_char) for ent in doc.ents]
        for match in SENTENCE.finditer(doc.text):
            start, end = match.span()
            text = match.group().strip()
            if min_words <= len(text.split()) <= max_words and not any(s < end and start < e for s, e in taken):
                found[text] = None
    return list(found)


def usable_values(values: Mapping[str, Sequence[str]], frames: Mapping[str, Sequence[str]],
                  kind_of: Callable[[str], Optional[str]]) -> Dict[str, List[str]]:
    """The values of the labels that have narrative `frames` (label ->
    frames), of a form that fits them: an age frame reads "a los {X} de ...",
    so ages in words ("Adolescente") are left out."""
    return {label: [v for v in values.get(label, ()) if kind_of(label) != "age" or any(c.isdigit() for c in v)]
            for label in frames}


def _cased(value: str, cased: bool, rng: random.Random) -> str:
    if cased:
        draw = rng.random()
        if draw < CASE_SHARE:
            return value.lower()
        if draw < 2 * CASE_SHARE:
            return value.upper()
    return value


def narrative_notes(
    values: Mapping[str, Sequence[str]],
    fillers: Sequence[str],
    nlp: Language,
    *,
    notes: int,
    frames: Frames,
    kind_of: Callable[[str], Optional[str]],
    seed: int = 0,
    pii_sentences: int = 3,
    filler_sentences_per_note: int = 3,
) -> List[Doc]:
    """`notes` Docs, each `pii_sentences` narrative frames of `frames`
    filled with values of their label (labels without values are skipped)
    and `filler_sentences_per_note` entity-free sentences, shuffled (seeded)."""
    by_label = frames.by_label("narrative", values, kind_of)
    values = usable_values(values, by_label, kind_of)
    filled = [(label, frame) for label, texts in by_label.items() if values.get(label) for frame in texts]
    if notes and not filled:
        raise ValueError(f"no values for any narrative label ({', '.join(by_label) or frames.source})")
    rng = random.Random(f"{seed}\0narrative")
    docs = []
    for k in range(notes):
        sentences: List[Tuple[str, str | None, str | None]] = []
        for label, frame in rng.sample(filled, min(pii_sentences, len(filled))):
            cased = frames.is_cased(label, kind_of(label))
            sentences.append((frame, label, _cased(rng.choice(values[label]), cased, rng)))
        if fillers:
            sentences += [(text, None, None) for text in rng.sample(fillers, min(filler_sentences_per_note, len(fillers)))]
        rng.shuffle(sentences)
        text, spans = "", []
        for frame, label, value in sentences:
            text += " " if text else ""
            if label is None:
                text += frame
                continue
            before, after = frame.split("{X}")
            spans.append((len(text) + len(before), len(text) + len(before) + len(value), label))
            text += before + value + after
        name = f"narrative{k + 1}"
        doc, _ = to_doc(nlp, RawDoc(name=name, text=text, spans=spans))
        doc.user_data[ID_KEY] = name
        docs.append(doc)
    return docs
