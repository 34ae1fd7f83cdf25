import importlib.util
import json
import math
import random

import pytest
import torch
from conftest import cli, make_docs, write_docbin
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from synthdeid.training.generator import (
    ADAPTER_CONFIG,
    CONFIG_FILE,
    LOSS_FILE,
    MODEL_DIR,
    LengthBatchSampler,
    adapt_generator,
    evaluate_loss,
    length_batches,
    load_generator,
    note_sequences,
    note_start_id,
    pad_batch,
    predicted_tokens,
    prompt_batch,
    generator_tag_labels,
    note_texts,
    select_documents,
)
from spacy.tokens import Span

from synthdeid.io import read_docs
from synthdeid.training.inline_tags import tagged_doc_text

# A scratch GPT-2 small enough to train in a second or two on 2 CPU cores.
# Its tokenizer makes the 10 train notes 48-59 tokens long (note-start + note
# + EOS), so a block of 56 truncates three of them.
TINY = {
    "n_layer": 1,
    "n_embd": 32,
    "n_head": 2,
    "n_positions": 64,
    "vocab_size": 500,
    "block_size": 56,
    "batch_size": 2,
    "learning_rate": 5e-3,
    "log_every": 2,
    "seed": 3,
}


@pytest.fixture(scope="module")
def texts_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen_corpus")
    return {
        "train": write_docbin(root / "train.spacy", make_docs(10, seed=11)),
        "validation": write_docbin(root / "validation.spacy", make_docs(3, seed=12)),
    }


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory, texts_corpus):
    out = tmp_path_factory.mktemp("scratch") / "generator"
    config = adapt_generator(
        texts_corpus["train"],
        out,
        validation_path=texts_corpus["validation"],
        epochs=3,
        device="cpu",
        progress=False,
        **TINY,
    )
    return out, config


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, scratch_run):
    """A randomly initialised 2-layer GPT-2 "pretrained" base with the scratch run's tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(scratch_run[0] / MODEL_DIR)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    path = tmp_path_factory.mktemp("base") / "tiny-gpt2"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_select_documents_is_seeded_nested_and_checked():
    assert len(select_documents(20, 0.25, seed=0)) == 5
    assert len(select_documents(20, 1.0, seed=0)) == 20
    assert len(select_documents(3, 0.05, seed=0)) == 1  # never empty
    assert select_documents(20, 0.5, seed=1) == select_documents(20, 0.5, seed=1)
    assert select_documents(20, 0.5, seed=1) != select_documents(20, 0.5, seed=2)
    # One seed: the smaller fraction's documents are among the larger one's.
    assert set(select_documents(100, 0.05, seed=0)) <= set(select_documents(100, 0.25, seed=0))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction must be in"):
            select_documents(20, bad, seed=0)


def test_scratch_training_writes_model_curve_and_config(scratch_run):
    out, config = scratch_run
    assert {p.name for p in out.iterdir()} == {MODEL_DIR, LOSS_FILE, CONFIG_FILE}
    assert (out / MODEL_DIR / "config.json").exists() and (out / MODEL_DIR / "tokenizer.json").exists()
    assert not list(out.parent.glob(".generator.*")), "temporary output left behind"
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["mode"] == "scratch" and saved["lora"] is None
    assert saved["arguments"]["n_layer"] == 1 and saved["learning_rate"] == 5e-3
    assert saved["documents"] == {"available": 10, "used": 10, "indices": list(range(10))}
    assert saved["parameters"]["trainable"] == saved["parameters"]["total"] > 0
    # One sequence per note, truncated to the block; the truncated ones are counted.
    train = saved["tokens"]["train"]
    assert train["notes"] == 10 and train["max_length"] == saved["block_size"] == 56
    assert 0 < train["truncated"] < 10 and train["longest"] > 56
    assert train["tokens"] < train["tokens_untruncated"]
    assert saved["tokens"]["validation"]["notes"] == 3
    assert 0.0 <= saved["tokens"]["padding_share"] < 0.5
    assert saved["wall_seconds"] > 0 and saved["versions"]["peft"]
    curve = json.loads((out / LOSS_FILE).read_text())
    assert [e["epoch"] for e in curve["epochs"]] == [1, 2, 3]
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["validation_loss"]) for e in curve["epochs"])
    for epoch in curve["epochs"]:
        assert epoch["validation_perplexity"] == pytest.approx(math.exp(epoch["validation_loss"]))
    assert saved["validation_perplexity"] == curve["epochs"][-1]["validation_perplexity"]
    assert curve["epochs"][-1]["train_loss"] < curve["epochs"][0]["train_loss"]
    assert curve["epochs"][-1]["validation_loss"] < curve["epochs"][0]["validation_loss"]
    steps = [s["step"] for s in curve["steps"]]
    assert steps == sorted(steps) and steps[-1] == saved["steps"]


def test_training_sequences_are_one_note_each_opened_by_bos(tmp_path, texts_corpus, monkeypatch):
    import synthdeid.training.generator as generator

    seen = []

    def spy(sequences, pad_id):
        seen.append([list(sequence) for sequence in sequences])
        return pad_batch(sequences, pad_id)

    monkeypatch.setattr(generator, "pad_batch", spy)
    config = adapt_generator(texts_corpus["train"], tmp_path / "spy", epochs=1, device="cpu", progress=False, **TINY)
    _, tokenizer = load_generator(tmp_path / "spy")
    bos = eos = tokenizer.eos_token_id
    assert note_start_id(tokenizer) == tokenizer.bos_token_id == bos  # the scratch BOS is its EOS
    texts = note_texts(read_docs(texts_corpus["train"]))
    # Training saw every note once per epoch, each as its own sequence, in batches of 2.
    assert [len(batch) for batch in seen] == [2] * 5
    trained = [sequence for batch in seen for sequence in batch]
    assert len(trained) == len(texts) == config["tokens"]["train"]["notes"]
    for sequence in trained:
        assert sequence[0] == bos and len(sequence) <= TINY["block_size"]
        body = sequence[1:]
        if body[-1] == eos:  # a whole note: BOS + note + EOS, no other boundary inside
            body = body[:-1]
        else:  # truncated to the block: it keeps its opening
            assert len(sequence) == TINY["block_size"]
        assert eos not in body
    # Each sequence is one note's BOS + tokens + EOS, cut to the block; every note once.
    block = TINY["block_size"]
    assert sorted(trained) == sorted([bos, *tokenizer(text)["input_ids"], eos][:block] for text in texts)
    truncated = sum(len(s) == TINY["block_size"] and s[-1] != eos for s in trained)
    assert truncated == config["tokens"]["train"]["truncated"] == 3


def test_a_generator_adapted_with_inline_tags_learns_tagged_notes(tmp_path, texts_corpus, scratch_run, monkeypatch):
    import synthdeid.training.generator as generator

    seen = []

    def spy(sequences, pad_id):
        seen.extend(list(sequence) for sequence in sequences)
        return pad_batch(sequences, pad_id)

    monkeypatch.setattr(generator, "pad_batch", spy)
    out = tmp_path / "tagged"
    config = adapt_generator(texts_corpus["train"], out, epochs=1, device="cpu", progress=False, inline_tags=True,
                             **{**TINY, "block_size": 64})
    _, tokenizer = load_generator(out)
    docs = read_docs(texts_corpus["train"])
    tagged = [tagged_doc_text(doc) for doc in docs]
    assert tagged != [doc.text for doc in docs] and config["arguments"]["inline_tags"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert sorted(seen) == sorted([bos, *tokenizer(text)["input_ids"], eos][:64] for text in tagged)
    assert generator_tag_labels(out) == sorted({ent.label_ for doc in docs for ent in doc.ents})
    assert generator_tag_labels(scratch_run[0]) is None

    docs[0].ents = [Span(docs[0], 0, 1, "First Name")]
    odd = write_docbin(tmp_path / "odd.spacy", docs)
    with pytest.raises(ValueError, match=r"labels \['First Name'\] cannot be inline tag names"):
        adapt_generator(odd, tmp_path / "odd", epochs=1, device="cpu", progress=False, inline_tags=True, **TINY)
    assert not (tmp_path / "odd").exists()


def test_note_sequences_pad_batch_and_length_batches(scratch_run):
    _, tokenizer = load_generator(scratch_run[0])
    eos = tokenizer.eos_token_id
    texts = ["  Nombre: Ana.", "Paciente de 40 años que acude a urgencias por dolor.", " \n "]
    sequences, counts = note_sequences(tokenizer, texts, 12)
    # Leading whitespace is dropped (prompts start at the first word); blank notes are skipped.
    assert counts["notes"] == 2 and counts["skipped_blank"] == 1 and counts["truncated"] == 1
    assert sequences[0] == [eos, *tokenizer("Nombre: Ana.")["input_ids"], eos]
    assert len(sequences[1]) == 12 and sequences[1][0] == eos and eos not in sequences[1][1:]
    batch = pad_batch(sequences, tokenizer.pad_token_id)
    short = len(sequences[0])
    assert batch["input_ids"].shape == (2, 12)
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (12 - short)
    # Nothing predicts a row's first token: -100, so the Trainer counts only scored tokens.
    assert batch["labels"][0].tolist() == [-100] + sequences[0][1:] + [-100] * (12 - short)
    assert batch["labels"][1].tolist() == [-100] + sequences[1][1:]
    assert int((batch["labels"] != -100).sum()) == predicted_tokens(batch["labels"])
    # Batches of similar length, every index once, reproducible for a seed.
    lengths = [random.Random(i).randint(10, 500) for i in range(40)]
    batches = length_batches(lengths, 4, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(40))
    assert batches == length_batches(lengths, 4, random.Random(1))
    assert batches != length_batches(lengths, 4, random.Random(2))

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    shuffled = list(range(40))
    random.Random(1).shuffle(shuffled)
    assert padding(batches) < padding([shuffled[i : i + 4] for i in range(0, 40, 4)]) / 4
    # The Trainer's sampler: one draw per epoch, the same whatever order epochs are asked in.
    sampler = LengthBatchSampler(lengths, 4, seed=1)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == batches and len(sampler) == 10
    rng = random.Random(1)
    assert second == [length_batches(lengths, 4, rng) for _ in range(2)][1] != batches


def test_prompts_are_encoded_as_note_openings_in_training(scratch_run):
    from synthdeid.training.synthesis import prompt_of

    _, tokenizer = load_generator(scratch_run[0])
    notes = ["Nombre: Ana Ruiz García.\nFecha de ingreso: 01/02/2003.", "Datos del\npaciente.\nNombre: Luis."]
    prompts = [prompt_of(note) for note in notes]
    encoded = prompt_batch(tokenizer, prompts)
    assert set(encoded) == {"input_ids", "attention_mask"}
    sequences, _ = note_sequences(tokenizer, notes, 64)
    for ids, mask, sequence in zip(encoded["input_ids"], encoded["attention_mask"], sequences):
        opening = ids[mask.bool()].tolist()
        assert opening[0] == tokenizer.eos_token_id  # BOS: the scratch tokenizer's BOS is its EOS
        assert sequence[: len(opening)] == opening  # the prompt is the opening of its training sequence
        assert mask.tolist()[-len(opening) :] == [1] * len(opening)  # left padding

    class Stub:
        def __init__(self, bos, eos):
            self.bos_token_id, self.eos_token_id = bos, eos

    assert note_start_id(Stub(5, 7)) == 5 and note_start_id(Stub(None, 7)) == 7
    with pytest.raises(ValueError, match="neither"):
        note_start_id(Stub(None, None))


def test_scratch_generator_loads_and_generates_in_batches(scratch_run):
    out, _ = scratch_run
    model, tokenizer = load_generator(out)
    assert not model.training and tokenizer.padding_side == "left"
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.model_max_length == TINY["n_positions"]
    inputs = tokenizer(["Nombre:", "Paciente de 40 años."], return_tensors="pt", padding=True)
    # No token-type ids: GPT-2 would add them as token embeddings.
    assert set(inputs) == {"input_ids", "attention_mask"}
    single = tokenizer("Paciente de 40 años.", return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**single).logits, model(input_ids=single["input_ids"]).logits)
    # Left padding leaves the shorter prompt's greedy continuation unchanged.
    greedy = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    alone = model.generate(**tokenizer("Nombre:", return_tensors="pt"), **greedy)[0, -5:]
    assert torch.equal(model.generate(**inputs, **greedy)[0, -5:], alone)
    generated = model.generate(
        **inputs, max_new_tokens=5, min_new_tokens=5, do_sample=True, top_p=0.95, pad_token_id=tokenizer.pad_token_id
    )
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 5)
    # The model folder itself loads too.
    assert load_generator(out / MODEL_DIR)[0].config.n_layer == 1


def test_same_seed_same_curve_through_the_cli(tmp_path, texts_corpus, scratch_run, monkeypatch):
    # Also under an environment that asks accelerate for bf16: the generator trains in float32.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    app = cli("adapt_generator")
    options = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    args = [str(texts_corpus["train"]), str(tmp_path / "again"), f"--validation={texts_corpus['validation']}"]
    result = CliRunner().invoke(app, [*args, "--epochs=3", "--device=cpu", *options])
    assert result.exit_code == 0, result.output
    assert "Saved the scratch generator" in result.output
    first = json.loads((scratch_run[0] / LOSS_FILE).read_text())
    again = json.loads((tmp_path / "again" / LOSS_FILE).read_text())
    assert again == first


def test_cli_bad_corpus_or_base_model_is_an_error_naming_it_and_writes_nothing(tmp_path, texts_corpus):
    empty = tmp_path / "empty.spacy"
    empty.write_bytes(b"")
    missing_model = tmp_path / "no-such-model"
    cases = [
        ([str(tmp_path / "missing.spacy")], f"error: {tmp_path / 'missing.spacy'}"),
        ([str(empty)], f"error: {empty}"),
        ([str(texts_corpus["train"]), f"--base-model={missing_model}"], f"error: base model '{missing_model}'"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out-{i}"
        result = CliRunner().invoke(cli("adapt_generator"), [args[0], str(out), *args[1:], "--device=cpu"])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not out.exists()


def test_fraction_selects_documents(tmp_path, texts_corpus):
    config = adapt_generator(
        texts_corpus["train"], tmp_path / "half", fraction=0.5, epochs=1, device="cpu", progress=False, **TINY
    )
    assert config["documents"]["used"] == 5 and config["documents"]["available"] == 10
    assert config["documents"]["indices"] == select_documents(10, 0.5, TINY["seed"])
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction must be in"):
            adapt_generator(texts_corpus["train"], tmp_path / "bad", fraction=bad, progress=False, **TINY)
    assert not (tmp_path / "bad").exists()


def test_scratch_dropout_is_saved_and_changes_training(tmp_path, texts_corpus, scratch_run):
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(scratch_run[0] / MODEL_DIR)
    assert (saved.embd_pdrop, saved.resid_pdrop, saved.attn_pdrop) == (0.0, 0.0, 0.0)  # the default
    config = adapt_generator(
        texts_corpus["train"], tmp_path / "dropout", dropout=0.1, epochs=3, device="cpu", progress=False, **TINY
    )
    saved = AutoConfig.from_pretrained(tmp_path / "dropout" / MODEL_DIR)
    assert (saved.embd_pdrop, saved.resid_pdrop, saved.attn_pdrop) == (0.1, 0.1, 0.1)
    assert config["arguments"]["dropout"] == 0.1
    assert config["kept"]["train_loss"] != scratch_run[1]["kept"]["train_loss"]
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout must be in"):
            adapt_generator(texts_corpus["train"], tmp_path / "bad", dropout=bad, progress=False, **TINY)
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_the_epoch_with_the_lowest_validation_loss_is_saved(tmp_path, texts_corpus):
    """Validation text the model cannot learn from (the train notes' words
    reversed) makes it overfit after an epoch or two: the saved model is the
    best epoch's, unless `keep_best_epoch` is off."""
    import spacy

    nlp = spacy.blank("es")
    reversed_notes = [nlp(" ".join(text.split()[::-1])) for text in note_texts(read_docs(texts_corpus["train"]))[:3]]
    validation = write_docbin(tmp_path / "reversed.spacy", reversed_notes)
    settings = {**TINY, "learning_rate": 2e-2, "dropout": 0.0}
    for keep_best in (True, False):
        out = tmp_path / f"keep_best_{keep_best}"
        config = adapt_generator(
            texts_corpus["train"],
            out,
            validation_path=validation,
            epochs=6,
            device="cpu",
            keep_best_epoch=keep_best,
            progress=False,
            **settings,
        )
        epochs = json.loads((out / LOSS_FILE).read_text())["epochs"]
        losses = [e["validation_loss"] for e in epochs]
        best = losses.index(min(losses)) + 1
        assert best < len(epochs), "the run did not overfit; the test shows nothing"
        kept = best if keep_best else len(epochs)
        assert config["kept"] == epochs[kept - 1]
        assert config["validation_perplexity"] == epochs[kept - 1]["validation_perplexity"]
        model, tokenizer = load_generator(out)
        sequences, _ = note_sequences(tokenizer, note_texts(read_docs(validation)), settings["block_size"])
        loss, _ = evaluate_loss(model, sequences, 2, "cpu", tokenizer.pad_token_id)
        assert loss == pytest.approx(losses[kept - 1], rel=1e-5)


