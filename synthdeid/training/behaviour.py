"""A behavioural test set for recall outside the corpus's template.

MEDDOCAN notes put most identifiers in a fixed header ("Nombre: ...
Apellidos: ... NHC: ..."), and its test notes follow the same template, so
MEDDOCAN F1 cannot show whether a pipeline finds a name in running prose. In
the spirit of CheckList (Ribeiro et al., 2020), `build_behaviour_set` puts
real PII values into narrative frames written for that purpose: names after
titles and verbs, at the start and end of a sentence, in lower and upper
case; places, identifiers, e-mails, phones and dates in running text.

Frames and values are kept apart: the frames are data, one file per
language (`frames.py`), the values are read from the gold *test* split (no
model learns from it). Every sentence
is one Doc whose single entity is the inserted value, with the frame's id in
`doc.user_data["frame"]`. `score_behaviour` gives per-label and per-frame
recall and precision: `strict` (offsets and label), and `caught` (every
letter and digit of the value inside some predicted entity, whatever its
label: what a redactor needs).
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

from .metrics import prf

if TYPE_CHECKING:
    from .frames import Frames

# The groups the recall targets are set on, by kind (`synthdeid.kinds`).
TARGET_GROUPS = {
    "names": ("name", "first_name", "surname"),
    "e-mails": ("email",),
    "phones": ("phone",),
    "identifiers": ("identifier",),
}
# MEDDOCAN's header writes a patient's first name and surnames apart
# ("Nombre: Ana. Apellidos: Ruiz García."): `frame_values` joins them.
SPLIT_NAME_LABEL = "NOMBRE_SUJETO_ASISTENCIA"
# Kinds whose values must hold a digit, and kinds whose values must not.
DIGIT_KINDS = frozenset({"identifier", "phone", "fax"})
WORD_KINDS = frozenset({"city"})


def frame_values(docs: Iterable[Doc], kind_of: Callable[[str], Optional[str]]) -> Dict[str, List[str]]:
    """The distinct values of each label in `docs`, in order of appearance.
    A patient's first name and surnames, annotated apart in MEDDOCAN's
    header, are also joined into a full name. Identifiers and phones keep
    only values with digits, places only those without (a postal code is no
    town in prose); `kind_of` gives a label's kind."""
    values: Dict[str, Dict[str, None]] = defaultdict(dict)
    for doc in docs:
        patient = [" ".join(ent.text.split()) for ent in doc.ents if ent.label_ == SPLIT_NAME_LABEL]
        if len(patient) >= 2 and " " not in patient[0]:
            values[SPLIT_NAME_LABEL][f"{patient[0]} {patient[1]}"] = None
        for ent in doc.ents:
            text = " ".join(ent.text.split())
            digits = any(c.isdigit() for c in text)
            kind = kind_of(ent.label_)
            if (kind in DIGIT_KINDS and not digits) or (kind in WORD_KINDS and digits):
                continue
            values[ent.label_][text] = None
    return {label: list(found) for label, found in values.items()}


def _cased(value: str, frame_id: str) -> str:
    if frame_id.endswith(":lower"):
        return value.lower()
    if frame_id.endswith(":upper"):
        return value.upper()
    return value


def build_behaviour_set(test_docs: Iterable[Doc], frames: Frames, kind_of: Callable[[str], Optional[str]],
                        per_frame: int = 20, seed: int = 0) -> List[Doc]:
    """Sentences of every behavioural frame of `frames`, each with
    `per_frame` values of its label drawn (seeded) from the test docs;
    labels without values are left out."""
    values = frame_values(test_docs, kind_of)
    rng = random.Random(seed)
    vocab = Vocab()
    docs = []
    for label, label_frames in frames.by_label("behaviour", values, kind_of).items():
        pool = values[label]
        for frame_id, frame in label_frames:
            for value in rng.sample(pool, min(per_frame, len(pool))):
                value = _cased(value, frame_id)
                before, after = frame.split("{X}")
                text = before + value + after
                doc = _doc_with_entities(vocab, text, [(len(before), len(before) + len(value))], label)
                doc.user_data["frame"] = f"{label}: {frame_id}"
                doc.user_data["label"] = label
                docs.append(doc)
    return docs


