import random
import subprocess
import sys
from pathlib import Path

import pytest
from spacy.tokens import DocBin

from synthdeid.training.augment import DATE_WRITINGS, augment_docbin, random_date_text, surrogate_copy
from synthdeid.training.corpus import RawDoc, to_doc
from synthdeid.io import read_docs
from synthdeid.redact import PIIRedactor, shift_date
from synthdeid.training.tokenizer import make_nlp

REPO = Path(__file__).resolve().parents[1]
TEXT = (
    "Nombre: Ana. Apellidos: Ruiz García. NHC: 4829311. Domicilio: Calle Mayor, 12. "
    "Localidad: Valladolid. Fecha de ingreso: 12/03/2018. Sexo: Mujer. "
    "En mayo de 2006 consultó en el Hospital Clínico San Carlos."
)
VALUES = [
    ("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Ruiz García", "NOMBRE_SUJETO_ASISTENCIA"),
    ("4829311", "ID_SUJETO_ASISTENCIA"), ("Calle Mayor, 12", "CALLE"), ("Valladolid", "TERRITORIO"),
    ("12/03/2018", "FECHAS"), ("Mujer", "SEXO_SUJETO_ASISTENCIA"), ("mayo de 2006", "FECHAS"),
    ("Hospital Clínico San Carlos", "HOSPITAL"),
]


def labelled_doc(nlp, name="note-1"):
    spans = []
    for value, label in VALUES:
        start = TEXT.index(value, spans[-1][1] if spans else 0)
        spans.append((start, start + len(value), label))
    doc, _ = to_doc(nlp, RawDoc(name=name, text=TEXT, spans=spans))
    return doc


def write_corpus(path, nlp, n=3):
    DocBin(store_user_data=True, docs=[labelled_doc(nlp, f"note-{i}") for i in range(n)]).to_disk(path)


def test_every_date_writing_is_a_date_the_redactor_reads():
    rng = random.Random(0)
    texts = {random_date_text(rng) for _ in range(500)}
    assert all(shift_date(text, 1) is not None for text in texts), texts
    # Each writing is drawn, month names among them (the generator writes none).
    assert len(texts) > 400 and any("de" in text for text in texts) and any(text.isdigit() for text in texts)
    assert len(DATE_WRITINGS) == 12


def test_surrogate_copy_replaces_values_and_moves_labels():
    nlp = make_nlp()
    doc = labelled_doc(nlp)
    copy = surrogate_copy(doc, PIIRedactor(strategy="surrogate", seed=3), random.Random(3), nlp, "note-1~s")
    assert [e.label_ for e in copy.ents] == [label for _, label in VALUES]
    originals = {e.label_ + e.text for e in doc.ents}
    changed = [e for e in copy.ents if e.label_ + e.text not in originals]
    # Every value with a surrogate changed; the sex has none and stays.
    assert {e.label_ for e in changed} == {label for _, label in VALUES} - {"SEXO_SUJETO_ASISTENCIA"}
    assert [e.text for e in copy.ents if e.label_ == "SEXO_SUJETO_ASISTENCIA"] == ["Mujer"]
    assert all(shift_date(e.text, 1) for e in copy.ents if e.label_ == "FECHAS")
    # The text between entities is the note's own.
    def between(d):
        cuts = [0] + [x for e in d.ents for x in (e.start_char, e.end_char)] + [len(d.text)]
        return [d.text[a:b] for a, b in zip(cuts[::2], cuts[1::2])]
    assert between(copy) == between(doc)
    assert all(e.text == e.text.strip() for e in copy.ents)
    assert copy.user_data["name"] == "note-1~s"
    assert doc._.pii_replacements is None  # the redactor ran on a copy of the note


def test_copies_of_a_norwegian_corpus_are_norwegian(tmp_path):
    # Nor-DeID's labels: the surrogates are of each label's kind, in the
    # corpus's language (Faker's no_NO, CLDR's Norwegian dates), and the
    # narrative notes use the Norwegian frames.
    import importlib

    from babel.dates import get_month_names

    nlp = make_nlp("nb")
    text = "Pasient: Kari Nordmann, 63 år. Innlagt 10. mars 2017 ved Nordlandssykehuset. Tlf. 91234567."
    values = [("Kari", "First_Name"), ("Nordmann", "Last_Name"), ("63 år", "Age"), ("10. mars 2017", "Date"),
              ("Nordlandssykehuset", "Health_Care_Unit"), ("91234567", "Phone_Number")]
    spans = [(text.index(v), text.index(v) + len(v), label) for v, label in values]
    docs = [to_doc(nlp, RawDoc(name=f"n{i}", text=text, spans=spans))[0] for i in range(4)]
    DocBin(store_user_data=True, docs=docs).to_disk(tmp_path / "in.spacy")
    augment_docbin(tmp_path / "in.spacy", tmp_path / "out.spacy", copies=2, narrative=20, seed=0, lang="nb",
                   name_pool="locale")
    out = read_docs(tmp_path / "out.spacy", nlp.vocab)
    person = importlib.import_module("faker.providers.person.no_NO").Provider
    months = {name.lower() for width in ("wide", "abbreviated")
              for name in get_month_names(width, locale="nb").values()}
    copies = [doc for doc in out if "~surrogate" in doc.user_data["name"]]
    assert len(copies) == 8
    for doc in copies:
        found = {ent.label_: ent.text for ent in doc.ents}
        assert found["First_Name"] in set(person.first_names) and found["Last_Name"] in set(person.last_names)
        # The unit keeps its form: a fake town before the compound's generic ending.
        unit = found["Health_Care_Unit"]
        assert unit.endswith("sykehuset") and unit != "Nordlandssykehuset" and found["Age"] == "63 år"
        date = found["Date"]
        assert date.isdigit() or "-" in date or "." in date or set(date.lower().split()) & months, date
    narrative = [doc for doc in out if doc.user_data["name"].startswith("narrative")]
    assert len(narrative) == 20 and all(doc.ents for doc in narrative)
    assert any("Time til" in doc.text or "har hatt feber" in doc.text for doc in narrative)


