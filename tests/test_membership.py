"""Membership inference: the AUC by hand, a pipeline that memorised its train
notes told apart from one that did not, and a generator that memorised its
notes."""

import json

import pytest
import spacy
from conftest import cli, make_docs, write_docbin
from typer.testing import CliRunner

from synthdeid.io import read_docs
from synthdeid.training.generator import adapt_generator
from synthdeid.training.membership import auc, generator_scores, membership_report


def test_auc_by_hand():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 2], [1, 2]) == 0.5
    assert auc([2, 2], [1, 2, 3]) == pytest.approx((1 + 0.5) / 3)  # each member: above 1, tied with 2
    with pytest.raises(ValueError, match="at least one member"):
        auc([], [1.0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("membership")
    return {"train": write_docbin(root / "train.spacy", make_docs(24, seed=21)),
            "test": write_docbin(root / "test.spacy", make_docs(12, seed=22)), "root": root}


def ruler_pipeline(path, docs):
    """A pipeline that knows the exact entities of `docs`: it memorised them."""
    nlp = spacy.blank("es")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": ent.label_, "pattern": ent.text} for doc in docs for ent in doc.ents])
    nlp.to_disk(path)
    return path


def test_a_pipeline_that_memorised_its_notes_is_told_apart_and_one_that_did_not_is_not(corpus):
    root = corpus["root"]
    train = read_docs(corpus["train"])
    memorised = ruler_pipeline(root / "memorised", train)
    unseen = ruler_pipeline(root / "unseen", make_docs(24, seed=23))  # notes of neither split
    report = membership_report(corpus["train"], corpus["test"],
                               pipelines={"memorised": memorised, "unseen": unseen}, seed=0)
    assert report["members"] == report["non_members"] == 12
    assert report["pipelines"]["memorised"]["auc"] >= 0.9
    assert abs(report["pipelines"]["unseen"]["auc"] - 0.5) < 0.25


def test_a_generator_that_memorised_its_notes_is_told_apart(corpus, tmp_path):
    generator = tmp_path / "generator"
    adapt_generator(corpus["train"], generator, epochs=25, device="cpu", progress=False, vocab_size=300, n_layer=1,
                    n_embd=32, n_head=2, n_positions=128, block_size=128, batch_size=4, learning_rate=1e-2, seed=0)
    result = CliRunner().invoke(cli("membership"), [str(corpus["train"]), str(corpus["test"]), str(tmp_path / "out"),
                                                    "--generator", str(generator)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "membership.json").read_text(encoding="utf-8"))
    assert report["generator"]["whole_note"]["auc"] > 0.7
    assert report["generator"]["entity_tokens"]["members"] == 12
    assert "| generator | -loss, entity tokens |" in (tmp_path / "out" / "membership.md").read_text()


def test_bad_arguments_are_clear_errors(corpus, tmp_path):
    result = CliRunner().invoke(cli("membership"), [str(corpus["train"]), str(corpus["test"]), str(tmp_path / "o"),
                                                    "--pipeline", "nameless"])
    assert result.exit_code == 1 and "expected name=PATH" in result.output
    result = CliRunner().invoke(cli("membership"), [str(corpus["train"]), str(corpus["test"]), str(tmp_path / "o"),
                                                    "--pipeline", f"gone={tmp_path / 'nowhere'}"])
    assert result.exit_code == 1 and "no such pipeline folder" in result.output
    assert not (tmp_path / "o").exists()


def test_a_tagging_generator_is_scored_on_the_notes_as_it_learnt_them(corpus, tmp_path, monkeypatch):
    import synthdeid.training.generator as generator_module

    generator = tmp_path / "tagged"
    adapt_generator(corpus["train"], generator, epochs=25, device="cpu", progress=False, vocab_size=300, n_layer=1,
                    n_embd=32, n_head=2, n_positions=160, block_size=160, batch_size=4, learning_rate=1e-2, seed=0,
                    inline_tags=True)
    train = read_docs(corpus["train"])
    tagged_whole, tagged_values = generator_scores(generator, train)
    monkeypatch.setattr(generator_module, "generator_tag_labels", lambda path: None)
    plain_whole, plain_values = generator_scores(generator, train)
    # It learnt the tagged notes: read as written, they cost it less than without their tags.
    assert sum(tagged_whole) > sum(plain_whole)
    assert sum(tagged_values) > sum(plain_values)
