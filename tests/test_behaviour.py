"""The behavioural test set (recall outside the template) and the pii_rules safety net."""

import re

import pytest
import spacy
from spacy.tokens import Doc, DocBin

import synthdeid.rules  # noqa: F401  registers pii_rules
from synthdeid.rules import known_names
from synthdeid.io import read_docs
from synthdeid.kinds import LabelKinds
from synthdeid.training.behaviour import (build_behaviour_set, frame_values, read_sentences, save_behaviour_set,
                                         score_behaviour)
from synthdeid.training.evaluation import evaluate_pipelines, markdown_report
from synthdeid.training.frames import load_frames
from synthdeid.training.tokenizer import make_nlp

KIND = LabelKinds().kind
SPANISH = load_frames("es")
FRAMES = SPANISH.behaviour


def header_doc(nlp, text, entities):
    doc = nlp.make_doc(text)
    doc.ents = [doc.char_span(text.index(value), text.index(value) + len(value), label=label)
                for value, label in entities]
    return doc


@pytest.fixture(scope="module")
def test_docs():
    nlp = spacy.blank("es")
    return [
        header_doc(nlp, "Nombre: Ana. Apellidos: Ruiz García. NHC: 4829311. Email: ana@uv.es. Dr. Luis Soto.",
                   [("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Ruiz García", "NOMBRE_SUJETO_ASISTENCIA"),
                    ("4829311", "ID_SUJETO_ASISTENCIA"), ("ana@uv.es", "CORREO_ELECTRONICO"),
                    ("Luis Soto", "NOMBRE_PERSONAL_SANITARIO")]),
        header_doc(nlp, "Nombre: Eva Gil. NHC: raza negra. Vive en Lugo, 27001.",
                   [("Eva Gil", "NOMBRE_SUJETO_ASISTENCIA"), ("raza negra", "ID_SUJETO_ASISTENCIA"),
                    ("Lugo", "TERRITORIO"), ("27001", "TERRITORIO")]),
    ]


def test_values_come_from_the_test_docs_with_full_names_and_plausible_forms(test_docs):
    values = frame_values(test_docs, KIND)
    assert values["NOMBRE_SUJETO_ASISTENCIA"] == ["Ana Ruiz García", "Ana", "Ruiz García", "Eva Gil"]
    assert values["ID_SUJETO_ASISTENCIA"] == ["4829311"]  # an identifier without a digit is an annotation slip
    assert values["TERRITORIO"] == ["Lugo"]  # a postal code is no town in prose


def test_every_sentence_holds_one_test_value_in_a_frame(test_docs):
    docs = build_behaviour_set(test_docs, SPANISH, KIND, per_frame=2, seed=3)
    values = {v.lower() for vs in frame_values(test_docs, KIND).values() for v in vs}
    frames = {f"{label}: {frame_id}" for label, frames in FRAMES.items() for frame_id, _ in frames}
    for doc in docs:
        [ent] = doc.ents
        assert ent.text.lower() in values and ent.label_ == doc.user_data["label"]
        assert doc.user_data["frame"] in frames
        if doc.user_data["frame"].endswith(":upper"):
            assert ent.text.isupper()
    # labels with no value in the test docs get no sentence; each frame gets at most per_frame
    assert {doc.user_data["label"] for doc in docs} == {
        "NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO", "ID_SUJETO_ASISTENCIA", "CORREO_ELECTRONICO",
        "TERRITORIO"}
    assert len(docs) == 2 * len(FRAMES["NOMBRE_SUJETO_ASISTENCIA"]) + len(FRAMES["NOMBRE_PERSONAL_SANITARIO"]) \
        + len(FRAMES["ID_SUJETO_ASISTENCIA"]) + len(FRAMES["CORREO_ELECTRONICO"]) + len(FRAMES["TERRITORIO"])
    assert [d.text for d in build_behaviour_set(test_docs, SPANISH, KIND, per_frame=2, seed=3)] == [
        d.text for d in docs]


