"""Smoke test: the real `weasel run all` on a few MEDDOCAN documents with tiny
settings, then packaged wheels installed into a fresh virtual environment and
used offline.

With tiny settings the synthetic pipeline learns little, so the test checks
that its wheel works and says what it was trained on; that a packaged pipeline
finds PII is checked on a wheel of the gold pipeline built by the same script."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from synthdeid.io import read_docs
from synthdeid.training.inline_tags import untag

from conftest import MEDDOCAN, REPO
PACKAGE = "es_deid_meddocan"
NOTE = (
    "Datos del paciente.\n"
    "Nombre: Ana.\n"
    "Apellidos: Ruiz García.\n"
    "NHC: 4829311.\n"
    "Domicilio: Calle Mayor, 12, 3º B.\n"
    "Localidad/ Provincia: Valladolid.\n"
    "CP: 47001.\n"
    "Fecha de Ingreso: 12/03/2018.\n"
    "Médico: Luis Martín Soto NºCol: 47 47 12345.\n"
    "Informe clínico del paciente: mujer de 54 años de edad que acude a urgencias.\n"
)
# Small but not trivial: enough for the trained pipeline to find PII in NOTE.
SMOKE_VARS = {
    "corpus_dir": str(MEDDOCAN),
    "limit": 60,
    "annotator_epochs": 1,
    "train_max_steps": 300,
    "train_eval_frequency": 100,
    "labeller_max_steps": 200,
    "committee_max_steps": 200,
    "generator_epochs": 1,
    "generator_layers": 1,
    "generator_width": 64,
    "generator_heads": 2,
    "generator_vocab_size": 1000,
    "generator_block_size": 128,
    "size_multiple": 0.5,
    "samples_per_prompt": 4,
    "narrative_notes": 30,
    "generator_corpus": "corpus/surrogated",
    "inline_tags": "inline-tags",
    "tag_policy": "union",
    "labeller_surrogate_copies": 1,
}
STEPS = 21

pytestmark = pytest.mark.slow


def copy_project(root: Path) -> Path:
    """`root` with a copy of the project: what `weasel run` needs, not its outputs."""
    for name in ("project.yml", "configs", "scripts", "synthdeid"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory, meddocan):
    """A copy of the project run through the whole workflow with tiny settings."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    overrides = [f"--vars.{key}={value}" for key, value in SMOKE_VARS.items()]
    subprocess.run(
        [sys.executable, "-m", "weasel", "run", "all", str(root), *overrides],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return root


def test_workflow_writes_every_output(project):
    corpus_stats = json.loads((project / "corpus/stats.json").read_text())
    assert set(corpus_stats["splits"]) == {"train", "validation", "test"}
    # The annotator model keeps its tokenizer and label map.
    config = json.loads((project / "training/annotator/model/config.json").read_text())
    assert any(label.startswith("B-") for label in config["id2label"].values())
    # The generator keeps its loss curve and the config it was trained with.
    adapt = json.loads((project / "training/generator/adapt_config.json").read_text())
    assert adapt["mode"] == "scratch"
    assert json.loads((project / "training/generator/loss.json").read_text())["epochs"]
    # Generation stopped at the note that reached its target: 0.5 x the gold train words.
    generation = json.loads((project / "corpus/synthetic/generation_stats.json").read_text())
    assert generation["words_target"] == math.ceil(0.5 * generation["gold_train_words"])
    records = [json.loads(line) for line in (project / "corpus/synthetic/generated.jsonl").read_text().splitlines()]
    assert len(records) == generation["kept"]
    words = [len(record["text"].split()) for record in records]
    assert sum(words) == generation["words_kept"] and sum(words[:-1]) < generation["words_target"] <= sum(words)
    assert {record["end_reason"] for record in records} <= {"eos", "length"}
    # The generator learnt tagged notes: each record keeps its note as written, tags and all.
    assert adapt["arguments"]["inline_tags"] and set(generation["inline_tags"]) >= {"spans", "malformed"}
    labels = generation["inline_tags"]["labels"]
    assert all(untag(record["tagged"], labels).text == record["text"] for record in records)
    # The chain's annotator is the committee: it holds its three members.
    committee = json.loads((project / "training/committee/meta.json").read_text())
    assert committee["pipeline"] == ["ner_committee"]
    assert sorted(p.name for p in (project / "training/committee/ner_committee/members").iterdir()) == ["0", "1", "2"]
    # The generated notes were labelled by the labeller, a spaCy pipeline
    # trained on the gold texts as the committee labels them.
    relabelled = read_docs(project / "corpus/relabelled/train.spacy")
    assert [doc.text for doc in relabelled] == [doc.text for doc in read_docs(project / "corpus/train.spacy")]
    # It learnt them beside one surrogate copy of each note, labels moved with the values.
    labeller_data = read_docs(project / "corpus/relabelled/train_augmented.spacy")
    assert len(labeller_data) == 2 * len(relabelled)
    assert [doc.text for doc in labeller_data[: len(relabelled)]] == [doc.text for doc in relabelled]
    copies = labeller_data[len(relabelled):]
    assert [[e.label_ for e in doc.ents] for doc in copies] == [[e.label_ for e in doc.ents] for doc in relabelled]
    assert [doc.text for doc in copies] != [doc.text for doc in relabelled]
    labeller = json.loads((project / "training/labeller/model-best/meta.json").read_text())
    assert "ner" in labeller["pipeline"] and "hf_ner" not in labeller["pipeline"]
    synthetic = json.loads((project / "corpus/synthetic/stats.json").read_text())
    assert synthetic["inputs"]["pipeline"] == "training/labeller/model-best"
    assert synthetic["splits"]["train"]["documents"] + synthetic["splits"]["validation"]["documents"] == len(records)
    assert synthetic["inline_tags"]["policy"] == "union" and synthetic["inline_tags"]["notes"] == len(records)
    # The synthetic pipeline trains on the labelled notes, two surrogate copies
    # of each and the narrative notes.
    augmented = read_docs(project / "corpus/synthetic/train_augmented.spacy")
    assert len(augmented) == 3 * synthetic["splits"]["train"]["documents"] + SMOKE_VARS["narrative_notes"]
    assert augmented[-1 - SMOKE_VARS["narrative_notes"]].user_data["name"].endswith("~surrogate2")
    assert augmented[-1].user_data["name"] == f"narrative{SMOKE_VARS['narrative_notes']}"
    evaluation = json.loads((project / "training/evaluation/evaluation.json").read_text())
    assert set(evaluation["pipelines"]) == {"synthetic", "gold", "annotator", "committee", "labeller"}
    test_entities = sum(len(doc.ents) for doc in read_docs(project / "corpus/test.spacy"))
    for scores in evaluation["pipelines"].values():
        micro = scores["entity"]["micro"]
        assert micro["tp"] + micro["fn"] == test_entities == evaluation["gold_entities"]
        assert micro["f"] == pytest.approx(2 * micro["tp"] / (2 * micro["tp"] + micro["fp"] + micro["fn"]))
        behaviour = scores["behaviour"]["micro"]  # recall outside the template
        assert behaviour["support"] == evaluation["behaviour_set"]["sentences"]
        assert behaviour["caught"]["r"] >= behaviour["strict"]["r"]  # a strict match is also caught
    assert evaluation["behaviour_set"]["sentences"] == len(read_docs(project / "corpus/behaviour.spacy"))
    assert (project / "training/evaluation/evaluation.md").read_text().startswith("# Evaluation")
    privacy = json.loads((project / "training/privacy/privacy.json").read_text())
    five = privacy["ngram_recall"]["5"]
    assert five["gold_unique"] > 1000
    assert five["recall"] == round(five["gold_unique_in_synthetic"] / five["gold_unique"], 6)
    # The generator adapted on the surrogated notes: no distinctive real name,
    # street or identifier is in them, nor in what it wrote.
    adapt = json.loads((project / "training/generator/adapt_config.json").read_text())
    assert adapt["arguments"]["train_path"] == "corpus/surrogated/train.spacy"
    surrogated = json.loads((project / "corpus/surrogated/stats.json").read_text())["splits"]["train"]
    assert surrogated["values"]["surrogate"] > 0.9 * surrogated["input"]["entities"]
    identifying = ("NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO", "CALLE", "ID_SUJETO_ASISTENCIA",
                   "ID_ASEGURAMIENTO", "CORREO_ELECTRONICO")
    reuse = privacy["pii_reuse"]
    for counts in (reuse["labels"], reuse["baseline"]["labels"]):
        assert all(counts[label]["distinctive_reappearing"] == 0 for label in identifying if label in counts)
    membership = json.loads((project / "training/membership/membership.json").read_text())
    assert set(membership["pipelines"]) == {"synthetic", "gold"}
    assert 0 <= membership["generator"]["entity_tokens"]["auc"] <= 1
    summary = (project / "training/privacy.md").read_text()
    assert summary.startswith("# Privacy summary") and "| membership inference on the shared" in summary
    assert (project / "training/privacy.png").read_bytes().startswith(b"\x89PNG")
    # The wheel stores its language's defaults and labels, not its training text.
    shipped = privacy["shipped_strings"]
    assert shipped["pipeline"].endswith(".whl") and shipped["strings"] < 1000


def test_rerun_skips_finished_steps(project):
    result = subprocess.run(
        [sys.executable, "-m", "weasel", "run", "all", str(project)]
        + [f"--vars.{key}={value}" for key, value in SMOKE_VARS.items()],
        check=True,
        capture_output=True,
        text=True,
    )
    assert result.stdout.count("Skipping") == STEPS, result.stdout


@pytest.fixture(scope="module")
def gold_wheel(project, tmp_path_factory):
    """A wheel of the gold pipeline with the pii_rules safety net, built by the workflow's script."""
    gold_wheel_dir = tmp_path_factory.mktemp("gold-wheel")
    subprocess.run(
        [sys.executable, "scripts/package.py", "training/gold/model-best", str(gold_wheel_dir),
         "--name", "deid_meddocan_gold", "--version", "0.1.0", "--trained-on", "gold (test only)", "--rules"],
        check=True, cwd=project,
    )
    return gold_wheel_dir / f"{PACKAGE}_gold-0.1.0/dist/{PACKAGE}_gold-0.1.0-py3-none-any.whl"


@pytest.fixture(scope="module")
def wheel_env(project, gold_wheel, tmp_path_factory):
    """A fresh virtual environment with the workflow's wheel and the gold wheel."""
    wheels = [project / f"packages/{PACKAGE}-0.1.0/dist/{PACKAGE}-0.1.0-py3-none-any.whl", gold_wheel]
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", *map(str, wheels)], check=True)
    return python


@pytest.fixture(scope="module")
def runtime_env(gold_wheel, tmp_path_factory):
    """A fresh virtual environment with `pip install synthdeid` (no extra) and
    the gold wheel: what a user who only de-identifies installs."""
    env_dir = tmp_path_factory.mktemp("runtime-venv")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(REPO), str(gold_wheel)], check=True)
    return python


