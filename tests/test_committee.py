import json
import os
import shutil
import subprocess
import sys

import pytest
import spacy
from conftest import cli
from typer.testing import CliRunner

from synthdeid.training.annotator import build_annotator_pipeline
from synthdeid.training.committee import NERCommittee, build_committee_pipeline, elect
from synthdeid.io import DeviceError, PipelineFolderError, load_pipeline

TEXT = "Ana vive en Madrid y Sevilla."


def ents(doc):
    return [(e.text, e.label_) for e in doc.ents]


def ruler_pipeline(folder, patterns):
    nlp = spacy.blank("es")
    nlp.add_pipe("entity_ruler").add_patterns(patterns)
    nlp.to_disk(folder)
    return folder


@pytest.fixture
def members(tmp_path, rule_model_dir):
    """Three members of different kinds: the rule hf_ner annotator (Ana:
    NOMBRE_SUJETO_ASISTENCIA, Madrid: TERRITORIO) and two entity rulers."""
    spacy.blank("es").to_disk(tmp_path / "tokenizer")
    annotator = build_annotator_pipeline(rule_model_dir, tmp_path / "tokenizer", tmp_path / "annotator")
    first = ruler_pipeline(tmp_path / "first", [
        {"label": "TERRITORIO", "pattern": "Madrid"},
        {"label": "TERRITORIO", "pattern": "Sevilla"},
        {"label": "NOMBRE_PERSONAL_SANITARIO", "pattern": "Ana"},
    ])
    second = ruler_pipeline(tmp_path / "second", [
        {"label": "TERRITORIO", "pattern": "Sevilla"},
        {"label": "TERRITORIO", "pattern": [{"LOWER": "en"}, {"LOWER": "madrid"}]},
    ])
    return [annotator, first, second]


def test_elect_keeps_majority_spans_without_overlaps():
    a = [(0, 2, "PER"), (5, 6, "LOC"), (5, 6, "LOC")]  # a member's duplicate counts once
    b = [(0, 2, "PER"), (4, 6, "LOC")]
    c = [(4, 6, "LOC"), (0, 1, "PER"), (8, 9, "DATE")]
    assert elect([a, b, c], 2) == [(0, 2, "PER"), (4, 6, "LOC")]
    # One vote each: the earlier start wins an overlap, then the longer span, then the earlier member.
    assert elect([a, b, c], 1) == [(0, 2, "PER"), (4, 6, "LOC"), (8, 9, "DATE")]
    assert elect([[(3, 4, "PER")], [(3, 4, "LOC")]], 1) == [(3, 4, "PER")]
    assert elect([a, b, c], 3) == []


def test_committee_keeps_what_a_majority_of_members_predicts(tmp_path, members):
    build_committee_pipeline(members, tmp_path / "tokenizer", tmp_path / "committee")
    nlp = spacy.load(tmp_path / "committee")
    assert nlp.pipe_names == ["ner_committee"]
    committee = nlp.get_pipe("ner_committee")
    assert committee.required_votes == 2
    assert "TERRITORIO" in committee.labels and "NOMBRE_PERSONAL_SANITARIO" in committee.labels
    # Madrid: annotator + first; Sevilla: both rulers; Ana's two labels and "en Madrid" have one vote each.
    assert ents(nlp(TEXT)) == [("Madrid", "TERRITORIO"), ("Sevilla", "TERRITORIO")]
    lenient = spacy.blank("es")
    lenient.add_pipe("ner_committee", config={"members": [str(m) for m in members], "min_votes": 1})
    lenient.initialize()
    assert ents(lenient(TEXT)) == [
        ("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Madrid", "TERRITORIO"), ("Sevilla", "TERRITORIO")
    ]
    texts = [TEXT, "Sin datos.", "Sevilla y Madrid, Ana."]
    assert [ents(d) for d in nlp.pipe(texts, batch_size=2)] == [ents(nlp(t)) for t in texts]