def test_scores_count_strict_and_caught_recall_and_precision():
    nlp = spacy.blank("es")
    reference = header_doc(nlp, "Visto por el Dr. Luis Soto hoy.", [("Luis Soto", "NOMBRE_PERSONAL_SANITARIO")])
    reference.user_data.update(frame="NOMBRE_PERSONAL_SANITARIO: el Dr. X", label="NOMBRE_PERSONAL_SANITARIO")
    other = header_doc(nlp, "Llamar al 612345678 hoy.", [("612345678", "NUMERO_TELEFONO")])
    other.user_data.update(frame="NUMERO_TELEFONO: llamar al X", label="NUMERO_TELEFONO")
    # the name caught under two wrong labels, plus a stray entity; the phone missed
    predicted = header_doc(nlp, reference.text, [("Visto", "FECHAS"), ("Luis", "INSTITUCION"),
                                                 ("Soto", "TERRITORIO")])
    scores = score_behaviour([reference, other], [predicted, nlp.make_doc(other.text)], KIND)
    name = scores["per_label"]["NOMBRE_PERSONAL_SANITARIO"]
    assert name["strict"]["r"] == 0.0 and name["caught"]["r"] == 1.0
    assert name["caught"]["p"] == pytest.approx(2 / 3) and name["strict"]["p"] == 0.0
    assert scores["groups"]["phones"]["caught"]["r"] == 0.0 and scores["groups"]["names"]["caught"]["r"] == 1.0
    assert scores["micro"]["caught"]["r"] == 0.5


@pytest.mark.parametrize("text, expected", [
    ("El paciente Juan Pérez fue valorado por el Dr. Ruiz, quien solicitó una resonancia.",
     [("Juan Pérez", "NOMBRE_SUJETO_ASISTENCIA"), ("Ruiz", "NOMBRE_PERSONAL_SANITARIO")]),
    ("Contacto: 612 345 678, correo pedro.lopez@gmail.com.",
     [("612 345 678", "NUMERO_TELEFONO"), ("pedro.lopez@gmail.com", "CORREO_ELECTRONICO")]),
    ("Su NSS es 28 73561347 15 (28/73561347/15) y su NHC 4829311; colegiado 28 28 09867.",
     [("28 73561347 15", "ID_ASEGURAMIENTO"), ("28/73561347/15", "ID_ASEGURAMIENTO"), ("4829311", "ID_SUJETO_ASISTENCIA"),
      ("28 28 09867", "ID_TITULACION_PERSONAL_SANITARIO")]),
    ("El 12/03/2018 y el 3 de marzo de 2018, luego marzo de 2019 (pauta 10-0-10); ver www.salud.es/citas.",
     [("12/03/2018", "FECHAS"), ("3 de marzo de 2018", "FECHAS"), ("marzo de 2019", "FECHAS"),
      ("www.salud.es/citas", "URL_WEB")]),
    ("Juana Lozano Puebla acude hoy; llamar al 34 948 136272, al (+34) 670.97.10.26 o con NIE X1234567L hoy.",
     [("Juana Lozano Puebla", "NOMBRE_SUJETO_ASISTENCIA"), ("34 948 136272", "NUMERO_TELEFONO"),
      ("(+34) 670.97.10.26", "NUMERO_TELEFONO"), ("X1234567L", "ID_SUJETO_ASISTENCIA")]),
    ("Tomó 3 comprimidos de 500 mg durante 2 semanas; los ANA y la PIO, normales.", []),
    # Names without a cue word: a run of capitalised words with a known name,
    # one known first name alone, an upper-case heading from its first known name.
    ("Hablamos con Castillo Puebla; Andrea acude. INFORME DE ALTA DE MOLINERO GUERRA.",
     [("Castillo Puebla", "NOMBRE_SUJETO_ASISTENCIA"), ("Andrea", "NOMBRE_SUJETO_ASISTENCIA"),
      ("MOLINERO GUERRA", "NOMBRE_SUJETO_ASISTENCIA")]),
    # Places and organisations that hold a name are left to the NER; a stop word
    # at the start of a sentence is no part of the name.
    ("Unidad de Cabeza y Cuello, Facultad de Ciencias de la Salud. Hoy Juana de la Ossa Prieto acude.",
     [("Juana de la Ossa Prieto", "NOMBRE_SUJETO_ASISTENCIA")]),
    # Lower case after a cue: a known name first, at most one unknown word.
    ("Ingresa el paciente juan valezka para estudio; la paciente refiere dolor; sr. luis ruiz.",
     [("juan valezka", "NOMBRE_SUJETO_ASISTENCIA"), ("luis ruiz", "NOMBRE_SUJETO_ASISTENCIA")]),
])
def test_rules_find_what_has_a_form(text, expected):
    nlp = spacy.blank("es")
    nlp.add_pipe("pii_rules")
    assert [(e.text, e.label_) for e in nlp(text).ents] == expected


