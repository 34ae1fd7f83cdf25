"""Inline label tags: writing them around a doc's entities, reading them back
from generated text that may hold malformed ones, and comparing and merging
them with a labelling pipeline's spans."""

import pytest
from conftest import make_docs

from synthdeid.training.inline_tags import (
    agreement_table,
    combine_spans,
    entity_spans,
    tag_agreement,
    tag_text,
    tagged_doc_text,
    tagged_with_values,
    trimmed,
    untag,
)

LABELS = ("NOMBRE", "CALLE", "FECHAS")


def test_tagged_docs_read_back_to_their_text_and_entities():
    docs = make_docs(6, seed=2)
    labels = {ent.label_ for doc in docs for ent in doc.ents}
    for doc in docs:
        tagged = tagged_doc_text(doc)
        assert all(f"<{ent.label_}>{ent.text}</{ent.label_}>" in tagged for ent in doc.ents)
        untagged = untag(tagged, labels)
        assert untagged.text == doc.text and not untagged.problems
        assert untagged.spans == entity_spans(doc)
        # Where each value lies in the tagged text (the generator's entity tokens).
        same, values = tagged_with_values(doc.text, entity_spans(doc))
        assert same == tagged and [tagged[start:end] for start, end in values] == [ent.text for ent in doc.ents]


def test_tag_text_refuses_overlapping_spans():
    with pytest.raises(ValueError, match="overlapping"):
        tag_text("Calle Mayor 5", [(0, 11, "CALLE"), (6, 13, "CALLE")])


@pytest.mark.parametrize(
    "tagged, text, spans, problems",
    [
        # A note cut off inside a value: the open tag marks nothing.
        ("Ana <NOMBRE>Pedro Gó", "Ana Pedro Gó", [], ["<NOMBRE> at column 5 is not closed"]),
        # A closing tag of another label drops both.
        ("<NOMBRE>Ana</CALLE> y <CALLE>Mayor</CALLE>", "Ana y Mayor", [(6, 11, "CALLE")],
         ["</CALLE> at column 12 where </NOMBRE> was due"]),
        # A stray closing tag.
        ("Ana</NOMBRE> vive", "Ana vive", [], ["</NOMBRE> at column 4 where an opening tag was due"]),
        # An opening tag while one is open: the first marks nothing, the second counts.
        ("<NOMBRE>Ana <CALLE>Mayor</CALLE>", "Ana Mayor", [(4, 9, "CALLE")],
         ["<CALLE> at column 13 where </NOMBRE> was due"]),
        # A tag of no label, and one cut off where the note ends, are removed;
        # whitespace inside tags is kept here, trimmed later.
        ("<br>Vive en <CALLE> Mayor </CALLE> <NOMB", "Vive en  Mayor  ", [(8, 15, "CALLE")],
         ["<NOMB at column 36 is cut off", "<br> at column 1 is no label's tag"]),
        ("Dolor </", "Dolor ", [], ["</ at column 7 is cut off"]),
    ],
)
def test_untag_reads_generated_text_with_malformed_tags(tagged, text, spans, problems):
    untagged = untag(tagged, LABELS)
    assert (untagged.text, untagged.spans, untagged.problems) == (text, spans, problems)


def test_trimmed_drops_edge_whitespace_and_empty_spans():
    assert trimmed("a  Mayor  b", [(1, 9, "CALLE"), (9, 10, "CALLE")]) == [(3, 8, "CALLE")]


LABELLED = [(0, 3, "NOMBRE"), (10, 15, "CALLE"), (20, 25, "FECHAS"), (30, 35, "NOMBRE")]
TAGGED = [(0, 3, "NOMBRE"), (10, 15, "FECHAS"), (19, 25, "FECHAS"), (40, 45, "CALLE")]


def test_tag_agreement_counts_each_outcome_per_label():
    assert tag_agreement(LABELLED, TAGGED) == {
        "NOMBRE": {"agree": 1, "labeller_only": 1},
        "FECHAS": {"other_label": 1, "other_boundary": 1},
        "CALLE": {"tag_only": 1},
    }
    table = agreement_table(tag_agreement(LABELLED, TAGGED))
    assert "| NOMBRE | 1 | 0 | 0 | 0 | 1 | 0 | 1.000 |" in table
    assert "| **all** | 1 | 1 | 1 | 1 | 1 | 0 | 0.250 |" in table


def test_policies_merge_the_labellers_spans_with_the_tags():
    assert combine_spans(LABELLED, TAGGED, "annotator") == LABELLED
    assert combine_spans(LABELLED, TAGGED, "union") == [*LABELLED, (40, 45, "CALLE")]
    assert combine_spans(LABELLED, TAGGED, "tags") == [*TAGGED[:3], (30, 35, "NOMBRE"), (40, 45, "CALLE")]
    with pytest.raises(ValueError, match="unknown tag policy"):
        combine_spans(LABELLED, TAGGED, "vote")


def test_gold_files_take_any_name_as_a_tag_and_keep_a_last_lone_bracket():
    untagged = untag("<br>x</br> y <")
    assert (untagged.text, untagged.spans, untagged.problems) == ("x y <", [(0, 1, "br")], [])
