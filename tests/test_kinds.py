"""Label schemes as data: kinds of labels, and surrogates of the right kind and language."""

import importlib
import re

import pytest
import spacy

import synthdeid.redact  # noqa: F401  registers pii_redactor
from synthdeid.kinds import KINDS, LabelKinds, guess_kind, shipped_schemes
from synthdeid.redact import faker_locale


@pytest.mark.parametrize("label, kind", [
    ("First_Name", "first_name"), ("Last_Name", "surname"), ("NAME_PATIENT", "name"), ("PATIENT", "name"),
    ("Phone_Number", "phone"), ("Social_Security_Number", "identifier"), ("MEDICALRECORD", "identifier"),
    ("Health_Care_Unit", "hospital"), ("Date_Part", "date"), ("ADMISSION_DATE", "date"), ("Location", "city"),
    ("E-Mail", "email"), ("Fax", "fax"), ("ZIP", "zip"), ("Profession", "profession"), ("Sexo", "sex"),
    ("Something", None),
])
def test_a_kind_is_guessed_from_the_label_name(label, kind):
    assert guess_kind(label) == kind


def test_shipped_schemes_name_kinds_only_and_overrides_come_first():
    assert {"meddocan", "nor_deid", "i2b2"} <= set(shipped_schemes())
    for scheme in shipped_schemes().values():
        for entry in scheme["kinds"].values():
            assert (entry if isinstance(entry, str) else entry["kind"]) in KINDS
    kinds = LabelKinds({"Location": "street", "CENTRO_SALUD": "organisation"})
    assert kinds.entry("Location") == ("street", None, "the label_kinds map")
    assert kinds.entry("HOSPITAL") == ("hospital", None, "a shipped scheme")
    assert kinds.entry("NAME_PATIENT") == ("name", None, "a guess from the label's name")
    assert kinds.entry("Xyz") == (None, None, "nothing")
    with pytest.raises(ValueError, match="label_kinds: A = 'place' is not a kind"):
        LabelKinds({"A": "place"})


def doc_with(nlp, text, entities):
    doc = nlp.make_doc(text)
    spans, cursor = [], 0
    for value, label in entities:
        start = text.index(value, cursor)
        spans.append(doc.char_span(start, start + len(value), label=label))
        cursor = start + len(value)
    doc.ents = spans
    return doc


def person_names(locale):
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    first = {*provider.first_names_male, *provider.first_names_female}
    return first, set(provider.last_names)


def test_a_norwegian_pipeline_gets_norwegian_surrogates_of_each_kind():
    nlp = spacy.blank("nb")
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "seed": 1})
    assert redactor.locale == "no_NO" == faker_locale("nb")
    text = "Kari Nordmann ( 63 år ) ble innlagt ved UNN Tromsø 10.03.2017 , telefon 91234567 . Notat : Xyz ."
    doc = redactor(doc_with(nlp, text, [("Kari", "First_Name"), ("Nordmann", "Last_Name"), ("63 år", "Age"),
                                         ("UNN", "Health_Care_Unit"), ("Tromsø", "Location"),
                                         ("10.03.2017", "Date"), ("91234567", "Phone_Number"), ("Xyz", "Note")]))
    out = {item["label"]: item["replacement"] for item in doc._.pii_replacements}
    first, last = person_names("no_NO")
    assert out["First_Name"] in first and out["Last_Name"] in last
    # A unit's name in capitals becomes a fake town in capitals; a town is never a bare surname.
    assert out["Age"] == "63 år" and out["Health_Care_Unit"].isupper() and out["Health_Care_Unit"] != "UNN"
    assert out["Location"] != "Tromsø" and out["Location"][0].isupper() and out["Location"] not in last
    day, month, year = out["Date"].split(".")
    assert len(day) == len(month) == 2 and len(year) == 4 and out["Date"] != "10.03.2017"
    assert out["Phone_Number"].isdigit() and len(out["Phone_Number"]) == 8 and out["Phone_Number"] != "91234567"
    # A label with no kind anywhere is masked (and named in a warning).
    assert out["Note"] == "[Note]"


def test_a_label_without_a_kind_is_named_in_a_warning():
    nlp = spacy.blank("en")
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate"})
    with pytest.warns(UserWarning, match="label 'Xyz' has no kind"):
        redactor(doc_with(nlp, "Seen by Xyz.", [("Xyz", "Xyz")]))


def test_an_english_pipeline_with_i2b2_labels_gets_english_names_and_a_map_overrides_a_kind():
    nlp = spacy.blank("en")
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "seed": 2,
                                                    "label_kinds": {"WARD": "identifier"}})
    assert redactor.locale == "en_US"
    doc = redactor(doc_with(nlp, "Mary Jones was seen on ward 4B by Dr Brown.",
                            [("Mary Jones", "PATIENT"), ("4B", "WARD"), ("Brown", "DOCTOR")]))
    first, last = person_names("en_US")
    out = {item["label"]: item["replacement"] for item in doc._.pii_replacements}
    given, family = out["PATIENT"].split()
    assert given in first and family in last and out["DOCTOR"] in last
    assert out["WARD"][0].isdigit() and out["WARD"][1].isupper() and out["WARD"] != "4B"


