"""Build the shippable de-identification pipeline as a pip-installable wheel."""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import spacy
from spacy.cli.package import package
from spacy.language import Language

from ..io import atomic_path
from ..kinds import LabelKinds, pipeline_labels

# The code of the components the wheel adds, as it ships it (`spacy package --code`).
REDACT_CODE = Path(__file__).parents[1] / "redact.py"
RULES_CODE = Path(__file__).parents[1] / "rules.py"

FAKER_REQUIREMENT = "faker>=30"
BABEL_REQUIREMENT = "babel>=2.12"

MEDDOCAN_SOURCE = {
    "name": "SPACCC_MEDDOCAN (Spanish Clinical Case Corpus - Medical Document Anonymization)",
    "url": "https://github.com/PlanTL-GOB-ES/SPACCC_MEDDOCAN",
    "license": "CC BY 4.0",
    "author": "Plan de Impulso de las Tecnologías del Lenguaje (Plan TL), SEAD, 2019",
}


def performance_from_evaluation(evaluation: Dict, pipeline_name: str) -> Dict[str, float]:
    """The figures of one pipeline in an evaluation.json, flattened for meta.json."""
    pipelines = evaluation.get("pipelines", {})
    if pipeline_name not in pipelines:
        raise ValueError(f"no pipeline {pipeline_name!r} in the evaluation (it has: {', '.join(sorted(pipelines))})")
    scores = pipelines[pipeline_name]
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


def needed_strings(nlp: Language) -> List[str]:
    """The strings a pipeline needs: its language's defaults (tokenizer
    exceptions, lexical attributes) and its components' labels. Everything
    else in a trained pipeline's StringStore is text it met in training
    (names, towns), which the model does not use: features are hashes
    computed from the text at run time."""
    fresh = spacy.util.load_model_from_config(nlp.config, auto_fill=True)
    needed = set(fresh.vocab.strings)
    for _, pipe in nlp.pipeline:
        needed.update(str(label) for label in getattr(pipe, "labels", ()) or ())
    return sorted(needed)


def prune_strings(nlp: Language, pipeline_dir: Path, check_texts: Sequence[str]) -> Dict[str, int]:
    """Rewrite the saved pipeline's vocab/strings.json with `needed_strings`,
    then check that the pruned pipeline predicts what `nlp` predicts on
    `check_texts` (entities and de-identified text); a difference is an error."""
    strings_path = pipeline_dir / "vocab" / "strings.json"
    before = json.loads(strings_path.read_text(encoding="utf-8"))
    kept = needed_strings(nlp)
    strings_path.write_text(json.dumps(kept, ensure_ascii=False), encoding="utf-8")
    pruned = spacy.load(pipeline_dir)
    for i, (old, new) in enumerate(zip(nlp.pipe(check_texts), pruned.pipe(check_texts))):
        old_ents = [(e.start_char, e.end_char, e.label_) for e in old.ents]
        new_ents = [(e.start_char, e.end_char, e.label_) for e in new.ents]
        if old_ents != new_ents or old._.deidentified != new._.deidentified:
            raise ValueError(f"pruning the vocabulary's strings changed the predictions on check text {i}")
    return {"strings_before": len(before), "strings_after": len(kept), "checked_texts": len(check_texts)}


def pipeline_label_kinds(nlp: Language, overrides: Optional[Dict[str, str]] = None,
                         verbose: bool = True) -> Dict[str, object]:
    """The kind of each label the pipeline's components predict
    (`synthdeid.kinds`), as the redactor's `label_kinds`; with `verbose`,
    prints where each came from, and warns of labels with no kind (they will
    be masked)."""
    kinds = LabelKinds(overrides)
    labels = pipeline_labels(nlp)
    table: Dict[str, object] = {}
    for label in sorted(labels):
        kind, template, source = kinds.entry(label)
        if verbose:
            print(f"label {label}: {kind or 'no kind (masked)'} ({source})")
        if kind is not None:
            table[label] = kind if template is None else {"kind": kind, "template": template}
    missing = sorted(labels - set(table))
    if missing and verbose:
        warnings.warn(f"labels with no kind, masked by every strategy: {', '.join(missing)}; give their kinds "
                      "in a --label-kinds file")
    return table