def test_the_ner_wins_unless_the_rules_overwrite_and_labels_choose_rules():
    text = "Correo ana@uv.es, tel 612345678."
    for overwrite, expected in ((False, "ID_SUJETO_ASISTENCIA"), (True, "NUMERO_TELEFONO")):
        nlp = spacy.blank("es")
        nlp.add_pipe("entity_ruler").add_patterns([{"label": "ID_SUJETO_ASISTENCIA", "pattern": "612345678"}])
        nlp.add_pipe("pii_rules", config={"overwrite": overwrite})
        ents = [(e.text, e.label_) for e in nlp(text).ents]
        assert ents == [("ana@uv.es", "CORREO_ELECTRONICO"), ("612345678", expected)]
    nlp = spacy.blank("es")
    nlp.add_pipe("pii_rules", config={"labels": ["NUMERO_TELEFONO"]})
    assert [e.label_ for e in nlp(text).ents] == ["NUMERO_TELEFONO"]
    with pytest.raises(ValueError, match="no rules for labels NOMBRE"):
        spacy.blank("es").add_pipe("pii_rules", config={"labels": ["NOMBRE"]})
    # A language without rules of its own runs those of any language, under
    # the pipeline's labels of their kinds, and name runs of Faker's names.
    swedish = spacy.blank("sv")
    swedish.add_pipe("pii_rules", config={"kind_labels": {"email": "EMAIL", "first_name": "FIRST_NAME"}})
    assert [(e.text, e.label_) for e in swedish("Ring Anna Andersson, anna@ki.se.").ents] == [
        ("Anna Andersson", "FIRST_NAME"), ("anna@ki.se", "EMAIL")]
    # Without a label of the kind, an e-mail still is one (the redactor guesses `email` from `EMAIL`).
    swedish = spacy.blank("sv")
    swedish.add_pipe("pii_rules")
    assert [(e.text, e.label_) for e in swedish("Skriv till anna@ki.se eller www.ki.se/kontakt.").ents] == [
        ("anna@ki.se", "EMAIL"), ("www.ki.se/kontakt", "URL")]
    # Where the labels split names into first names and surnames, so does a run.
    split = spacy.blank("sv")
    split.add_pipe("pii_rules", config={"kind_labels": {"first_name": "FIRST_NAME", "surname": "LAST_NAME"}})
    assert [(e.text, e.label_) for e in split("Ring Anna Andersson och Lars.").ents] == [
        ("Anna", "FIRST_NAME"), ("Andersson", "LAST_NAME"), ("Lars", "FIRST_NAME")]
    names_only = spacy.blank("sv")
    names_only.add_pipe("pii_rules", config={"labels": ["FIRST_NAME"], "kind_labels": {"first_name": "FIRST_NAME"}})
    assert [e.text for e in names_only("Ring Anna Andersson, anna@ki.se.").ents] == ["Anna Andersson"]
    with pytest.raises(ValueError, match=r"no rules for labels NAME; the rules' labels are EMAIL, URL"):
        spacy.blank("sv").add_pipe("pii_rules", config={"labels": ["NAME"]})


