import re
from pathlib import Path

import pytest
from spacy.tokens import DocBin

from synthdeid.io import read_docs
from synthdeid.redact import PIIRedactor, holds_any, word_sequence
from synthdeid.training.corpus import RawDoc, to_doc
from synthdeid.training.surrogated import HOW, real_values, surrogate_gold
from synthdeid.training.tokenizer import make_nlp

# (text, [(value, label)], values that identify someone, a mention the annotation missed)
NOTES = {
    "es": (
        "Nombre: Valeria. Apellidos: Roca Caballero. NHC: 4829311. Domicilio: Calle Mayor, 12. "
        "Localidad: Valladolid. Fecha de ingreso: 12/03/2018. Sexo: Mujer. Edad: 45 años. Acude con su madre. "
        "Correo: vroca@hotmail.com. Ingresa en el Hospital Clínico San Carlos. Valeria refiere dolor.",
        [("Valeria", "NOMBRE_SUJETO_ASISTENCIA"), ("Roca Caballero", "NOMBRE_SUJETO_ASISTENCIA"),
         ("4829311", "ID_SUJETO_ASISTENCIA"), ("Calle Mayor, 12", "CALLE"), ("Valladolid", "TERRITORIO"),
         ("12/03/2018", "FECHAS"), ("Mujer", "SEXO_SUJETO_ASISTENCIA"), ("45 años", "EDAD_SUJETO_ASISTENCIA"),
         ("madre", "FAMILIARES_SUJETO_ASISTENCIA"), ("vroca@hotmail.com", "CORREO_ELECTRONICO"),
         ("Hospital Clínico San Carlos", "HOSPITAL")],
        ["Valeria", "Roca", "Caballero", "4829311", "Mayor", "Valladolid", "vroca", "Carlos"],
        "Valeria",
    ),
    "nb": (
        "Pasienten Kari Nordmann, personnummer 01019012345, ble innlagt 10. mars 2017 ved Nordlandssykehuset. "
        "Telefon 77626000. Bosted: Tromsø. Kari er 63 år.",
        [("Kari", "First_Name"), ("Nordmann", "Last_Name"), ("01019012345", "Social_Security_Number"),
         ("10. mars 2017", "Date"), ("Nordlandssykehuset", "Health_Care_Unit"), ("77626000", "Phone_Number"),
         ("Tromsø", "Location"), ("63", "Age")],
        ["Nordmann", "01019012345", "Nordlandssykehuset", "77626000", "Tromsø"],
        None,  # `Kari`, four letters, may recur by chance: it is no distinctive value
    ),
}


def labelled(nlp, text, values, name):
    spans, cursor = [], 0
    for value, label in values:
        start = text.index(value, cursor)
        spans.append((start, start + len(value), label))
        cursor = start + len(value)
    doc, _ = to_doc(nlp, RawDoc(name=name, text=text, spans=spans))
    return doc