def test_lora_trains_only_the_adapter_and_reloads_to_the_same_model(tmp_path, texts_corpus, tiny_base):
    out = tmp_path / "lora"
    config = adapt_generator(
        texts_corpus["train"],
        out,
        base_model=str(tiny_base),
        validation_path=texts_corpus["validation"],
        epochs=3,
        block_size=128,  # more than the base's 64 positions: capped
        batch_size=4,
        learning_rate=1e-2,
        device="cpu",
        progress=False,
    )
    assert config["mode"] == "lora" and config["block_size"] == 64
    assert config["lora"]["target_modules"] == ["c_attn"]  # peft's GPT-2 default
    adapter = json.loads((out / MODEL_DIR / ADAPTER_CONFIG).read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 32 and adapter["lora_dropout"] == 0.05
    assert adapter["base_model_name_or_path"] == str(tiny_base)
    assert not (out / MODEL_DIR / "model.safetensors").exists(), "the adapter folder holds the full model"
    # Each layer's c_attn (32 -> 96) gets A (8 x 32) and B (96 x 8): 1024 per layer.
    params = config["parameters"]
    assert params["trainable"] == 2 * 8 * (32 + 96)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert params["total"] == sum(p.numel() for p in base.parameters()) + params["trainable"]
    epochs = json.loads((out / LOSS_FILE).read_text())["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["validation_loss"] < epochs[0]["validation_loss"]

    model, tokenizer = load_generator(out)
    assert type(model).__name__ == "PeftModelForCausalLM" and not model.training
    # The reloaded adapter is the trained model: it gives the final validation loss again.
    sequences, _ = note_sequences(tokenizer, note_texts(read_docs(texts_corpus["validation"])), 64)
    loss, _ = evaluate_loss(model, sequences, 4, "cpu", tokenizer.pad_token_id)
    assert loss == pytest.approx(epochs[-1]["validation_loss"], rel=1e-5)
    again, _ = load_generator(out)
    base.eval()
    inputs = pad_batch(sequences[:2], tokenizer.pad_token_id)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=inputs).logits
        assert torch.equal(logits, again(input_ids=inputs).logits)
        assert not torch.allclose(logits, base(input_ids=inputs).logits), "the adapter changed nothing"
    inputs = tokenizer(["Nombre:"], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3


def test_missing_base_model_is_a_clear_error(tmp_path, texts_corpus):
    missing = tmp_path / "no-such-model"
    with pytest.raises(OSError, match="no-such-model"):
        adapt_generator(texts_corpus["train"], tmp_path / "out", base_model=str(missing), progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None,
    reason="QLoRA is available here",
)
def test_qlora_without_gpu_or_bitsandbytes_is_a_clear_error(tmp_path, texts_corpus, tiny_base):
    with pytest.raises(RuntimeError, match="qlora needs"):
        adapt_generator(texts_corpus["train"], tmp_path / "q", base_model=str(tiny_base), qlora=True, progress=False)
    with pytest.raises(ValueError, match="pretrained base_model"):
        adapt_generator(texts_corpus["train"], tmp_path / "q", qlora=True, progress=False)


def test_load_generator_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such generator folder"):
        load_generator(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds neither"):
        load_generator(tmp_path / "empty")
