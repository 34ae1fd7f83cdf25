"""Inline label tags: `... <NOMBRE_SUJETO_ASISTENCIA>Pedro Gómez</NOMBRE_SUJETO_ASISTENCIA> ...`.

A generator adapted on notes whose entities are wrapped in their label's tags
(`adapt_generator(..., inline_tags=True)`) writes notes that carry their own
labels. `untag` reads them back into plain text and spans, dropping the
malformed tags a sampled note may hold (a tag left open where the note ends,
a closing tag of another label). `tag_agreement` compares those spans with a
labelling pipeline's, and `combine_spans` merges the two by a policy
(`TAG_POLICIES`). The strict gold reader of tagged files
(`corpus.read_tagged`) reads with `untag` too and stops at the first problem.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Container, Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc

Span = Tuple[int, int, str]

TAG_NAME = re.compile(r"[A-Za-z][\w-]*")
TAG = re.compile(rf"<(/?)({TAG_NAME.pattern})>")
# A tag cut off where a generated note ends ("... vive en <CAL").
CUT_TAG = re.compile(rf"<(/?)({TAG_NAME.pattern})?$")
# annotator: the labelling pipeline's spans, the tags only reported;
# union: those plus each tag span that no pipeline span overlaps;
# tags: the tag spans, plus each pipeline span that no tag span overlaps.
TAG_POLICIES = ("annotator", "union", "tags")
# How a tag span compares with the pipeline's spans, and a pipeline span no tag overlaps.
OUTCOMES = ("agree", "other_label", "other_boundary", "tag_only", "labeller_only")
TAG_OUTCOMES = OUTCOMES[:4]  # those that count a tag span
# A merged span lost to token alignment (two tags in one token: "<A>x</A><B>y</B>").
UNALIGNED = "unaligned"


def tag_text(text: str, spans: Iterable[Span]) -> str:
    """`text` with each (start, end, label) span wrapped in `<label>...</label>`.
    Spans must not overlap."""
    return tagged_with_values(text, spans)[0]


def tagged_with_values(text: str, spans: Iterable[Span]) -> Tuple[str, List[Tuple[int, int]]]:
    """`tag_text`'s tagged text and where each span's value lies in it."""
    pieces: List[str] = []
    values: List[Tuple[int, int]] = []
    cursor = length = 0
    for start, end, label in sorted(spans):
        if start < cursor:
            raise ValueError(f"overlapping spans at character {start}")
        opening = f"<{label}>"
        length += start - cursor + len(opening)
        values.append((length, length + end - start))
        length += end - start + len(opening) + 1
        pieces += [text[cursor:start], opening, text[start:end], f"</{label}>"]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), values


def tagged_doc_text(doc: Doc) -> str:
    """The doc's text with its entities wrapped in their labels' tags."""
    return tag_text(doc.text, entity_spans(doc))


def entity_spans(doc: Doc) -> List[Span]:
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


@dataclass
class Untagged:
    """A tagged text read back: the text without tags, the spans the
    well-formed tags marked (offsets in `text`, as tagged: see `trimmed`)
    and a message per malformed tag."""

    text: str
    spans: List[Span] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)


def untag(tagged: str, labels: Optional[Container[str]] = None) -> Untagged:
    """Read the inline tags `<name>`/`</name>` of `tagged`. Tags do not nest:
    an opening tag while one is open, a closing tag of another label or of
    none, and a tag left open at the end are problems, and the tags involved
    mark nothing (their values stay in the text).

    With `labels` (a tagging generator's note), a tag of another name and a
    tag cut off at the end of the text are problems too, and removed: a
    generated note never keeps a piece of a tag."""
    pieces: List[str] = []
    spans: List[Span] = []
    problems: List[str] = []
    open_tag: Optional[Tuple[str, int, int]] = None  # label, offset in the text, column in `tagged`
    cursor = length = 0
    end = len(tagged)
    if labels is not None and (cut := CUT_TAG.search(tagged)):
        end = cut.start()
        problems.append(f"{cut.group()} at column {end + 1} is cut off")
    for match in TAG.finditer(tagged, 0, end):
        closing, label = match.group(1) == "/", match.group(2)
        pieces.append(tagged[cursor:match.start()])
        length += match.start() - cursor
        cursor = match.end()
        if labels is not None and label not in labels:
            problems.append(f"{match.group()} at column {match.start() + 1} is no label's tag")
        elif closing and open_tag is not None and open_tag[0] == label:
            spans.append((open_tag[1], length, label))
            open_tag = None
        elif not closing and open_tag is None:
            open_tag = (label, length, match.start() + 1)
        else:
            expected = f"</{open_tag[0]}>" if open_tag else "an opening tag"
            problems.append(f"{match.group()} at column {match.start() + 1} where {expected} was due")
            open_tag = (label, length, match.start() + 1) if not closing else None
    if open_tag is not None:
        problems.append(f"<{open_tag[0]}> at column {open_tag[2]} is not closed")
    pieces.append(tagged[cursor:end])
    return Untagged("".join(pieces), spans, problems)


def trimmed(text: str, spans: Iterable[Span]) -> List[Span]:
    """The spans without whitespace at their edges; those of whitespace only dropped."""
    kept = []
    for start, end, label in spans:
        value = text[start:end]
        start, end = start + len(value) - len(value.lstrip()), end - len(value) + len(value.rstrip())
        if start < end:
            kept.append((start, end, label))
    return kept


def _overlaps(span: Span, others: Sequence[Span]) -> List[Span]:
    return [other for other in others if other[0] < span[1] and span[0] < other[1]]


def tag_agreement(labelled: Sequence[Span], tagged: Sequence[Span]) -> Dict[str, Counter]:
    """Per label, how many tag spans agree with the pipeline's (same
    offsets and label), carry `other_label` (same offsets), `other_boundary`
    (overlap, other offsets) or stand alone (`tag_only`), and how many
    pipeline spans no tag overlaps (`labeller_only`, by the pipeline's label)."""
    outcomes: Dict[str, Counter] = defaultdict(Counter)
    labelled_offsets = {(start, end): label for start, end, label in labelled}
    for span in tagged:
        start, end, label = span
        if (start, end) in labelled_offsets:
            outcome = "agree" if labelled_offsets[(start, end)] == label else "other_label"
        else:
            outcome = "other_boundary" if _overlaps(span, labelled) else "tag_only"
        outcomes[label][outcome] += 1
    for span in labelled:
        if not _overlaps(span, tagged):
            outcomes[span[2]]["labeller_only"] += 1
    return dict(outcomes)


def combine_spans(labelled: Sequence[Span], tagged: Sequence[Span], policy: str) -> List[Span]:
    """The spans of a generated note under `policy` (see `TAG_POLICIES`)."""
    if policy == "annotator":
        return sorted(labelled)
    if policy == "union":
        return sorted([*labelled, *(span for span in tagged if not _overlaps(span, labelled))])
    if policy == "tags":
        return sorted([*tagged, *(span for span in labelled if not _overlaps(span, tagged))])
    raise ValueError(f"unknown tag policy {policy!r}; expected one of {', '.join(TAG_POLICIES)}")


def agreement_table(outcomes: Dict[str, Dict[str, int]]) -> str:
    """A Markdown table of `tag_agreement` counts per label, with the share
    of tag spans that agree."""
    lines = ["| label | " + " | ".join((*OUTCOMES, UNALIGNED)) + " | tags agreeing |",
             "| --- |" + " ---: |" * (len(OUTCOMES) + 2)]
    total: Counter = Counter()
    for label in sorted(outcomes):
        counts = Counter(outcomes[label])
        total.update(counts)
        lines.append(_agreement_row(label, counts))
    lines.append(_agreement_row("**all**", total))
    return "\n".join(lines) + "\n"


def _agreement_row(label: str, counts: Counter) -> str:
    tags = sum(counts[outcome] for outcome in TAG_OUTCOMES)
    share = f"{counts['agree'] / tags:.3f}" if tags else "-"
    return f"| {label} | " + " | ".join(str(counts[outcome]) for outcome in (*OUTCOMES, UNALIGNED)) + f" | {share} |"