def test_copies_draw_names_from_every_locale_of_the_script(tmp_path):
    # no_NO has 200 first names and 101 surnames: by default the copies'
    # names come from every Latin-script locale, so a model learns names from
    # their context; "locale" keeps to no_NO's lists.
    import importlib

    nlp = make_nlp("nb")
    spans = [(9, 13, "First_Name"), (14, 22, "Last_Name")]
    docs = [to_doc(nlp, RawDoc(name=f"n{i}", text=f"Pasient: Kari Nordmann kom {i}.", spans=spans))[0]
            for i in range(60)]
    DocBin(store_user_data=True, docs=docs).to_disk(tmp_path / "in.spacy")
    person = importlib.import_module("faker.providers.person.no_NO").Provider
    norwegian = set(person.first_names) | set(person.last_names)
    found = {}
    for pool in ("script", "locale"):
        stats = augment_docbin(tmp_path / "in.spacy", tmp_path / f"{pool}.spacy", copies=1, narrative=0,
                               lang="nb", name_pool=pool)
        copies = read_docs(tmp_path / f"{pool}.spacy", nlp.vocab)[60:]
        found[pool] = [ent.text for doc in copies for ent in doc.ents]
        assert (stats["name_locales"] > 20) == (pool == "script")
    assert set(found["locale"]) <= norwegian
    assert len(set(found["script"]) - norwegian) > 60 and len(set(found["script"])) > 100
    with pytest.raises(ValueError, match="name_pool must be one of locale, script"):
        augment_docbin(tmp_path / "in.spacy", tmp_path / "x.spacy", name_pool="world")


def test_augment_docbin_appends_seeded_copies(tmp_path):
    nlp = make_nlp()
    source = tmp_path / "train.spacy"
    write_corpus(source, nlp)
    stats = augment_docbin(source, tmp_path / "a.spacy", copies=2, narrative=0, seed=0)
    docs = read_docs(tmp_path / "a.spacy", nlp.vocab)
    assert stats["output"]["documents"] == len(docs) == 9 and stats["input"]["documents"] == 3
    assert [d.text for d in docs[:3]] == [TEXT] * 3  # the labelled notes first, as they were
    assert [d.user_data["name"] for d in docs[3:]] == [f"note-{i}~surrogate{k}" for k in (1, 2) for i in range(3)]
    assert len({d.text for d in docs[3:]}) == 6  # every copy draws its own values
    assert stats["output"]["entities"] == 3 * stats["input"]["entities"]
    augment_docbin(source, tmp_path / "b.spacy", copies=2, narrative=0, seed=0)
    assert [d.text for d in read_docs(tmp_path / "b.spacy", nlp.vocab)] == [d.text for d in docs]
    augment_docbin(source, tmp_path / "c.spacy", copies=2, narrative=0, seed=1)
    assert [d.text for d in read_docs(tmp_path / "c.spacy", nlp.vocab)][3:] != [d.text for d in docs][3:]
    augment_docbin(source, tmp_path / "none.spacy", copies=0, narrative=0)
    assert [d.text for d in read_docs(tmp_path / "none.spacy", nlp.vocab)] == [TEXT] * 3


def test_augment_rejects_bad_input_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="copies"):
        augment_docbin(tmp_path / "x.spacy", tmp_path / "out.spacy", copies=-1)
    (tmp_path / "bad.spacy").write_text("not a docbin", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "augment.py"), str(tmp_path / "bad.spacy"), str(tmp_path / "out.spacy")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1 and "error:" in result.stderr and "bad.spacy" in result.stderr
    assert not (tmp_path / "out.spacy").exists()
    DocBin().to_disk(tmp_path / "empty.spacy")
    with pytest.raises(ValueError, match="empty.spacy: no documents"):
        augment_docbin(tmp_path / "empty.spacy", tmp_path / "out.spacy")
    assert not (tmp_path / "out.spacy").exists()
