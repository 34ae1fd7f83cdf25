"""Presidio integration: the real presidio-analyzer and presidio-anonymizer
with a synthdeid pipeline as their Spanish NLP engine."""

import spacy

from synthdeid.kinds import KINDS, shipped_schemes
from synthdeid.presidio import ENTITY_MAPPING, PRESIDIO_TYPES, analyzer_engine, nlp_configuration

NOTE = "Paciente Ana Ruiz García, de 54 años, ingresa el 12/03/2018 en el Hospital Clínico de Valladolid."


def test_every_meddocan_label_has_a_presidio_type():
    assert set(PRESIDIO_TYPES) == set(KINDS)
    assert set(ENTITY_MAPPING) == set(shipped_schemes()["meddocan"]["kinds"])
    config = nlp_configuration("es_deid_meddocan")
    assert config["models"] == [{"lang_code": "es", "model_name": "es_deid_meddocan"}]


def test_presidio_analyzes_and_anonymizes_with_the_pipeline(tmp_path):
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig

    # A real pipeline folder (an entity ruler stands in for the trained NER).
    nlp = spacy.blank("es")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "NOMBRE_SUJETO_ASISTENCIA", "pattern": "Ana Ruiz García"},
        {"label": "EDAD_SUJETO_ASISTENCIA", "pattern": "54"},
        {"label": "FECHAS", "pattern": "12/03/2018"},
        {"label": "HOSPITAL", "pattern": "Hospital Clínico de Valladolid"},
    ])
    nlp.to_disk(tmp_path / "pipeline")

    analyzer = analyzer_engine(str(tmp_path / "pipeline"))
    results = sorted(analyzer.analyze(NOTE, language="es"), key=lambda r: r.start)
    assert [(NOTE[r.start:r.end], r.entity_type) for r in results] == [
        ("Ana Ruiz García", "PERSON"), ("54", "AGE"), ("12/03/2018", "DATE_TIME"),
        ("Hospital Clínico de Valladolid", "ORGANIZATION"),
    ]
    anonymized = AnonymizerEngine().anonymize(
        NOTE, results, operators={"PERSON": OperatorConfig("replace", {"new_value": "<PERSONA>"})}
    )
    assert anonymized.text == (
        "Paciente <PERSONA>, de <AGE> años, ingresa el <DATE_TIME> en el <ORGANIZATION>."
    )


def test_an_unknown_model_fails_before_presidio_tries_a_download(tmp_path, monkeypatch):
    import pytest
    import spacy.cli

    monkeypatch.setattr(spacy.cli, "download", lambda *a, **k: pytest.fail("Presidio tried to download a model"))
    with pytest.raises(ValueError, match="es_deid_meddocn: neither an installed pipeline package nor a pipeline"):
        analyzer_engine("es_deid_meddocn")


def test_a_pipeline_folder_loads_in_a_fresh_process_and_unmapped_labels_are_refused(tmp_path):
    import subprocess
    import sys

    import synthdeid.redact  # noqa: F401  only to build the folder; the child process imports nothing of ours

    nlp = spacy.blank("es")
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": "NOMBRE_SUJETO_ASISTENCIA", "pattern": "Ana Ruiz"}, {"label": "MARCA_X", "pattern": "Luis"}])
    nlp.add_pipe("pii_redactor")
    nlp.to_disk(tmp_path / "pipeline")
    script = (
        "import sys\n"
        "from synthdeid.presidio import ENTITY_MAPPING, analyzer_engine\n"
        "try:\n"
        f"    analyzer_engine({str(tmp_path / 'pipeline')!r})\n"
        "except ValueError as err:\n"
        "    print('refused:', err)\n"
        f"engine = analyzer_engine({str(tmp_path / 'pipeline')!r}, {{**ENTITY_MAPPING, 'MARCA_X': 'PERSON'}})\n"
        "text = 'Paciente Ana Ruiz y Luis.'\n"
        "print(sorted(text[r.start:r.end] for r in engine.analyze(text, language='es')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "MARCA_X have no Presidio entity type" in result.stdout
    assert "['Ana Ruiz', 'Luis']" in result.stdout
