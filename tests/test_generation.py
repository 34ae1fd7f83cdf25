"""Generation through spacy-llm with a tiny random GPT-2 (byte-level BPE fitted
on synthetic notes), plus a canned spacy-llm backend where exact outputs are
needed to check the filtering counts."""

import importlib.util
import itertools
import json
import math
import random
import statistics
from pathlib import Path
from typing import Iterable, List

import pytest
import spacy
import typer
from conftest import cli, make_docs, make_note, write_docbin
from spacy_llm.registry import registry
from transformers import AutoTokenizer
from typer.testing import CliRunner

from synthdeid.training.synthesis import (
    DROP_REASONS,
    build_pipeline,
    drop_reason,
    generate,
    generate_corpus,
    generator_token_count,
    glued_loop,
    load_generation_config,
    max_line_repeats,
    model_of,
    collapse_whitespace,
    prompt_of,
    read_prompts,
    repeated_ngram_share,
    generation_stats_markdown,
    target_size,
)
from synthdeid.training.generator import generator_model_dir
from synthdeid.training.privacy import GoldValueScreen
from synthdeid.training.inline_tags import tag_text
from synthdeid.training.spacy_llm_model import MODEL_NAME, hf_causal_lm

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "generate.cfg"
EOS = "<|endoftext|>"
# Small enough for speed, long enough that most random samples have 5+ words.
OPTIONS = {"max_new_tokens": 40, "batch_size": 3, "seed": 7}
RECORD_FIELDS = {
    "id", "text", "prompt", "prompt_doc", "round", "sample", "seed", "sampling", "generator", "end_reason", "new_tokens"
}


