"""The customised Spanish tokenizer: gold-span alignment, no needless splits,
and serialisation that needs no synthdeid code to load."""

import json
import subprocess
import sys

import pytest

from synthdeid.training.tokenizer import make_nlp


@pytest.fixture(scope="module")
def nlp():
    return make_nlp()


def aligned(nlp, text, covered, occurrence=0):
    """Whether the `occurrence`-th `covered` in `text` falls on token boundaries."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(covered, start + 1)
    return nlp.make_doc(text).char_span(start, start + len(covered)) is not None


# (text, gold span text) pairs; the first four are the corpus README's examples.
ALIGNED = [
    ("Edad: 70 años Sexo: H.\nFecha de Ingreso: 12/12/2016.", "H"),
    ("CIPA: nhc-150679.\nNASS: 78 91234567 12.", "150679"),
    ("C/ Arturo Soria, s/n E-28935 Móstoles (Madrid).", "28935"),
    ("Localidad/ Provincia: Madrid.\nCP:28029.\nNHC:915943.", "28029"),
    ("Localidad/ Provincia: Madrid.\nCP:28029.\nNHC:915943.", "915943"),
    ("Sexo:M.\nFecha", "M"),
    ("Edad:62 años Sexo: M.", "62 años"),
    ("NºCol:49 49 38492.\nInforme", "49 49 38492"),
    ("Domicilio: Calle de la bola 19, 11A.\nLocalidad", "Calle de la bola 19, 11A"),
    ("Domicilio: Paseo Marqués de Zafra, 12, 3ºD. 28028 Madrid", "Paseo Marqués de Zafra, 12, 3ºD"),
    ("Domicilio: Av. del Rio, 34, 3, A.\nLocalidad", "Av. del Rio, 34, 3, A"),
    ("Avda. de Elvas s/n. 06080 Badajoz.", "Avda. de Elvas s/n"),
    ("Passeig de Gràcia, 74, 3º 1 08005-Barcelona.", "08005"),
    ("Passeig de Gràcia, 74, 3º 1 08005-Barcelona.", "Barcelona"),
    ("CIPA: nhc/976421.", "976421"),
    ("fue diagnosticada en 2014.El trasplante", "2014"),
    ("Fecha de nacimiento:15/03/1945.\nPaís", "15/03/1945"),
    ("Domicilio: C/ Colón, 28, 1º. 36201 Vigo", "C/ Colón, 28, 1º"),
    ("Domicilio: C/ Cobre, 5, 3, Izq..\nLocalidad", "C/ Cobre, 5, 3, Izq"),
    ("Domicilio: Calle Tudela, 27, 4 der..\nLocalidad", "Calle Tudela, 27, 4 der."),
    ("Médico: Marta Ortega MartínezNºCol: 06 06 12345.", "Marta Ortega Martínez"),
    ("Dr. Ignacio Sarra DominguezCorreo electrónico: a@b.es", "Ignacio Sarra Dominguez"),
    ("España E-mail:guacorch@yahoo.es\n", "guacorch@yahoo.es"),
    ("Madrid E-mail.hleonbrito@hotmail.com\n", "hleonbrito@hotmail.com"),
    ("Madrid Email:agmorua@live.com.mx\n", "agmorua@live.com.mx"),
]


@pytest.mark.parametrize("text,covered", ALIGNED)
def test_gold_spans_fall_on_token_boundaries(nlp, text, covered):
    assert aligned(nlp, text, covered), [t.text for t in nlp.make_doc(text)]


@pytest.mark.parametrize(
    "text",
    [
        "3,5",
        "2.5",
        "7.35",
        "10:30",
        "1:100",
        "12/03/2018",
        "Dr.",
        "Dra.",
        "Avda.",
        "EE.UU.",
        "C.P.",
        "mg/24h",
        "COVID-19",
        "IL-6",
        "L4-L5",
        "S-100",
        "anti-inflamatorio",
        "Epstein-Barr",
        "s/n",
        "pH",
        "ana@example.com",
    ],
)
def test_ordinary_tokens_are_not_split(nlp, text):
    assert [t.text for t in nlp.make_doc(f"Ver {text} hoy")] == ["Ver", text, "hoy"]


def test_splits_only_where_needed(nlp):
    words = [t.text for t in nlp.make_doc("Sexo: H. NHC:915943. 4 Izq.. s/n. J. García")]
    assert words == ["Sexo", ":", "H", ".", "NHC", ":", "915943", ".", "4", "Izq", ".", ".",
                     "s/n", ".", "J", ".", "García"]


def test_tokenizer_survives_to_disk_and_loads_without_synthdeid(nlp, tmp_path):
    text = (
        "Sexo: H.\nCIPA: nhc-150679.\nCP:28029.\nC/ Arturo Soria, s/n E-28935 Madrid. "
        "4 Izq.. MartínezNºCol: 28 E-mail:ana@b.es 2014.El 3,5 y 2.5 Dr. Pérez"
    )
    nlp.to_disk(tmp_path / "tokenizer")
    script = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "words = [t.text for t in nlp(sys.stdin.read())]\n"
        "print(json.dumps({'words': words, 'modules': sorted(m for m in sys.modules if m.startswith('synthdeid'))}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "tokenizer")],
        input=text, capture_output=True, text=True, check=True,
    )
    out = json.loads(result.stdout)
    assert "synthdeid.training.tokenizer" not in out["modules"]
    assert out["words"] == [t.text for t in nlp.make_doc(text)]
    assert "150679" in out["words"] and "H" in out["words"] and "28935" in out["words"]
