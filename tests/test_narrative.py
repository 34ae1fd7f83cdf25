import re

import pytest

from synthdeid.training.augment import augment_docbin
from synthdeid.training.behaviour import FRAMES
from synthdeid.training.corpus import RawDoc, to_doc
from synthdeid.io import read_docs
from synthdeid.training.narrative import CASED_LABELS, NARRATIVE_FRAMES, filler_sentences, narrative_notes
from synthdeid.training.tokenizer import make_nlp

from test_augment import VALUES, write_corpus

FILLERS = ["Se pauta tratamiento antibiótico durante siete días.", "La evolución posterior fue favorable sin incidencias."]
SOME_VALUES = {
    "NOMBRE_SUJETO_ASISTENCIA": ["Catalina Calatayud Valenzuela", "Ramiro Sáez"],
    "NOMBRE_PERSONAL_SANITARIO": ["Benigna Figuerola Priego"],
    "CORREO_ELECTRONICO": ["ezequiel@example.com"],
    "EDAD_SUJETO_ASISTENCIA": ["Adolescente", "53 años"],
}


def test_training_frames_are_not_the_behavioural_test_frames():
    # The behavioural set must measure sentences the pipeline never saw.
    tested = {frame for frames in FRAMES.values() for _, frame in frames}
    trained = {frame for frames in NARRATIVE_FRAMES.values() for frame in frames}
    assert not tested & trained
    # Nor do the words around the value repeat a tested frame's whole context.
    contexts = {tuple(frame.split("{X}")) for frame in tested}
    assert not contexts & {tuple(frame.split("{X}")) for frame in trained}


def test_frames_hold_one_slot_and_no_pii_of_their_own():
    for label, frames in NARRATIVE_FRAMES.items():
        for frame in frames:
            assert frame.count("{X}") == 1, frame
            assert not re.search(r"\d", frame), frame  # an unlabelled number would teach the pipeline to leave it


def test_narrative_notes_label_exactly_the_inserted_values():
    nlp = make_nlp()
    docs = narrative_notes(SOME_VALUES, FILLERS, nlp, notes=40, seed=1)
    assert len(docs) == 40
    allowed = {label: {v.lower() for v in values} for label, values in SOME_VALUES.items()}
    seen_labels, cases = set(), set()
    for doc in docs:
        assert len(doc.ents) == 3  # one per PII sentence; fillers hold none
        for ent in doc.ents:
            assert ent.text.lower() in allowed[ent.label_], ent.text
            assert ent.text != "Adolescente"  # ages in words do not fit the age frames
            seen_labels.add(ent.label_)
            if ent.label_ in CASED_LABELS and any(c.isalpha() for c in ent.text):
                cases.add("lower" if ent.text.islower() else "upper" if ent.text.isupper() else "title")
        assert sum(filler in doc.text for filler in FILLERS) == 2
    assert seen_labels == set(SOME_VALUES)
    assert cases == {"lower", "upper", "title"}


def test_narrative_notes_are_seeded():
    nlp = make_nlp()
    first = [d.text for d in narrative_notes(SOME_VALUES, FILLERS, nlp, notes=5, seed=3)]
    assert first == [d.text for d in narrative_notes(SOME_VALUES, FILLERS, nlp, notes=5, seed=3)]
    assert first != [d.text for d in narrative_notes(SOME_VALUES, FILLERS, nlp, notes=5, seed=4)]


def test_narrative_notes_need_values():
    with pytest.raises(ValueError, match="no values"):
        narrative_notes({"SEXO_SUJETO_ASISTENCIA": ["Mujer"]}, FILLERS, make_nlp(), notes=1)


def test_filler_sentences_leave_out_sentences_with_entities():
    nlp = make_nlp()
    text = "Nombre: Ana Ruiz García. Se pauta tratamiento antibiótico durante siete días. Corto."
    start = text.index("Ana")
    doc, _ = to_doc(nlp, RawDoc(name="n", text=text, spans=[(start, start + 15, "NOMBRE_SUJETO_ASISTENCIA")]))
    assert filler_sentences([doc]) == ["Se pauta tratamiento antibiótico durante siete días."]


@pytest.mark.parametrize("copies", [0, 2])
def test_augment_adds_narrative_notes_with_surrogate_values_only(tmp_path, copies):
    nlp = make_nlp()
    write_corpus(tmp_path / "in.spacy", nlp, n=3)
    stats = augment_docbin(tmp_path / "in.spacy", tmp_path / "out.spacy", copies=copies, narrative=6, seed=0)
    out = read_docs(tmp_path / "out.spacy", nlp.vocab)
    assert len(out) == 3 * (1 + copies) + 6 and stats["narrative"] == 6
    narrative = [doc for doc in out if doc.user_data["name"].startswith("narrative")]
    assert len(narrative) == 6 and all(doc.ents for doc in narrative)
    # The values written as the notes have them never reach a narrative note
    # (the sex, which has no surrogate, has no narrative frame either).
    written = {value.lower() for value, _ in VALUES}
    assert not {ent.text.lower() for doc in narrative for ent in doc.ents} & written
    again = tmp_path / "again.spacy"
    augment_docbin(tmp_path / "in.spacy", again, copies=copies, narrative=6, seed=0)
    assert again.read_bytes() == (tmp_path / "out.spacy").read_bytes()


def test_a_corpus_without_pii_values_gets_no_narrative_notes_and_a_warning(tmp_path):
    nlp = make_nlp()
    doc, _ = to_doc(nlp, RawDoc(name="plain", text="Se pauta tratamiento antibiótico durante siete días.", spans=[]))
    from spacy.tokens import DocBin

    DocBin(store_user_data=True, docs=[doc]).to_disk(tmp_path / "in.spacy")
    with pytest.warns(UserWarning, match="no narrative notes added"):
        stats = augment_docbin(tmp_path / "in.spacy", tmp_path / "out.spacy", copies=1, narrative=5)
    assert stats["narrative"] == 0 and len(read_docs(tmp_path / "out.spacy", nlp.vocab)) == 2
