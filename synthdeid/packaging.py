"""Build the shippable de-identification pipeline as a pip-installable wheel."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, Optional

import spacy
from spacy.cli.package import package

from . import redact
from .io import atomic_path

FAKER_REQUIREMENT = "faker>=30"

MEDDOCAN_SOURCE = {
    "name": "SPACCC_MEDDOCAN (Spanish Clinical Case Corpus - Medical Document Anonymization)",
    "url": "https://github.com/PlanTL-GOB-ES/SPACCC_MEDDOCAN",
    "license": "CC BY 4.0",
    "author": "Plan de Impulso de las Tecnologías del Lenguaje (Plan TL), SEAD, 2019",
}


def performance_from_evaluation(evaluation: Dict, pipeline_name: str) -> Dict[str, float]:
    """The figures of one pipeline in an evaluation.json, flattened for meta.json."""
    scores = evaluation["pipelines"][pipeline_name]
    entity, token = scores["entity"], scores["token"]
    performance = {
        "ents_p": entity["micro"]["p"],
        "ents_r": entity["micro"]["r"],
        "ents_f": entity["micro"]["f"],
        "token_p": token["micro"]["p"],
        "token_r": token["micro"]["r"],
        "token_f": token["micro"]["f"],
        "meddocan_span_strict_f": scores["meddocan"]["subtrack2_strict"]["f"],
        "meddocan_span_merged_f": scores["meddocan"]["subtrack2_merged"]["f"],
        "words_per_second": scores["speed"]["words_per_second"],
    }
    performance["ents_per_type"] = {
        label: {k: v[k] for k in ("p", "r", "f")} for label, v in entity["per_label"].items()
    }
    return performance


def package_pipeline(
    pipeline_dir: Path,
    output_dir: Path,
    *,
    name: str,
    version: str,
    description: str,
    trained_on: str,
    performance: Optional[Dict] = None,
) -> Path:
    """Add the `pii_redactor` to a trained pipeline and build it as a wheel.

    Returns the wheel's path. The package folder appears in `output_dir` only
    when the wheel was built.
    """
    nlp = spacy.load(pipeline_dir)
    if "pii_redactor" not in nlp.pipe_names:
        nlp.add_pipe("pii_redactor", last=True)
    nlp.meta.update(
        name=name,
        version=version,
        description=description,
        license="CC BY 4.0",
        sources=[MEDDOCAN_SOURCE],
        author="synthdeid",
        url="https://github.com/synthdeid/synthdeid",
    )
    nlp.meta["synthdeid"] = {"trained_on": trained_on}
    # The shipped redactor's surrogates come from Faker: the wheel installs it.
    requirements = [r for r in nlp.meta.get("requirements", []) if not r.lower().startswith("faker")]
    nlp.meta["requirements"] = requirements + [FAKER_REQUIREMENT]
    if performance:
        nlp.meta["performance"] = performance
    package_name = f"{nlp.lang}_{name}-{version}"
    with tempfile.TemporaryDirectory() as staging, atomic_path(output_dir / package_name) as tmp:
        nlp.to_disk(staging)
        package(
            Path(staging),
            tmp.parent,
            code_paths=[Path(redact.__file__)],
            create_sdist=False,
            create_wheel=True,
            force=True,
            require_parent=True,  # the wheel must pull in spaCy itself
            silent=False,
        )
    wheel = output_dir / package_name / "dist" / f"{package_name}-py3-none-any.whl"
    if not wheel.exists():
        raise FileNotFoundError(f"{wheel}: spacy package did not build the wheel")
    return wheel