def test_a_form_rule_takes_the_whole_form_where_the_ner_found_part_of_it():
    text = "Llamar al 612 345 678 o escribir al Dr. Luis Soto Ruiz."
    nlp = spacy.blank("es")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "ID_SUJETO_ASISTENCIA", "pattern": [{"ORTH": "612"}, {"ORTH": "345"}]},
        {"label": "NOMBRE_PERSONAL_SANITARIO", "pattern": [{"ORTH": "Luis"}]},
    ])
    nlp.add_pipe("pii_rules")
    # The phone's whole form, with the NER's label; a name rule's end is a
    # guess, so the NER's name stays as it was.
    assert [(e.text, e.label_) for e in nlp(text).ents] == [
        ("612 345 678", "ID_SUJETO_ASISTENCIA"), ("Luis", "NOMBRE_PERSONAL_SANITARIO")]


@pytest.mark.parametrize("lang, kind_labels, text, ner, expected", [
    # An e-mail or URL the NER took for something else takes its own label
    # (or, with no label of its kind, the kind's name, which the redactor reads).
    ("es", {}, "Escribir a ana@uv.es hoy.", [("INSTITUCION", "ana@uv.es")], [("ana@uv.es", "CORREO_ELECTRONICO")]),
    ("nb", {"city": "Location"}, "Skriv til kari@uit.no i Tromsø.",
     [("Location", "kari@uit.no"), ("Location", "Tromsø")], [("kari@uit.no", "EMAIL"), ("Tromsø", "Location")]),
    # Over more than the address, the span grows to the NER's: never less hidden.
    ("nb", {"email": "E_post", "first_name": "First_Name"}, "Kontakt Kari kari@uit.no nå.",
     [("First_Name", [{"ORTH": "Kari"}, {"ORTH": "kari@uit.no"}])], [("Kari kari@uit.no", "E_post")]),
    # Its own label stays where the NER had it.
    ("sv", {"email": "MAIL"}, "Skriv till anna@ki.se.", [("MAIL", "anna@ki.se")], [("anna@ki.se", "MAIL")]),
])
def test_an_email_or_url_takes_its_own_label_from_the_ner(lang, kind_labels, text, ner, expected):
    nlp = spacy.blank(lang)
    nlp.add_pipe("entity_ruler").add_patterns([{"label": label, "pattern": pattern} for label, pattern in ner])
    nlp.add_pipe("pii_rules", config={"kind_labels": kind_labels})
    assert [(e.text, e.label_) for e in nlp(text).ents] == expected


NORWEGIAN_KINDS = {"phone": "Phone_Number", "identifier": "Social_Security_Number", "date": "Date"}


@pytest.mark.parametrize("text, ner, expected", [
    # Norway's written forms of phone numbers and fødselsnumre, found where the NER found nothing.
    ("Ring 77 62 60 00 eller +47 412 34 567, fnr. 090706 37024 og 01019012345 i journalen.", [],
     [("77 62 60 00", "Phone_Number"), ("+47 412 34 567", "Phone_Number"), ("090706 37024", "Social_Security_Number"),
      ("01019012345", "Social_Security_Number")]),
    ("Telefonnummer: 45360904, mobil 0047 41661392 og +4705633744.", [],
     [("45360904", "Phone_Number"), ("0047 41661392", "Phone_Number"), ("+4705633744", "Phone_Number")]),
    # A phone's form says what it is: the NER's date over it gives way.
    ("Fastlege Hansen, telefon 77 62 60 00.", [("Date", [{"SHAPE": "dd"}] * 4)], [("77 62 60 00", "Phone_Number")]),
    ("Fnr 12345678901 og tlf. 45360904.", [("Phone_Number", [{"ORTH": "12345678901"}]),
                                           ("Social_Security_Number", [{"ORTH": "45360904"}])],
     [("12345678901", "Social_Security_Number"), ("45360904", "Phone_Number")]),
    # A bare run of eight digits is no evident phone: the NER's reading of it stays.
    ("Prøve 10032017 ble sendt.", [("Date", [{"ORTH": "10032017"}])], [("10032017", "Date")]),
])
def test_norwegian_phone_numbers_and_identity_numbers_by_their_written_form(text, ner, expected):
    nlp = make_nlp("nb")  # the shipped pipelines' tokenizer: `00.` is two tokens
    nlp.add_pipe("entity_ruler").add_patterns([{"label": label, "pattern": pattern} for label, pattern in ner])
    nlp.add_pipe("pii_rules", config={"kind_labels": NORWEGIAN_KINDS})
    assert [(e.text, e.label_) for e in nlp(text).ents] == expected