@pytest.mark.parametrize("lang", sorted(NOTES))
def test_surrogated_notes_hold_no_real_value_and_keep_their_labels(tmp_path, lang):
    text, values, identifying, missed = NOTES[lang]
    nlp = make_nlp(lang)
    gold = [labelled(nlp, text, values, f"note-{i}") for i in range(3)]
    for split in ("train", "validation"):
        DocBin(store_user_data=True, docs=gold).to_disk(tmp_path / f"{split}.spacy")
    stats = surrogate_gold({split: tmp_path / f"{split}.spacy" for split in ("train", "validation")},
                           tmp_path / "out", lang=lang, seed=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["stats.json", "train.spacy", "validation.spacy"]
    out = read_docs(tmp_path / "out" / "train.spacy", nlp.vocab)
    counts = stats["splits"]["train"]["values"]
    assert sum(counts[how] for how in HOW if how != "unannotated_mention") == 3 * len(values)
    assert counts["mask"] == 0 and counts["unannotated_mention"] == (3 if missed else 0)
    for doc, original in zip(out, gold):
        assert [e.label_ for e in doc.ents] == [e.label_ for e in original.ents]  # the labels moved with the values
        found = set(re.findall(r"\w+", doc.text))
        assert not found & set(identifying), doc.text
        date = next(e for e in doc.ents if e.label_ in ("FECHAS", "Date"))
        assert date.text not in text
        if missed:  # the unlabelled mention took the labelled value's surrogate
            first = doc.ents[0].text
            assert doc.text.removesuffix(" refiere dolor.").endswith(first), doc.text
    if lang == "es":  # nothing identifying in them: as written
        assert {"madre", "Mujer", "45 años"} <= {e.text for doc in out for e in doc.ents}
    assert stats == surrogate_gold({split: tmp_path / f"{split}.spacy" for split in ("train", "validation")},
                                   tmp_path / "again", lang=lang, seed=0)  # seeded
    assert (tmp_path / "out" / "train.spacy").read_bytes() == (tmp_path / "again" / "train.spacy").read_bytes()


def test_real_values_are_the_distinctive_identifying_ones():
    text, values, _, _ = NOTES["es"]
    nlp = make_nlp("es")
    found = real_values([labelled(nlp, text, values, "note")], "es")
    assert {("valeria",), ("roca", "caballero"), ("4829311",), ("valladolid",), ("calle", "mayor", "12"),
            ("hospital", "clinico", "san", "carlos")} <= found
    # Dates, sexes, ages under 90 and kinship words are no real value; `12` alone would be too short.
    assert not {("12", "03", "2018"), ("mujer",), ("45", "anos"), ("madre",), ("12",)} & found


def test_a_surrogate_never_holds_a_forbidden_value():
    assert holds_any("Hospital Roca Caballero", {("roca", "caballero")})
    assert not holds_any("Rocas Caballeros", {("roca", "caballero")})
    # Of the ten one-digit values, eight are another note's: each draw avoids them.
    redactor = PIIRedactor(strategy="surrogate", label_kinds={"CODE": "identifier"}, seed=0)
    redactor.forbidden_values = frozenset((str(d),) for d in range(10) if d not in (3, 5))
    nlp = make_nlp("es")
    for seed in range(20):
        redactor.seed = seed
        doc = redactor(labelled(nlp, "Código 7.", [("7", "CODE")], "n"))
        assert doc._.deidentified in ("Código 3.", "Código 5."), doc._.deidentified
    assert word_sequence("Calle Mayor, 12") == ("calle", "mayor", "12")


def test_common_countries_are_drawn_from_the_corpus_and_rare_ones_surrogated(tmp_path):
    # España in five notes singles out none of them; Nepal in one might.
    nlp = make_nlp("es")
    countries = ["España"] * 4 + ["México"] * 5 + ["Nepal"]
    gold = [labelled(nlp, f"Paciente natural de {country}.", [(country, "PAIS")], f"note-{i}")
            for i, country in enumerate(countries)]
    gold.append(labelled(nlp, "Vive en España.", [("España", "PAIS")], "note-10"))
    DocBin(store_user_data=True, docs=gold).to_disk(tmp_path / "train.spacy")
    stats = surrogate_gold({"train": tmp_path / "train.spacy"}, tmp_path / "out", lang="es", seed=0)
    assert stats["splits"]["train"]["values"]["common_country"] == 10
    out = [doc.ents[0].text for doc in read_docs(tmp_path / "out" / "train.spacy", nlp.vocab)]
    assert set(out[:9] + out[10:]) == {"España", "México"}
    assert out[9] not in ("Nepal", "España", "México") and not out[9].startswith("[")


def test_a_corpus_without_documents_is_refused(tmp_path):
    DocBin().to_disk(tmp_path / "empty.spacy")
    with pytest.raises(ValueError, match="empty.spacy: no documents"):
        surrogate_gold({"train": tmp_path / "empty.spacy"}, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any(Path(tmp_path / "out").iterdir())
