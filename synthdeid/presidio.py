"""Use a synthdeid pipeline as Microsoft Presidio's Spanish NLP engine.

Presidio's analyzer runs the pipeline through its spaCy NLP engine and maps
MEDDOCAN labels to Presidio entity types (`ENTITY_MAPPING`); Presidio's
anonymizer then works on its results as usual::

    from presidio_anonymizer import AnonymizerEngine
    from synthdeid.presidio import analyzer_engine

    analyzer = analyzer_engine("es_deid_meddocan")  # package name or folder
    results = analyzer.analyze(text, language="es")
    print(AnonymizerEngine().anonymize(text, results).text)

Needs `pip install 'synthdeid[presidio]'` (Presidio is not a requirement of
synthdeid's pipelines).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from . import MissingExtra

# MEDDOCAN label -> Presidio entity type (Presidio's own names where one fits).
ENTITY_MAPPING: Dict[str, str] = {
    "NOMBRE_SUJETO_ASISTENCIA": "PERSON",
    "NOMBRE_PERSONAL_SANITARIO": "PERSON",
    "FAMILIARES_SUJETO_ASISTENCIA": "PERSON",
    "FECHAS": "DATE_TIME",
    "EDAD_SUJETO_ASISTENCIA": "AGE",
    "TERRITORIO": "LOCATION",
    "CALLE": "LOCATION",
    "PAIS": "LOCATION",
    "HOSPITAL": "ORGANIZATION",
    "INSTITUCION": "ORGANIZATION",
    "CENTRO_SALUD": "ORGANIZATION",
    "CORREO_ELECTRONICO": "EMAIL_ADDRESS",
    "NUMERO_TELEFONO": "PHONE_NUMBER",
    "NUMERO_FAX": "PHONE_NUMBER",
    "URL_WEB": "URL",
    "DIRECCION_IP": "IP_ADDRESS",
    "ID_TITULACION_PERSONAL_SANITARIO": "MEDICAL_LICENSE",
    "ID_SUJETO_ASISTENCIA": "ID",
    "ID_ASEGURAMIENTO": "ID",
    "ID_CONTACTO_ASISTENCIAL": "ID",
    "ID_EMPLEO_PERSONAL_SANITARIO": "ID",
    "OTRO_NUMERO_IDENTIF": "ID",
    "SEXO_SUJETO_ASISTENCIA": "SEX",
    "PROFESION": "PROFESSION",
    "OTROS_SUJETO_ASISTENCIA": "OTHER_PII",
}


def nlp_configuration(model: str, mapping: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Presidio's NlpEngineProvider configuration for the pipeline `model`
    (an installed package name or a folder)."""
    return {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "es", "model_name": str(model)}],
        "ner_model_configuration": {
            "model_to_presidio_entity_mapping": dict(mapping or ENTITY_MAPPING),
            # Every label is scored alike: Presidio lowers ORG by default.
            "low_score_entity_names": [],
            "labels_to_ignore": [],
        },
    }


def pipeline_labels(nlp) -> set:
    """The labels of every component of `nlp` that sets entities."""
    return {label for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns
            for label in getattr(nlp.get_pipe(name), "labels", ())}


def analyzer_engine(model: str, mapping: Optional[Mapping[str, str]] = None, with_pattern_recognizers: bool = False):
    """A Presidio AnalyzerEngine for Spanish whose NER is the synthdeid pipeline.

    with_pattern_recognizers adds Presidio's own predefined recognizers for
    Spanish (regular expressions, checksums) next to it. A model that is neither
    an installed package nor a folder raises ValueError (Presidio would try to
    download it), and so does a pipeline label that `mapping` lacks (Presidio
    would pass its entities through)."""
    from pathlib import Path

    import spacy.util
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    # A pipeline folder names factories that only synthdeid registers (an
    # installed package registers its own copies of the redactor and rules).
    from . import redact, rules  # noqa: F401

    try:  # annotator and committee folders: only with the training extra
        from .training import committee, hf_ner  # noqa: F401
    except MissingExtra:
        pass

    # Presidio would try to download a model it cannot find: refuse it here.
    if not (spacy.util.is_package(str(model)) or Path(model).is_dir()):
        raise ValueError(f"{model}: neither an installed pipeline package nor a pipeline folder")
    mapping = dict(mapping or ENTITY_MAPPING)
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_configuration(model, mapping)).create_engine()
    unmapped = sorted(pipeline_labels(nlp_engine.nlp["es"]) - set(mapping))
    if unmapped:
        raise ValueError(f"{model}: the pipeline's labels {', '.join(unmapped)} have no Presidio entity type, so "
                         "Presidio would leave them unredacted; give them one in `mapping` (e.g. "
                         f"{{**ENTITY_MAPPING, {unmapped[0]!r}: 'PERSON'}})")
    registry = RecognizerRegistry(supported_languages=["es"])
    if with_pattern_recognizers:
        registry.load_predefined_recognizers(languages=["es"], nlp_engine=nlp_engine)
        registry.remove_recognizer("SpacyRecognizer")
    registry.add_recognizer(SpacyRecognizer(supported_language="es", supported_entities=sorted(set(mapping.values()))))
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["es"])