@pytest.mark.parametrize("lang, text, expected", [
    # After a cue word, capitalised words are a name even when no list knows
    # them, and a known name counts in lower case; the scheme's first-name and
    # surname labels split the run.
    ("nb", "Pasienten Kenan ble vurdert. Innlagt pasient kari for utredning. Fru Kari Nordmann ringte.",
     [("Kenan", "Last_Name"), ("kari", "First_Name"), ("Kari", "First_Name"), ("Nordmann", "Last_Name")]),
    ("nb", "Herr Yilmaz forteller om smerter. Dr. Hansen har vurdert bildene.",
     [("Yilmaz", "Last_Name"), ("Hansen", "Last_Name")]),
    # A cue that ends a sentence is no title: the next sentence's first word is no name.
    ("nb", "Planen er delt mellom lege og pasient . Pasienten er informert.", []),
    ("en", "Seen by Dr. Okafor and Mrs. Patel today.", [("Okafor", "NAME"), ("Patel", "NAME")]),
])
def test_cue_words_find_names_in_languages_without_rules_of_their_own(lang, text, expected):
    nlp = spacy.blank(lang)
    kind_labels = ({"first_name": "First_Name", "surname": "Last_Name"} if lang == "nb" else {"name": "NAME"})
    nlp.add_pipe("pii_rules", config={"kind_labels": kind_labels})
    assert [(e.text, e.label_) for e in nlp(text).ents] == expected


def test_a_number_the_ner_took_with_the_word_before_it_is_taken_whole():
    nlp = spacy.blank("es")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "ID_TITULACION_PERSONAL_SANITARIO", "pattern": [{"ORTH": "sanitaria"}, {"ORTH": "28"},
                                                                   {"ORTH": "23748589"}]}])
    nlp.add_pipe("pii_rules")
    doc = nlp("Presenta la tarjeta sanitaria 28 23748589 45 en admisión.")
    assert [(e.text, e.label_) for e in doc.ents] == [("sanitaria 28 23748589 45", "ID_TITULACION_PERSONAL_SANITARIO")]


def test_a_name_the_ner_found_part_of_takes_the_known_names_beside_it():
    nlp = spacy.blank("es")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "NOMBRE_PERSONAL_SANITARIO", "pattern": [{"ORTH": "Manuel"}, {"ORTH": "Ruiz"}]},
        {"label": "NOMBRE_PERSONAL_SANITARIO", "pattern": [{"ORTH": "Ana"}, {"ORTH": "Soto"}]}])
    nlp.add_pipe("pii_rules")
    doc = nlp("Se comenta con Juan Manuel Ruiz. Firma Ana Soto NºCol 2828.")
    # `Juan` is a known name; `NºCol` is not, so the NER's end stays.
    assert [(e.text, e.label_) for e in doc.ents] == [("Juan Manuel Ruiz", "NOMBRE_PERSONAL_SANITARIO"),
                                                      ("Ana Soto", "NOMBRE_PERSONAL_SANITARIO")]