def test_an_organisation_keeps_the_words_its_language_s_form_writes():
    # "Klinikum {surname}": the original may share "Klinikum" (it says what,
    # not which), never its own surname or another entity's words.
    nlp = spacy.blank("de")
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate",
                                                    "label_kinds": {"KLINIK": "hospital", "ORT": "city"}})
    for seed in range(5):
        doc = redactor(doc_with(nlp, "Im Klinikum Weber in Hamburg.", [("Klinikum Weber", "KLINIK"),
                                                                          ("Hamburg", "ORT")]))
        out = {item["label"]: item for item in doc._.pii_replacements}
        assert out["KLINIK"]["strategy"] == "surrogate" and out["KLINIK"]["replacement"].startswith("Klinikum ")
        assert "Weber" not in out["KLINIK"]["replacement"] and "Hamburg" not in out["KLINIK"]["replacement"]


def test_a_kind_that_is_not_a_table_is_refused():
    with pytest.raises(ValueError, match="label_kinds = "):
        spacy.blank("en").add_pipe("pii_redactor", config={"label_kinds": {"A": 3}})


@pytest.mark.parametrize("text, lang, expected", [
    ("10 . september 1963", "no", "10 . oktober 1963"),  # Nor-DeID's tokenised form
    ("10. mars 2017", "no", "9. april 2017"),
    ("3 Jan. 2019", "en", "2 Feb. 2019"),
    ("3 January, 2019", "en", "2 February, 2019"),
    ("3 Apr. 2019", "en", "3 May 2019"),  # May has no shorter name, so no period
    ("3. März 2019", "de", "2. April 2019"),
    ("14.02.2019", "no", "16.03.2019"),
    ("12 de marzo de 2018", "es", "11 de abril de 2018"),
    ("March 3, 2019", "en", None),  # not read: the redactor masks it
])
def test_a_date_is_moved_in_its_language_s_own_written_form(text, lang, expected):
    from synthdeid.redact import shift_date

    assert shift_date(text, 30, lang) == expected


@pytest.mark.parametrize("content, problem", [
    ('{"ARZT": "name",}', r":1: not a JSON file of label -> kind"),
    ('["ARZT"]', r": expected an object of label -> kind"),
    ('{"ARZT": {"template": "Dr. {surname}"}}', r": 'kind'"),
])
def test_a_bad_label_kinds_file_is_named_in_its_error(tmp_path, content, problem):
    from synthdeid.kinds import read_label_kinds

    path = tmp_path / "kinds.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path)) + re.escape(problem)):
        read_label_kinds(path)
    path.write_text('{"ARZT": "name"}', encoding="utf-8")
    assert read_label_kinds(path) == {"ARZT": "name"}


@pytest.mark.parametrize("unit, kept, replaced", [
    # Generic words and lower-case words stay; every other word becomes a fake town.
    ("Helse Førde , Florø , psykiatrisk poliklinikk", ["Helse ", " , ", " , psykiatrisk poliklinikk"],
     ["Førde", "Florø"]),
    ("Sykehuset Innlandet HF , DPS Gjøvik", ["Sykehuset ", " HF , DPS "], ["Innlandet", "Gjøvik"]),
    # A compound keeps its generic ending; capitals stay capitals.
    ("Finnmarkskollektivet", ["kollektivet"], ["Finnmarks"]),
    ("TYRILISENTERET I TRONDHEIM", ["SENTERET I "], ["TYRILI", "TRONDHEIM"]),
])
def test_a_norwegian_unit_keeps_its_form_with_fake_towns(unit, kept, replaced):
    nlp = spacy.blank("nb")
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "seed": 3})
    text = f"Innlagt ved {unit} i går ."
    out = redactor(doc_with(nlp, text, [(unit, "Health_Care_Unit")]))._.pii_replacements[0]
    assert out["strategy"] == "surrogate", out
    assert all(part in out["replacement"] for part in kept), out
    assert not any(word in out["replacement"] for word in replaced), out
    assert out["replacement"] == out["replacement"].upper() or not unit.isupper()


def test_a_unit_with_nothing_but_generic_words_is_masked():
    nlp = spacy.blank("nb")
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate"})
    out = redactor(doc_with(nlp, "Sendt til psykiatrisk poliklinikk .", [("psykiatrisk poliklinikk",
                                                                           "Health_Care_Unit")]))
    assert out._.deidentified == "Sendt til [Health_Care_Unit] ."


@pytest.mark.parametrize("locale", ["no_NO", "fr_FR", "pt_BR"])
def test_a_fake_town_is_never_a_bare_surname(locale):
    # These locales write many of their towns as a bare surname: a model
    # trained on such surrogates would learn towns as names.
    lang = locale.split("_")[0]
    nlp = spacy.blank("nb" if lang == "no" else lang)
    redactor = nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "locale": locale,
                                                    "label_kinds": {"TOWN": "city"}})
    surnames = person_names(locale)[1]
    towns = []
    for seed in range(40):
        doc = doc_with(nlp, f"Vive en Xyzville{seed} .", [(f"Xyzville{seed}", "TOWN")])
        towns.append(redactor(doc)._.pii_replacements[0]["replacement"])
    assert len(set(towns)) > 20 and not set(towns) & set(surnames), towns
