import re

import pytest

from synthdeid.io import read_docs
from synthdeid.kinds import KINDS, LabelKinds
from synthdeid.training.augment import augment_docbin
from synthdeid.training.corpus import RawDoc, to_doc
from synthdeid.training.frames import FRAMES_DIR, load_frames
from synthdeid.training.narrative import filler_sentences, narrative_notes
from synthdeid.training.tokenizer import make_nlp

from test_augment import VALUES, write_corpus

FILLERS = ["Se pauta tratamiento antibiótico durante siete días.", "La evolución posterior fue favorable sin incidencias."]
SPANISH = load_frames("es")
KIND = LabelKinds().kind
SHIPPED = sorted(path.stem for path in FRAMES_DIR.glob("*.json"))
SOME_VALUES = {
    "NOMBRE_SUJETO_ASISTENCIA": ["Catalina Calatayud Valenzuela", "Ramiro Sáez"],
    "NOMBRE_PERSONAL_SANITARIO": ["Benigna Figuerola Priego"],
    "CORREO_ELECTRONICO": ["ezequiel@example.com"],
    "EDAD_SUJETO_ASISTENCIA": ["Adolescente", "53 años"],
}


@pytest.mark.parametrize("lang", SHIPPED)
def test_training_frames_are_not_the_behavioural_test_frames(lang):
    # The behavioural set must measure sentences the pipeline never saw.
    frames = load_frames(lang)
    tested = {frame for frames in frames.behaviour.values() for _, frame in frames}
    trained = {frame for frames in frames.narrative.values() for frame in frames}
    assert tested and trained and not tested & trained
    # Nor do the words around the value repeat a tested frame's whole context.
    contexts = {tuple(frame.split("{X}")) for frame in tested}
    assert not contexts & {tuple(frame.split("{X}")) for frame in trained}


@pytest.mark.parametrize("lang", SHIPPED)
def test_frames_hold_one_slot_and_no_pii_of_their_own(lang):
    frames = load_frames(lang)
    keys = set(frames.behaviour) | set(frames.narrative) | frames.cased
    # A key is a kind, or a label of the scheme the file is written for (MEDDOCAN's in Spanish).
    assert keys <= set(KINDS) or all(KIND(key) for key in keys), keys
    for frame in [f for fs in frames.narrative.values() for f in fs] + [f for fs in frames.behaviour.values()
                                                                         for _, f in fs]:
        assert frame.count("{X}") == 1, frame
        assert not re.search(r"\d", frame), frame  # an unlabelled number would teach the pipeline to leave it


def test_narrative_notes_label_exactly_the_inserted_values():
    nlp = make_nlp()
    docs = narrative_notes(SOME_VALUES, FILLERS, nlp, notes=40, frames=SPANISH, kind_of=KIND, seed=1)
    assert len(docs) == 40
    allowed = {label: {v.lower() for v in values} for label, values in SOME_VALUES.items()}
    seen_labels, cases = set(), set()
    for doc in docs:
        assert len(doc.ents) == 3  # one per PII sentence; fillers hold none
        for ent in doc.ents:
            assert ent.text.lower() in allowed[ent.label_], ent.text
            assert ent.text != "Adolescente"  # ages in words do not fit the age frames
            seen_labels.add(ent.label_)
            if ent.label_ in SPANISH.cased and any(c.isalpha() for c in ent.text):
                cases.add("lower" if ent.text.islower() else "upper" if ent.text.isupper() else "title")
        assert sum(filler in doc.text for filler in FILLERS) == 2
    assert seen_labels == set(SOME_VALUES)
    assert cases == {"lower", "upper", "title"}


def test_narrative_notes_are_seeded():
    nlp = make_nlp()

    def notes(seed):
        return [d.text for d in narrative_notes(SOME_VALUES, FILLERS, nlp, notes=5, frames=SPANISH, kind_of=KIND,
                                                seed=seed)]

    assert notes(3) == notes(3) != notes(4)


def test_narrative_notes_need_values():
    with pytest.raises(ValueError, match="no values"):
        narrative_notes({"SEXO_SUJETO_ASISTENCIA": ["Mujer"]}, FILLERS, make_nlp(), notes=1, frames=SPANISH,
                        kind_of=KIND)


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


@pytest.mark.parametrize("content, problem", [
    ('{"behaviour": {"name": [["a", "Se {X}."]]},}', ":1: not a JSON frames file"),
    ('{"narrative": {}}', ': expected an object with "behaviour"'),
    ('{"behaviour": {"name": [["a", "Vi ser {X}."]]}, "narrative": {"name": ["Vi ser {X}."]}}',
     ": narrative.name: 'Vi ser {X}.' is also a behavioural frame (behaviour.name)"),
    ('{"behaviour": {"name": [["a", "Vi ser {X} og {X}."]]}}', ": behaviour.name: 'Vi ser {X} og {X}.' must hold one {X}"),
])
def test_a_bad_frames_file_is_named_in_its_error(tmp_path, content, problem):
    path = tmp_path / "frames.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}{problem}")):
        load_frames("xx", path)


def test_a_user_frames_file_keyed_by_kind_gives_a_language_without_frames_its_notes(tmp_path):
    path = tmp_path / "frames.json"
    path.write_text('{"behaviour": {}, "narrative": {"first_name": ["Vi ser {X} igjen i morgen."]}, '
                    '"cased": ["first_name"]}', encoding="utf-8")
    assert load_frames("fi").source.startswith("no frames for language 'fi'")
    docs = narrative_notes({"ETUNIMI": ["Aino"]}, ["Potilas voi hyvin."], make_nlp("fi"), notes=3,
                           frames=load_frames("fi", path), kind_of={"ETUNIMI": "first_name"}.get, seed=0)
    assert all([(e.text.lower(), e.label_) for e in doc.ents] == [("aino", "ETUNIMI")] for doc in docs)
