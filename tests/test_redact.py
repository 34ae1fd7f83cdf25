import re
import time

import pytest
import spacy
from spacy.tokens import Doc

from synthdeid.redact import reidentify, shift_date

NOTE = (
    "Paciente: Ana Ruiz García, 95 años. Ingreso 12/03/2018, alta 15/03/2018. Visto por la Sra. Ruiz "
    "y por Luis Martín Soto. NHC: 4829311-B. Calle Mayor, 12, 3º B. Vive en Valladolid. "
    "Tel 983 123 456. Acude su hermano Pedro Ruiz García."
)
ENTITIES = [
    ("Ana Ruiz García", "NOMBRE_SUJETO_ASISTENCIA"), ("95", "EDAD_SUJETO_ASISTENCIA"),
    ("12/03/2018", "FECHAS"), ("15/03/2018", "FECHAS"), ("Ruiz", "NOMBRE_SUJETO_ASISTENCIA"),
    ("Luis Martín Soto", "NOMBRE_PERSONAL_SANITARIO"), ("4829311-B", "ID_SUJETO_ASISTENCIA"),
    ("Calle Mayor, 12, 3º B", "CALLE"), ("Valladolid", "TERRITORIO"), ("983 123 456", "NUMERO_TELEFONO"),
    ("Pedro Ruiz García", "FAMILIARES_SUJETO_ASISTENCIA"),
]


def note_doc(nlp, text=NOTE, entities=ENTITIES):
    # Word characters or single punctuation marks: every entity edge is a token edge.
    words, spaces = [], []
    for match in re.finditer(r"\w+|[^\w\s]|\s+", text):
        token = match.group()
        if token.isspace() and words and not spaces[-1] and token[0] == " ":
            spaces[-1], token = True, token[1:]
        if token:
            words.append(token)
            spaces.append(False)
    doc = Doc(nlp.vocab, words=words, spaces=spaces)
    assert doc.text == text
    spans, cursor = [], 0
    for entity, label in entities:
        start = text.index(entity, cursor)
        spans.append(doc.char_span(start, start + len(entity), label=label))
        cursor = start + len(entity)
    assert all(spans), "entity offsets must fall on token boundaries"
    doc.ents = spans
    return doc


def redact(config=None, text=NOTE, entities=ENTITIES, nlp=None):
    nlp = nlp or spacy.blank("es")
    if "pii_redactor" not in nlp.pipe_names:
        nlp.add_pipe("pii_redactor", config=config or {})
    return nlp.get_pipe("pii_redactor")(note_doc(nlp, text, entities))


def test_mask_replaces_every_entity_with_its_label():
    doc = redact()
    assert doc._.deidentified.startswith("Paciente: [NOMBRE_SUJETO_ASISTENCIA], [EDAD_SUJETO_ASISTENCIA] años.")
    assert "Ruiz" not in doc._.deidentified and "4829311" not in doc._.deidentified


def test_label_filter_template_and_keep_per_label():
    doc = redact({"template": "<{label}>", "labels": ["TERRITORIO"]})
    assert doc._.deidentified == NOTE.replace("Valladolid", "<TERRITORIO>")
    doc = redact({"strategies": {"EDAD_SUJETO_ASISTENCIA": "keep"}})
    assert ", 95 años" in doc._.deidentified and "[FECHAS]" in doc._.deidentified


@pytest.mark.parametrize(
    "config, message",
    [
        ({"labels": ["NOMBRE"]}, "unknown label 'NOMBRE'"),
        ({"strategies": {"FECHA": "surrogate"}}, "did you mean FECHAS"),
        ({"strategy": "surogate"}, "did you mean surrogate"),
        ({"strategies": {"FECHAS": "shift"}}, "strategies.FECHAS = 'shift' is not a strategy"),
        ({"template": "[{label]"}, "malformed template"),
        ({"template": "[{name}]"}, "malformed template"),
        ({"template": "[{label.x}]"}, "malformed template"),
        ({"template": "[{label[x]}]"}, "malformed template"),
        ({"hash_template": "[{label}]"}, "has no {digest}"),
        ({"template": "{text}"}, "must not reinsert"),
        ({"hash_template": "{digest}{text}"}, "must not reinsert"),
        ({"strategy": "hash"}, "needs a key"),
        ({"consistency": "global"}, "consistency = 'global'"),
        ({"date_shift_days": [10, -10]}, "date_shift_days"),
        ({"date_shift_days": [0, 0]}, "date_shift_days = [0, 0]"),
    ],
)
def test_configuration_errors_are_loud_and_name_the_component(config, message, monkeypatch):
    monkeypatch.delenv("SYNTHDEID_HASH_KEY", raising=False)
    with pytest.raises(ValueError) as err:
        spacy.blank("es").add_pipe("pii_redactor", config=config)
    assert "pii_redactor" in str(err.value) and message in str(err.value)


