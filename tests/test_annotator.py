import importlib.util
import json
from pathlib import Path

import pytest
import spacy
import torch
import typer
from conftest import BIO, cli, make_docs, write_docbin
from spacy.tokens import Doc, Span
from spacy.vocab import Vocab
from transformers import AutoModelForTokenClassification, AutoTokenizer
from typer.testing import CliRunner

from synthdeid.training.annotator import (
    IGNORE_INDEX,
    LOG_FILE,
    bio_labels,
    build_annotator_pipeline,
    doc_windows,
    encode_windows,
    evaluate_component,
    load_base_model,
    train_annotator,
)
from synthdeid.training.hf_ner import WORD_FEATURES_FILE, WordFeatures, word_shape
from synthdeid.io import read_docs

REPO = Path(__file__).resolve().parents[1]


def make_doc(words, ents, spaces=None, vocab=None):
    """ents: (start token, end token, label)."""
    doc = Doc(vocab or spacy.blank("es").vocab, words=words, spaces=spaces)
    doc.ents = [Span(doc, s, e, label=label) for s, e, label in ents]
    return doc


def test_bio_labels_are_sorted_with_o_first():
    doc = make_doc(["Ana", "vive", "en", "Madrid", "desde", "2019"], [(0, 1, "NOMBRE"), (3, 4, "TERRITORIO"), (5, 6, "FECHAS")])
    assert bio_labels([doc]) == ["O", "B-FECHAS", "I-FECHAS", "B-NOMBRE", "I-NOMBRE", "B-TERRITORIO", "I-TERRITORIO"]


def test_windows_respect_word_limit_and_entity_edges():
    words = [f"w{i}" for i in range(30)]
    # Entities straddling the 5-word boundaries, one longer than a window.
    ents = [(3, 7, "A"), (9, 11, "B"), (14, 22, "C"), (24, 25, "D")]
    doc = make_doc(words, ents)
    windows = doc_windows(doc, 5)
    assert [w for ws, _ in windows for w in ws] == words
    for ws, tags in windows:
        assert not tags[0].startswith("I-"), "a window starts inside an entity"
        assert len(ws) <= 5 or all(t != "O" for t in tags), "only a long entity may exceed the limit"
    flat_tags = [t for _, tags in windows for t in tags]
    assert flat_tags[3:7] == ["B-A", "I-A", "I-A", "I-A"]
    assert flat_tags[14:22] == ["B-C"] + ["I-C"] * 7
    # The entity longer than the window gets a window of its own.
    assert (words[14:22], ["B-C"] + ["I-C"] * 7) in windows
    # Next entity: a window never ends between its tokens.
    starts = {sum(len(ws) for ws, _ in windows[:k]) for k in range(len(windows))}
    for s, e, _ in ents:
        assert not any(s < b < e for b in starts)


@pytest.mark.parametrize("vocab", [None, Vocab()], ids=["es", "bare-vocab"])
def test_windows_skip_whitespace_tokens(vocab):
    doc = make_doc(
        ["Nombre", ":", "\n", "Ana", "  ", "Ruiz", "."],
        [(3, 6, "NOMBRE")],
        spaces=[False, True, False, False, False, False, False],
        vocab=vocab,
    )
    assert doc_windows(doc, 128) == [
        (["Nombre", ":", "Ana", "Ruiz", "."], ["O", "O", "B-NOMBRE", "I-NOMBRE", "O"])
    ]