def read_sentences(path) -> List[Doc]:
    """A behavioural set of sentences written by hand: a JSONL file, one
    object a line, `{"text": ..., "label": ..., "values": [...]}` (and an
    optional "frame", by default "written: <label>"), each value a substring
    of the text that is PII of that label."""
    vocab = Vocab()
    docs = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 ({err})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label, values = row["text"], row["label"], row["values"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not an object with text, label and values ({err})") from None
        spans = []
        for value in values:
            start = text.find(value)
            if not value or start < 0:
                raise ValueError(f"{path}:{number}: value {value!r} is not in the text")
            spans.append((start, start + len(value)))
        try:
            doc = _doc_with_entities(vocab, text, spans, label)
        except ValueError:
            raise ValueError(f"{path}:{number}: values overlap") from None
        doc.user_data["frame"] = row.get("frame", f"written: {label}")
        doc.user_data["label"] = label
        docs.append(doc)
    if not docs:
        raise ValueError(f"{path}: no sentences")
    return docs


def _doc_with_entities(vocab: Vocab, text: str, spans: Sequence[Tuple[int, int]], label: str) -> Doc:
    """A whitespace-and-punctuation tokenised Doc of `text` whose entities are the [start, end) `spans`."""
    words, spaces = [], []
    bounds = sorted({0, len(text), *(i for span in spans for i in span)})
    for piece_start, piece_end in zip(bounds, bounds[1:]):
        for match in re.finditer(r"\w+|[^\w\s]|\s+", text[piece_start:piece_end]):
            if match.group() == " " and words and not spaces[-1]:
                spaces[-1] = True  # one space after a token is its trailing space
            else:
                words.append(match.group())
                spaces.append(False)
    doc = Doc(vocab, words=words, spaces=spaces)
    assert doc.text == text, (doc.text, text)
    ents = [doc.char_span(start, end, label=label) for start, end in sorted(set(spans))]
    doc.ents = ents  # overlapping values raise here
    return doc


def save_behaviour_set(docs: Sequence[Doc], path) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        DocBin(attrs=["ENT_IOB", "ENT_TYPE"], store_user_data=True, docs=docs).to_disk(tmp)


def _caught(text: str, entity: Tuple[int, int], predicted: Sequence[Tuple[int, int]]) -> bool:
    """Whether every letter and digit of `entity` lies in some predicted span
    (a space between two redacted words gives nothing away)."""
    start, end = entity
    return all(any(s <= i < e for s, e in predicted) for i in range(start, end) if text[i].isalnum())


def score_behaviour(references: Sequence[Doc], predictions: Sequence[Doc],
                    kind_of: Callable[[str], Optional[str]]) -> Dict:
    """Recall and precision per label, per frame and per target group (of
    the labels' kinds, `kind_of`).
    strict: a gold entity found with its offsets and label; caught: every
    letter and digit of it inside predicted entities of any label. Precision counts
    predicted entities that match a gold entity strictly, or (caught) that
    overlap one."""
    counts: Dict[str, Dict[str, Dict[str, int]]] = {
        kind: defaultdict(lambda: {"tp": 0, "fn": 0, "fp": 0, "caught": 0, "stray": 0})
        for kind in ("label", "frame")
    }
    for reference, prediction in zip(references, predictions, strict=True):
        if reference.text != prediction.text:
            raise ValueError("reference and predicted docs have different texts")
        gold = {(ent.start_char, ent.end_char, ent.label_) for ent in reference.ents}
        predicted = [(ent.start_char, ent.end_char, ent.label_) for ent in prediction.ents]
        spans = [(s, e) for s, e, _ in predicted]
        for kind, key in (("label", reference.user_data["label"]), ("frame", reference.user_data["frame"])):
            row = counts[kind][key]
            for start, end, label in gold:
                found = (start, end, label) in predicted
                row["tp" if found else "fn"] += 1
                row["caught"] += _caught(reference.text, (start, end), spans)
            row["fp"] += sum(item not in gold for item in predicted)
            row["stray"] += sum(not any(s < ge and gs < e for gs, ge, _ in gold) for s, e, _ in predicted)

    def summary(row: Mapping[str, int]) -> Dict:
        strict = prf(row["tp"], row["fp"], row["fn"])
        total = row["tp"] + row["fn"]
        predicted = row["tp"] + row["fp"]
        return {
            "support": total,
            "strict": {"p": strict["p"], "r": strict["r"], "f": strict["f"]},
            "caught": {"r": row["caught"] / total if total else 0.0,
                       "p": (predicted - row["stray"]) / predicted if predicted else 0.0},
        }

    per_label = {label: summary(row) for label, row in sorted(counts["label"].items())}
    groups = {}
    for group, kinds in TARGET_GROUPS.items():
        rows = [row for label, row in sorted(counts["label"].items()) if kind_of(label) in kinds]
        if rows:
            groups[group] = summary({k: sum(r[k] for r in rows) for k in rows[0]})
    everything = summary({k: sum(r[k] for r in counts["label"].values()) for k in
                          ("tp", "fn", "fp", "caught", "stray")})
    return {"micro": everything, "groups": groups, "per_label": per_label,
            "per_frame": {frame: summary(row) for frame, row in sorted(counts["frame"].items())}}
