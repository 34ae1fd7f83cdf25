import pytest
import spacy
from spacy.tokens import Span

import synthdeid.redact  # noqa: F401  registers the factory


def _doc(nlp):
    doc = nlp.make_doc("Paciente Juan Pérez, de Madrid.")
    doc.ents = [Span(doc, 1, 3, "NOMBRE_SUJETO_ASISTENCIA"), Span(doc, 5, 6, "TERRITORIO")]
    return doc


def test_redactor_replaces_every_entity():
    nlp = spacy.blank("es")
    redactor = nlp.add_pipe("pii_redactor")
    doc = redactor(_doc(nlp))
    assert doc._.deidentified == "Paciente [NOMBRE_SUJETO_ASISTENCIA], de [TERRITORIO]."


def test_redactor_label_filter_and_template():
    nlp = spacy.blank("es")
    redactor = nlp.add_pipe("pii_redactor", config={"template": "<{label}>", "labels": ["TERRITORIO"]})
    assert redactor(_doc(nlp))._.deidentified == "Paciente Juan Pérez, de <TERRITORIO>."


def test_redactor_refuses_templates_that_leak_text():
    nlp = spacy.blank("es")
    with pytest.raises(ValueError, match="must not reinsert"):
        nlp.add_pipe("pii_redactor", config={"template": "{text}"})