def run_offline(python: Path, package: str, text: str, cwd: Path, config: dict = None) -> dict:
    """Load an installed package in a clean, offline environment and run it on `text`."""
    script = (
        "import json, sys, spacy\n"
        f"nlp = spacy.load({package!r}, config={config or {}!r})\n"
        "doc = nlp(sys.stdin.read())\n"
        "print(json.dumps({'ents': [[e.start_char, e.end_char, e.label_] for e in doc.ents],"
        " 'deidentified': doc._.deidentified, 'pipeline': nlp.pipe_names, 'meta': nlp.meta}))\n"
    )
    clean_env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HOME": str(cwd)}
    result = subprocess.run(
        [python, "-c", script], input=text, capture_output=True, text=True, env=clean_env, check=True,
        cwd=cwd,  # not the repository, whose synthdeid/ folder `python -c` would import
    )
    return json.loads(result.stdout)


def redacted(text: str, ents: list) -> str:
    for start, end, label in sorted(ents, reverse=True):
        text = text[:start] + f"[{label}]" + text[end:]
    return text


def test_shipped_wheel_is_the_synthetic_pipeline(wheel_env, tmp_path):
    out = run_offline(wheel_env, PACKAGE, NOTE, tmp_path)
    assert out["pipeline"][-1] == "pii_redactor"
    assert out["meta"]["sources"][0]["license"] == "CC BY 4.0"
    assert out["meta"]["synthdeid"]["trained_on"].startswith("synthetic")
    assert out["deidentified"] == redacted(NOTE, out["ents"])
    # synthdeid itself is not installed there: the wheel carries what it needs.
    probe = subprocess.run([wheel_env, "-c", "import synthdeid"], capture_output=True, cwd=tmp_path)
    assert probe.returncode != 0


