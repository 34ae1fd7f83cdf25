import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import spacy
import torch
from conftest import cli, make_docs, make_note
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab
from typer.testing import CliRunner

from synthdeid.training.hf_ner import HFNER, decode_tags, split_tag
from synthdeid.io import PipelineFolderError


def ents(doc):
    return [(e.start_char, e.end_char, e.label_) for e in doc.ents]


def hf_nlp(model_dir, **config):
    nlp = spacy.blank("es")
    nlp.add_pipe("hf_ner", config={"model": str(model_dir), **config})
    nlp.initialize()
    return nlp


def test_add_pipe_initialize_and_predict(rule_model_dir):
    nlp = hf_nlp(rule_model_dir, decoding="greedy")
    component = nlp.get_pipe("hf_ner")
    assert component.labels == ("NOMBRE_SUJETO_ASISTENCIA", "TERRITORIO")
    assert nlp.meta["labels"]["hf_ner"] == ["NOMBRE_SUJETO_ASISTENCIA", "TERRITORIO"]
    doc = nlp("Ana vive en Madrid García. García y Valladolid.")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Ana", "NOMBRE_SUJETO_ASISTENCIA"),
        ("Madrid García", "TERRITORIO"),  # B- then I-
        ("García", "TERRITORIO"),  # I- without B- starts an entity
        # "Valladolid" is val ##lad ##oli ##d: only the first sub-token of a
        # token counts, so the "##lad" prediction is not used.
    ]


def test_entities_may_span_whitespace_tokens(rule_model_dir):
    nlp = hf_nlp(rule_model_dir)
    for vocab in (nlp.vocab, Vocab()):  # a bare Vocab leaves token.is_space False
        doc = Doc(vocab, words=["Vive", "en", "Madrid", "\n ", "García", "\n", "Ana"], spaces=[True, True, False, False, False, False, False])
        doc = nlp.get_pipe("hf_ner")(doc)
        assert [(e.text, e.label_) for e in doc.ents] == [
            ("Madrid\n García", "TERRITORIO"), ("Ana", "NOMBRE_SUJETO_ASISTENCIA")
        ]


def test_call_before_initialize_is_a_clear_error():
    nlp = spacy.blank("es")
    nlp.add_pipe("hf_ner")
    with pytest.raises(ValueError, match="E109.*hf_ner.*initialize"):
        nlp("Hola.")
    with pytest.raises(ValueError, match="no model to initialize from"):
        nlp.initialize()


def test_missing_model_is_a_clear_error(tmp_path):
    nlp = spacy.blank("es")
    nlp.add_pipe("hf_ner", config={"model": str(tmp_path / "gone")})
    with pytest.raises(FileNotFoundError, match="gone"):
        nlp.initialize()
    with pytest.raises(FileNotFoundError, match="nowhere.*not a saved hf_ner component"):
        HFNER().from_disk(tmp_path / "nowhere")


def test_decode_tags_schemes():
    doc = Doc(spacy.blank("es").vocab, words=list("abcdefghij"))
    tags = [
        ("I", "X"),  # I- without B-: starts
        ("I", "X"),
        ("B", "X"),  # B- splits
        ("I", "Y"),  # another label: starts
        None,  # whitespace: transparent
        ("I", "Y"),
        ("O", ""),
        split_tag("X"),  # plain labels continue each other
        split_tag("X"),
        split_tag("S-X"),  # single
    ]
    assert [(s.start, s.end, s.label_) for s in decode_tags(doc, tags)] == [
        (0, 2, "X"), (2, 3, "X"), (3, 6, "Y"), (7, 9, "X"), (9, 10, "X"),
    ]
    assert split_tag("O") == ("O", "")
    assert split_tag("B-NOMBRE_SUJETO_ASISTENCIA") == ("B", "NOMBRE_SUJETO_ASISTENCIA")
    assert split_tag("NOMBRE_SUJETO_ASISTENCIA") == ("I", "NOMBRE_SUJETO_ASISTENCIA")