def test_a_config_names_the_labels_of_any_scheme_or_of_its_own_map():
    # Shipped schemes' labels (Nor-DeID's First_Name), and a corpus's own through label_kinds.
    spacy.blank("nb").add_pipe("pii_redactor", config={"strategies": {"First_Name": "keep"}})
    spacy.blank("de").add_pipe("pii_redactor", config={"labels": ["ARZT"], "label_kinds": {"ARZT": "name"}})
    with pytest.raises(ValueError, match="unknown label 'First_Nam'.*did you mean First_Name"):
        spacy.blank("nb").add_pipe("pii_redactor", config={"labels": ["First_Nam"]})


def replacement_of(doc, text, occurrence=0):
    matches = [r for r in doc._.pii_replacements if r["text"] == text]
    return matches[occurrence]["replacement"]


def test_surrogates_are_consistent_distinct_and_realistic():
    doc = redact({"strategy": "surrogate"})
    words = set(re.findall(r"\w+", doc._.deidentified))
    for original in ("Ana", "Ruiz", "García", "Luis", "Martín", "Soto", "Pedro", "4829311", "Mayor", "Valladolid"):
        assert original not in words
    assert "983 123 456" not in doc._.deidentified
    patient = replacement_of(doc, "Ana Ruiz García").split()
    assert len(patient) == 3
    # the later "Sra. Ruiz" is the same surname as in the full name
    assert replacement_of(doc, "Ruiz") == patient[1]
    doctor = replacement_of(doc, "Luis Martín Soto").split()
    assert len(doctor) == 3 and not set(doctor) & set(patient)
    # shapes: digit for digit, letter for letter, punctuation kept
    assert re.fullmatch(r"\d{7}-[A-Z]", replacement_of(doc, "4829311-B"))
    assert re.fullmatch(r"\d{3} \d{3} \d{3}", replacement_of(doc, "983 123 456"))
    assert re.fullmatch(r".+, \d\d, \dº [A-Z]", replacement_of(doc, "Calle Mayor, 12, 3º B"))
    # ages over 89 become 90; a relative's mention is left as the NER found it
    assert replacement_of(doc, "95") == "90"


def test_an_age_in_words_is_masked_not_kept():
    text = "Mujer de noventa y cinco años y 95 años."
    entities = [("noventa y cinco", "EDAD_SUJETO_ASISTENCIA"), ("95", "EDAD_SUJETO_ASISTENCIA")]
    doc = redact({"strategy": "surrogate"}, text=text, entities=entities)
    assert doc._.deidentified == "Mujer de [EDAD_SUJETO_ASISTENCIA] años y 90 años."


def test_name_surrogates_keep_titles_and_replace_initials():
    text = "Atendida por Dra Soto, luego por A. Ruiz y por Ana Ruiz."
    entities = [("Dra Soto", "NOMBRE_PERSONAL_SANITARIO"), ("A. Ruiz", "NOMBRE_PERSONAL_SANITARIO"),
                ("Ana Ruiz", "NOMBRE_SUJETO_ASISTENCIA")]
    doc = redact({"strategy": "surrogate"}, text=text, entities=entities)
    titled, initialled = replacement_of(doc, "Dra Soto"), replacement_of(doc, "A. Ruiz")
    assert titled.startswith("Dra ") and "Soto" not in titled
    assert re.fullmatch(r"[A-Z]\. \w+", initialled) and not initialled.startswith("A.")
    assert initialled.split()[1] == replacement_of(doc, "Ana Ruiz").split()[1]  # same surname, same surrogate