def test_packaged_pipeline_finds_pii_offline(wheel_env, tmp_path):
    out = run_offline(wheel_env, f"{PACKAGE}_gold", NOTE, tmp_path)
    # The note's most regular identifiers are found and redacted.
    for pii in ("4829311", "12/03/2018", "47001"):
        assert pii not in out["deidentified"], out
    assert len(out["ents"]) >= 5, out
    assert out["deidentified"] == redacted(NOTE, out["ents"])


def test_packaged_pipeline_writes_surrogates(wheel_env, tmp_path):
    """The wheel brings Faker: surrogates work where synthdeid is not installed."""
    out = run_offline(wheel_env, f"{PACKAGE}_gold", NOTE, tmp_path,
                      config={"components.pii_redactor.strategy": "surrogate"})
    found = {NOTE[start:end]: label for start, end, label in out["ents"]}
    assert found.get("12/03/2018") == "FECHAS", out
    assert "12/03/2018" not in out["deidentified"] and "4829311" not in out["deidentified"]
    assert re.search(r"Fecha de Ingreso: \d\d/\d\d/\d{4}\.", out["deidentified"]), out["deidentified"]



def test_packaged_rules_catch_pii_in_prose_offline(wheel_env, tmp_path):
    """The safety net ships as code in the wheel and runs where synthdeid is not installed."""
    text = "Contacto: 612 345 678, correo pedro.lopez@gmail.com. Le atendió el Dr. Juan Ruiz Soto."
    out = run_offline(wheel_env, f"{PACKAGE}_gold", text, tmp_path)
    assert out["pipeline"][-2:] == ["pii_rules", "pii_redactor"]
    for pii in ("612 345 678", "pedro.lopez@gmail.com", "Juan Ruiz Soto"):
        assert pii not in out["deidentified"], out["deidentified"]