def save_gpt2(path: Path, eos_bias: float = 0.0) -> Path:
    """A seeded random 1-layer GPT-2 (96 positions) with a byte-level BPE
    tokenizer, saved as an adapt_generator output folder (`path/model`).
    `eos_bias` non-zero makes the final layer norm emit that multiple of EOS's
    (tied) embedding whatever the input: 1e4 always samples EOS, -1e4 never."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [doc.text for doc in make_docs(30, seed=5)],
        vocab_size=400,
        min_frequency=1,
        show_progress=False,
        special_tokens=[EOS],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, pad_token=EOS)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=96,
        n_layer=1,
        n_embd=32,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    if eos_bias:
        with torch.no_grad():
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(eos_bias * model.transformer.wte.weight[tokenizer.eos_token_id])
    model.save_pretrained(path / "model")
    tokenizer.save_pretrained(path / "model")
    return path


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    return save_gpt2(tmp_path_factory.mktemp("generator"))


@pytest.fixture(scope="module")
def docbins(tmp_path_factory):
    root = tmp_path_factory.mktemp("gold")
    validation = make_docs(4, seed=2)
    assert len({prompt_of(doc.text) for doc in validation}) == 4
    return {
        "train": write_docbin(root / "train.spacy", make_docs(10, seed=1)),
        "validation": write_docbin(root / "validation.spacy", validation),
    }


def gpt2_config(generator_dir, **options):
    return load_generation_config(CONFIG, generator_dir, {**OPTIONS, **options})


# ---------------------------------------------------------------- prompts


def test_prompts_are_the_first_three_words_of_each_validation_doc(tmp_path):
    assert prompt_of("  Datos del\npaciente.\nNombre: Ana.") == "Datos del\npaciente."
    assert prompt_of("Nombre: Ana") == "Nombre: Ana"
    assert prompt_of("Hola") == "Hola"
    assert prompt_of(" \n ") == ""
    docs = make_docs(5, seed=3)
    nlp = spacy.blank("es")
    path = write_docbin(tmp_path / "v.spacy", docs[:2] + [nlp.make_doc("")] + docs[2:])
    prompts = read_prompts(path)
    texts = [doc.text for doc in docs[:2]] + [None] + [doc.text for doc in docs[2:]]
    assert [i for i, _ in prompts] == [0, 1, 3, 4, 5]  # the empty doc gives no prompt
    for i, prompt in prompts:
        assert prompt.split() == texts[i].split()[:3]
        assert texts[i].startswith(prompt)


def test_empty_or_missing_validation_set_is_an_error_naming_the_file(tmp_path):
    empty = write_docbin(tmp_path / "empty.spacy", [])
    with pytest.raises(ValueError, match="empty.spacy"):
        read_prompts(empty)
    with pytest.raises(FileNotFoundError, match="nope.spacy"):
        read_prompts(tmp_path / "nope.spacy")


def test_target_size_is_a_ceiled_multiple_of_the_gold_words():
    assert target_size(2.0, 186_651) == 373_302
    assert target_size(4.0, 450) == 1800
    assert target_size(0.3, 10) == 3  # not 4 from 3.0000000000000004
    assert target_size(0.1, 15) == 2
    with pytest.raises(ValueError):
        target_size(0, 10)


# -------------------------------------------------------------- filtering


def test_drop_reasons_on_hand_made_texts():
    prompt = "Datos del paciente."
    good = " Varón de 54 años que acude a urgencias por dolor torácico de dos horas de evolución."
    assert drop_reason(good, prompt + good, set()) is None
    # empty: no word characters, or fewer than five new words
    assert drop_reason("", prompt, set()) == "empty"
    assert drop_reason(" ... -- ;; ?? !!", prompt + " ... -- ;; ?? !!", set()) == "empty"
    assert drop_reason(" Sin antecedentes de interés.", prompt + " Sin antecedentes de interés.", set()) == "empty"
    # runaway repetition: most word 4-grams repeat ...
    loop = good + " el paciente refiere dolor" * 20
    assert repeated_ngram_share(loop.split()) > 0.5
    assert drop_reason(loop, prompt + loop, set()) == "repetition"
    # ... or one line occurs more than three times
    lines = good + "\nFecha de ingreso: 12/03/2018." * 4
    assert repeated_ngram_share(lines.split()) < 0.5 and max_line_repeats(lines) == 4
    assert drop_reason(lines, prompt + lines, set()) == "repetition"
    three = good + "\nFecha de ingreso: 12/03/2018." * 3
    assert drop_reason(three, prompt + three, set()) is None
    # ... or tokens loop without spaces, invisible to the word measures
    glued = good + " NombreNombreDatosNombreNombreNombreNombre: Ana." + good.replace("dolor", "tos")
    assert repeated_ngram_share(glued.split()) < 0.5 and max_line_repeats(glued) == 1
    assert glued_loop(glued) == "NombreNombreNombreNombre"
    assert drop_reason(glued, prompt + glued, set()) == "repetition"
    for fine in (good + " NombreNombreNombre.", good + "\n----------------\n" + good.replace("dolor", "tos")):
        assert glued_loop(fine) is None and drop_reason(fine, prompt + fine, set()) is None
    # exact duplicate of a kept text after whitespace normalisation
    kept = {collapse_whitespace(prompt + good)}
    respaced = "  " + good.replace(" ", "\n", 3)
    assert drop_reason(respaced, prompt + respaced, kept) == "duplicate"
    assert drop_reason(good + " Alta.", prompt + good + " Alta.", kept) is None


def test_gold_like_notes_pass_the_filters():
    rng = random.Random(0)
    kept = set()
    for _ in range(50):
        text, _ = make_note(rng)
        prompt = prompt_of(text)
        if drop_reason(text[len(prompt) :], text, kept) is None:
            kept.add(collapse_whitespace(text))
    assert len(kept) == 50


# ------------------------------------------------------------ spacy-llm model


def test_model_is_registered_and_continues_prompts_through_the_pipeline(generator_dir):
    assert registry.llm_models.get(MODEL_NAME) is hf_causal_lm
    nlp = build_pipeline(gpt2_config(generator_dir))
    assert nlp.pipe_names == ["llm"]
    docs = list(nlp.pipe(["Nombre: Ana García", "Datos del paciente."]))
    for doc in docs:
        reply = doc._.llm_reply
        assert isinstance(reply, str) and reply.strip()
        assert not reply.startswith(doc.text)  # the continuation, not prompt + continuation


def test_model_keeps_the_nesting_of_prompts_per_doc(generator_dir):
    model = hf_causal_lm(str(generator_dir), max_new_tokens=8, batch_size=2, seed=1)
    replies = model([["Nombre: Ana", "Fecha de"], [], ("Paciente de",), iter(["Sin antecedentes", "Se solicita"])])
    assert [len(doc) for doc in replies] == [2, 0, 1, 2]
    assert model.n_batches == 3  # five prompts in batches of two
    assert all(isinstance(reply, str) for doc in replies for reply in doc)


def test_model_stops_at_eos(tmp_path):
    model = hf_causal_lm(str(save_gpt2(tmp_path / "eos", eos_bias=1e4)), max_new_tokens=20, batch_size=4)
    assert model([["Nombre: Ana"], ["Datos del paciente."]]) == [[""], [""]]
    assert model.last_details == [{"end_reason": "eos", "new_tokens": 0}] * 2


def test_generation_stops_at_the_model_window(tmp_path):
    # This model never samples EOS: 200 new tokens would index past its 96
    # positions (an IndexError in GPT-2) unless generation stops at the window.
    path = save_gpt2(tmp_path / "no_eos", eos_bias=-1e4)
    nlp = build_pipeline(load_generation_config(CONFIG, path, {"max_new_tokens": 200}))
    docs = list(nlp.pipe(["Nombre: Ana", "Datos del paciente."]))
    assert all(isinstance(doc._.llm_reply, str) for doc in docs)
    model = model_of(nlp)
    prompt_width = len(model._tokenizer("Datos del paciente.")["input_ids"]) + 1  # the longer prompt + BOS
    assert model.last_details == [{"end_reason": "length", "new_tokens": 96 - prompt_width}] * 2


def test_end_reasons_in_a_batch_where_some_notes_end_and_some_hit_the_cap(tmp_path):
    # EOS has a fixed probability of about 0.2 at every step, whatever came before.
    model = hf_causal_lm(str(save_gpt2(tmp_path / "some_eos", eos_bias=400)), max_new_tokens=6, batch_size=8, seed=1)
    prompts = [[f"Paciente de {age} años"] for age in range(30, 38)]
    model(prompts)
    details = model.last_details
    assert len(details) == 8 and {d["end_reason"] for d in details} == {"eos", "length"}
    for detail in details:
        # "length": all 6 tokens, no EOS; "eos": the note stopped before the cap.
        assert (detail["new_tokens"] == 6) == (detail["end_reason"] == "length")


class TokenTypeIdsTokenizer:
    """The real tokenizer, but every encoding also carries token_type_ids of
    all 1s (as some tokenizers return); everything else is delegated."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __call__(self, *args, **kwargs):
        encoding = self._tokenizer(*args, **kwargs)
        encoding["token_type_ids"] = (
            [[1] * len(ids) for ids in encoding["input_ids"]]
            if isinstance(encoding["input_ids"], list)
            else encoding["input_ids"] * 0 + 1
        )
        return encoding

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_token_type_ids_from_the_tokenizer_do_not_change_generation(generator_dir):
    import torch

    prompts = [["Nombre: Ana"], ["Datos del paciente."], ["Paciente de 40 años"]]
    plain = hf_causal_lm(str(generator_dir), max_new_tokens=12, batch_size=3, seed=5)
    typed = hf_causal_lm(str(generator_dir), max_new_tokens=12, batch_size=3, seed=5)
    typed._tokenizer = TokenTypeIdsTokenizer(typed._tokenizer)
    assert "token_type_ids" in typed._tokenizer(["Nombre: Ana"])
    # GPT-2 adds token-type ids as token embeddings: passed on, they would change the output.
    ids = plain._tokenizer("Nombre: Ana", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        model = plain._model
        assert not torch.allclose(model(input_ids=ids).logits, model(input_ids=ids, token_type_ids=ids * 0 + 1).logits)
    assert typed(prompts) == plain(prompts)
    assert typed.last_details == plain.last_details


def test_missing_generator_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_generator"):
        build_pipeline(load_generation_config(CONFIG, tmp_path / "no_generator"))
    with pytest.raises(ValueError, match="no generator folder"):
        build_pipeline(load_generation_config(CONFIG))


def test_bad_configs_are_errors_naming_the_file(tmp_path, generator_dir):
    with pytest.raises(FileNotFoundError, match="missing.cfg"):
        load_generation_config(tmp_path / "missing.cfg")
    cached = tmp_path / "cached.cfg"
    cached.write_text(CONFIG.read_text().replace("path = null\nbatch_size = 64", 'path = "cache"\nbatch_size = 64'))
    with pytest.raises(ValueError, match="cached.cfg.*must be null"):
        load_generation_config(cached)
    with pytest.raises(ValueError, match="generate.cfg.*'top_k'"):
        load_generation_config(CONFIG, generator_dir, {"top_k": 5})
    unknown = tmp_path / "unknown.cfg"
    unknown.write_text(CONFIG.read_text().replace(MODEL_NAME, "synthdeid.NoSuchModel.v1"))
    with pytest.raises(ValueError, match="unknown.cfg: bad generation config"):
        build_pipeline(load_generation_config(unknown, generator_dir), source=str(unknown))


# --------------------------------------------------------------- generation


def test_records_name_the_seed_that_reproduces_their_batch(generator_dir, docbins):
    prompts = read_prompts(docbins["validation"])
    config = gpt2_config(generator_dir)
    records, counts = generate_corpus(config, prompts, target_words=150, samples_per_prompt=2, progress=False)
    assert counts["kept"] == len(records) >= 2 and counts["words_kept"] >= 150
    # Item k * len(prompts) + p of a round is sample k of prompt p; batches of 3
    # never cross rounds, so a round of 8 items takes 3 batches.
    items = [(k, i, prompt) for k in range(2) for i, prompt in prompts]
    positions = {i: p for p, (i, _) in enumerate(prompts)}
    for record in records:
        index = record["sample"] * len(prompts) + positions[record["prompt_doc"]]
        batch = record["round"] * 3 + index // 3
        assert record["seed"] == OPTIONS["seed"] + batch
        fresh = hf_causal_lm(str(generator_dir), max_new_tokens=40, batch_size=3, seed=record["seed"])
        first = index - index % 3
        chunk = items[first : first + 3]
        replies = [doc[0] for doc in fresh([[prompt] for _, _, prompt in chunk])]
        assert record["text"] == record["prompt"] + replies[index % 3]
        assert fresh.last_details[index % 3] == {k: record[k] for k in ("end_reason", "new_tokens")}


def test_generate_reaches_the_word_target_reproducibly(tmp_path, generator_dir, docbins):
    def run(name, **options):
        return generate(
            docbins["validation"],
            docbins["train"],
            tmp_path / f"{name}.jsonl",
            config_path=CONFIG,
            generator=generator_dir,
            model_options={**OPTIONS, **options},
            size_multiple=0.5,
            samples_per_prompt=2,
            stats_path=tmp_path / f"{name}.json",
            progress=False,
        )

    stats = run("a")
    assert run("b")["generated"] == stats["generated"]
    a, b = (tmp_path / "a.jsonl").read_bytes(), (tmp_path / "b.jsonl").read_bytes()
    assert a == b  # same seed, same corpus
    run("c", seed=8)
    assert (tmp_path / "c.jsonl").read_bytes() != a

    records = [json.loads(line) for line in a.decode("utf-8").splitlines()]
    gold_words = sum(len(doc.text.split()) for doc in make_docs(10, seed=1))
    # The target is in words: half the gold train words; the last note kept crosses it.
    assert stats["words_target"] == stats["target"] == math.ceil(0.5 * gold_words)
    words = [len(r["text"].split()) for r in records]
    assert sum(words[:-1]) < stats["words_target"] <= sum(words) == stats["words_kept"]
    assert stats["words_ratio"] == pytest.approx(sum(words) / gold_words)
    assert stats["kept"] == len(records) and stats["rounds"] >= 2  # a round keeps at most 8 notes
    assert [r["id"] for r in records] == [f"syn-{i:06d}" for i in range(1, len(records) + 1)]
    prompts = dict(read_prompts(docbins["validation"]))
    for record in records:
        assert set(record) == RECORD_FIELDS
        assert record["prompt"] == prompts[record["prompt_doc"]]
        assert record["text"].startswith(record["prompt"]) and len(record["text"]) > len(record["prompt"])
        assert record["sampling"] == {"top_p": 0.95, "temperature": 1.0, "max_new_tokens": 40}
        assert record["generator"] == str(generator_dir)
        assert record["seed"] >= OPTIONS["seed"]
        assert record["end_reason"] in ("eos", "length") and 0 < record["new_tokens"] <= 40
        assert (record["end_reason"] == "length") == (record["new_tokens"] == 40)
    assert len({collapse_whitespace(r["text"]) for r in records}) == len(records)

    assert json.loads((tmp_path / "a.json").read_text()) == stats
    assert set(stats["dropped"]) == set(DROP_REASONS)
    assert stats["generated"] == stats["kept"] + sum(stats["dropped"].values())
    assert stats["words_kept"] == sum(len(r["text"].split()) for r in records)
    assert stats["gold_train_docs"] == 10 and stats["prompts"] == 4
    assert stats["model"] == {"model": MODEL_NAME, "generator": str(generator_dir), "batch_size": 3, "seed": 7}
    tokenizer = AutoTokenizer.from_pretrained(generator_dir / "model")
    assert stats["tokens_kept"] == sum(len(tokenizer.encode(r["text"])) for r in records) > 0
    assert stats["tokens_kept_per_second"] == pytest.approx(stats["tokens_kept"] / stats["seconds"])
    # End reasons: shares over the kept notes and over all generated outputs.
    kept_reasons = stats["end_reasons"]["kept"]
    assert set(kept_reasons) == {"eos", "length"}
    for reason in ("eos", "length"):
        count = sum(r["end_reason"] == reason for r in records)
        assert kept_reasons[reason] == {"count": count, "share": pytest.approx(count / len(records))}
    assert sum(r["count"] for r in stats["end_reasons"]["generated"].values()) == stats["generated"]
    assert stats["tokens_generated"] >= sum(r["new_tokens"] for r in records)
    # Words per note, synthetic against gold, with a shared histogram.
    synthetic, gold = stats["words_per_note"]["synthetic"], stats["words_per_note"]["gold_train"]
    assert synthetic["notes"] == len(records) and synthetic["mean"] == pytest.approx(sum(words) / len(words))
    assert synthetic["median"] == pytest.approx(statistics.median(words))
    assert synthetic["min"] <= synthetic["p10"] <= synthetic["median"] <= synthetic["p90"] <= synthetic["max"]
    assert gold["notes"] == 10 and gold["mean"] == pytest.approx(gold_words / 10)
    histogram = stats["words_histogram"]
    assert sum(histogram["counts"]["synthetic"]) == len(records) and sum(histogram["counts"]["gold_train"]) == 10
    assert len(histogram["edges"]) == len(histogram["counts"]["gold_train"]) + 1
    assert histogram["edges"][-1] > max(gold["max"], synthetic["max"])
    report = (tmp_path / "a.md").read_text()
    assert report == generation_stats_markdown(stats) and "| kept / gold train |" in report and "| eos |" in report


def test_generation_resumes_and_grows_to_exactly_what_one_run_gives(tmp_path, generator_dir, docbins, monkeypatch):
    from synthdeid.training import synthesis

    def run(name, size, **options):
        return generate(
            docbins["validation"], docbins["train"], tmp_path / f"{name}.jsonl", config_path=CONFIG,
            generator=generator_dir, model_options={**OPTIONS, **options}, size_multiple=size,
            samples_per_prompt=2, progress=False,
        )

    assert run("whole", 0.8)["resumed_from"] is None
    whole = (tmp_path / "whole.jsonl").read_bytes()

    # Interrupted after its third checkpoint: the partial records and the state stay.
    save, calls = synthesis.ProgressFiles._save, []

    def interrupted(self, checkpoint):
        save(self, checkpoint)
        calls.append(checkpoint)
        if len(calls) == 4:  # the first save is the starting point
            raise KeyboardInterrupt

    monkeypatch.setattr(synthesis.ProgressFiles, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run("resumed", 0.8)
    monkeypatch.setattr(synthesis.ProgressFiles, "_save", save)
    assert not (tmp_path / "resumed.jsonl").exists() and (tmp_path / "resumed.jsonl.partial").is_file()
    stats = run("resumed", 0.8)
    assert stats["resumed_from"] == {"records": calls[-1].records, "batches": calls[-1].batches} != {
        "records": 0, "batches": 0}
    assert (tmp_path / "resumed.jsonl").read_bytes() == whole
    assert not (tmp_path / "resumed.jsonl.partial").exists()

    # A finished smaller corpus grows: the same notes first, then the rest.
    run("grown", 0.3)
    small = (tmp_path / "grown.jsonl").read_bytes()
    assert whole.startswith(small) and small != whole
    assert run("grown", 0.8)["resumed_from"]["records"] > 0
    assert (tmp_path / "grown.jsonl").read_bytes() == whole
    # The generator's folder spelled another way is the same generator.
    monkeypatch.chdir(generator_dir.parent)
    relative = generate(
        docbins["validation"], docbins["train"], tmp_path / "grown.jsonl", config_path=CONFIG,
        generator=Path(generator_dir.name), model_options=OPTIONS, size_multiple=0.9, samples_per_prompt=2,
        progress=False,
    )
    assert relative["resumed_from"]["records"] > 0
    # A smaller corpus than the saved one is generated afresh, as one run gives it.
    assert run("grown", 0.3)["resumed_from"] is None
    assert (tmp_path / "grown.jsonl").read_bytes() == small
    # Other settings start afresh.
    assert run("grown", 0.8, seed=8)["resumed_from"] is None

    # A run that had given up at the end of a round gives up again when resumed.
    state_file = tmp_path / "grown.jsonl.resume.json"
    state = json.loads(state_file.read_text())
    state["progress"]["idle"] = 3
    state_file.write_text(json.dumps(state))
    with pytest.raises(RuntimeError, match="gave up: 3 rounds in a row"):
        run("grown", 1.5, seed=8)


def test_a_generator_retrained_in_place_does_not_continue_the_old_corpus(tmp_path, generator_dir, docbins):
    import shutil

    model = tmp_path / "generator"
    shutil.copytree(generator_dir, model)

    def run(size):
        return generate(docbins["validation"], docbins["train"], tmp_path / "out.jsonl", config_path=CONFIG,
                        generator=model, model_options=OPTIONS, size_multiple=size, samples_per_prompt=2,
                        progress=False)

    run(0.3)
    assert run(0.8)["resumed_from"]["records"] > 0  # the same model grows its corpus
    (generator_model_dir(model) / "retrained.txt").write_text("new weights")
    assert run(1.2)["resumed_from"] is None


def test_tokens_are_not_counted_for_a_backend_without_a_local_model():
    assert generator_token_count("test.Canned.v1", ["Nombre: Ana"]) is None


def test_cli_runs_the_generation(tmp_path, generator_dir, docbins):
    spec = importlib.util.spec_from_file_location("generate_cli", REPO / "scripts" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = typer.Typer()
    app.command()(module.main)
    out, stats = tmp_path / "out.jsonl", tmp_path / "stats.json"
    args = [str(docbins["validation"]), str(docbins["train"]), str(generator_dir), str(out)]
    options = ["--size-multiple=0.2", "--samples-per-prompt=1", "--max-new-tokens=40", "--batch-size=4"]
    result = CliRunner().invoke(app, [*args, f"--config={CONFIG}", *options, f"--stats={stats}"])
    assert result.exit_code == 0, result.output
    written = json.loads(stats.read_text())
    gold_words = sum(len(doc.text.split()) for doc in make_docs(10, seed=1))
    assert written["words_target"] == math.ceil(0.2 * gold_words) <= written["words_kept"]
    assert f"Kept {written['kept']} of" in result.output and f"target of {written['words_target']}" in result.output
    assert len(out.read_text().splitlines()) == written["kept"]
    assert stats.with_suffix(".md").exists()


def test_cli_names_bad_input_and_leaves_no_files(tmp_path, generator_dir, docbins):
    not_a_docbin = tmp_path / "notes.spacy"
    not_a_docbin.write_text("not a DocBin")
    out = tmp_path / "out" / "generated.jsonl"
    out.parent.mkdir()
    cases = {
        "no_generator": [str(docbins["validation"]), str(docbins["train"]), str(tmp_path / "no_generator")],
        "notes.spacy": [str(not_a_docbin), str(docbins["train"]), str(generator_dir)],
    }
    for named, args in cases.items():
        result = CliRunner().invoke(cli("generate"), [*args, str(out), f"--config={CONFIG}"])
        assert result.exit_code == 1 and result.output.startswith("error: ") and named in result.output, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert list(out.parent.iterdir()) == []  # no output, partial or resume state


# ---------------------------------------- a canned backend swapped in the config


class Canned:
    """Replies from a fixed cycle, whatever the prompt."""

    def __init__(self, replies: List[str]):
        self._replies = itertools.cycle(replies)

    def __call__(self, prompts: Iterable[Iterable[str]]) -> Iterable[Iterable[str]]:
        return [[next(self._replies) for _ in doc_prompts] for doc_prompts in prompts]


@registry.llm_models("test.Canned.v1")
def make_canned(replies: List[str]) -> Canned:
    return Canned(replies)


GOOD = " Varón de 54 años que acude a urgencias por dolor torácico."
LOOP = " dolor" * 40


def write_canned_config(path, replies):
    text = CONFIG.read_text()
    start, end = text.index("\n[components.llm.model]\n"), text.index("\n[components.llm.cache]\n")
    block = f'\n[components.llm.model]\n@llm_models = "test.Canned.v1"\nreplies = {json.dumps(replies)}\n'
    path.write_text(text[:start] + block + text[end:])
    return path


@pytest.fixture
def canned_config(tmp_path):
    return write_canned_config(tmp_path / "canned.cfg", ["", GOOD, GOOD, LOOP])


@pytest.mark.filterwarnings("ignore:Task supports sharding")
def test_any_backend_can_replace_the_model_and_drops_are_counted(canned_config):
    prompts = [(0, "Datos del paciente."), (3, "Nombre: Ana")]
    config = load_generation_config(canned_config)
    # Round 0: P0 "" (empty), P3 GOOD (kept, 13 words), P0 GOOD (kept, 14
    # words), P3 LOOP (repetition).
    records, counts = generate_corpus(config, prompts, target_words=27, samples_per_prompt=2, progress=False)
    assert [(r["prompt_doc"], r["sample"], r["text"]) for r in records] == [
        (3, 0, "Nombre: Ana" + GOOD),
        (0, 1, "Datos del paciente." + GOOD),
    ]
    assert all(r["seed"] is None and r["generator"] == "test.Canned.v1" for r in records)
    # A backend that does not say why a note ended leaves the end reason unknown.
    assert all(r["end_reason"] is None and r["new_tokens"] is None for r in records)
    assert counts["end_reasons_generated"] == {"unknown": 4} and counts["tokens_generated"] is None
    # The target is reached at the third output: the fourth is over target, unchecked.
    assert counts["rounds"] == 1 and counts["generated"] == 4 and counts["words_kept"] == 27
    assert counts["dropped"] == {"empty": 1, "repetition": 0, "duplicate": 0, "gold_value": 0, "over_target": 1}
    # Rounds 1 and 2 give P0 "" (empty), P3 GOOD and P0 GOOD (duplicates),
    # P3 LOOP (repetition): nothing new, so the run gives up after two.
    expected = (
        "27 of 28 words kept in 2 documents, 12 generated, "
        "dropped {'empty': 3, 'repetition': 3, 'duplicate': 4, 'gold_value': 0, 'over_target': 0}"
    )
    with pytest.raises(RuntimeError, match="gave up: 2 rounds in a row") as error:
        generate_corpus(config, prompts, target_words=28, samples_per_prompt=2, max_idle_rounds=2, progress=False)
    assert expected in str(error.value)
    with pytest.raises(ValueError, match="canned.cfg.*'top_p'"):
        load_generation_config(canned_config, model_options={"top_p": 0.9})


@pytest.mark.filterwarnings("ignore:Task supports sharding")
@pytest.mark.parametrize(
    "target_words, kept, over_target",
    [
        (1, 1, 2),  # the first note kept (13 words) crosses any target up to 13
        (13, 1, 2),  # ... reaching it exactly stops there too
        (14, 2, 1),  # one word more: the next kept note (14 words) crosses it
        (27, 2, 1),
    ],
)
def test_word_target_stops_at_the_note_that_crosses_it(canned_config, target_words, kept, over_target):
    prompts = [(0, "Datos del paciente."), (3, "Nombre: Ana")]
    config = load_generation_config(canned_config)
    records, counts = generate_corpus(
        config, prompts, target_words=target_words, samples_per_prompt=2, progress=False
    )
    assert len(records) == kept and counts["words_kept"] == [13, 27][kept - 1]
    assert counts["dropped"]["over_target"] == over_target and counts["generated"] == 4


@pytest.mark.filterwarnings("ignore:Task supports sharding")
def test_a_note_holding_a_distinctive_gold_value_is_dropped_and_another_written(tmp_path):
    gold = make_docs(4, seed=3)
    name = next(ent.text for ent in gold[0].ents if ent.label_ == "NOMBRE_SUJETO_ASISTENCIA")
    train = write_docbin(tmp_path / "train.spacy", gold)
    copied = f" {name}, varón de 54 años que acude a urgencias por dolor torácico."
    config = load_generation_config(write_canned_config(tmp_path / "copies.cfg", [copied, GOOD]))
    prompts = [(0, "Datos del paciente.")]
    screen = GoldValueScreen.from_path(train)
    records, counts = generate_corpus(config, prompts, target_words=14, samples_per_prompt=1, progress=False,
                                      screen=screen)
    # The note with the real name is dropped; the next round writes another.
    assert [record["text"] for record in records] == ["Datos del paciente." + GOOD]
    assert counts["dropped"]["gold_value"] == 1 and counts["rounds"] == 2
    records, counts = generate_corpus(config, prompts, target_words=14, samples_per_prompt=1, progress=False)
    assert records[0]["text"] == "Datos del paciente." + copied and counts["dropped"]["gold_value"] == 0


@pytest.mark.filterwarnings("ignore:Task supports sharding")
def test_tagged_notes_are_checked_and_sized_without_their_tags(tmp_path):
    replies = [
        " <CALLE>Calle Mayor 5</CALLE>, vive con su madre en <TERRITORIO>Toledo</TERRITORIO>.",
        # Five words with its tags but four without: empty.
        " <NOMBRE>Ana</NOMBRE> <NOMBRE>Luz</NOMBRE> sin antecedentes.",
        # A tag left open, one of no label and one cut off where the note ends: all dropped.
        " tiene 45 años y vive en <CALLE>Calle del Pez, <CIUDAD>Soria</CIUDAD> <TERRI",
    ]
    config = load_generation_config(write_canned_config(tmp_path / "tags.cfg", replies))
    prompts = [(0, "Nombre: <NOMBRE>Ana</NOMBRE> García."), (1, "Paciente de <TERRITORIO>Soria</TERRITORIO>.")]
    records, counts = generate_corpus(config, prompts, target_words=25, samples_per_prompt=2, progress=False,
                                      tag_labels=["CALLE", "NOMBRE", "TERRITORIO"])
    assert [record["text"] for record in records] == [
        "Nombre: Ana García. Calle Mayor 5, vive con su madre en Toledo.",
        "Nombre: Ana García. tiene 45 años y vive en Calle del Pez, Soria ",
    ]
    assert records[0]["tagged"] == prompts[0][1] + replies[0] and records[0]["tag_problems"] == []
    assert records[0]["tag_spans"] == [[8, 11, "NOMBRE"], [20, 33, "CALLE"], [56, 62, "TERRITORIO"]]
    assert records[1]["tag_spans"] == [[8, 11, "NOMBRE"]]
    assert records[1]["tag_problems"] == ["<TERRI at column 107 is cut off", "<CIUDAD> at column 84 is no label's tag",
                                          "</CIUDAD> at column 97 is no label's tag",
                                          "<CALLE> at column 62 is not closed"]
    assert counts["dropped"]["empty"] == 1 and counts["words_kept"] == 25


def test_prompts_tag_only_the_generators_labels(tmp_path):
    docs = make_docs(3, seed=4)
    path = write_docbin(tmp_path / "validation.spacy", docs)
    tagged = read_prompts(path, tag_labels=["NOMBRE_SUJETO_ASISTENCIA"])
    assert read_prompts(path) == [(i, prompt_of(doc.text)) for i, doc in enumerate(docs)]
    for (_, prompt), doc in zip(tagged, docs):
        names = [(e.start_char, e.end_char, e.label_) for e in doc.ents if e.label_ == "NOMBRE_SUJETO_ASISTENCIA"]
        assert prompt == prompt_of(tag_text(doc.text, names))
    assert any("<NOMBRE_SUJETO_ASISTENCIA>" in prompt for _, prompt in tagged)