@pytest.mark.parametrize("lang, text, entities, kept", [
    ("nb", "Samtale med fru Hansen og hennes mor Kari Olsen, Olav Tryggvasons gate 12.",
     [("fru Hansen", "NAVN"), ("hennes mor Kari Olsen", "PAARORENDE"), ("Olav Tryggvasons gate 12", "ADRESSE")],
     {"fru Hansen": "fru ", "hennes mor Kari Olsen": "hennes mor ", "Olav Tryggvasons gate 12": None}),
    ("en", "Seen with Mrs. Patel and her daughter Ann Patel at 12 Elm Street.",
     [("Mrs. Patel", "NAME"), ("her daughter Ann Patel", "RELATIVE"), ("12 Elm Street", "ADDRESS")],
     {"Mrs. Patel": "Mrs. ", "her daughter Ann Patel": "her daughter ", "12 Elm Street": None}),
])
def test_surrogates_keep_titles_kinship_and_street_words_of_the_language(lang, text, entities, kept):
    kinds = {"NAVN": "name", "PAARORENDE": "relative", "ADRESSE": "street", "NAME": "name", "RELATIVE": "relative",
             "ADDRESS": "street"}
    doc = redact({"strategy": "surrogate", "label_kinds": {label: kinds[label] for _, label in entities}},
                 text=text, entities=entities, nlp=spacy.blank(lang))
    for original, start in kept.items():
        replacement = replacement_of(doc, original)
        assert not replacement.startswith("["), (original, replacement)  # a surrogate, not the mask
        if start:
            assert replacement.startswith(start) and replacement != original, (original, replacement)
    originals = {"Hansen", "Kari", "Olsen", "Tryggvasons", "Patel", "Ann", "Elm"}
    assert not originals & set(re.findall(r"\w+", doc._.deidentified))


# A model trained on surrogates meets the forms real notes write ("C/", "Avda.",
# "Complejo Hospitalario de", an .es address), not Faker's alone.
FORM_ORIGINALS = {"Purísima", "Cid", "Campeador", "Castellana", "Balmes", "Colón", "Navarra", "Asturias", "Juan",
                  "Cruz", "vroca", "mgarcia", "hmdc", "sacyl", "pepe", "localhost", "Alcalá", "Henares",
                  "Sebastián", "Reyes", "Coruña", "SANTIAGO", "Getafe", "México"}


@pytest.mark.parametrize("note, value, label, form", [
    ("Domicilio: {}.", "C/ Purísima, 32", "CALLE", r"C/ \w+, \d\d"),
    ("Domicilio: {}.", "Avda. Cid Campeador, 96", "CALLE", r"Avda\. \w+ \w+, \d\d"),
    ("Domicilio: {}.", "Paseo de la Castellana, 261, 3º Izq", "CALLE", r"Paseo de la \w+, \d{3}, \dº Izq"),
    ("Domicilio: {}.", "Carrer de Balmes s/n", "CALLE", r"Carrer de \w+ s/n"),
    ("Domicilio: {}.", "Colón, 28", "CALLE", r"\w+, \d\d"),
    ("Remitido al {}.", "Complejo Hospitalario de Navarra", "HOSPITAL", r"Complejo Hospitalario de \w+"),
    ("Remitido al {}.", "Hospital Universitario Central de Asturias", "HOSPITAL",
     r"Hospital Universitario Central de \w+"),
    ("Remitido al {}.", "Hospital San Juan de la Cruz", "HOSPITAL", r"Hospital San \w+ de la \w+"),
    # a free-mail provider names no one: kept; other domains: fake words, same top level
    ("Correo: {} .", "vroca@hotmail.com", "CORREO_ELECTRONICO", r"[\w.-]+@hotmail\.com"),
    ("Correo: {} .", "mgarcia@hmdc.sacyl.es", "CORREO_ELECTRONICO", r"[\w.-]+@[\w-]+\.[\w-]+\.es"),
    ("Correo: {} .", "pepe@localhost", "CORREO_ELECTRONICO", r"[\w.-]+@[\w-]+\.\w+"),
    # a town keeps its particles and place words; each other word, a word of a Faker town
    ("Vive en {}.", "Alcalá de Henares", "TERRITORIO", r"\w+ de \w+"),
    ("Vive en {}.", "San Sebastián de los Reyes", "TERRITORIO", r"San \w+ de los \w+"),
    ("Vive en {}.", "A Coruña", "TERRITORIO", r"A \w+"),
    ("Vive en {} desde 2010.", "México D.F", "TERRITORIO", r"\w+ D\.F"),
    ("Vive en {}.", "SANTIAGO", "TERRITORIO", r"[^\W\d_a-z]+"),
    ("Vive en {}.", "Getafe", "TERRITORIO", r"\w+"),
])
def test_surrogates_keep_the_originals_form(note, value, label, form):
    doc = redact({"strategy": "surrogate"}, text=note.format(value), entities=[(value, label)])
    replacement = replacement_of(doc, value)
    assert re.fullmatch(form, replacement), replacement
    assert not FORM_ORIGINALS & set(re.findall(r"[^\W_]+", replacement))