def test_saved_committee_holds_its_members_and_loads_offline(tmp_path, members):
    result = CliRunner().invoke(
        cli("build_committee"), [str(tmp_path / "tokenizer"), str(tmp_path / "committee"), *map(str, members)]
    )
    assert result.exit_code == 0, result.output
    for member in members:
        shutil.rmtree(member)  # the committee must not need its sources
    code = "import json, sys, spacy\nprint(json.dumps([[e.text, e.label_] for e in spacy.load(sys.argv[1])(sys.argv[2]).ents]))\n"
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "committee"), TEXT],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [["Madrid", "TERRITORIO"], ["Sevilla", "TERRITORIO"]]

    nlp = spacy.load(tmp_path / "committee")
    restored = spacy.blank("es")
    restored.add_pipe("ner_committee", config={"members": ["/nowhere"]})  # the bytes carry the members
    restored.from_bytes(nlp.to_bytes())
    assert ents(restored(TEXT)) == ents(nlp(TEXT))
    component = nlp.get_pipe("ner_committee")
    fresh = NERCommittee(members=["unchanged"]).from_bytes(component.to_bytes(exclude=["members"]), exclude=["members"])
    assert not fresh.is_initialized and fresh.cfg["members"] == [str(m) for m in members]
    only_members = NERCommittee(members=["unchanged"]).from_bytes(component.to_bytes(exclude=["cfg"]))
    assert len(only_members.pipelines) == 3 and only_members.cfg["members"] == ["unchanged"]

    shutil.rmtree(tmp_path / "committee" / "ner_committee" / "members")
    with pytest.raises(FileNotFoundError, match="ner_committee.*not a saved ner_committee component"):
        spacy.load(tmp_path / "committee")


def test_bad_members_are_clear_errors_and_write_nothing(tmp_path, members):
    tokenizer, out = tmp_path / "tokenizer", tmp_path / "out"
    with pytest.raises(PipelineFolderError, match="missing-member: not a saved spaCy pipeline"):
        build_committee_pipeline([*members[:2], tmp_path / "missing-member"], tokenizer, out)
    spacy.blank("es").to_disk(tmp_path / "no-ner")
    with pytest.raises(PipelineFolderError, match="no-ner.*assigns entities"):
        build_committee_pipeline([*members[:2], tmp_path / "no-ner"], tokenizer, out)
    with pytest.raises(PipelineFolderError, match="no-tokenizer: not a saved spaCy pipeline"):
        build_committee_pipeline(members, tmp_path / "no-tokenizer", out)
    with pytest.raises(ValueError, match="min_votes 4 exceeds the 3 members"):
        build_committee_pipeline(members, tokenizer, out, min_votes=4)
    result = CliRunner().invoke(cli("build_committee"), [str(tokenizer), str(out), str(tmp_path / "missing-member")])
    assert result.exit_code == 1 and "missing-member" in result.output
    assert not out.exists()
    with pytest.raises(ValueError, match="no members"):
        spacy.blank("es").add_pipe("ner_committee").initialize()
    with pytest.raises(ValueError, match="ner_committee"):
        spacy.blank("es").add_pipe("ner_committee")(spacy.blank("es")("Ana."))


def test_the_committee_loads_its_members_on_the_gpu_id_it_is_given(tmp_path, members):
    """load_pipeline's gpu_id reaches the members: -1 puts an hf_ner member
    saved for a GPU on the CPU, and a GPU that cannot be used is refused
    when a member's model would go there."""
    build_committee_pipeline(members, tmp_path / "tokenizer", tmp_path / "committee")
    member_config = tmp_path / "committee" / "ner_committee" / "members" / "0" / "config.cfg"
    member_config.write_text(member_config.read_text().replace('device = "cpu"', 'device = "cuda:3"'))
    assert 'device = "cuda:3"' in member_config.read_text()
    nlp = load_pipeline(tmp_path / "committee", gpu_id=-1)
    annotator = nlp.get_pipe("ner_committee").pipelines[0].get_pipe("hf_ner")
    assert annotator.cfg["device"] == "cpu"
    assert ents(nlp(TEXT)) == [("Madrid", "TERRITORIO"), ("Sevilla", "TERRITORIO")]
    # The committee's own gpu_id reaches its members, loaded from disk or from their sources.
    with pytest.raises(DeviceError, match="gpu_id 99"):
        spacy.load(tmp_path / "committee", config={"components.ner_committee.gpu_id": 99})
    with pytest.raises(DeviceError, match="gpu_id 99"):
        NERCommittee(members=[str(m) for m in members], gpu_id=99).initialize()
