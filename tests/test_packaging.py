"""What a packaged pipeline stores: only the strings it needs, with the same predictions."""

import json

import spacy
from conftest import APELLIDOS, NOMBRES, make_docs
from spacy.training import Example

import synthdeid.redact  # noqa: F401  registers pii_redactor
from synthdeid.training.packaging import prune_strings


def test_pruned_strings_keep_labels_drop_training_text_and_predictions(tmp_path):
    docs = make_docs(30, seed=3)
    nlp = spacy.blank("es")
    nlp.add_pipe("ner")
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    for _ in range(30):
        nlp.update(examples, drop=0.0)
    nlp.add_pipe("pii_redactor")
    nlp.to_disk(tmp_path)
    before = set(json.loads((tmp_path / "vocab" / "strings.json").read_text()))
    assert set(APELLIDOS) & before  # training put surnames into the store

    texts = [doc.text for doc in make_docs(10, seed=4)]
    assert any(nlp(text).ents for text in texts)  # the check compares real predictions
    figures = prune_strings(nlp, tmp_path, texts)
    after = set(json.loads((tmp_path / "vocab" / "strings.json").read_text()))
    assert figures == {"strings_before": len(before), "strings_after": len(after), "checked_texts": 10}
    assert not (set(APELLIDOS) | set(NOMBRES)) & after
    assert set(nlp.get_pipe("ner").labels) <= after


def test_package_names_follow_spacy_and_bad_names_fail_before_building(tmp_path):
    import subprocess
    import sys

    import pytest

    from synthdeid.training.packaging import package_pipeline, performance_from_evaluation

    spacy.blank("es").to_disk(tmp_path / "pipeline")
    with pytest.raises(ValueError, match="'deid__x': use letters and digits"):
        package_pipeline(tmp_path / "pipeline", tmp_path / "out", name="deid__x", version="0.0.1",
                         description="", trained_on="nothing")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no pipeline 'gold ' in the evaluation \\(it has: gold, synthetic\\)"):
        performance_from_evaluation({"pipelines": {"gold": {}, "synthetic": {}}}, "gold ")
    # In a fresh process: one that imported synthdeid.redact cannot package (see package_pipeline).
    code = ("from pathlib import Path; from synthdeid.training.packaging import package_pipeline; "
            f"print(package_pipeline(Path({str(tmp_path / 'pipeline')!r}), Path({str(tmp_path / 'out')!r}), "
            "name='es_tiny', version='0.0.1', description='', trained_on='nothing'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wheel = tmp_path / "out" / "es_tiny-0.0.1" / "dist" / "es_tiny-0.0.1-py3-none-any.whl"
    assert result.stdout.strip().splitlines()[-1] == str(wheel) and wheel.is_file()