def test_dates_move_together_keeping_format_and_intervals():
    import datetime as dt

    doc = redact({"strategy": "surrogate"})
    first, second = replacement_of(doc, "12/03/2018"), replacement_of(doc, "15/03/2018")
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", first) and first != "12/03/2018"
    parse = lambda s: dt.datetime.strptime(s, "%d/%m/%Y").date()  # noqa: E731
    assert (parse(second) - parse(first)).days == 3


@pytest.mark.parametrize(
    "text, days, expected",
    [
        ("12/03/2018", 20, "01/04/2018"),
        ("1-3-18", -1, "28-2-18"),
        ("29.02.2016", 366, "01.03.2017"),
        ("12/03", 1, "13/03"),
        ("03/2018", 31, "04/2018"),
        ("3 de marzo de 2018", 30, "2 de abril de 2018"),
        ("Marzo del 2019", 31, "Abril del 2019"),
        ("2017", 200, "2018"),
        ("2018-03-12", 20, "2018-04-01"),
        ("12 marzo 2018", 20, "1 abril 2018"),
        ("Marzo 2018", 31, "Abril 2018"),
        ("1º de marzo de 2018", 1, "2 de marzo de 2018"),
        ("1º de marzo de 2018", 365, "1º de marzo de 2019"),
        ("ayer", 5, None),
        ("31/02/2018", 5, None),
    ],
)
def test_shift_date(text, days, expected):
    assert shift_date(text, days) == expected


def test_surrogates_are_seeded():
    first = redact({"strategy": "surrogate", "seed": 1})._.deidentified
    assert redact({"strategy": "surrogate", "seed": 1})._.deidentified == first
    assert redact({"strategy": "surrogate", "seed": 2})._.deidentified != first


def test_corpus_consistency_keeps_one_mapping_across_documents():
    entities = [("Ana Ruiz", "NOMBRE_SUJETO_ASISTENCIA")]
    for consistency, same in (("corpus", True), ("document", False)):
        nlp = spacy.blank("es")
        nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "consistency": consistency})
        a = redact(text="Paciente Ana Ruiz.", entities=entities, nlp=nlp)
        b = redact(text="Control de Ana Ruiz hoy.", entities=entities, nlp=nlp)
        assert (replacement_of(a, "Ana Ruiz") == replacement_of(b, "Ana Ruiz")) is same


def test_hash_is_keyed_and_consistent(monkeypatch):
    entities = [("Ana Ruiz", "NOMBRE_SUJETO_ASISTENCIA"), ("Luis Soto", "NOMBRE_SUJETO_ASISTENCIA"),
                ("Ana  Ruiz", "NOMBRE_SUJETO_ASISTENCIA")]
    text = "Ana Ruiz y Luis Soto; Ana  Ruiz."
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "k1")
    doc = redact({"strategy": "hash"}, text, entities)
    tokens = [r["replacement"] for r in doc._.pii_replacements]
    assert re.fullmatch(r"\[NOMBRE_SUJETO_ASISTENCIA-[0-9a-f]{12}\]", tokens[0])
    assert tokens[0] == tokens[2] != tokens[1]
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "k2")
    other_key = redact({"strategy": "hash"}, text, entities)._.pii_replacements[0]["replacement"]
    assert other_key != tokens[0]


@pytest.mark.parametrize("strategy", ["mask", "surrogate", "hash"])
def test_mapping_round_trip(strategy, monkeypatch):
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "k")
    doc = redact({"strategy": strategy})
    assert doc._.deidentified != NOTE
    assert reidentify(doc._.deidentified, doc._.pii_replacements) == NOTE
    with pytest.raises(ValueError, match="does not fit"):
        reidentify("x" + doc._.deidentified, doc._.pii_replacements)


def test_time_grows_linearly_with_the_text():
    def seconds(repeats):
        nlp = spacy.blank("es")
        redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate"})
        doc = note_doc(nlp, " ".join([NOTE] * repeats), ENTITIES * repeats)
        start = time.perf_counter()
        redactor(doc)
        return time.perf_counter() - start

    seconds(5)  # Faker's locale loads once
    small, large = seconds(100), seconds(1000)
    # linear: about 10x; the old redactor (text rebuilt per entity) was about 100x
    assert large / small < 30, (small, large)


