"""Training on several processes: the annotator and the generator under
`torchrun` (DDP, gloo on 2 CPU processes) write what one process writes,
once, and the saved models load and predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_docs, write_docbin

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch(processes, script, *args):
    """Run `scripts/<script>.py` on `processes` processes (torchrun for 2)."""
    command = (TORCHRUN if processes == 2 else [sys.executable]) + [str(REPO / "scripts" / f"{script}.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # a session of its own: torchrun's agent signals its whole process group when it stops its workers
    result = subprocess.run(command + [str(arg) for arg in args], capture_output=True, text=True, env=env,
                            cwd=REPO, start_new_session=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def files(folder: Path):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_corpus")
    return (write_docbin(root / "train.spacy", make_docs(24, seed=1)),
            write_docbin(root / "validation.spacy", make_docs(6, seed=2)))


@pytest.mark.slow
def test_the_annotator_trains_on_two_processes(tiny_model_dir, small_corpus, tmp_path):
    import spacy
    from synthdeid.io import read_docs
    from synthdeid.training.annotator import build_annotator_pipeline, evaluate_component

    train, validation = small_corpus
    args = ["--base-model", tiny_model_dir, "--epochs", 3, "--batch-size", 4, "--learning-rate", 1e-2,
            "--window-words", 32, "--lexical-rows", 64, "--precision", "fp32", "--seed", 0]
    launch(1, "train_annotator", train, validation, tmp_path / "one", *args)
    launch(2, "train_annotator", train, validation, tmp_path / "two", *args)
    assert files(tmp_path / "two") == files(tmp_path / "one")
    one, two = (json.loads((tmp_path / run / "training_log.json").read_text()) for run in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    # Two processes share each epoch: half the optimizer steps, every window seen once.
    assert two["optimizer_steps"] * 2 == one["optimizer_steps"] and two["train_windows"] == one["train_windows"]
    assert set(two) == set(one) and len(two["epochs"]) == 3
    assert two["epochs"][0]["padded_per_subtoken"] >= 1.0  # positions of both processes' batches
    assert not list(tmp_path.glob(".*"))  # nothing left beside the output
    spacy.blank("es").to_disk(tmp_path / "tokenizer")
    nlp = spacy.load(build_annotator_pipeline(tmp_path / "two", tmp_path / "tokenizer", tmp_path / "pipeline"))
    doc = nlp("Paciente Ana Ruiz, 45 años, vive en Valladolid.")
    assert all(ent.label_ in {"NOMBRE_SUJETO_ASISTENCIA", "EDAD_SUJETO_ASISTENCIA", "TERRITORIO", "FECHAS"}
               for ent in doc.ents)
    # Each process scored half the validation notes: together, what one process scores with the saved weights.
    logged = next(epoch for epoch in two["epochs"] if epoch["epoch"] == two["best_epoch"])["validation"]
    assert logged["f"] > 0, "the model learnt nothing; the comparison shows nothing"
    again = evaluate_component(nlp.get_pipe("hf_ner"), read_docs(validation, nlp.vocab))
    assert again["f"] == pytest.approx(logged["f"]) and again["per_label"] == pytest.approx(logged["per_label"])


@pytest.mark.slow
def test_the_generator_adapts_on_two_processes(small_corpus, tmp_path):
    from synthdeid.io import read_docs
    from synthdeid.training.generator import evaluate_loss, load_generator, note_sequences, note_texts

    train, validation = small_corpus
    args = ["--validation", validation, "--epochs", 2, "--batch-size", 2, "--block-size", 56, "--n-layer", 1,
            "--n-embd", 32, "--n-head", 2, "--n-positions", 64, "--vocab-size", 500, "--learning-rate", 5e-3,
            "--seed", 0]
    launch(1, "adapt_generator", train, tmp_path / "one", *args)
    launch(2, "adapt_generator", train, tmp_path / "two", *args)
    assert files(tmp_path / "two") == files(tmp_path / "one")
    one, two = (json.loads((tmp_path / run / "adapt_config.json").read_text()) for run in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2) and two["steps"] * 2 == one["steps"]
    curve = json.loads((tmp_path / "two" / "loss.json").read_text())
    assert [epoch["epoch"] for epoch in curve["epochs"]] == [1, 2]
    assert all(epoch["train_loss"] > 0 and epoch["validation_loss"] > 0 for epoch in curve["epochs"])
    model, tokenizer = load_generator(tmp_path / "two")
    # Each process scored every other batch: together, the loss one process gives the saved weights.
    sequences, _ = note_sequences(tokenizer, note_texts(read_docs(validation)), 56)
    assert evaluate_loss(model, sequences, 2, "cpu", tokenizer.pad_token_id)[0] == pytest.approx(
        two["kept"]["validation_loss"], rel=1e-5)
    ids = tokenizer("Paciente", return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] > ids.shape[1]