def package_pipeline(
    pipeline_dir: Path,
    output_dir: Path,
    *,
    name: str,
    version: str,
    description: str,
    trained_on: str,
    performance: Optional[Dict] = None,
    check_texts: Sequence[str] = (),
    rules: bool = True,
    label_kinds: Optional[Dict[str, str]] = None,
    source: Optional[Dict[str, str]] = None,
) -> Path:
    """Add the `pii_redactor` (and with `rules` the `pii_rules` safety net
    before it) to a trained pipeline and build it as a wheel.

    The wheel's StringStore keeps only the strings the pipeline needs
    (`prune_strings`, checked on `check_texts`). The redactor carries the
    kind of each of the pipeline's labels (`pipeline_label_kinds`, with
    `label_kinds` overriding). `source` describes the gold corpus in
    meta.json (name, url, license: the wheel's licence); MEDDOCAN's by
    default. Returns the wheel's path.
    The package folder appears in `output_dir` only when the wheel was built.
    """
    code = {"pii_redactor": REDACT_CODE, **({"pii_rules": RULES_CODE} if rules else {})}
    for factory, path in code.items():
        if not Language.has_factory(factory):
            # Registered from the shipped file (module "redact"), as `spacy
            # package --code` does: registered from synthdeid.redact, spaCy
            # would make the wheel require synthdeid.
            spacy.util.import_file(path.stem, path)
    nlp = spacy.load(pipeline_dir)
    # spaCy prefixes the language unless the name has it, and its setup.py
    # always does: take the prefix off so that both agree ("es_deid" = "deid").
    name = name[len(nlp.lang) + 1 :] if name.startswith(f"{nlp.lang}_") else name
    if not re.fullmatch(r"[A-Za-z0-9]+(_[A-Za-z0-9]+)*", name):
        raise ValueError(f"package name {name!r}: use letters and digits, words joined by single underscores")
    if rules and "pii_rules" not in nlp.pipe_names:
        # A label of each kind, for the rules of a language without its own.
        kind_labels = LabelKinds(label_kinds).kind_labels(pipeline_labels(nlp))
        where = {"before": "pii_redactor"} if "pii_redactor" in nlp.pipe_names else {"last": True}
        nlp.add_pipe("pii_rules", **where, config={"kind_labels": kind_labels})
    if "pii_redactor" not in nlp.pipe_names:  # the kinds of the NER's labels and of the rules' (`EMAIL`)
        nlp.add_pipe("pii_redactor", last=True, config={"label_kinds": pipeline_label_kinds(nlp, label_kinds)})
    nlp.meta.update(
        name=name,
        version=version,
        description=description,
        license=(source or MEDDOCAN_SOURCE)["license"] or "unknown",
        sources=[source or MEDDOCAN_SOURCE],
        author="synthdeid",
        url="https://github.com/synthdeid/synthdeid",
    )
    nlp.meta["synthdeid"] = {"trained_on": trained_on}
    # The shipped redactor's surrogates come from Faker, and its dates' month
    # names (but Spanish) from Babel: the wheel installs them.
    requirements = [r for r in nlp.meta.get("requirements", []) if not r.lower().startswith(("faker", "babel"))]
    nlp.meta["requirements"] = requirements + [FAKER_REQUIREMENT, BABEL_REQUIREMENT]
    if performance:
        nlp.meta["performance"] = performance
    package_name = f"{nlp.lang}_{name}-{version}"  # as `spacy package` names the folder and the wheel
    with tempfile.TemporaryDirectory() as staging, atomic_path(output_dir / package_name) as tmp:
        nlp.to_disk(staging)
        pruned = prune_strings(nlp, Path(staging), check_texts)
        print(f"Vocabulary strings: {pruned['strings_before']} -> {pruned['strings_after']} "
              f"(predictions unchanged on {pruned['checked_texts']} check texts)")
        package(
            Path(staging),
            tmp.parent,
            code_paths=list(code.values()),
            create_sdist=False,
            create_wheel=True,
            force=True,
            require_parent=True,  # the wheel must pull in spaCy itself
            silent=False,
        )
        requirements = json.loads((tmp / "meta.json").read_text(encoding="utf-8"))["requirements"]
        if any(r.lower().startswith("synthdeid") for r in requirements):
            raise RuntimeError("the wheel would require synthdeid: pii_redactor or pii_rules was registered from "
                               "synthdeid; package in a process that has not imported synthdeid.redact or .rules")
        wheel_name = f"{package_name}-py3-none-any.whl"
        if not (tmp / "dist" / wheel_name).exists():
            raise FileNotFoundError(f"{tmp / 'dist' / wheel_name}: spacy package did not build the wheel")
    return output_dir / package_name / "dist" / wheel_name
