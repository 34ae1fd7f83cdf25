"""Atomic outputs: a step leaves a complete output or none, and never wipes
out a folder it was not meant to replace."""

import os
import signal
import tempfile

import pytest
import spacy

from synthdeid.io import DeviceError, atomic_path, gpu_overrides, load_pipeline


def test_a_finished_output_replaces_the_old_one_and_a_failed_one_leaves_it(tmp_path):
    target = tmp_path / "out"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("the step failed")
    assert (target / "a.txt").read_text() == "first"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced as a whole
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary leftovers


def test_a_signal_as_the_temporary_is_made_leaves_nothing(tmp_path, monkeypatch):
    # The signal lands just after the temporary folder exists, as a busy
    # machine once timed it: the run still ends through the cleanup.
    make = tempfile.mkdtemp

    def make_then_signal(*args, **kwargs):
        path = make(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return path

    def end_run(signum, frame):
        raise SystemExit(128 + signum)

    monkeypatch.setattr(tempfile, "mkdtemp", make_then_signal)
    previous = signal.signal(signal.SIGTERM, end_run)
    try:
        with pytest.raises(SystemExit):
            with atomic_path(tmp_path / "out.txt") as tmp:
                tmp.write_text("never")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def test_a_file_never_replaces_a_folder(tmp_path):
    folder = tmp_path / "secret"
    folder.mkdir()
    (folder / "keys.txt").write_text("keep me")
    with pytest.raises(IsADirectoryError, match="secret: is a folder; a file cannot replace it"):
        with atomic_path(folder) as tmp:
            tmp.write_text("mapping")
    assert (folder / "keys.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_resume_state_reads_back_only_its_own_fingerprint(tmp_path):
    from synthdeid.io import ResumeState

    state = ResumeState(tmp_path / "state.json", {"model": "a", "seed": (1, 2)})
    assert state.load() is None
    state.save({"records": 3})
    assert ResumeState(tmp_path / "state.json", {"model": "a", "seed": [1, 2]}).load() == {"records": 3}
    assert ResumeState(tmp_path / "state.json", {"model": "b", "seed": [1, 2]}).load() is None
    (tmp_path / "state.json").write_text("{not json", encoding="utf-8")
    assert state.load() is None
    (tmp_path / "state.json").write_text('{"fingerprint": {"model": "a", "seed": [1, 2]}, "progress": 3}')
    assert state.load() is None


def test_gpu_overrides_set_the_torch_device_of_hf_ner_and_ask_thinc_for_its_models():
    annotator = {"components": {"hf_ner": {"factory": "hf_ner", "model": "model", "device": "cpu"}}}
    trained = {"components": {"tok2vec": {"factory": "tok2vec", "model": {}}, "ner": {"factory": "ner", "model": {}},
                              "pii_rules": {"factory": "pii_rules"}}}
    committee = {"components": {"vote": {"factory": "ner_committee", "members": []}}}
    assert gpu_overrides(annotator, 1) == ({"components.hf_ner.device": "cuda:1"}, False)
    assert gpu_overrides(trained, 0) == ({}, True)
    assert gpu_overrides({"components": {**annotator["components"], **trained["components"]}}, 2) == (
        {"components.hf_ner.device": "cuda:2"}, True)
    assert gpu_overrides(committee, 2) == ({"components.vote.gpu_id": 2}, False)  # its members load themselves
    # -1 is the CPU, whatever device a pipeline was saved with.
    assert gpu_overrides(annotator, -1) == ({"components.hf_ner.device": "cpu"}, False)
    assert gpu_overrides(committee, -1) == ({"components.vote.gpu_id": -1}, False)
    assert gpu_overrides(trained, -1) == ({}, False)


def test_loading_a_pipeline_on_a_gpu_it_cannot_use_names_the_gpu(tmp_path):
    """GPU 99 is on no machine: spaCy's own ops refuse it (a pipeline with thinc models)."""
    nlp = spacy.blank("es")
    nlp.add_pipe("ner").add_label("NOMBRE")
    nlp.initialize()
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(DeviceError, match="gpu_id 99: spaCy cannot run on this GPU"):
        load_pipeline(tmp_path / "pipeline", gpu_id=99)
    assert load_pipeline(tmp_path / "pipeline", gpu_id=-1).pipe_names == ["ner"]
