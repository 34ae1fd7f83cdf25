"""Gold corpora in (brat standoff, JSONL, DocBin), spaCy DocBins out.

Readers yield `RawDoc(name, text, spans)` with validated character spans;
malformed input raises `CorpusError` naming the file and line. `to_doc` turns
a `RawDoc` into a `Doc` whose `doc.ents` are exactly the gold spans: a span
whose edge falls inside a token splits that token (reported as misaligned),
never dropped or stretched. `convert_corpus` writes the train / validation /
test DocBins, the tokenizer they were made with and `stats.json`;
`corpus_stats` counts the words and entities of any labelled corpus (gold,
machine-labelled, augmented).

Policies for odd data (counted in `ReadReport` and `stats.json`):

- Byte-order mark: brat counts a `.txt` file's leading BOM as a character
  (MEDDOCAN has 22 such files, their offsets include it). Offsets are checked
  against the text with the BOM, then the BOM is removed and the spans
  shifted by one; a span that starts on the BOM starts after it (one that
  covers only the BOM is an error). A leading BOM in a `.ann` file is ignored.
- Discontinuous brat spans (`T1 LABEL 0 23;24 52`: brat writes an entity
  that runs over several lines as fragments, its covered text the fragments
  joined by spaces): fragments that only whitespace separates are one span;
  fragments with other text between them are separate spans of the label
  (each of them is PII; the text between is not). Both are counted.
- Non-`T` brat lines (`#` notes, `A`/`M` attributes, `R` relations, `E`
  events, `N` normalisations, `*` equivalences) are skipped and counted by
  type; blank lines are ignored; any other line is an error.
- Whitespace at a span's edges (`" Madrid"`) is trimmed off and counted: it
  is never part of a mention, and a span cannot start or end on a space
  between tokens. A span covering only whitespace is an error.
- Overlapping or duplicate spans, empty texts and non-UTF-8 files are
  errors (MEDDOCAN has none of them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from bisect import bisect_right
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from tqdm import tqdm
from wasabi import msg

from ..io import atomic_path, decode_utf8, id_problem, json_error, read_docs, unencodable, write_json
from .inline_tags import untag
from .tokenizer import make_nlp

Span = Tuple[int, int, str]

# brat annotation ids by first character; only text-bound (T) ones are read.
SKIPPED_BRAT_TYPES = {
    "#": "note",
    "A": "attribute",
    "M": "attribute",
    "R": "relation",
    "E": "event",
    "N": "normalization",
    "*": "equivalence",
}
_T_ID = re.compile(r"T[0-9]+")
_OFFSET = re.compile(r"[0-9]+")
_BOM = "\ufeff"
MAX_EXAMPLES = 10
# user_data key of a machine-labelled document's id (the generated note's).
ID_KEY = "synthdeid_id"


class CorpusError(ValueError):
    """Malformed corpus input; the message reads `<file>:<line>: <problem>`
    (without `:<line>` when the problem is the whole file)."""


@dataclass
class RawDoc:
    """One document: its name, text and gold `(start, end, label)` character
    spans (sorted, non-overlapping, no whitespace at their edges)."""

    name: str
    text: str
    spans: List[Span]


@dataclass
class ReadReport:
    """What a reader did besides yielding documents; filled in as it reads."""

    skipped_lines: Counter = field(default_factory=Counter)  # non-T brat lines, by id type
    byte_order_marks_removed: int = 0
    trimmed_spans: int = 0  # spans whose whitespace edges were removed
    joined_fragments: int = 0  # discontinuous brat spans read as one span
    split_fragments: int = 0  # discontinuous brat spans read as several

    def as_dict(self) -> Dict[str, Any]:
        return {
            "skipped_annotation_lines": sum(self.skipped_lines.values()),
            "skipped_annotation_lines_by_type": dict(sorted(self.skipped_lines.items())),
            "byte_order_marks_removed": self.byte_order_marks_removed,
            "trimmed_spans": self.trimmed_spans,
            "discontinuous_spans_joined": self.joined_fragments,
            "discontinuous_spans_split": self.split_fragments,
        }


@dataclass
class Misaligned:
    """A gold span whose edges cut tokens of the tokenizer; `tokens` are the
    tokens that `to_doc` split so that the span is kept exactly."""

    name: str
    start: int
    end: int
    label: str
    text: str
    tokens: List[str]

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ readers


def read_brat(folder: str | Path, report: Optional[ReadReport] = None) -> Iterator[RawDoc]:
    """Documents of a brat folder: `NAME.txt` + `NAME.ann` pairs, by name.

    Only the folder's top level is read; other files (`annotation.conf`,
    hidden files) are ignored. Pairing is checked for the whole folder before
    the first document is yielded; each pair is parsed when it is reached.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: no such folder")
    # (name, ".txt" | ".ann") -> file; suffixes in any case (NAME.TXT pairs with NAME.ann)
    files: Dict[Tuple[str, str], Path] = {}
    for path in folder.iterdir():
        suffix = path.suffix.lower()
        if path.is_file() and not path.name.startswith(".") and suffix in (".txt", ".ann"):
            if (path.stem, suffix) in files:
                raise CorpusError(f"{path}: same document as {files[path.stem, suffix].name} (suffixes differ in case)")
            files[path.stem, suffix] = path
    names = sorted({name for name, _ in files})
    if not names:
        raise CorpusError(f"{folder}: no .txt/.ann files")
    for name in names:
        for have, want in ((".txt", ".ann"), (".ann", ".txt")):
            if (name, have) in files and (name, want) not in files:
                raise CorpusError(f"{files[name, have]}: no matching {name + want}")
    report = report if report is not None else ReadReport()
    for name in names:
        yield _read_brat_pair(files[name, ".txt"], files[name, ".ann"], report)


