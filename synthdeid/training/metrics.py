"""Evaluation measures for de-identification.

A span is `(doc_index, start_char, end_char, label)`. Measures:
- entity-level strict: a predicted span counts only if offsets and label match;
- token-level (the paper's measure): every non-whitespace gold token carries
  the label of the entity that covers it, or "O"; micro P/R/F1 over tokens
  whose label is not "O" (whitespace tokens are not counted at all);
- MEDDOCAN's official span measures: subtrack 1 (offsets and type, the same as
  entity-level strict), subtrack 2 strict (offsets only) and subtrack 2 merged
  (offsets only, crediting spans that match after merging spans separated by
  non-alphanumeric characters; see `meddocan_merged_scores`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Set, Tuple

from spacy.tokens import Doc

Span = Tuple[int, int, int, str]
OUTSIDE = "O"  # the tag of a token outside every entity (BIO)


def prf(tp: int, fp: int, fn: int) -> Dict[str, float]:
    """Precision, recall and F1 from counts; 0.0 where a ratio is undefined."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f": f, "tp": tp, "fp": fp, "fn": fn}


def entity_scores(gold: Iterable[Span], pred: Iterable[Span]) -> Dict:
    """Strict entity-level micro and per-label scores."""
    gold_set, pred_set = set(gold), set(pred)
    labels = sorted({s[3] for s in gold_set | pred_set})
    per_label = {}
    for label in labels:
        g = {s for s in gold_set if s[3] == label}
        p = {s for s in pred_set if s[3] == label}
        per_label[label] = prf(len(g & p), len(p - g), len(g - p))
    tp = len(gold_set & pred_set)
    return {
        "micro": prf(tp, len(pred_set) - tp, len(gold_set) - tp),
        "per_label": per_label,
    }


def token_scores(gold_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> Dict:
    """Token-level micro and per-label scores over label sequences ("O" = no PII)."""
    counts: Dict[str, List[int]] = defaultdict(lambda: [0, 0, 0])
    for doc_gold, doc_pred in zip(gold_tags, pred_tags, strict=True):
        if len(doc_gold) != len(doc_pred):
            raise ValueError("gold and predicted tag sequences differ in length")
        for g, p in zip(doc_gold, doc_pred):
            if g == p:
                if g != OUTSIDE:
                    counts[g][0] += 1
                continue
            if p != OUTSIDE:
                counts[p][1] += 1
            if g != OUTSIDE:
                counts[g][2] += 1
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    return {
        "micro": prf(tp, fp, fn),
        "per_label": {label: prf(*counts[label]) for label in sorted(counts)},
    }


def merge_spans(spans: Iterable[Tuple[int, int, int]], text_of: Sequence[str]) -> Set[Tuple[int, int, int]]:
    """Merge spans of one document that touch or are separated only by
    non-alphanumeric characters (MEDDOCAN subtrack 2 "merged")."""
    merged: Set[Tuple[int, int, int]] = set()
    by_doc: Dict[int, List[Tuple[int, int]]] = defaultdict(list)
    for doc_i, start, end in spans:
        by_doc[doc_i].append((start, end))
    for doc_i, offsets in by_doc.items():
        text = text_of[doc_i]
        offsets.sort()
        cur_start, cur_end = offsets[0]
        for start, end in offsets[1:]:
            gap = text[cur_end:start] if start > cur_end else ""
            if not any(ch.isalnum() for ch in gap):
                # max, not the official script's `end`: that would shrink a span
                # containing the next one (never the case for doc.ents)
                cur_end = max(cur_end, end)
            else:
                merged.add((doc_i, cur_start, cur_end))
                cur_start, cur_end = start, end
        merged.add((doc_i, cur_start, cur_end))
    return merged


def meddocan_merged_scores(
    gold: Set[Tuple[int, int, int]], pred: Set[Tuple[int, int, int]], texts: Sequence[str]
) -> Dict[str, float]:
    """MEDDOCAN subtrack 2 "merged", as the official script computes it
    (`EvaluateSubtrack2merged`), with counts summed over documents.

    TP are the spans matching strictly plus the merged spans matching after
    merging; strict FP and FN are forgiven when a TP span contains them. TP can
    only grow and FP and FN only shrink relative to the strict measure, so
    merged F1 is never below strict F1.
    """
    tp = (gold & pred) | (merge_spans(gold, texts) & merge_spans(pred, texts))
    tp_offsets: Dict[int, List[Tuple[int, int]]] = defaultdict(list)
    for doc_i, start, end in tp:
        tp_offsets[doc_i].append((start, end))

    def in_tp(span: Tuple[int, int, int]) -> bool:
        doc_i, start, end = span
        return any(s <= start and end <= e for s, e in tp_offsets[doc_i])

    fp = [s for s in pred - gold if not in_tp(s)]
    fn = [s for s in gold - pred if not in_tp(s)]
    return prf(len(tp), len(fp), len(fn))


def meddocan_scores(gold: Iterable[Span], pred: Iterable[Span], texts: Sequence[str]) -> Dict:
    """MEDDOCAN's official measures (micro-averaged over the test set)."""
    gold, pred = list(gold), list(pred)
    unlabelled_gold = {s[:3] for s in gold}
    unlabelled_pred = {s[:3] for s in pred}
    tp = len(unlabelled_gold & unlabelled_pred)
    return {
        "subtrack1": entity_scores(gold, pred)["micro"],
        "subtrack2_strict": prf(tp, len(unlabelled_pred) - tp, len(unlabelled_gold) - tp),
        "subtrack2_merged": meddocan_merged_scores(unlabelled_gold, unlabelled_pred, texts),
    }


def doc_spans(docs: Iterable[Doc]) -> List[Span]:
    return [
        (i, ent.start_char, ent.end_char, ent.label_)
        for i, doc in enumerate(docs)
        for ent in doc.ents
    ]


def token_tags(reference: Doc, predicted: Doc) -> Tuple[List[str], List[str]]:
    """Tags of the reference doc's non-whitespace tokens under gold and
    predicted entities.

    Predicted entities are projected by character offsets, so the two docs may
    be tokenised differently as long as their texts are identical. Whitespace
    is tested on the token text: `is_space` is a lexical attribute, always
    False for docs read with a bare `Vocab()`.
    """
    if reference.text != predicted.text:
        raise ValueError("reference and predicted docs have different texts")
    tokens = [tok for tok in reference if not tok.text.isspace()]
    position = {tok.i: n for n, tok in enumerate(tokens)}
    gold = [tok.ent_type_ or OUTSIDE for tok in tokens]
    pred = [OUTSIDE] * len(tokens)
    for ent in predicted.ents:
        covered = reference.char_span(ent.start_char, ent.end_char, alignment_mode="expand")
        for tok in covered or ():
            if tok.i in position:
                pred[position[tok.i]] = ent.label_
    return gold, pred


def score_docs(references: Sequence[Doc], predictions: Sequence[Doc]) -> Dict:
    """All measures for predicted docs against references with the same texts."""
    if len(references) != len(predictions):
        raise ValueError("different numbers of reference and predicted docs")
    gold, pred = doc_spans(references), doc_spans(predictions)
    tags = [token_tags(r, p) for r, p in zip(references, predictions)]
    return {
        "entity": entity_scores(gold, pred),
        "token": token_scores([g for g, _ in tags], [p for _, p in tags]),
        "meddocan": meddocan_scores(gold, pred, [d.text for d in references]),
    }
