"""Use a synthdeid pipeline as Microsoft Presidio's NLP engine.

Presidio's analyzer runs the pipeline through its spaCy NLP engine and maps
its labels to Presidio entity types by their kinds (`entity_mapping`, from
the same label-to-kind map as the redactor's); Presidio's
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
from .kinds import LabelKinds, pipeline_labels, shipped_schemes

# Kind of PII (synthdeid.kinds) -> Presidio entity type (Presidio's own names where one fits).
PRESIDIO_TYPES: Dict[str, str] = {
    "name": "PERSON", "first_name": "PERSON", "surname": "PERSON", "relative": "PERSON",
    "date": "DATE_TIME", "age": "AGE", "sex": "SEX", "profession": "PROFESSION", "username": "USERNAME",
    "street": "LOCATION", "city": "LOCATION", "zip": "LOCATION", "country": "LOCATION",
    "hospital": "ORGANIZATION", "organisation": "ORGANIZATION",
    "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "fax": "PHONE_NUMBER", "url": "URL",
    "ip_address": "IP_ADDRESS", "identifier": "ID", "other": "OTHER_PII",
}


def entity_mapping(labels, label_kinds: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Label -> Presidio entity type for `labels`, through their kinds
    (`synthdeid.kinds`: `label_kinds`, the shipped schemes, a guess); a label
    with no kind is left out (`analyzer_engine` then refuses the pipeline)."""
    kinds = LabelKinds(label_kinds)
    return {label: PRESIDIO_TYPES[kind] for label in labels if (kind := kinds.kind(label)) is not None}


# The MEDDOCAN labels' types, through the shipped MEDDOCAN scheme.
ENTITY_MAPPING: Dict[str, str] = entity_mapping(shipped_schemes()["meddocan"]["kinds"])


def nlp_configuration(model: str, mapping: Optional[Mapping[str, str]] = None, lang: str = "es") -> Dict[str, Any]:
    """Presidio's NlpEngineProvider configuration for the pipeline `model`
    (an installed package name or a folder) of language `lang`."""
    return {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": lang, "model_name": str(model)}],
        "ner_model_configuration": {
            "model_to_presidio_entity_mapping": dict(mapping or ENTITY_MAPPING),
            # Every label is scored alike: Presidio lowers ORG by default.
            "low_score_entity_names": [],
            "labels_to_ignore": [],
        },
    }


def analyzer_engine(model: str, mapping: Optional[Mapping[str, str]] = None, with_pattern_recognizers: bool = False):
    """A Presidio AnalyzerEngine for the pipeline's language whose NER is the
    synthdeid pipeline. `mapping` (label -> Presidio type) defaults to the
    one its labels' kinds give (`entity_mapping`).

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
    folder = Path(model) if Path(model).is_dir() else spacy.util.get_package_path(str(model))
    meta = spacy.util.load_meta(folder / "meta.json")
    lang = meta["lang"]
    mapping = dict(mapping or entity_mapping({label for labels in meta.get("labels", {}).values() for label in labels}))
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_configuration(model, mapping, lang)).create_engine()
    unmapped = sorted(pipeline_labels(nlp_engine.nlp[lang]) - set(mapping))
    if unmapped:
        raise ValueError(f"{model}: the pipeline's labels {', '.join(unmapped)} have no Presidio entity type, so "
                         "Presidio would leave them unredacted; give them one in `mapping` (e.g. "
                         f"{{**ENTITY_MAPPING, {unmapped[0]!r}: 'PERSON'}})")
    registry = RecognizerRegistry(supported_languages=[lang])
    if with_pattern_recognizers:
        registry.load_predefined_recognizers(languages=[lang], nlp_engine=nlp_engine)
        registry.remove_recognizer("SpacyRecognizer")
    registry.add_recognizer(SpacyRecognizer(supported_language=lang, supported_entities=sorted(set(mapping.values()))))
    return AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=[lang])
