"""Privacy report: how much of the gold train corpus reappears in the synthetic text.

Every measure compares token sequences. Tokenisation: the text is NFC-
normalised, then split into tokens matching `\\w+|[^\\w\\s]`: runs of Unicode
word characters (letters, digits, `_`, `º`) and every other non-space
character on its own; case is kept. So `Madrid.` is `Madrid` `.`,
`12/03/2018` is `12` `/` `03` `/` `2018` (five tokens) and whitespace never
matters (`Ana  Ruiz` equals `Ana Ruiz`). A word run is never split: `45` does
not occur in `145`, nor `Ana` in `Anabel`. Offsets in the report refer to the
NFC-normalised texts (the same as the originals for NFC input, the usual case).

Measures:

- n-gram recall, for each n: the share of the unique gold n-grams that occur
  anywhere in the synthetic corpus, |G_n ∩ S_n| / |G_n| (the paper reports
  5-gram recall). Also the share of synthetic n-gram positions whose n-gram
  occurs in the gold corpus (how much of the synthetic text is copied).
- Longest copied passages: for each synthetic document, the longest token
  sequence it shares with a single gold document (n-grams never span two
  documents). Found in linear time with a suffix automaton of the gold
  corpus; the longest ones are reported with where they occur.
- PII reuse: every gold entity string, unique per label (by its tokens), is
  looked up as a whole-token sequence in the synthetic documents. Short,
  common strings (`España`, an age `45`) reappear by chance, so the report
  also gives the counts for *distinctive* strings: occurring in at most one
  gold train document (anywhere in its text, not only as an entity) and at
  least 2 tokens or 6 characters long (full names, dates, record numbers,
  addresses).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
import zipfile
from bisect import bisect_right
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import spacy
from tqdm import tqdm
from wasabi import msg

from ..io import TextDoc, read_text_docs, write_json, write_text
from ..kinds import IDENTIFYING_KINDS, LabelKinds
from .corpus import CorpusError, RawDoc, read_any, read_docbin

TOKEN = re.compile(r"\w+|[^\w\s]")
UNKNOWN = -1  # id of a synthetic token absent from the gold corpus: matches nothing
SEPARATOR = -2  # ends each gold doc in the suffix automaton; no text token has it
DEFAULT_NGRAMS = (5, 8)
MIN_DISTINCTIVE_TOKENS = 2
MIN_DISTINCTIVE_CHARS = 6
MAX_DISTINCTIVE_GOLD_DOCS = 1
TOKENISATION = (
    "NFC-normalised text split into tokens matching \\w+|[^\\w\\s] (Unicode word-character runs; "
    "every other non-space character alone); case-sensitive; whitespace ignored"
)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def tokenize(text: str) -> List[str]:
    """The tokens every measure compares (see the module docstring)."""
    return TOKEN.findall(nfc(text))


def token_offsets(text: str) -> List[Tuple[int, int]]:
    """(start, end) character offsets of the tokens in `nfc(text)`."""
    return [match.span() for match in TOKEN.finditer(nfc(text))]


class _Encoder:
    """Token -> integer id. Gold tokens get ids; a token seen only in the
    synthetic text maps to UNKNOWN, as it cannot be part of a shared sequence."""

    def __init__(self) -> None:
        self.ids: Dict[str, int] = {}
        self._tokens: List[str] = []  # id -> token

    def add(self, text: str) -> List[int]:
        ids, tokens = self.ids, self._tokens
        found = []
        for token in tokenize(text):
            if token not in ids:
                ids[token] = len(tokens)
                tokens.append(token)
            found.append(ids[token])
        return found

    def lookup(self, text: str) -> List[int]:
        get = self.ids.get
        return [get(token, UNKNOWN) for token in tokenize(text)]

    def text(self, ids: Sequence[int]) -> str:
        """The tokens of `ids`, space-separated."""
        return " ".join(self._tokens[i] for i in ids)


# ---------------------------------------------------------------- n-grams


def _ngrams(ids: Sequence[int], n: int) -> Iterable[Tuple[int, ...]]:
    return zip(*(ids[i:] for i in range(n)))


def ngram_recall(gold: Sequence[Sequence[int]], synthetic: Sequence[Sequence[int]], n: int) -> Dict[str, Any]:
    """n-gram overlap of two corpora of token ids (n-grams within documents)."""
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    gold_set = set()
    for ids in gold:
        gold_set.update(_ngrams(ids, n))
    found = set()
    positions = positions_in_gold = 0
    for ids in tqdm(synthetic, desc=f"{n}-grams", unit="doc", disable=None, leave=False):
        grams = list(_ngrams(ids, n))
        positions += len(grams)
        positions_in_gold += sum(map(gold_set.__contains__, grams))
        found.update(gold_set.intersection(grams))
    return {
        "gold_unique": len(gold_set),
        "gold_unique_in_synthetic": len(found),
        "recall": _share(len(found), len(gold_set)),
        "synthetic_positions": positions,
        "synthetic_positions_in_gold": positions_in_gold,
        "synthetic_share_in_gold": _share(positions_in_gold, positions),
    }


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


# ---------------------------------------------------------------- longest copies


class SuffixAutomaton:
    """Suffix automaton (Blumer et al., 1985) of several token-id sequences,
    each followed by a separator id that no query holds (token ids and
    UNKNOWN are >= -1), so that no match spans two of them.
    Built in time linear in the total length; `longest_match` then finds the
    longest common substring with a query in time linear in the query."""

    def __init__(self, docs: Sequence[Sequence[int]]) -> None:
        self.next: List[Dict[int, int]] = [{}]
        self.link = [-1]
        self.length = [0]
        self.first_end = [-1]  # end position (inclusive) of the state's first occurrence
        self.doc_starts: List[int] = []  # global position of each doc's first token
        self._last = 0
        position = 0
        for ids in tqdm(docs, desc="index gold", unit="doc", disable=None, leave=False):
            self.doc_starts.append(position)
            for token in ids:
                self._extend(token, position)
                position += 1
            self._extend(SEPARATOR, position)
            position += 1

    def _extend(self, token: int, position: int) -> None:
        # The standard online construction: a state for the new prefix, suffix
        # links followed up to the first state that already has `token`, and
        # a clone where that transition's target stands for longer strings.
        nxt, link, length, first_end = self.next, self.link, self.length, self.first_end
        cur = len(length)
        nxt.append({})
        link.append(0)
        length.append(length[self._last] + 1)
        first_end.append(position)
        p = self._last
        while p != -1 and token not in nxt[p]:
            nxt[p][token] = cur
            p = link[p]
        if p != -1:
            q = nxt[p][token]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(length)
                nxt.append(dict(nxt[q]))
                link.append(link[q])
                length.append(length[p] + 1)
                first_end.append(first_end[q])
                while p != -1 and nxt[p].get(token) == q:
                    nxt[p][token] = clone
                    p = link[p]
                link[q] = clone
                link[cur] = clone
        self._last = cur

    def longest_match(self, ids: Sequence[int]) -> Tuple[int, int, int]:
        """(length, end in `ids`, end in the indexed docs) of the longest
        token sequence of `ids` that occurs in an indexed doc; ends are
        inclusive positions; the first such sequence of `ids` on ties;
        (0, -1, -1) when no token is shared."""
        nxt, link, length = self.next, self.link, self.length
        state = matched = 0
        best = (0, -1, -1)
        for i, token in enumerate(ids):
            while state and token not in nxt[state]:
                state = link[state]
                matched = length[state]
            state = nxt[state].get(token, 0)
            matched = matched + 1 if state else 0
            if matched > best[0]:
                best = (matched, i, self.first_end[state])
        return best

    def locate(self, end: int) -> Tuple[int, int]:
        """(doc index, token index in that doc) of a global position."""
        k = bisect_right(self.doc_starts, end) - 1
        return k, end - self.doc_starts[k]


def longest_copies(
    gold: Sequence[Sequence[int]], synthetic: Sequence[Sequence[int]]
) -> List[Tuple[int, int, int, int, int]]:
    """Per synthetic doc: (length, synthetic doc, start token, gold doc, gold
    start token) of its longest token sequence that occurs in a gold doc
    (length 0 and -1s when it shares no token)."""
    automaton = SuffixAutomaton(gold)
    copies = []
    for j, ids in enumerate(tqdm(synthetic, desc="longest copies", unit="doc", disable=None, leave=False)):
        n, end, gold_end = automaton.longest_match(ids)
        if n:
            k, gold_token = automaton.locate(gold_end)
            copies.append((n, j, end - n + 1, k, gold_token - n + 1))
        else:
            copies.append((0, j, -1, -1, -1))
    return copies


# ---------------------------------------------------------------- PII reuse


def _key_trie(keys: Iterable[Tuple[Sequence[Any], Any]]) -> Dict[Any, Any]:
    """A trie of (key, value) pairs, a key being a token sequence; the value
    sits under the entry None where its key ends (tokens are never None)."""
    root: Dict[Any, Any] = {}
    for key, value in keys:
        node = root
        for token in key:
            node = node.setdefault(token, {})
        node[None] = value
    return root


def _found_keys(root: Dict[Any, Any], tokens: Sequence[Any]) -> Iterator[Any]:
    """The values of the keys of trie `root` found in `tokens`, by start
    position (the trie walked from every position)."""
    n = len(tokens)
    for i in range(n):
        node = root.get(tokens[i])
        j = i + 1
        while node is not None:
            if None in node:
                yield node[None]
            if j == n:
                break
            node = node.get(tokens[j])
            j += 1


def _documents_holding(
    keys: Sequence[Tuple[int, ...]], docs: Sequence[Sequence[int]], desc: str
) -> List[Set[int]]:
    """For each key (a token-id sequence), the indices of the docs containing it."""
    root = _key_trie((key, index) for index, key in enumerate(keys))
    holding: List[Set[int]] = [set() for _ in keys]
    for d, ids in enumerate(tqdm(docs, desc=desc, unit="doc", disable=None, leave=False)):
        for index in _found_keys(root, ids):
            holding[index].add(d)
    return holding


def _document_frequency(
    keys: Sequence[Tuple[int, ...]], docs: Sequence[Sequence[int]], desc: str
) -> List[int]:
    """For each key (a token-id sequence), the number of docs containing it."""
    return [len(found) for found in _documents_holding(keys, docs, desc)]


def entity_strings(gold_docs: Sequence[RawDoc], encoder: _Encoder) -> Dict[str, Dict[Tuple[int, ...], str]]:
    """label -> token ids -> the first text seen, for the gold entities. Their
    tokens are added to `encoder`: an entity edge inside a word run of its
    document (`28029` of `CP28029`) makes a token the document text lacks."""
    strings: Dict[str, Dict[Tuple[int, ...], str]] = {}
    for doc in gold_docs:
        for start, end, label in doc.spans:
            text = doc.text[start:end]
            key = tuple(encoder.add(text))
            if key:
                strings.setdefault(label, {}).setdefault(key, text)
    return strings


def is_distinctive(tokens: int, text: str, gold_documents: int) -> bool:
    """Whether a gold entity string of `tokens` tokens, found in
    `gold_documents` gold train documents, singles one out (the module
    docstring's *distinctive*)."""
    return gold_documents <= MAX_DISTINCTIVE_GOLD_DOCS and (
        tokens >= MIN_DISTINCTIVE_TOKENS or len(nfc(text)) >= MIN_DISTINCTIVE_CHARS)


class GoldValueScreen:
    """The distinctive gold values of the labels `identifying` accepts,
    found in a text as whole-token sequences (as `pii_reuse` finds them):
    what a synthetic note must not hold. Built from the gold train notes the
    generator learnt from, it sees what the privacy report would count."""

    def __init__(self, gold_docs: Sequence[RawDoc], identifying: Callable[[str], bool]) -> None:
        encoder = _Encoder()
        gold_ids = [encoder.add(doc.text) for doc in gold_docs]
        strings = {label: by_key for label, by_key in entity_strings(gold_docs, encoder).items() if identifying(label)}
        keys = sorted({key for by_key in strings.values() for key in by_key})
        in_gold = dict(zip(keys, _document_frequency(keys, gold_ids, "gold values")))
        self.values: Dict[Tuple[str, ...], str] = {}  # tokens -> label
        for label in sorted(strings):
            for key, text in strings[label].items():
                if is_distinctive(len(key), text, in_gold[key]):
                    self.values.setdefault(tuple(tokenize(text)), label)
        self._trie = _key_trie(self.values.items())

    @classmethod
    def from_path(cls, gold_path: str | Path, label_kinds: Optional[Mapping[str, Any]] = None) -> "GoldValueScreen":
        """The screen of a gold corpus (`read_gold_corpus`), with the privacy
        summary's identifying kinds (`label_kinds` over the shipped schemes)."""
        kind_of = LabelKinds(label_kinds).kind
        return cls(read_gold_corpus(gold_path), lambda label: kind_of(label) in IDENTIFYING_KINDS)

    def find(self, text: str) -> Optional[str]:
        """The label of the first distinctive gold value in `text`, or None."""
        return next(_found_keys(self._trie, tokenize(text)), None)

    def digest(self) -> str:
        """A fingerprint of the values (for a resumable step's settings)."""
        listed = json.dumps(sorted([list(tokens), label] for tokens, label in self.values.items()), ensure_ascii=False)
        return hashlib.sha256(listed.encode("utf-8")).hexdigest()


def pii_reuse(
    strings: Dict[str, Dict[Tuple[int, ...], str]],
    gold_ids: Sequence[Sequence[int]],
    synthetic_ids: Sequence[Sequence[int]],
    examples: int = 5,
) -> Dict[str, Any]:
    """Per label: unique gold entity strings (`entity_strings`), how many occur
    as a whole-token sequence in the synthetic docs, the same for distinctive
    strings, and examples (distinctive and longer ones first)."""
    keys = sorted({key for by_key in strings.values() for key in by_key})
    index = {key: i for i, key in enumerate(keys)}
    in_gold = _document_frequency(keys, gold_ids, "PII in gold")
    in_synthetic = _document_frequency(keys, synthetic_ids, "PII in synthetic")

    labels: Dict[str, Dict[str, Any]] = {}
    for label in sorted(strings, key=lambda label: (-len(strings[label]), label)):
        rows = []
        for key, text in strings[label].items():
            i = index[key]
            distinctive = is_distinctive(len(key), text, in_gold[i])
            rows.append(
                {
                    "text": text,
                    "tokens": len(key),
                    "gold_documents": in_gold[i],
                    "synthetic_documents": in_synthetic[i],
                    "distinctive": distinctive,
                }
            )
        labels[label] = _reuse_counts(rows)
        reappearing = [row for row in rows if row["synthetic_documents"]]
        reappearing.sort(key=lambda row: (not row["distinctive"], -row["tokens"], -len(row["text"]), row["text"]))
        labels[label]["examples"] = reappearing[:examples]
    total = {
        key: sum(counts[key] for counts in labels.values())
        for key in ("unique", "reappearing", "distinctive", "distinctive_reappearing")
    }
    total["share"] = _share(total["reappearing"], total["unique"])
    total["distinctive_share"] = _share(total["distinctive_reappearing"], total["distinctive"])
    return {
        "distinctive": (
            f"in at most {MAX_DISTINCTIVE_GOLD_DOCS} gold train document and at least "
            f"{MIN_DISTINCTIVE_TOKENS} tokens or {MIN_DISTINCTIVE_CHARS} characters"
        ),
        "labels": labels,
        "total": total,
    }


def _reuse_counts(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    unique = len(rows)
    reappearing = sum(1 for row in rows if row["synthetic_documents"])
    distinctive = [row for row in rows if row["distinctive"]]
    distinctive_reappearing = sum(1 for row in distinctive if row["synthetic_documents"])
    return {
        "unique": unique,
        "reappearing": reappearing,
        "share": _share(reappearing, unique),
        "distinctive": len(distinctive),
        "distinctive_reappearing": distinctive_reappearing,
        "distinctive_share": _share(distinctive_reappearing, len(distinctive)),
    }


# ---------------------------------------------------------------- quasi-identifiers

QUASI_KINDS = ("age", "sex", "city")  # a combination that may single out a patient though no value does
PASSAGE_WITH_DATE_TOKENS = 8


def _blank(ids: Sequence[int], keys: Sequence[Tuple[int, ...]]) -> List[int]:
    """`ids` with every occurrence of one of `keys` replaced by UNKNOWN tokens."""
    out = list(ids)
    lengths = sorted({len(key) for key in keys})
    wanted = set(keys)
    for i in range(len(ids)):
        for length in lengths:
            if tuple(ids[i : i + length]) in wanted:
                out[i : i + length] = [UNKNOWN] * length
    return out


def quasi_identifiers(
    gold_docs: Sequence[RawDoc],
    gold_ids: Sequence[Sequence[int]],
    synthetic_docs: Sequence[TextDoc],
    synthetic_ids: Sequence[Sequence[int]],
    encoder: "_Encoder",
    kind_of: Callable[[str], Optional[str]],
    examples: int = 5,
) -> Dict[str, Any]:
    """Gold combinations that single out a note and reappear together in one
    synthetic note:

    - age + sex + town: each gold note's first value of each kind, as a
      combination that no other gold note has (k = 1), all three in one
      synthetic note (as whole-token sequences);
    - a passage of a gold note (`PASSAGE_WITH_DATE_TOKENS` tokens or more, the
      synthetic note's longest copy once dates are blanked out, found in that
      gold note alone) with one of that note's dates in the same synthetic
      note: a rare history and when it happened."""
    combos: Dict[int, Tuple[Tuple[int, ...], ...]] = {}
    dates: Dict[int, Set[Tuple[int, ...]]] = {}
    for k, doc in enumerate(gold_docs):
        first: Dict[str, Tuple[int, ...]] = {}
        for start, end, label in doc.spans:
            kind = kind_of(label)
            key = tuple(encoder.lookup(doc.text[start:end]))
            if not key or UNKNOWN in key:
                continue
            if kind in QUASI_KINDS:
                first.setdefault(kind, key)
            elif kind == "date":
                dates.setdefault(k, set()).add(key)
        if all(kind in first for kind in QUASI_KINDS):
            combos[k] = tuple(first[kind] for kind in QUASI_KINDS)
    how_many = Counter(combos.values())
    unique = {k: combo for k, combo in combos.items() if how_many[combo] == 1}
    keys = sorted({value for combo in unique.values() for value in combo}
                  | {value for found in dates.values() for value in found})
    holding = dict(zip(keys, _documents_holding(keys, synthetic_ids, "quasi-identifiers")))
    together = []
    for k, combo in sorted(unique.items()):
        notes = set.intersection(*(holding[value] for value in combo))
        if notes:
            together.append({"gold_document": gold_docs[k].name, "synthetic_documents": len(notes),
                             "values": [encoder.text(value) for value in combo],
                             "synthetic_id": synthetic_docs[min(notes)].name})
    # The passage is looked for with every gold date blanked out of the
    # synthetic notes: a template line that holds a date ("Fecha de Ingreso:
    # 28/09/2016") is one note's passage only through its date. It must then
    # occur in that gold note alone.
    date_keys = sorted({value for found in dates.values() for value in found})
    blanked = [_blank(ids, date_keys) for ids in synthetic_ids]
    candidates = [(n, j, start, k) for n, j, start, k, _ in longest_copies(gold_ids, blanked)
                  if n >= PASSAGE_WITH_DATE_TOKENS and any(j in holding[value] for value in dates.get(k, ()))]
    keys = [tuple(blanked[j][start : start + n]) for n, j, start, _ in candidates]
    rare = _document_frequency(keys, gold_ids, "rare passages") if keys else []
    passages = []
    for (n, j, start, k), in_gold in zip(candidates, rare):
        if in_gold == 1:
            found = sorted(encoder.text(value) for value in dates[k] if j in holding[value])
            passages.append({"synthetic_id": synthetic_docs[j].name, "gold_document": gold_docs[k].name,
                             "passage_tokens": n, "dates": found})
    passages.sort(key=lambda row: -row["passage_tokens"])
    return {
        "combination": " + ".join(QUASI_KINDS),
        "gold_notes_with_combination": len(combos),
        "unique_combinations": len(unique),
        "unique_reappearing": len(together),
        "unique_examples": together[:examples],
        "passage_tokens": PASSAGE_WITH_DATE_TOKENS,
        "passages_with_date": len(passages),
        "passage_examples": passages[:examples],
    }


# ---------------------------------------------------------------- report


def privacy_measures(
    gold_docs: Sequence[RawDoc],
    synthetic_docs: Sequence[TextDoc],
    ngram_sizes: Sequence[int] = DEFAULT_NGRAMS,
    *,
    top: int = 5,
    examples: int = 5,
    baseline_docs: Optional[Sequence[TextDoc]] = None,
    kind_of: Optional[Callable[[str], Optional[str]]] = None,
) -> Dict[str, Any]:
    """All measures of the report for in-memory corpora; with `baseline_docs`
    (the gold corpus surrogated: what chance alone repeats), their PII reuse
    and quasi-identifiers too. `kind_of`: label -> kind (default: synthdeid's
    schemes and guesses)."""
    if kind_of is None:
        kind_of = LabelKinds().kind
    if not gold_docs or not synthetic_docs:
        raise ValueError("both corpora need at least one document")
    ngram_sizes = sorted(set(ngram_sizes))
    if not ngram_sizes or ngram_sizes[0] < 1:
        raise ValueError(f"n-gram sizes must be at least 1, got {ngram_sizes}")
    seconds: Dict[str, float] = {}
    began = time.perf_counter()
    encoder = _Encoder()
    gold_ids = [encoder.add(doc.text) for doc in gold_docs]
    strings = entity_strings(gold_docs, encoder)  # before the lookups: it may add tokens
    synthetic_ids = [encoder.lookup(doc.text) for doc in synthetic_docs]
    seconds["tokenise"] = time.perf_counter() - began

    began = time.perf_counter()
    recall = {str(n): ngram_recall(gold_ids, synthetic_ids, n) for n in ngram_sizes}
    seconds["ngram_recall"] = time.perf_counter() - began

    began = time.perf_counter()
    copies = longest_copies(gold_ids, synthetic_ids)
    passages = []
    for n, j, start, k, gold_start in sorted(copies, key=lambda c: (-c[0], c[1]))[:top]:
        if not n:
            break
        syn_offsets = token_offsets(synthetic_docs[j].text)
        gold_offsets = token_offsets(gold_docs[k].text)
        syn_span = (syn_offsets[start][0], syn_offsets[start + n - 1][1])
        gold_span = (gold_offsets[gold_start][0], gold_offsets[gold_start + n - 1][1])
        passages.append(
            {
                "tokens": n,
                "text": nfc(synthetic_docs[j].text)[syn_span[0] : syn_span[1]],
                "synthetic_id": synthetic_docs[j].name,
                "synthetic_chars": list(syn_span),
                "gold_document": gold_docs[k].name,
                "gold_chars": list(gold_span),
            }
        )
    copied = {
        "documents_with_passage_at_least": {str(n): sum(c[0] >= n for c in copies) for n in ngram_sizes},
        "longest": passages,
    }
    seconds["longest_copies"] = time.perf_counter() - began

    began = time.perf_counter()
    reuse = pii_reuse(strings, gold_ids, synthetic_ids, examples)
    quasi = quasi_identifiers(gold_docs, gold_ids, synthetic_docs, synthetic_ids, encoder, kind_of, examples)
    if baseline_docs is not None:
        baseline_ids = [encoder.lookup(doc.text) for doc in baseline_docs]
        reuse["baseline"] = {
            "documents": len(baseline_docs),
            "tokens": sum(map(len, baseline_ids)),
            **{key: value for key, value in pii_reuse(strings, gold_ids, baseline_ids, examples).items()
               if key in ("labels", "total")},
        }
        quasi["baseline"] = quasi_identifiers(gold_docs, gold_ids, baseline_docs, baseline_ids, encoder, kind_of,
                                              examples)
    seconds["pii_reuse"] = time.perf_counter() - began
    return {
        "tokenisation": TOKENISATION,
        "gold": {"documents": len(gold_docs), "tokens": sum(map(len, gold_ids))},
        "synthetic": {
            "documents": len(synthetic_docs),
            "tokens": sum(map(len, synthetic_ids)),
            "tokens_unknown_in_gold": sum(ids.count(UNKNOWN) for ids in synthetic_ids),
        },
        "ngram_recall": recall,
        "copied_passages": copied,
        "pii_reuse": reuse,
        "quasi_identifiers": quasi,
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
    }


def pii_only_tokens(gold_docs: Sequence[RawDoc]) -> Set[str]:
    """Tokens (as `tokenize` splits them, with a letter or digit) that occur in
    the gold texts only inside PII spans: names, towns, identifiers."""
    inside: Set[str] = set()
    outside: Set[str] = set()
    for doc in gold_docs:
        text = nfc(doc.text)
        # Token offsets are in the normalised text: move the span offsets there too.
        moved = (lambda o: o) if text == doc.text else (lambda o: len(nfc(doc.text[:o])))
        spans = sorted((moved(start), moved(end)) for start, end, _ in doc.spans)
        starts = [start for start, _ in spans]
        for start, end in token_offsets(doc.text):
            i = bisect_right(starts, start) - 1
            within = i >= 0 and spans[i][0] <= start and end <= spans[i][1]
            (inside if within else outside).add(text[start:end])
    return {token for token in inside - outside if any(c.isalnum() for c in token)}


def pipeline_strings(path: str | Path) -> List[str]:
    """The StringStore a pipeline ships: vocab/strings.json of a pipeline
    folder, or the one inside a wheel (.whl) or `spacy package` folder."""
    path = Path(path)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            names = [n for n in wheel.namelist() if n.endswith("/vocab/strings.json")]
            if not names:
                raise CorpusError(f"{path}: no vocab/strings.json in this wheel")
            return json.loads(wheel.read(names[0]).decode("utf-8"))
    found = [path / "vocab" / "strings.json"] if (path / "vocab" / "strings.json").is_file() else sorted(
        path.glob("**/vocab/strings.json"))
    if not found:
        raise CorpusError(f"{path}: no vocab/strings.json (not a pipeline, package folder or wheel)")
    return json.loads(found[0].read_text(encoding="utf-8"))


def shipped_pii(gold_docs: Sequence[RawDoc], pipeline: str | Path) -> Dict[str, Any]:
    """How many gold-only PII tokens a pipeline's strings carry (no examples:
    the report must not repeat them)."""
    strings = set(pipeline_strings(pipeline))
    pii = pii_only_tokens(gold_docs)
    shipped = pii & strings
    return {
        "pipeline": str(pipeline),
        "strings": len(strings),
        "gold_pii_only_tokens": len(pii),
        "shipped": len(shipped),
        "shipped_alphabetic": sum(token.isalpha() for token in shipped),
    }


def read_synthetic(path: str | Path) -> List[TextDoc]:
    """Synthetic documents from a generation `.jsonl` (`id`, `text` per line)
    or an annotated `.spacy` DocBin (ids from `doc.user_data["name"]`)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_text_docs(path, CorpusError)
    if path.suffix == ".spacy":
        docs = [TextDoc(doc.name, doc.text) for doc in read_docbin(path, spacy.blank("xx"))]
        if not docs:
            raise CorpusError(f"{path}: no documents")
        return docs
    raise CorpusError(f"{path}: unsupported synthetic corpus (expected a .jsonl or a .spacy file)")


def read_gold_corpus(path: str | Path) -> List[RawDoc]:
    """Gold documents with their entity spans (a DocBin, or any corpus format
    `synthdeid.training.corpus.read_any` reads)."""
    docs = list(read_any(path, spacy.blank("xx")))
    if not docs:
        raise CorpusError(f"{path}: no documents")
    return docs


def privacy_report(
    gold_path: str | Path,
    synthetic_path: str | Path,
    output_dir: str | Path,
    ngram_sizes: Sequence[int] = DEFAULT_NGRAMS,
    *,
    top: int = 5,
    examples: int = 5,
    pipeline: Optional[str | Path] = None,
    baseline: Optional[str | Path] = None,
    label_kinds: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Compute the measures for the corpora at the paths (given a
    `pipeline`, also the gold-only PII tokens its strings carry; given a
    `baseline`, a surrogated copy of the gold corpus, the PII reuse that
    chance alone gives, beside the synthetic corpus's; `label_kinds` over the
    shipped schemes name the quasi-identifiers' labels); write
    `output_dir/privacy.md` and `output_dir/privacy.json` (atomically, the
    JSON last) and print the Markdown; returns the report."""
    began = time.perf_counter()
    gold_docs = read_gold_corpus(gold_path)
    synthetic_docs = read_synthetic(synthetic_path)
    msg.info(
        f"Gold: {len(gold_docs)} documents from {gold_path}; "
        f"synthetic: {len(synthetic_docs)} from {synthetic_path}"
    )
    baseline_docs = read_synthetic(baseline) if baseline is not None else None
    report = {
        "inputs": {"gold": str(gold_path), "synthetic": str(synthetic_path),
                   **({"baseline": str(baseline)} if baseline is not None else {})},
        **privacy_measures(gold_docs, synthetic_docs, ngram_sizes, top=top, examples=examples,
                           baseline_docs=baseline_docs, kind_of=LabelKinds(label_kinds).kind),
    }
    if pipeline is not None:
        report["shipped_strings"] = shipped_pii(gold_docs, pipeline)
    markdown = report_markdown(report)
    print(markdown)
    output_dir = Path(output_dir)
    write_text(output_dir / "privacy.md", markdown)
    report["seconds"]["total"] = round(time.perf_counter() - began, 2)
    write_json(output_dir / "privacy.json", report)
    msg.good(f"Wrote {output_dir}/privacy.md and privacy.json in {report['seconds']['total']:.1f} s")
    return report


def _cell(text: str, limit: Optional[int] = 160) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, shortened."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def report_markdown(report: Dict[str, Any]) -> str:
    gold, syn = report["gold"], report["synthetic"]
    lines = [
        "# Privacy report",
        "",
        f"Gold train: {gold['documents']} documents, {gold['tokens']} tokens. "
        f"Synthetic: {syn['documents']} documents, {syn['tokens']} tokens "
        f"({syn['tokens_unknown_in_gold']} of them never in the gold text).",
        f"Tokens: {report['tokenisation']}.",
        "",
        "## n-gram overlap",
        "",
        "| n | gold unique n-grams | found in synthetic | recall | synthetic n-grams in gold |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, r in report["ngram_recall"].items():
        lines.append(
            f"| {n} | {r['gold_unique']} | {r['gold_unique_in_synthetic']} | {r['recall']:.4f} | "
            f"{r['synthetic_share_in_gold']:.4f} |"
        )
    copied = report["copied_passages"]
    at_least = ", ".join(
        f"≥ {n} tokens: {count}" for n, count in copied["documents_with_passage_at_least"].items()
    )
    lines += [
        "",
        "## Longest copied passages",
        "",
        f"Synthetic documents sharing a passage with a gold document of {at_least}.",
        "",
        "| tokens | synthetic id | gold document | passage |",
        "|---:|---|---|---|",
    ]
    for p in copied["longest"]:
        lines.append(
            f"| {p['tokens']} | {_cell(p['synthetic_id'], None)} | {_cell(p['gold_document'], None)} | "
            f"{_cell(p['text'])} |"
        )
    reuse = report["pii_reuse"]
    baseline = reuse.get("baseline")
    lines += [
        "",
        "## Gold PII strings reappearing verbatim",
        "",
        f"Unique entity strings per label, matched as whole-token sequences. Distinctive: {reuse['distinctive']}.",
    ]
    if baseline:
        lines += [
            "By chance: the same counts in the gold corpus with every entity replaced by a surrogate "
            f"(`{report['inputs']['baseline']}`, {baseline['documents']} documents): values that recur "
            "there (a date, an age, a kinship word) are no copy.",
        ]
    lines += [
        "",
        "| label | unique | reappearing | share | distinctive | distinctive reappearing | distinctive share "
        + ("| by chance: reappearing | by chance: distinctive " if baseline else "") + "| examples |",
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if baseline else "") + "---|",
    ]
    for label, r in [*reuse["labels"].items(), ("**total**", reuse["total"])]:
        examples = "; ".join(_cell(e["text"], 40) for e in r.get("examples", [])[:3])
        chance = ""
        if baseline:
            b = baseline["total"] if label == "**total**" else baseline["labels"][label]
            chance = f"{b['reappearing']} | {b['distinctive_reappearing']} | "
        lines.append(
            f"| {label} | {r['unique']} | {r['reappearing']} | {r['share']:.4f} | {r['distinctive']} | "
            f"{r['distinctive_reappearing']} | {r['distinctive_share']:.4f} | {chance}{examples} |"
        )
    quasi = report.get("quasi_identifiers")
    if quasi:
        chance = quasi.get("baseline")
        lines += [
            "",
            "## Quasi-identifiers",
            "",
            f"Gold combinations that single out a note, together in one synthetic note: {quasi['combination']} "
            f"(each note's first value of each; {quasi['unique_combinations']} of the "
            f"{quasi['gold_notes_with_combination']} notes with all three have a combination no other note has), "
            f"and a passage of {quasi['passage_tokens']}+ tokens found in one gold note only, with one of that "
            "note's dates.",
            "",
            "| measure | synthetic |" + (" by chance |" if chance else ""),
            "|---|---:|" + ("---:|" if chance else ""),
            f"| unique {quasi['combination']} together | {quasi['unique_reappearing']} |"
            + (f" {chance['unique_reappearing']} |" if chance else ""),
            f"| passage with its note's date | {quasi['passages_with_date']} |"
            + (f" {chance['passages_with_date']} |" if chance else ""),
        ]
        for row in quasi["unique_examples"][:3]:
            lines.append(f"- {_cell(' / '.join(row['values']), 80)}: gold {_cell(row['gold_document'], None)}, "
                         f"synthetic {_cell(row['synthetic_id'], None)}")
    shipped = report.get("shipped_strings")
    if shipped:
        lines += [
            "",
            "## Gold PII tokens in the shipped pipeline",
            "",
            f"`{shipped['pipeline']}` stores {shipped['strings']} strings; {shipped['shipped']} of the "
            f"{shipped['gold_pii_only_tokens']} tokens that occur in the gold train text only inside PII spans are "
            f"among them ({shipped['shipped_alphabetic']} alphabetic).",
        ]
    return "\n".join(lines) + "\n"