def test_encode_labels_first_subtoken_only(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    label2id = {label: i for i, label in enumerate(BIO)}
    window = (["Ingresa", "el", "12/03/2018", "en", "Valladolid"], ["O", "O", "B-FECHAS", "O", "B-TERRITORIO"])
    features = WordFeatures.new(8, lexical_rows=64)
    (feature,), truncated = encode_windows(tokenizer, [window], label2id, word_features=features)
    assert truncated == 0
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    labelled = [(p, BIO[l]) for p, l in zip(pieces, feature["labels"]) if l != IGNORE_INDEX]
    assert labelled == [
        ("ing", "O"),
        ("el", "O"),
        ("12", "B-FECHAS"),
        ("en", "O"),
        ("val", "B-TERRITORIO"),
    ]
    assert feature["labels"][0] == feature["labels"][-1] == IGNORE_INDEX  # [CLS], [SEP]
    assert len(feature["labels"]) == len(feature["input_ids"]) == len(feature["attention_mask"])
    # Every sub-token carries its word's feature ids (shape first); special tokens 0.
    ids = feature["feature_ids"]
    assert ids[0] == ids[-1] == (0,) * 7
    assert ids[1] == features.ids("Ingresa") and ids[1][0] == word_shape("Ingresa")
    assert [ids[p] for p, l in enumerate(feature["labels"]) if l != IGNORE_INDEX][2] == features.ids("12/03/2018")
    assert word_shape("Ingresa") != word_shape("ingresa") != word_shape("INGRESA")
    assert word_shape("García") != word_shape("Garcia") and word_shape("12/03") != word_shape("ab/cd")
    # Truncation is counted.
    _, truncated = encode_windows(tokenizer, [window], label2id, max_length=6)
    assert truncated == 1


def test_training_learns_and_writes_the_model(trained):
    out, log = trained
    scores = [e["validation"]["f"] for e in log["epochs"]]
    assert scores[-1] >= 0.95 and max(scores) > scores[0]
    assert log["best_epoch"] == scores.index(max(scores)) + 1
    saved = json.loads((out / LOG_FILE).read_text())
    assert saved["best_epoch"] == log["best_epoch"]
    assert saved["arguments"]["epochs"] == len(saved["epochs"]) == 3
    assert {"loss", "validation", "seconds"} <= set(saved["epochs"][0])
    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.id2label[0] == "O" and set(model.config.label2id) == set(BIO)
    assert AutoTokenizer.from_pretrained(out).is_fast
    assert not list(out.parent.glob(".model.*")), "temporary output left behind"
    # Validation windows as in training, logged, and word-shape embeddings saved.
    assert saved["inference"] == {"window_words": 32, "max_length": 512, "stride": 31}
    assert (out / WORD_FEATURES_FILE).exists()
    assert saved["arguments"]["lexical_rows"] == 64 and WordFeatures.load(out).layout["norm"] == 64
    assert {"validation_greedy"} <= set(saved["epochs"][0])


def test_group_by_length_batches_windows_of_similar_length(trained, corpus, tiny_model_dir, tmp_path):
    _, shuffled = trained  # random batches of 8 windows
    grouped = train_annotator(
        corpus["train"], corpus["validation"], tmp_path / "grouped", base_model=str(tiny_model_dir),
        epochs=1, batch_size=8, learning_rate=5e-3, window_words=32, lexical_rows=0, seed=0, group_by_length=True,
        precision="fp32", progress=False,
    )
    assert grouped["arguments"]["group_by_length"] and not shuffled["arguments"]["group_by_length"]
    random_padding = shuffled["epochs"][0]["padded_per_subtoken"]
    assert random_padding > 1.2, "the test corpus must have windows of many lengths"
    assert 1.0 <= grouped["epochs"][0]["padded_per_subtoken"] < 1.0 + (random_padding - 1.0) / 2


def test_bf16_precision_autocasts_the_training_forward_pass(corpus, tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from synthdeid.training.annotator import bf16_supported

    args = dict(base_model=str(tiny_model_dir), epochs=1, batch_size=8, learning_rate=5e-3, window_words=32,
                lexical_rows=64, group_by_length=False, seed=0, progress=False)
    fp32 = train_annotator(corpus["train"], corpus["validation"], tmp_path / "fp32", precision="fp32", **args)
    bf16 = train_annotator(corpus["train"], corpus["validation"], tmp_path / "bf16", precision="bf16", **args)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    loss32, loss16 = fp32["epochs"][0]["loss"], bf16["epochs"][0]["loss"]
    assert loss16 != loss32 and abs(loss16 - loss32) < 0.05 * loss32  # rounded, not a different model
    # The bf16 run exported ACCELERATE_MIXED_PRECISION=bf16 (TrainingArguments does), and the
    # Trainer's accelerator reads it: a float32 run after it, or under a caller's setting, stays float32.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    again = train_annotator(corpus["train"], corpus["validation"], tmp_path / "fp32_again", precision="fp32", **args)
    assert again["epochs"][0]["loss"] == loss32
    # weights stay float32, so the saved model loads like any other
    saved = AutoModelForTokenClassification.from_pretrained(tmp_path / "bf16")
    assert next(saved.parameters()).dtype == torch.float32
    auto = train_annotator(corpus["train"], corpus["validation"], tmp_path / "auto", precision="auto", **args)
    assert auto["precision"] == ("bf16" if bf16_supported(torch.device("cpu")) else "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        train_annotator(corpus["train"], corpus["validation"], tmp_path / "x", precision="fp8", **args)


def test_break_penalties_are_scored_from_one_run_of_the_model(trained, corpus, tmp_path):
    out, _ = trained
    spacy.blank("es").to_disk(tmp_path / "tokenizer")
    pipeline = build_annotator_pipeline(out, tmp_path / "tokenizer", tmp_path / "pipeline")
    result = CliRunner().invoke(
        cli("tune_break_penalty"),
        [str(pipeline), str(corpus["validation"]), "--penalties", "0,2,50", "--output", str(tmp_path / "scores.json")],
    )
    assert result.exit_code == 0, result.output
    assert "| 50 | " in result.output
    rows = json.loads((tmp_path / "scores.json").read_text())["scores"][str(corpus["validation"])]
    assert [row["break_penalty"] for row in rows] == [0.0, 2.0, 50.0]
    # Each row is what the component scores when it runs with that penalty.
    component = spacy.load(pipeline).get_pipe("hf_ner")
    docs = read_docs(corpus["validation"], spacy.blank("xx").vocab)
    for row in rows:
        component.cfg["break_penalty"] = row["break_penalty"]
        assert row["f"] == pytest.approx(evaluate_component(component, docs)["f"])
    bad = CliRunner().invoke(cli("tune_break_penalty"), [str(pipeline), str(corpus["validation"]), "--penalties", "1,x"])
    assert bad.exit_code != 0 and "not a comma-separated list of numbers: '1,x'" in bad.output


def roberta_dir(root):
    """A tiny RoBERTa token classifier with a byte-level BPE tokenizer (words
    need a prefix space: `add_prefix_space=True`) fitted on the test notes."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForTokenClassification, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    texts = [doc.text for doc in make_docs(40, seed=11)]
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    root.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(root))
    tokenizer = RobertaTokenizerFast(str(root / "vocab.json"), str(root / "merges.txt"), add_prefix_space=True)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
        num_labels=len(BIO), id2label=dict(enumerate(BIO)), label2id={label: i for i, label in enumerate(BIO)},
    )
    path = root / "model"
    RobertaForTokenClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class Recorder:
    """Wraps a model and records the input ids of every forward pass."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __getattr__(self, name):
        return getattr(self.__dict__["model"], name)

    def to(self, device):
        self.model.to(device)
        return self

    def __call__(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        self.seen.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask))
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_inference_encodes_text_exactly_as_training(tmp_path, tiny_model_dir, kind):
    from synthdeid.training.hf_ner import HFNER

    base = tiny_model_dir if kind == "bert" else roberta_dir(tmp_path / "roberta")
    model, tokenizer = load_base_model(base, BIO)
    doc = make_docs(1, seed=4)[0]
    windows = doc_windows(doc, window_words=1000)
    features, _ = encode_windows(tokenizer, windows, {label: i for i, label in enumerate(BIO)}, max_length=512)
    component = HFNER(window_words=1000, max_length=512, stride=0)
    recorder = Recorder(model)
    component.set_model(recorder, tokenizer)
    component.predict_token_tags([doc])
    assert recorder.seen == [features[0]["input_ids"]]
    if kind == "roberta":  # mid-sentence words carry the prefix space, as in training
        pieces = tokenizer.convert_ids_to_tokens(features[0]["input_ids"])
        assert pieces[0] == "<s>" and pieces[1].startswith("\u0120") and pieces[-1] == "</s>"


def test_windows_of_a_long_doc_cover_every_word_within_the_budget():
    from synthdeid.training.hf_ner import word_windows

    lengths = [1, 3, 2, 9, 1, 1, 2, 2, 1]
    windows = word_windows(lengths, window_words=3, budget=5, stride=1)
    assert windows[0] == (0, 2) and windows[-1][1] == len(lengths)
    covered = {w for first, end in windows for w in range(first, end)}
    assert covered == set(range(len(lengths)))
    for first, end in windows:  # a word over the budget stands alone
        assert end - first <= 3 and (sum(lengths[first:end]) <= 5 or end - first == 1)


def test_seeded_training_is_reproducible_and_the_cli_runs_it(tmp_path, tiny_model_dir):
    train = write_docbin(tmp_path / "train.spacy", make_docs(12, seed=5))
    val = write_docbin(tmp_path / "val.spacy", make_docs(4, seed=6))
    args = {"epochs": 1, "batch_size": 4, "learning_rate": 5e-3, "window_words": 16, "lexical_rows": 64, "seed": 3}
    log = train_annotator(train, val, tmp_path / "a", base_model=str(tiny_model_dir), progress=False, **args)
    spec = importlib.util.spec_from_file_location("train_annotator_cli", REPO / "scripts" / "train_annotator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = typer.Typer()
    app.command()(module.main)
    options = [f"--{key.replace('_', '-')}={value}" for key, value in args.items()]
    result = CliRunner().invoke(
        app, [str(train), str(val), str(tmp_path / "b"), f"--base-model={tiny_model_dir}", *options]
    )
    assert result.exit_code == 0, result.output
    assert "Saved epoch 1" in result.output
    cli_log = json.loads((tmp_path / "b" / LOG_FILE).read_text())
    assert cli_log["epochs"][0]["loss"] == log["epochs"][0]["loss"]
    a = AutoModelForTokenClassification.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForTokenClassification.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_min_steps_adds_epochs_to_a_small_train_set(tmp_path, tiny_model_dir):
    train = write_docbin(tmp_path / "train.spacy", make_docs(4, seed=5))
    val = write_docbin(tmp_path / "val.spacy", make_docs(2, seed=6))
    args = {"epochs": 1, "batch_size": 4, "window_words": 16, "seed": 3, "progress": False}
    one = train_annotator(train, val, tmp_path / "one", base_model=str(tiny_model_dir), **args)
    per_epoch = one["optimizer_steps"]
    more = train_annotator(train, val, tmp_path / "more", base_model=str(tiny_model_dir), min_steps=2 * per_epoch + 1,
                           **args)
    assert one["epochs_run"] == 1 and more["epochs_run"] == 3 and len(more["epochs"]) == 3
    assert more["optimizer_steps"] == 3 * per_epoch and more["arguments"]["min_steps"] == 2 * per_epoch + 1
    # validated as often as the requested epochs (once), after the last epoch
    assert more["validated_epochs"] == [3] and more["best_epoch"] == 3
    assert [("validation" in e) for e in more["epochs"]] == [False, False, True]
    # the built pipeline says how many epochs ran, not how many were asked for
    spacy.blank("es").to_disk(tmp_path / "tokenizer")
    built = spacy.load(build_annotator_pipeline(tmp_path / "more", tmp_path / "tokenizer", tmp_path / "pipeline"))
    assert ", epoch 3 of 3, validation entity F1" in built.meta["description"]


def test_missing_base_model_is_a_clear_error(tmp_path, corpus):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        train_annotator(corpus["train"], corpus["validation"], tmp_path / "out", base_model=str(missing), progress=False)
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*config.json"):
        train_annotator(corpus["train"], corpus["validation"], tmp_path / "out", base_model=str(not_a_model), progress=False)
    with pytest.raises(OSError, match="no-org/no-model.*hub id"):  # offline: HF_HUB_OFFLINE=1
        train_annotator(corpus["train"], corpus["validation"], tmp_path / "out", base_model="no-org/no-model", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_train_data_is_a_clear_error(tmp_path, tiny_model_dir, corpus):
    kwargs = {"base_model": str(tiny_model_dir), "progress": False}
    with pytest.raises(FileNotFoundError, match="nothing.spacy"):
        train_annotator(tmp_path / "nothing.spacy", corpus["validation"], tmp_path / "out", **kwargs)
    empty = write_docbin(tmp_path / "empty.spacy", [])
    with pytest.raises(ValueError, match="empty.spacy.*no documents"):
        train_annotator(empty, corpus["validation"], tmp_path / "out", **kwargs)
    plain = write_docbin(tmp_path / "plain.spacy", [spacy.blank("es")("Sin entidades.")])
    with pytest.raises(ValueError, match="plain.spacy.*no entities"):
        train_annotator(plain, corpus["validation"], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