def test_long_text_is_fully_covered(rule_model_dir):
    filler = "el paciente refiere dolor y fiebre desde hace dos días . "
    text = ("Ana vive en Madrid . " + filler * 40) * 2 + "Traslado a Madrid García"
    expected = [(e.text, e.label_) for e in hf_nlp(rule_model_dir, max_length=512, stride=0)(text).ents]
    nlp = hf_nlp(rule_model_dir, max_length=32, stride=8)
    assert len(nlp.get_pipe("hf_ner").tokenizer(text)["input_ids"]) > 512
    found = [(e.text, e.label_) for e in nlp(text).ents]
    assert found == expected
    assert found == [
        ("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Madrid", "TERRITORIO"),
        ("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Madrid", "TERRITORIO"),
        ("Madrid García", "TERRITORIO"),
    ]


class EdgeShy(torch.nn.Module):
    """Predicts "B-X" for sub-tokens at least 2 positions from both edges of
    their window's text, "O" nearer an edge."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(id2label={0: "O", 1: "B-X"})

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, 2)
        for row, n in enumerate(attention_mask.sum(1).tolist()):
            for j in range(n - 2):  # text sub-tokens sit between [CLS] and [SEP]
                logits[row, j + 1, 1] = 1.0 if min(j, n - 3 - j) >= 2 else -1.0
        return SimpleNamespace(logits=logits)


def test_each_word_is_predicted_where_it_is_furthest_from_a_window_edge(rule_model_dir):
    from transformers import AutoTokenizer

    # No break penalty: the tags themselves are under test, one B-X per word.
    component = HFNER(window_words=10, stride=5, batch_size=3, break_penalty=0.0)
    component.set_model(EdgeShy(), AutoTokenizer.from_pretrained(rule_model_dir))
    doc = spacy.blank("es")(" ".join("abcdefghijklmnopqrstuvwxy"))
    tags = component.predict_token_tags([doc])[0]
    # Windows hold 10 words (one sub-token each) and advance by 5: every word
    # except the first and last two of the text is >= 2 from the edges of some window.
    assert [t[0] for t in tags] == ["O", "O"] + ["B"] * 21 + ["O", "O"]


def test_batching_gives_the_same_ents_as_one_by_one(trained):
    model_dir, _ = trained
    texts = [make_note(__import__("random").Random(i))[0] for i in range(7)]
    texts.insert(3, " ".join(texts))  # one long text with several windows
    texts.insert(1, "")
    nlp = hf_nlp(model_dir, max_length=64, stride=16, batch_size=3)
    one_by_one = [ents(nlp(text)) for text in texts]
    batched = [ents(doc) for doc in nlp.pipe(texts, batch_size=4)]
    assert batched == one_by_one
    assert sum(map(len, batched)) >= 5 * 7


def test_label_map_and_ignore_labels(rule_model_dir):
    text = "Ana vive en Madrid García."
    nlp = hf_nlp(rule_model_dir, label_map={"TERRITORIO": "LOC"}, ignore_labels=["NOMBRE_SUJETO_ASISTENCIA"])
    assert nlp.get_pipe("hf_ner").labels == ("LOC",)
    assert [(e.text, e.label_) for e in nlp(text).ents] == [("Madrid García", "LOC")]
    nlp = hf_nlp(rule_model_dir, label_map={"NOMBRE_SUJETO_ASISTENCIA": "O"}, ignore_labels=["LOC"])
    assert [(e.text, e.label_) for e in nlp(text).ents] == [("Madrid García", "TERRITORIO")]
    nlp = hf_nlp(rule_model_dir, label_map={"TERRITORIO": "LOC"}, ignore_labels=["LOC"])
    assert [(e.text, e.label_) for e in nlp(text).ents] == [("Ana", "NOMBRE_SUJETO_ASISTENCIA")]


def test_merge_with_existing_ents_resolves_overlaps_deterministically(rule_model_dir):
    nlp = hf_nlp(rule_model_dir, overwrite_ents=False)
    for _ in range(2):
        doc = nlp.make_doc("Ana vive en Madrid García y Madrid.")
        doc.ents = [Span(doc, 4, 5, label="APELLIDO")]  # "García"
        doc = nlp.get_pipe("hf_ner")(doc)
        assert [(e.text, e.label_) for e in doc.ents] == [
            ("Ana", "NOMBRE_SUJETO_ASISTENCIA"),
            ("García", "APELLIDO"),  # kept; the overlapping "Madrid García" is dropped
            ("Madrid", "TERRITORIO"),
        ]
    nlp = hf_nlp(rule_model_dir)
    doc = nlp.make_doc("Ana vive en Madrid García y Madrid.")
    doc.ents = [Span(doc, 4, 5, label="APELLIDO")]
    assert "APELLIDO" not in {e.label_ for e in nlp.get_pipe("hf_ner")(doc).ents}


def test_evaluate(trained):
    nlp = hf_nlp(trained[0])
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in make_docs(10, seed=9, nlp=nlp)]
    scores = nlp.evaluate(examples)
    assert scores["ents_f"] >= 0.9
    assert "TERRITORIO" in scores["ents_per_type"]


def test_built_pipeline_round_trip_offline(tmp_path, trained):
    model_dir = tmp_path / "model"
    shutil.copytree(trained[0], model_dir)
    tokenizer_nlp = spacy.blank("es")
    tokenizer_nlp.tokenizer.add_special_case("NºCol", [{"ORTH": "Nº"}, {"ORTH": "Col"}])
    tokenizer_nlp.to_disk(tmp_path / "tokenizer")
    result = CliRunner().invoke(
        cli("build_annotator_pipeline"),
        [str(model_dir), str(tmp_path / "tokenizer"), str(tmp_path / "pipeline"), "--name", "annotator_test"],
    )
    assert result.exit_code == 0, result.output
    shutil.rmtree(model_dir)  # the pipeline must not need it

    nlp = spacy.load(tmp_path / "pipeline")
    assert nlp.pipe_names == ["hf_ner"]
    assert nlp.meta["name"] == "annotator_test"
    assert "validation entity F1" in nlp.meta["description"]
    # The windows the model was validated with.
    cfg = nlp.get_pipe("hf_ner").cfg
    inference = trained[1]["inference"]
    assert (cfg["window_words"], cfg["max_length"], cfg["stride"]) == (
        inference["window_words"], inference["max_length"], inference["stride"]
    )
    assert nlp.get_pipe("hf_ner").word_features is not None
    assert [t.text for t in nlp.make_doc("NºCol")] == ["Nº", "Col"]
    texts = [make_note(__import__("random").Random(100 + i))[0] for i in range(4)]
    here = [ents(doc) for doc in nlp.pipe(texts)]
    assert all(here)
    code = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "print(json.dumps([[list(e) for e in [(x.start_char, x.end_char, x.label_) for x in d.ents]]"
        " for d in nlp.pipe(json.loads(sys.argv[2]))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pipeline"), json.dumps(texts)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True, text=True, check=True,
    )
    there = [[tuple(e) for e in doc] for doc in json.loads(out.stdout.strip().splitlines()[-1])]
    assert there == here

    shutil.rmtree(tmp_path / "pipeline" / "hf_ner" / "model")
    with pytest.raises(FileNotFoundError, match="hf_ner.*not a saved hf_ner component"):
        spacy.load(tmp_path / "pipeline")


def test_build_errors_name_the_path(tmp_path, trained):
    from synthdeid.training.annotator import build_annotator_pipeline

    with pytest.raises(FileNotFoundError, match="no-model"):
        build_annotator_pipeline(tmp_path / "no-model", tmp_path, tmp_path / "out")
    with pytest.raises(PipelineFolderError, match="no-tokenizer: not a saved spaCy pipeline"):
        build_annotator_pipeline(trained[0], tmp_path / "no-tokenizer", tmp_path / "out")
    result = CliRunner().invoke(
        cli("build_annotator_pipeline"), [str(trained[0]), str(tmp_path / "no-tokenizer"), str(tmp_path / "out")]
    )
    assert result.exit_code == 1 and "no-tokenizer: not a saved spaCy pipeline" in result.output
    assert not (tmp_path / "out").exists()


def test_to_bytes_from_bytes_round_trip_and_exclude(trained):
    nlp = hf_nlp(trained[0])
    component = nlp.get_pipe("hf_ner")
    texts = [make_note(__import__("random").Random(200 + i))[0] for i in range(3)]
    before = [ents(doc) for doc in nlp.pipe(texts)]
    data = nlp.to_bytes()
    restored = spacy.blank("es")
    restored.add_pipe("hf_ner", config={"model": "/nowhere"})  # the bytes carry the model
    restored.from_bytes(data)
    assert [ents(doc) for doc in restored.pipe(texts)] == before
    assert restored.get_pipe("hf_ner").word_features is not None
    # Excluding the model leaves the component uninitialized; excluding cfg keeps the model.
    fresh = HFNER(model="unchanged").from_bytes(component.to_bytes(exclude=["model"]), exclude=["model"])
    assert not fresh.is_initialized and fresh.cfg["model"] == trained[0].as_posix()
    only_model = HFNER(model="unchanged").from_bytes(component.to_bytes(exclude=["cfg"]))
    assert only_model.is_initialized and only_model.cfg["model"] == "unchanged"


def test_viterbi_decoding_never_continues_an_entity_that_was_not_begun(rule_model_dir):
    text = "Ana vive en Madrid García. García y Valladolid."
    greedy = hf_nlp(rule_model_dir, decoding="greedy")(text)
    viterbi = hf_nlp(rule_model_dir)(text)
    # The lone "García" is I-TERRITORIO after O: greedy makes it an entity,
    # Viterbi finds the best valid sequence, in which it is outside.
    assert ("García", "TERRITORIO") in [(e.text, e.label_) for e in greedy.ents]
    assert [(e.text, e.label_) for e in viterbi.ents] == [
        ("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Madrid García", "TERRITORIO")
    ]


class ByToken(torch.nn.Module):
    """Tags O, B-X, I-X with fixed logits per sub-token: "a" is clearly B-X;
    "b" is B-X (logit 2) rather than I-X (1) or O (0); anything else is O."""

    def __init__(self, tokenizer):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(id2label={0: "O", 1: "B-X", 2: "I-X"})
        self.logits = {tokenizer.convert_tokens_to_ids("a"): [0.0, 5.0, 0.0], tokenizer.convert_tokens_to_ids("b"): [0.0, 2.0, 1.0]}

    def forward(self, input_ids, attention_mask):
        rows = [[self.logits.get(i, [5.0, 0.0, 0.0]) for i in row] for row in input_ids.tolist()]
        return SimpleNamespace(logits=torch.tensor(rows))


def test_break_penalty_keeps_an_entity_whole_unless_the_scores_clearly_split_it(rule_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rule_model_dir)

    def entities(text, **config):
        component = HFNER(**config)
        component.set_model(ByToken(tokenizer), tokenizer)
        return [e.text for e in component(spacy.blank("es")(text)).ents]

    # "b" after "a": B-X beats I-X by a log-probability margin of 1.0.
    assert entities("a b", break_penalty=0.0) == ["a", "b"]
    assert entities("a b", break_penalty=0.5) == ["a", "b"]
    assert entities("a b", break_penalty=1.5) == ["a b"]
    assert entities("a b") == ["a b"]  # the default, 2.0
    # Greedy decoding ignores it, and an entity after a gap is never charged.
    assert entities("a b", decoding="greedy", break_penalty=1.5) == ["a", "b"]
    assert entities("a c b", break_penalty=4.0) == ["a", "b"]
    with pytest.raises(ValueError, match="break_penalty must be at least 0, not -1"):
        HFNER(break_penalty=-1)


def test_break_penalties_are_scored_on_one_set_of_model_scores(rule_model_dir):
    from transformers import AutoTokenizer

    from synthdeid.training.annotator import score_break_penalties

    tokenizer = AutoTokenizer.from_pretrained(rule_model_dir)
    component = HFNER(break_penalty=0.5)
    component.set_model(ByToken(tokenizer), tokenizer)
    nlp = spacy.blank("es")
    whole, apart = nlp("a b"), nlp("a c b")
    whole.ents = [Span(whole, 0, 2, label="X")]
    apart.ents = [Span(apart, 0, 1, label="X"), Span(apart, 2, 3, label="X")]
    rows = score_break_penalties(component, [whole, apart], [0.0, 1.5])
    # Without a penalty "a b" is split: 2 of 4 predictions right, 2 of 3 entities found.
    assert rows[0] == {"break_penalty": 0.0, "p": 0.5, "r": pytest.approx(2 / 3), "f": pytest.approx(4 / 7)}
    assert rows[1] == {"break_penalty": 1.5, "p": 1.0, "r": 1.0, "f": 1.0}
    assert component.cfg["break_penalty"] == 0.5
    assert [e.text for e in whole.ents] == ["a b"]  # the gold docs are left as they were


def test_viterbi_decodes_an_io_model_like_greedy(rule_model_dir, tmp_path):
    # The same model with bare labels (IO scheme: every label tag is inside).
    io_dir = tmp_path / "io"
    shutil.copytree(rule_model_dir, io_dir)
    config = json.loads((io_dir / "config.json").read_text())
    config["id2label"] = {"0": "O", "1": "TERRITORIO", "2": "TERRITORIO", "3": "NOMBRE_SUJETO_ASISTENCIA"}
    config["label2id"] = {"O": 0, "TERRITORIO": 1, "NOMBRE_SUJETO_ASISTENCIA": 3}
    (io_dir / "config.json").write_text(json.dumps(config))
    text = "Ana vive en Madrid García. García y Valladolid."
    expected = [("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Madrid García", "TERRITORIO"), ("García", "TERRITORIO")]
    assert [(e.text, e.label_) for e in hf_nlp(io_dir, decoding="greedy")(text).ents] == expected
    assert [(e.text, e.label_) for e in hf_nlp(io_dir)(text).ents] == expected


def test_unknown_decoding_is_a_clear_error():
    with pytest.raises(ValueError, match="hf_ner: decoding must be one of.*'beam'"):
        HFNER(decoding="beam")


def test_a_character_the_encoder_does_not_know_does_not_hide_a_glued_name(rule_model_dir):
    """WordPiece reads "Ana🩺Madrid" as one [UNK]; the encoder must still see ana and madrid."""
    from transformers import AutoTokenizer

    from synthdeid.training.hf_ner import encode_words, window_inputs

    tokenizer = AutoTokenizer.from_pretrained(rule_model_dir)
    assert tokenizer.tokenize("Ana🩺Madrid") == ["[UNK]"]
    ana, madrid = tokenizer.convert_tokens_to_ids(["ana", "madrid"])
    pieces = encode_words(tokenizer, ["Vive", "Ana🩺Madrid"])
    assert pieces[1] == [ana, tokenizer.unk_token_id, madrid]
    ids, _, firsts = window_inputs(tokenizer, ["Vive", "Ana🩺Madrid"], 512)
    assert ids[firsts[1]] == ana  # training and inference encode it alike
    nlp = hf_nlp(rule_model_dir)
    doc = nlp.get_pipe("hf_ner")(Doc(nlp.vocab, words=["Vive", "Ana🩺Madrid", "hoy"]))
    assert [(e.text, e.label_) for e in doc.ents] == [("Ana🩺Madrid", "NOMBRE_SUJETO_ASISTENCIA")]


def test_word_features_hash_the_word_its_prefix_and_suffix_stably():
    from synthdeid.training.hf_ner import N_WORD_SHAPES, WordFeatures, word_shape

    features = WordFeatures.new(4, lexical_rows=1000)
    assert features.layout == {"shape": N_WORD_SHAPES, "norm": 1000, "prefix": 250, "suffix": 250}
    garcia = features.ids("García")
    assert len(garcia) == features.width == 7 and garcia[0] == word_shape("García")
    # rows stay inside their own table: shape, then norm, prefix, suffix
    bounds = [(N_WORD_SHAPES, N_WORD_SHAPES + 1000)] * 2 + [(N_WORD_SHAPES + 1000, N_WORD_SHAPES + 1250)] * 2
    bounds += [(N_WORD_SHAPES + 1250, N_WORD_SHAPES + 1500)] * 2
    assert all(low <= row < high for row, (low, high) in zip(garcia[1:], bounds))
    # case goes to the shape only; the accent changes the word and its suffix, not its prefix
    assert features.ids("GARCÍA")[1:] == garcia[1:] and features.ids("GARCÍA")[0] != garcia[0]
    plain = features.ids("Garcia")
    assert plain[1:3] != garcia[1:3] and plain[3:5] == garcia[3:5] and plain[5:] != garcia[5:]
    # a fixed hash (not Python's salted one): the same ids in another process
    code = "from synthdeid.training.hf_ner import WordFeatures; print(list(WordFeatures.new(4, lexical_rows=1000).ids('García')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == list(garcia)
    # shapes only
    assert WordFeatures.new(4).ids("García") == (word_shape("García"),) and WordFeatures.new(4).width == 1
    with pytest.raises(ValueError, match="lexical_rows must be at least 0"):
        WordFeatures.new(4, lexical_rows=-1)


def test_word_features_save_and_load_their_layout(tmp_path):
    from safetensors.torch import save_file

    from synthdeid.training.hf_ner import N_WORD_SHAPES, WORD_FEATURES_FILE, WordFeatures

    assert WordFeatures.load(tmp_path) is None
    features = WordFeatures.new(4, lexical_rows=40)
    with torch.no_grad():
        features.embedding.weight[1:].normal_()  # row 0 (padding) stays 0, as training keeps it
    features.save(tmp_path)
    loaded = WordFeatures.load(tmp_path)
    assert loaded.layout == features.layout and loaded.ids("Ana") == features.ids("Ana")
    ids = torch.tensor([[features.ids("Ana"), features.padding()]])
    assert torch.equal(loaded(ids), features(ids)) and not loaded(ids)[0, 1].any()
    # a file of word shapes alone (saved before lexical features) still loads
    save_file({"weight": torch.ones(N_WORD_SHAPES, 4)}, str(tmp_path / WORD_FEATURES_FILE))
    assert WordFeatures.load(tmp_path).layout == {"shape": N_WORD_SHAPES}
    save_file({"weight": torch.ones(N_WORD_SHAPES + 3, 4)}, str(tmp_path / WORD_FEATURES_FILE))
    with pytest.raises(ValueError, match=f"{WORD_FEATURES_FILE}.*{N_WORD_SHAPES + 3} rows"):
        WordFeatures.load(tmp_path)
    # a layout this version cannot compute ids for is refused when loaded, not at the first doc
    layout = {"shape": N_WORD_SHAPES, "lemma": 3}
    save_file({"weight": torch.ones(N_WORD_SHAPES + 3, 4)}, str(tmp_path / WORD_FEATURES_FILE), metadata={"layout": json.dumps(layout)})
    with pytest.raises(ValueError, match=f"{WORD_FEATURES_FILE}.*not shape followed by"):
        WordFeatures.load(tmp_path)