def test_the_hash_key_is_never_in_the_config_a_file_or_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHDEID_HASH_KEY", raising=False)
    key = "k3y-0f-the-h0spital"
    nlp = spacy.blank("es")
    nlp.add_pipe("pii_redactor")
    nlp.to_disk(tmp_path / "p")
    # A key in the config is refused, and no error names it, not even spaCy's for another bad setting.
    for config in ({"components.pii_redactor.hash_key": key},
                   {"components.pii_redactor.hash_key": key, "components.pii_redactor.seed": "abc"},
                   {"components.pii_redactor.hash_key": key, "components.pii_redactor.date_shift_days": "x"}):
        with pytest.raises(ValueError) as err:
            spacy.load(tmp_path / "p", config=config)
        assert key not in str(err.value) and "pii_redactor" in str(err.value)
    with pytest.raises(ValueError, match="seed = 'abc': expected an integer"):
        spacy.load(tmp_path / "p", config={"components.pii_redactor.seed": "abc"})
    # The key comes from a file the config names; saving the pipeline writes the path, not the key.
    (tmp_path / "key").write_text(key + "\n")
    loaded = spacy.load(tmp_path / "p", config={"components.pii_redactor.strategy": "hash",
                                                "components.pii_redactor.hash_key_file": str(tmp_path / "key")})
    loaded.to_disk(tmp_path / "saved")
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", key)
    from_env = redact({"strategy": "hash"})
    from_file = redact({"strategy": "hash", "hash_key_file": str(tmp_path / "key")})
    assert from_env._.deidentified == from_file._.deidentified  # the same key either way
    for path in (tmp_path / "saved").rglob("*"):
        assert not path.is_file() or key.encode() not in path.read_bytes(), path
    with pytest.raises(ValueError, match="hash_key_file .*missing: cannot be read"):
        redact({"strategy": "hash", "hash_key_file": str(tmp_path / "missing")})


@pytest.mark.parametrize("config, message", [
    ({"date_shift_days": [5000000, 5000001]}, "at most 36525 days"),
    ({"date_shift_days": [-4000000, 4000000]}, "at most 36525 days"),
    ({"date_shift_days": [1.5, 3]}, "two integers"),
    ({"seed": True}, "seed = True: expected an integer"),
    ({"labels": "NOMBRE_SUJETO_ASISTENCIA"}, "a list of labels"),
    ({"labels": ["NOMBRE"]}, "did you mean NOMBRE_PERSONAL_SANITARIO or NOMBRE_SUJETO_ASISTENCIA"),
])
def test_settings_outside_what_the_redactor_can_do_fail_at_load(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        spacy.blank("es").add_pipe("pii_redactor", config=config)


@pytest.mark.parametrize("text, days, expected", [
    ("31/12/9999", 1, None),  # past the calendar: masked, not an OverflowError
    ("01/01/0001", -1, None),
    ("0001-01-02", 65, "0001-03-08"),  # years keep their four digits
    ("01/01/1000", -400, "27/11/0998"),
    ("0000-01-01", 1, None),
    ("03/0000", 1, None),
])
def test_dates_at_the_ends_of_the_calendar(text, days, expected):
    assert shift_date(text, days) == expected


def test_the_mapping_says_which_strategy_each_replacement_got():
    text = "Paciente: Ana Ruiz, de noventa años. Clave: A7. Vive en Valladolid."
    entities = [("Ana Ruiz", "NOMBRE_SUJETO_ASISTENCIA"), ("noventa", "EDAD_SUJETO_ASISTENCIA"),
                ("A7", "ID_SUJETO_ASISTENCIA"), ("Valladolid", "TERRITORIO")]
    nlp = spacy.blank("es")
    nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "strategies": {"ID_SUJETO_ASISTENCIA": "mask"}})
    doc = nlp.get_pipe("pii_redactor")(note_doc(nlp, text, entities))
    applied = {r["text"]: r["strategy"] for r in doc._.pii_replacements}
    # an age in words has no surrogate: it falls back to the mask, and says so
    assert applied == {"Ana Ruiz": "surrogate", "noventa": "mask", "A7": "mask", "Valladolid": "surrogate"}
    assert "[EDAD_SUJETO_ASISTENCIA]" in doc._.deidentified