def test_base_install_deidentifies_a_folder_without_the_training_stack(runtime_env, tmp_path):
    clean_env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "note1.txt").write_text(NOTE, encoding="utf-8")
    (notes / "note2.txt").write_text("Contacto: correo pedro.lopez@gmail.com, 612 345 678.", encoding="utf-8")
    cli = runtime_env.parent / "synthdeid-deidentify"
    result = subprocess.run([cli, str(notes), str(tmp_path / "out"), "--model", f"{PACKAGE}_gold"],
                            capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "De-identified 2 document(s) (0 skipped)" in result.stdout, result.stdout
    note1 = (tmp_path / "out" / "note1.txt").read_text(encoding="utf-8")
    note2 = (tmp_path / "out" / "note2.txt").read_text(encoding="utf-8")
    for pii in ("4829311", "12/03/2018", "47001"):
        assert pii not in note1, note1
    assert "pedro.lopez@gmail.com" not in note2 and "612 345 678" not in note2, note2
    # The base install brings spaCy, Faker and typer, not the training stack.
    for module in ("torch", "transformers", "peft", "spacy_llm"):
        probe = subprocess.run([runtime_env, "-c", f"import {module}"], capture_output=True, cwd=tmp_path)
        assert probe.returncode != 0, f"{module} is installed by the base install"
    # A training module says which extra it needs.
    probe = subprocess.run([runtime_env, "-c", "import synthdeid.training.annotator"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0
    assert "pip install 'synthdeid[train]'" in probe.stderr, probe.stderr
