"""The spaCy training configs: they resolve, and a learning-rate schedule with
`total_steps` follows `training.max_steps` (as overridden by project.yml)."""

import itertools

import pytest
import spacy
from conftest import REPO, make_docs, write_docbin
from spacy.util import load_config, load_model_from_config

MAX_STEPS = 1000


def schedules_with_total_steps(section):
    """Every sub-block of a config section that has a `total_steps` setting."""
    if not isinstance(section, dict):
        return []
    found = [section] if "total_steps" in section else []
    return found + [block for value in section.values() for block in schedules_with_total_steps(value)]


@pytest.fixture(scope="module")
def docbin(tmp_path_factory):
    return write_docbin(tmp_path_factory.mktemp("corpus") / "c.spacy", make_docs(2, seed=1))


def load(name, docbin):
    overrides = {"paths.train": str(docbin), "paths.dev": str(docbin), "training.max_steps": MAX_STEPS}
    return load_config(REPO / "configs" / name, overrides=overrides, interpolate=True)


@pytest.mark.parametrize("name", ["deid_cpu.cfg", "deid_trf.cfg"])
def test_training_block_resolves_and_schedule_follows_max_steps(name, docbin):
    config = load(name, docbin)
    training = spacy.registry.resolve(config["training"], validate=True)
    assert training["max_steps"] == MAX_STEPS
    spacy.registry.resolve(config["corpora"], validate=True)
    for block in schedules_with_total_steps(config["training"]):
        assert block["total_steps"] == MAX_STEPS
        # resolved on its own: the optimizer only exposes the current rate
        rates = list(itertools.islice(spacy.registry.resolve({"s": block}, validate=True)["s"], MAX_STEPS + 1))
        assert rates[MAX_STEPS - 1] > 0 and rates[MAX_STEPS] == 0
    if name == "deid_trf.cfg":
        assert schedules_with_total_steps(config["training"]), "deid_trf.cfg lost its warmup_linear schedule"


def test_cpu_config_builds_a_pipeline(docbin):
    # the transformer config would need its Hugging Face model: only deid_cpu is built
    nlp = load_model_from_config(load("deid_cpu.cfg", docbin), auto_fill=True, validate=True)
    assert nlp.pipe_names == ["ner_boundaries", "tok2vec", "ner"]