def test_known_names_come_from_fakers_locales_less_stop_words():
    first, every = known_names("es")
    assert {"juan", "andrea", "maria"} <= first and {"gomez", "rodriguez", "perez"} <= every - first
    assert not {"segundo", "de", "la"} & every


def test_written_sentences_become_a_behavioural_set(tmp_path):
    path = tmp_path / "sentences.jsonl"
    path.write_text('{"text": "Llamar a Ana al 612345678 o al 699111222.", "label": "NUMERO_TELEFONO", '
                    '"values": ["612345678", "699111222"]}\n\n', encoding="utf-8")
    [doc] = read_sentences(path)
    assert [(e.text, e.label_) for e in doc.ents] == [("612345678", "NUMERO_TELEFONO"), ("699111222", "NUMERO_TELEFONO")]
    assert doc.user_data == {"frame": "written: NUMERO_TELEFONO", "label": "NUMERO_TELEFONO"}
    for line, message in (('{"text": "Hola", "label": "X", "values": ["Ana"]}', ":1: value 'Ana' is not in the text"),
                          ('{"text": "Hola"}', ":1: not an object with text, label and values"),
                          ('{"text": "Ana Ruiz", "label": "X", "values": ["Ana Ruiz", "Ruiz"]}', ":1: values overlap"),
                          ("", ": no sentences")):
        path.write_text(line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=re.escape(f"{path}{message}")):
            read_sentences(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_sentences(path)


def test_evaluation_reports_recall_outside_the_template(test_docs, tmp_path):
    save_behaviour_set(build_behaviour_set(test_docs, SPANISH, KIND, per_frame=2), tmp_path / "behaviour.spacy")
    DocBin(docs=test_docs).to_disk(tmp_path / "test.spacy")
    nlp = spacy.blank("es")
    nlp.add_pipe("pii_rules")
    nlp.to_disk(tmp_path / "rules")
    results = evaluate_pipelines(tmp_path / "test.spacy", {"rules": tmp_path / "rules"},
                                 behaviour_path=tmp_path / "behaviour.spacy")
    behaviour = results["pipelines"]["rules"]["behaviour"]
    assert behaviour["groups"]["e-mails"]["caught"]["r"] == 1.0
    assert len(read_docs(tmp_path / "behaviour.spacy")) == results["behaviour_set"]["sentences"]
    assert "Recall outside the template" in markdown_report(results)


def test_values_with_odd_spacing_become_sentences():
    nlp = spacy.blank("es")
    doc = header_doc(nlp, "Nombre: Carlos. Apellidos: Miguel  Chamoy\n Ruiz.",
                     [("Carlos", "NOMBRE_SUJETO_ASISTENCIA"), ("Miguel  Chamoy\n Ruiz", "NOMBRE_SUJETO_ASISTENCIA")])
    sentences = build_behaviour_set([doc], SPANISH, KIND, per_frame=3)
    assert "El paciente Carlos Miguel Chamoy Ruiz fue valorado en consulta de Digestivo." in [d.text for d in sentences]


def test_a_corpus_no_frame_covers_gets_an_empty_set_that_evaluation_reports(tmp_path):
    nlp = spacy.blank("fi")
    doc = nlp.make_doc("Kari Nordmann ble innlagt .")
    doc.ents = [doc.char_span(0, 4, label="First_Name")]
    assert build_behaviour_set([doc], load_frames("fi"), KIND) == []
    save_behaviour_set([], tmp_path / "behaviour.spacy")
    DocBin(docs=[doc]).to_disk(tmp_path / "test.spacy")
    nlp.to_disk(tmp_path / "blank")
    results = evaluate_pipelines(tmp_path / "test.spacy", {"blank": tmp_path / "blank"},
                                 behaviour_path=tmp_path / "behaviour.spacy")
    assert results["behaviour_set"]["sentences"] == 0
    assert "holds no sentences (no frame covers this corpus's labels)" in markdown_report(results)