def _read_brat_pair(txt: Path, ann: Path, report: ReadReport) -> RawDoc:
    text = _read_utf8(txt)
    if not text.replace(_BOM, "").strip():
        raise CorpusError(f"{txt}: empty text")
    ann_text = _read_utf8(ann)
    if ann_text.startswith(_BOM):
        ann_text = ann_text[1:]
    spans: List[Tuple[int, int, str, int]] = []  # start, end, label, line
    ids: Dict[str, int] = {}
    for lineno, line in enumerate(ann_text.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            continue
        kind = line[0]
        if kind in SKIPPED_BRAT_TYPES:
            report.skipped_lines[kind] += 1
            continue
        where = f"{ann}:{lineno}"
        if kind != "T":
            raise CorpusError(
                f"{where}: unknown annotation line {_short(line)} (ids start with T, "
                f"{', '.join(SKIPPED_BRAT_TYPES)})"
            )
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise CorpusError(
                f"{where}: malformed text-bound line {_short(line)}: expected "
                "'T<n><TAB><LABEL> <start> <end><TAB><text>'"
            )
        ann_id, middle, covered = fields
        if not _T_ID.fullmatch(ann_id):
            raise CorpusError(f"{where}: malformed annotation id {ann_id!r} (expected T<n>)")
        if ann_id in ids:
            raise CorpusError(f"{where}: duplicate annotation id {ann_id} (first on line {ids[ann_id]})")
        ids[ann_id] = lineno
        label, _, offsets = middle.partition(" ")
        fragments = []
        for fragment in offsets.split(";"):
            parts = fragment.split(" ")
            if not label or len(parts) != 2:
                raise CorpusError(f"{where}: expected '<LABEL> <start> <end>[;<start> <end>...]', got {middle!r}")
            start_s, end_s = parts
            if not (_OFFSET.fullmatch(start_s) and _OFFSET.fullmatch(end_s)):
                raise CorpusError(f"{where}: offsets must be non-negative integers, got {start_s!r} {end_s!r}")
            start, end = int(start_s), int(end_s)
            _check_offsets(where, start, end, len(text), txt.name)
            fragments.append((start, end))
        written = " ".join(text[start:end] for start, end in fragments)
        if written != covered:
            hint = " (brat counts the .txt file's byte-order mark as a character)" if text.startswith(_BOM) else ""
            if "\r\n" in text and " ".join(text.replace("\r\n", "\n")[s:e] for s, e in fragments) == covered:
                hint = (f" (the offsets fit {txt.name} with LF line endings but it has CRLF: convert it, "
                        "e.g. with dos2unix, or annotate the CRLF text)")
            raise CorpusError(
                f"{where}: covered text {_short(covered)} differs from {txt.name}[{offsets}] "
                f"= {_short(written)}{hint}"
            )
        for start, end in _join_fragments(text, fragments, where, report):
            spans.append((start, end, label, lineno))
    if text.startswith(_BOM):
        for start, end, _, lineno in spans:
            if (start, end) == (0, 1):
                raise CorpusError(f"{ann}:{lineno}: span covers only the byte-order mark of {txt.name}")
        text = text[1:]
        spans = [(max(start - 1, 0), end - 1, label, lineno) for start, end, label, lineno in spans]
        report.byte_order_marks_removed += 1
    located = [(s, e, label, f"{ann}:{lineno}", f"line {lineno}") for s, e, label, lineno in spans]
    return RawDoc(txt.stem, text, _clean_spans(text, located, report))


def _join_fragments(text: str, fragments: List[Tuple[int, int]], where: str,
                    report: ReadReport) -> List[Tuple[int, int]]:
    """The spans of a brat entity's fragments: fragments with only whitespace
    between them are one span, others stay apart."""
    if len(fragments) == 1:
        return fragments
    ordered = sorted(fragments)
    spans = [ordered[0]]
    for start, end in ordered[1:]:
        last_start, last_end = spans[-1]
        if start < last_end:
            raise CorpusError(f"{where}: fragments {last_start}-{last_end} and {start}-{end} overlap")
        if not text[last_end:start].strip():
            spans[-1] = (last_start, end)
        else:
            spans.append((start, end))
    if len(spans) == 1:
        report.joined_fragments += 1
    else:
        report.split_fragments += 1
    return spans


def read_tagged(path: str | Path, report: Optional[ReadReport] = None) -> Iterator[RawDoc]:
    """Documents of a `.txt` file with inline tags, one document a line:
    `... <First_Name>Kari</First_Name> ...` (NorSynthClinical-PHI's form).
    Tags do not nest; an unclosed, stray or mismatched tag is an error naming
    the line. A document is named `<file stem>-<line>`."""
    path = Path(path)
    report = report if report is not None else ReadReport()
    content = _read_text_file(path)
    # Any line break ends a document: NorSynthClinical-PHI ends some with a lone CR.
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        untagged = untag(line)
        if untagged.problems:
            raise CorpusError(f"{where}: {untagged.problems[0]}")
        located = [(start, end, label, f"{where}: <{label}> at {start}", f"<{label}> at {start}")
                   for start, end, label in untagged.spans]
        yield RawDoc(f"{path.stem}-{lineno}", untagged.text, _clean_spans(untagged.text, located, report))


def read_jsonl(path: str | Path, report: Optional[ReadReport] = None) -> Iterator[RawDoc]:
    """Documents of a JSONL file, one object per line:
    `{"text": str, "spans": [{"start": int, "end": int, "label": str}], "name" or "id": optional}`.
    A span may also give `"text"`, which must equal `text[start:end]`. Unknown
    keys are errors (a misspelt key would otherwise drop data silently); blank
    lines are skipped. Without a name, a document is named `<file stem>-<line>`.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    content = _read_text_file(path)
    seen: Dict[str, int] = {}
    for lineno, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(json_error(where, err)) from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
        unknown = sorted(set(record) - {"text", "spans", "name", "id"})
        if unknown:
            raise CorpusError(f"{where}: unknown keys {unknown} (expected text, spans, name, id)")
        for key in ("text", "spans"):
            if key not in record:
                raise CorpusError(f"{where}: missing key {key!r}")
        text = record["text"]
        if not isinstance(text, str):
            raise CorpusError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise CorpusError(f"{where}: empty text")
        position = unencodable(text)
        if position is not None:
            raise CorpusError(f"{where}: 'text' holds a character UTF-8 cannot encode (a lone surrogate, at "
                              f"character {position})")
        name = record.get("name", record.get("id"))
        if name is None:
            name = f"{path.stem}-{lineno}"
        elif problem := id_problem(name, integer_ids=True):
            raise CorpusError(f"{where}: 'name'/'id' {problem}")
        name = str(name)
        if name in seen:
            raise CorpusError(f"{where}: duplicate document name {name!r} (first on line {seen[name]})")
        seen[name] = lineno
        if not isinstance(record["spans"], list):
            raise CorpusError(f"{where}: 'spans' must be a list")
        located = []
        for i, span in enumerate(record["spans"], start=1):
            at = f"{where}: span {i}"
            if not isinstance(span, dict):
                raise CorpusError(f"{at}: expected an object, got {type(span).__name__}")
            unknown = sorted(set(span) - {"start", "end", "label", "text"})
            if unknown:
                raise CorpusError(f"{at}: unknown keys {unknown} (expected start, end, label, text)")
            missing = [key for key in ("start", "end", "label") if key not in span]
            if missing:
                raise CorpusError(f"{at}: missing keys {missing}")
            start, end, label = span["start"], span["end"], span["label"]
            if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)):
                raise CorpusError(f"{at}: 'start' and 'end' must be integers, got {start!r} {end!r}")
            if not isinstance(label, str) or not label.strip() or label != label.strip():
                raise CorpusError(f"{at}: 'label' must be a non-empty string without edge spaces, got {label!r}")
            _check_offsets(at, start, end, len(text), "the text")
            if "text" in span and span["text"] != text[start:end]:
                raise CorpusError(
                    f"{at}: 'text' {_short(span['text'])} differs from text[{start}:{end}] "
                    f"= {_short(text[start:end])}"
                )
            located.append((start, end, label, at, f"span {i}"))
        yield RawDoc(name, text, _clean_spans(text, located, report))


def read_docbin(path: str | Path, nlp: Language, report: Optional[ReadReport] = None,
                spans_key: Optional[str] = None) -> Iterator[RawDoc]:
    """Documents of a `.spacy` DocBin, with their `doc.ents` (or, with
    `spans_key`, the span group `doc.spans[spans_key]`) as spans. A doc's
    name is `doc.user_data["name"]` when present, else `<file stem>-<n>`."""
    path = Path(path)
    try:
        docs = read_docs(path, nlp.vocab)
    except (FileNotFoundError, ValueError) as err:
        raise CorpusError(str(err)) from err
    report = report if report is not None else ReadReport()
    seen: Dict[str, int] = {}
    for i, doc in enumerate(docs, start=1):
        where = f"{path}: document {i}"
        if not doc.text.strip():
            raise CorpusError(f"{where}: empty text")
        name = str(doc.user_data.get("name") or f"{path.stem}-{i}")
        if name in seen:
            raise CorpusError(f"{where}: duplicate document name {name!r} (first: document {seen[name]})")
        seen[name] = i
        if spans_key is not None and spans_key not in doc.spans:
            groups = ", ".join(sorted(doc.spans)) or "none"
            raise CorpusError(f"{where}: no span group {spans_key!r} (span groups: {groups})")
        entities = doc.ents if spans_key is None else doc.spans[spans_key]
        located = [
            (ent.start_char, ent.end_char, ent.label_, f"{where}: entity {j}", f"entity {j}")
            for j, ent in enumerate(entities, start=1)
        ]
        yield RawDoc(name, doc.text, _clean_spans(doc.text, located, report))


def read_any(path: str | Path, nlp: Language, report: Optional[ReadReport] = None,
             spans_key: Optional[str] = None) -> Iterator[RawDoc]:
    """A folder is read as brat, `*.jsonl` as JSONL, `*.txt` as text with
    inline tags, `*.spacy` as a DocBin (its `doc.ents`, or the span group
    `spans_key`)."""
    path = Path(path)
    if path.is_dir():
        return read_brat(path, report)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if path.suffix == ".jsonl":
        return read_jsonl(path, report)
    if path.suffix == ".txt":
        return read_tagged(path, report)
    if path.suffix == ".spacy":
        return read_docbin(path, nlp, report, spans_key)
    raise CorpusError(f"{path}: unsupported input (expected a brat folder, a .jsonl, a .txt with inline tags "
                      "or a .spacy file)")


CORPUS_MANIFEST = "corpus.json"
_PART_NAMES = {"train": ("train",), "test": ("dev", "test"), "validation": ("validation",)}


def corpus_parts(folder: str | Path) -> Dict[str, Path]:
    """The `train`, `test` and, if given, `validation` inputs of a corpus
    folder: named in its `corpus.json` (`{"train": ..., "test": ...,
    "validation": ...}`, paths relative to the folder), or found by name:
    `train`, `dev` or `test`, `validation`, each a brat folder, a `.jsonl` or
    a `.spacy` file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: no such folder")
    manifest = folder / CORPUS_MANIFEST
    if manifest.exists():
        try:
            named = json.loads(_read_utf8(manifest))
        except json.JSONDecodeError as err:
            raise CorpusError(f"{manifest}:{err.lineno}: not JSON ({err.msg})") from None
        if not isinstance(named, dict) or not all(isinstance(v, str) for v in named.values()):
            raise CorpusError(f"{manifest}: expected an object of paths, e.g. {{\"train\": \"train.spacy\", "
                              f"\"test\": \"test.spacy\"}}")
        unknown = sorted(set(named) - set(_PART_NAMES))
        missing = sorted({"train", "test"} - set(named))
        if unknown or missing:
            raise CorpusError(f"{manifest}: " + "; ".join(
                ([f"unknown parts {', '.join(unknown)}"] if unknown else [])
                + ([f"missing parts {', '.join(missing)}"] if missing else []))
                + f" (parts: {', '.join(_PART_NAMES)})")
        parts = {part: folder / path for part, path in named.items()}
        for part, path in parts.items():
            if not path.exists():
                raise CorpusError(f"{manifest}: {part}: {path} does not exist")
        return parts
    parts = {}
    for part, names in _PART_NAMES.items():
        found = [candidate for name in names for candidate in (folder / name, folder / f"{name}.spacy",
                                                               folder / f"{name}.jsonl") if candidate.exists()]
        if len(found) > 1:
            raise CorpusError(f"{folder}: {', '.join(p.name for p in found)} could each be the {part} set: "
                              f"name it in {CORPUS_MANIFEST}")
        if found:
            parts[part] = found[0]
    missing = [part for part in ("train", "test") if part not in parts]
    if missing:
        raise CorpusError(f"{folder}: no {' and no '.join(missing)} set (expected train and dev or test, as brat "
                          f"folders, .jsonl or .spacy files, or a {CORPUS_MANIFEST} naming them)")
    return parts


def read_label_map(path: str | Path) -> Dict[str, Optional[str]]:
    """A label map: a JSON object from a corpus's label to the label to use
    instead (a rename, or a merge where several map to one) or to null (drop
    its spans). Labels it does not name are kept."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such label map")
    try:
        mapping = json.loads(_read_utf8(path))
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    if not isinstance(mapping, dict) or not all(
            isinstance(value, str) and value.strip() == value and value or value is None
            for value in mapping.values()):
        raise CorpusError(f"{path}: expected an object from labels to labels or null, e.g. "
                          f"{{\"Health_Care_Unit\": \"Location\", \"Age\": null}}")
    return mapping


def map_labels(doc: RawDoc, mapping: Mapping[str, Optional[str]], counts: Counter) -> RawDoc:
    """`doc` with its labels renamed and its dropped labels' spans removed;
    counts "renamed LABEL" and "dropped LABEL"."""
    spans = []
    for start, end, label in doc.spans:
        if label not in mapping:
            spans.append((start, end, label))
        elif mapping[label] is None:
            counts[f"dropped {label}"] += 1
        else:
            counts[f"renamed {label}"] += 1
            spans.append((start, end, mapping[label]))
    return RawDoc(doc.name, doc.text, spans)


def _read_text_file(path: Path) -> str:
    """The UTF-8 text of a line-per-document file, without a leading BOM."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    content = _read_utf8(path)
    return content[1:] if content.startswith(_BOM) else content


def _read_utf8(path: Path) -> str:
    return decode_utf8(path.read_bytes(), str(path), CorpusError)


def _check_offsets(where: str, start: int, end: int, length: int, of: str) -> None:
    if start < 0 or end < 0:
        raise CorpusError(f"{where}: negative offset ({start}, {end})")
    if start >= end:
        raise CorpusError(f"{where}: start {start} is not before end {end}")
    if end > length:
        raise CorpusError(f"{where}: span {start}-{end} ends past the end of {of} ({length} characters)")


def _clean_spans(text: str, located: Iterable[Tuple[int, int, str, str, str]], report: ReadReport) -> List[Span]:
    """Trim whitespace edges, then sort and reject overlaps. `located` items
    are `(start, end, label, where, short name)`: `where` prefixes an error
    about the span, `short name` cites it from another span's error."""
    trimmed = []
    for start, end, label, where, short in located:
        covered = text[start:end]
        if not covered.strip():
            raise CorpusError(f"{where}: span {start}-{end} covers only whitespace")
        new_start = start + len(covered) - len(covered.lstrip())
        new_end = end - (len(covered) - len(covered.rstrip()))
        if (new_start, new_end) != (start, end):
            report.trimmed_spans += 1
        trimmed.append((new_start, new_end, label, where, short))
    trimmed.sort(key=lambda item: (item[0], item[1]))
    widest = None  # the span reaching furthest right so far
    for item in trimmed:
        if widest is not None and item[0] < widest[1]:
            if item[:3] == widest[:3]:
                what = "duplicates"
            elif item[:2] == widest[:2]:
                what = "has the same offsets as"
            else:
                what = "overlaps"
            raise CorpusError(
                f"{item[3]}: span {item[0]}-{item[1]} {item[2]} {what} the span on {widest[4]} "
                f"({widest[0]}-{widest[1]} {widest[2]})"
            )
        if widest is None or item[1] > widest[1]:
            widest = item
    return [(start, end, label) for start, end, label, _, _ in trimmed]


def _short(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


# ------------------------------------------------------------------ docs


def to_doc(nlp: Language, raw: RawDoc) -> Tuple[Doc, List[Misaligned]]:
    """Tokenise `raw.text` with `nlp.make_doc` and set `doc.ents` exactly to
    `raw.spans`. Tokens cut by a span edge are split there (`doc.retokenize`),
    and those spans are returned as misaligned. `doc.user_data` holds only
    `{"name": raw.name}`."""
    _validate(raw)
    doc = nlp.make_doc(raw.text)
    token_starts = [token.idx for token in doc]
    boundaries = set(token_starts) | {token.idx + len(token) for token in doc}
    cuts: Dict[int, set] = {}  # token index -> character offsets strictly inside it
    misaligned: List[Misaligned] = []
    for start, end, label in raw.spans:
        if start in boundaries and end in boundaries:
            continue
        cut_tokens = []
        for offset in (start, end):
            if offset in boundaries:
                continue
            token = doc[bisect_right(token_starts, offset) - 1]
            cuts.setdefault(token.i, set()).add(offset)
            cut_tokens.append(token.text)
        misaligned.append(Misaligned(raw.name, start, end, label, raw.text[start:end], cut_tokens))
    if cuts:
        with doc.retokenize() as retokenizer:
            for i, offsets in cuts.items():
                token = doc[i]
                bounds = [token.idx, *sorted(offsets), token.idx + len(token)]
                orths = [raw.text[a:b] for a, b in zip(bounds, bounds[1:])]
                # Each piece is its own head, as every token of an unparsed doc.
                retokenizer.split(token, orths, heads=[(token, k) for k in range(len(orths))])
    ents = []
    for start, end, label in raw.spans:
        span = doc.char_span(start, end, label=label)
        if span is None:  # cannot happen: the cuts above put a boundary at every edge
            raise AssertionError(f"{raw.name}: span {start}-{end} still off token boundaries")
        ents.append(span)
    doc.ents = ents
    doc.user_data["name"] = raw.name
    return doc, misaligned


def _validate(raw: RawDoc) -> None:
    """`to_doc`'s input checks (readers already guarantee them): offsets in
    range, no whitespace at span edges, no overlaps."""
    located = []
    for start, end, label in raw.spans:
        where = f"{raw.name}: span {start}-{end} {label}"
        _check_offsets(where, start, end, len(raw.text), "the text")
        if raw.text[start].isspace() or raw.text[end - 1].isspace():
            raise CorpusError(f"{where}: whitespace at the span's edges (the readers trim it)")
        located.append((start, end, label, where, f"{start}-{end}"))
    _clean_spans(raw.text, located, ReadReport())


T = TypeVar("T")


def split_train_validation(docs: Sequence[T], fraction: float, seed: int) -> Tuple[List[T], List[T]]:
    """Split documents (anything with a unique `.name`) into (train,
    validation). A document goes to validation by the rank of a seeded hash of
    its name, so the result depends only on the names, `fraction` and `seed`:
    not on input order, and the same on every run and machine. With
    `0 < fraction < 1`, both parts get at least one document. Both lists are
    sorted by name."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    names = [doc.name for doc in docs]
    duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
    if duplicates:
        raise ValueError(f"document names must be unique for the split; repeated: {duplicates[:5]}")
    n_validation = round(len(docs) * fraction)
    if fraction > 0:
        if len(docs) < 2:
            raise ValueError(f"a validation split needs at least 2 documents, got {len(docs)}")
        n_validation = min(max(n_validation, 1), len(docs) - 1)

    def rank(doc: T) -> str:
        return hashlib.sha256(f"{seed}\x00{doc.name}".encode("utf-8")).hexdigest()

    validation_names = {doc.name for doc in sorted(docs, key=rank)[:n_validation]}
    by_name = sorted(docs, key=lambda doc: doc.name)
    return (
        [doc for doc in by_name if doc.name not in validation_names],
        [doc for doc in by_name if doc.name in validation_names],
    )


# ------------------------------------------------------------------ conversion


def convert_corpus(
    train_path: str | Path,
    test_path: str | Path,
    output_dir: str | Path,
    *,
    validation_path: str | Path | None = None,
    lang: str = "es",
    label_map: Optional[Mapping[str, Optional[str]]] = None,
    spans_key: Optional[str] = None,
    kind_of: Optional[Callable[[str], Tuple[Optional[str], str]]] = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    limit: Optional[int] = None,
) -> Dict[str, Any]:
    """Convert a gold corpus into `output_dir/{train,validation,test}.spacy`,
    `output_dir/tokenizer/` (the `make_nlp(lang)` pipeline) and
    `output_dir/stats.json`; returns the stats. The validation split is
    `validation_path` if given, else carved from the train input
    (`split_train_validation`). `label_map` renames, merges or drops labels
    (`read_label_map`); `spans_key` reads a DocBin's span group instead of its
    `doc.ents`. `kind_of(label)` gives a label's (kind or None, where it came
    from) for the stats and the printed label table (the script passes
    `synthdeid.kinds.LabelKinds`), so a wrong guess is seen before anything
    is trained. `limit`:
    read only the first N documents of each input (None or 0: all). Everything is computed before anything is written, and each
    output is written atomically."""
    began = time.perf_counter()
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    limit = limit or None
    output_dir = Path(output_dir)
    if Path(train_path).resolve() == Path(test_path).resolve():
        raise CorpusError(f"{train_path}: given as both train and test; the test set must be other documents "
                          "(an evaluation on training data is invalid)")
    if output_dir.exists() and not output_dir.is_dir():
        raise CorpusError(f"{output_dir}: is a file; the output must be a folder (give another path)")
    nlp = make_nlp(lang)
    default_nlp = spacy.blank(lang)

    inputs: Dict[str, Dict[str, Any]] = {}
    raw: Dict[str, List[RawDoc]] = {}
    given = {"train": train_path, "test": test_path, **({"validation": validation_path} if validation_path else {})}
    for key, path in given.items():
        report = ReadReport()
        docs = list(itertools.islice(read_any(path, nlp, report, spans_key), limit))
        if not docs:
            raise CorpusError(f"{path}: no documents")
        mapped: Counter = Counter()
        if label_map:
            docs = [map_labels(doc, label_map, mapped) for doc in docs]
        raw[key] = docs
        inputs[key] = {"path": str(path), "documents": len(docs), **report.as_dict(),
                       **({"label_map": dict(sorted(mapped.items()))} if label_map else {})}
        msg.info(f"Read {len(docs)} documents from {path}")
    if "validation" in raw:
        train_docs, validation_docs = raw["train"], raw["validation"]
    else:
        if len(raw["train"]) < 2:
            raise CorpusError(f"{train_path}: {len(raw['train'])} document; a validation split needs at least 2 "
                              "(add documents, or raise --limit)")
        train_docs, validation_docs = split_train_validation(raw["train"], validation_fraction, seed)
    splits = {"train": train_docs, "validation": validation_docs, "test": raw["test"]}

    docbins: Dict[str, DocBin] = {}
    split_stats: Dict[str, Dict[str, Any]] = {}
    for split, docs in splits.items():
        docbin = DocBin(store_user_data=True)
        labels: Counter = Counter()
        aligned_default = 0
        misaligned: List[Misaligned] = []
        for doc_raw in tqdm(docs, desc=f"convert {split}", unit="doc", disable=None):
            doc, cut = to_doc(nlp, doc_raw)
            docbin.add(doc)
            misaligned.extend(cut)
            labels.update(label for _, _, label in doc_raw.spans)
            default_doc = default_nlp.make_doc(doc_raw.text)
            aligned_default += sum(default_doc.char_span(s, e) is not None for s, e, _ in doc_raw.spans)
        n_spans = sum(labels.values())
        docbins[split] = docbin
        split_stats[split] = {
            "documents": len(docs),
            "spans": n_spans,
            "labels": dict(sorted(labels.items(), key=lambda item: (-item[1], item[0]))),
            "aligned_by_tokenizer": n_spans - len(misaligned),
            "alignment_rate": _rate(n_spans - len(misaligned), n_spans),
            "aligned_by_default_tokenizer": aligned_default,
            "alignment_rate_default_tokenizer": _rate(aligned_default, n_spans),
            "realigned_by_splitting": len(misaligned),
            "misaligned_examples": [m.as_dict() for m in misaligned[:MAX_EXAMPLES]],
        }

    stats = {
        "inputs": inputs,
        "validation_fraction": None if "validation" in raw else validation_fraction,
        "seed": seed,
        "limit": limit,
        "lang": lang,
        "tokenizer": f"tokenizer/ (spacy.blank({lang!r}) with synthdeid.training.tokenizer rules)",
        "splits": split_stats,
    }
    if kind_of is not None:
        labels = sorted({label for split in split_stats.values() for label in split["labels"]})
        stats["label_kinds"] = {label: dict(zip(("kind", "source"), kind_of(label))) for label in labels}
    _print_summary(stats)

    # The old stats.json would say a run finished while new and old outputs
    # sit side by side: remove it before writing anything.
    (output_dir / "stats.json").unlink(missing_ok=True)
    with atomic_path(output_dir / "tokenizer") as tmp:
        nlp.to_disk(tmp)
    for split, docbin in docbins.items():
        with atomic_path(output_dir / f"{split}.spacy") as tmp:
            docbin.to_disk(tmp)
    stats["seconds"] = round(time.perf_counter() - began, 2)
    write_json(output_dir / "stats.json", stats)  # last: its presence means the step finished
    msg.good(f"Wrote {output_dir}/{{train,validation,test}}.spacy, tokenizer/ and stats.json "
             f"in {stats['seconds']:.1f} s")
    return stats


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 1.0


def _print_summary(stats: Dict[str, Any]) -> None:
    splits = stats["splits"]
    labels = sorted({label for s in splits.values() for label in s["labels"]},
                    key=lambda label: -sum(s["labels"].get(label, 0) for s in splits.values()))
    kinds = stats.get("label_kinds")
    rows = [[label, *(s["labels"].get(label, 0) for s in splits.values())] for label in labels]
    rows.append(["(documents)", *(s["documents"] for s in splits.values())])
    rows.append(["(spans)", *(s["spans"] for s in splits.values())])
    header = ["label", *splits]
    if kinds:
        header.append("kind (from)")
        for row in rows:
            row.append(f"{kinds[row[0]]['kind'] or 'none: masked'} ({kinds[row[0]]['source']})" if row[0] in kinds
                       else "")
    msg.divider("Label counts")
    msg.table(rows, header=header, aligns=["l"] + ["r"] * len(splits) + ["l"] * (len(header) - len(splits) - 1),
              max_col=60)
    unknown = [label for label in labels if kinds and kinds[label]["kind"] is None]
    if unknown:
        msg.warn(f"Labels with no kind: {', '.join(unknown)}. The redactor masks them and the safety net cannot "
                 "label them; give their kinds in a JSON file of label -> kind (--vars.label_kinds).")
    for split, s in splits.items():
        msg.info(
            f"{split}: {s['aligned_by_tokenizer']}/{s['spans']} spans on token boundaries "
            f"({s['alignment_rate']:.2%}; spaCy's own tokenizer {s['alignment_rate_default_tokenizer']:.2%}); "
            f"{s['realigned_by_splitting']} kept by splitting tokens"
        )
        for example in s["misaligned_examples"][:5]:
            msg.text(
                f"  {example['name']} {example['start']}-{example['end']} {example['label']} "
                f"{example['text']!r} cut tokens {example['tokens']}"
            )
    for key, info in stats["inputs"].items():
        if info["skipped_annotation_lines"] or info["byte_order_marks_removed"] or info["trimmed_spans"]:
            msg.info(
                f"{key} input: skipped {info['skipped_annotation_lines']} non-T annotation lines "
                f"{info['skipped_annotation_lines_by_type']}, removed {info['byte_order_marks_removed']} "
                f"byte-order marks, trimmed {info['trimmed_spans']} spans"
            )


def corpus_stats(docs: Iterable[Doc]) -> Dict[str, Any]:
    """Documents, words (non-whitespace tokens), entities, entities per label
    and per-label density (entities per 1,000 words)."""
    n_docs = n_words = 0
    labels: Counter = Counter()
    for doc in docs:
        n_docs += 1
        # token.text, not token.is_space: docs read with a bare Vocab lack lexeme flags.
        n_words += sum(not token.text.isspace() for token in doc)
        labels.update(ent.label_ for ent in doc.ents)
    return {
        "documents": n_docs,
        "words": n_words,
        "entities": sum(labels.values()),
        "labels": dict(sorted(labels.items(), key=lambda item: (-item[1], item[0]))),
        "per_1000_words": {label: _density(n, n_words) for label, n in sorted(labels.items())},
        "entities_per_1000_words": _density(sum(labels.values()), n_words),
    }


def _density(count: int, words: int) -> float:
    return round(1000 * count / words, 4) if words else 0.0
