"""Domain-adapt a causal language model on the gold train texts (the paper's
generator step) and load the result for generation.

Two modes:

* scratch (no `base_model`): no pretrained causal LM can be installed offline,
  so a byte-level BPE tokenizer is fitted on the selected texts and a small
  GPT-2 is trained from random weights (all parameters train; LoRA on random
  weights would learn nothing useful).
* lora / qlora (`base_model` given): the pretrained model is wrapped with a
  LoRA adapter through peft and only the adapter trains; `qlora` loads the base
  in 4-bit NF4 (needs CUDA and bitsandbytes).

Both use the plain language-modelling objective on whole notes, as they
begin: each training sequence is ONE note, opened by the note-start token
(`note_start_id`: the tokenizer's BOS, else its EOS; the scratch tokenizer's
BOS is its EOS, `<|endoftext|>`) and closed by EOS, truncated to `block_size`
tokens (the model's window at most; how many notes lose their end is counted
and logged). Hugging Face's `Trainer` runs the training (AdamW, linear warmup
and decay, gradient clipping; accelerate places it on the available device).
Its batches hold notes of similar length (seeded) padded on the right;
padding has attention 0 and label -100, so it is neither read nor predicted.
Generation encodes a prompt the same way, note-start + prompt tokens
(`prompt_batch`), so the generator continues a note opening exactly as it
saw note openings in training.

Output folder (written atomically):
    model/               full model (scratch) or adapter (lora), with tokenizer
    loss.json            loss every `log_every` steps; per epoch the train loss
                         and the validation loss and perplexity (token-weighted)
    adapt_config.json    parameters, mode, data (notes, tokens, truncated notes,
                         padding) and parameter counts, versions
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spacy.tokens import Doc
from transformers import PrinterCallback, TrainerCallback, set_seed

from .hf_trainer import (EpochScoringTrainer, checkpoint_dir, is_world_process_zero, summed_over_processes,
                         training_arguments, world_size)
from .inline_tags import TAG_NAME, tagged_doc_text
from ..io import atomic_path, read_docs

MODEL_DIR = "model"
LOSS_FILE = "loss.json"
CONFIG_FILE = "adapt_config.json"
ADAPTER_CONFIG = "adapter_config.json"
# In model/ of a generator adapted on tagged notes: the labels of its tags.
TAGS_FILE = "inline_tags.json"
EOS_TOKEN = "<|endoftext|>"
# Peak learning rates used when `learning_rate` is 0: a model trained from
# random weights needs a much larger step than a LoRA adapter on a pretrained one.
DEFAULT_LEARNING_RATES = {"scratch": 2e-3, "lora": 2e-4, "qlora": 2e-4}


# ------------------------------------------------------------------ data


def select_documents(n: int, fraction: float, seed: int) -> List[int]:
    """Indices (sorted) of round(fraction * n) documents, at least one, drawn
    by a seeded shuffle. With one seed, a smaller fraction selects a subset of
    a larger one, as in the paper's 5/25/50/95% ablation."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(1, math.floor(fraction * n + 0.5))
    return sorted(order[:k])


def note_texts(docs: Sequence[Doc], inline_tags: bool = False) -> List[str]:
    """The documents' texts; with `inline_tags` their entities wrapped in
    their labels' tags (`inline_tags.tagged_doc_text`)."""
    return [tagged_doc_text(doc) for doc in docs] if inline_tags else [doc.text for doc in docs]


def tag_labels(docs: Sequence[Doc], path: str | Path) -> List[str]:
    """The labels of the entities of `docs` (read from `path`), sorted; each
    must read back as a tag name (`inline_tags.TAG_NAME`: a letter, then
    letters, digits, _ or -)."""
    labels = sorted({ent.label_ for doc in docs for ent in doc.ents})
    unreadable = [label for label in labels if not TAG_NAME.fullmatch(label)]
    if unreadable:
        raise ValueError(f"{path}: labels {unreadable} cannot be inline tag names (a letter, then letters, digits, "
                         "_ or -); map them to such names (--label-map) to adapt with inline tags")
    return labels


def generator_tag_labels(path: str | Path) -> Optional[List[str]]:
    """The labels a generator writes inline tags of (it was adapted with
    `inline_tags`), or None for a generator of plain notes."""
    tags_file = generator_model_dir(path) / TAGS_FILE
    if not tags_file.exists():
        return None
    return json.loads(tags_file.read_text(encoding="utf-8"))["labels"]


def note_start_id(tokenizer: Any) -> int:
    """The token that opens every note in training and every prompt at
    generation: the tokenizer's beginning-of-sequence token, else its
    end-of-sequence token (what a document boundary looked like in the
    model's own pretraining)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ValueError("the tokenizer has neither a beginning- nor an end-of-sequence token to open notes with")
    return token


def note_sequences(tokenizer: Any, texts: Sequence[str], max_length: int) -> Tuple[List[List[int]], Dict[str, int]]:
    """(sequences, counts): one token sequence per note, note-start token
    (`note_start_id`) + the note's tokens + EOS, cut to its first `max_length`
    tokens (a truncated note keeps its opening and loses its EOS). A note's
    leading whitespace is dropped, since prompts start at a note's first word;
    blank notes are skipped. counts: notes, tokens (after truncation), tokens
    before truncation, truncated notes, skipped blank notes, longest note."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (note-start + EOS), not {max_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-sequence token to close notes with")
    start = note_start_id(tokenizer)
    notes = [text.lstrip() for text in texts]
    kept = [text for text in notes if text.strip()]
    sequences: List[List[int]] = []
    full_lengths: List[int] = []
    if kept:
        # add_special_tokens=False: the note-start token is added here, once,
        # whatever the tokenizer would add by itself. verbose=False: notes
        # longer than the window are expected (and truncated below).
        for ids in tokenizer(kept, add_special_tokens=False, verbose=False)["input_ids"]:
            sequence = [start, *ids, eos]
            full_lengths.append(len(sequence))
            sequences.append(sequence[:max_length])
    counts = {
        "notes": len(sequences),
        "tokens": sum(len(sequence) for sequence in sequences),
        "tokens_untruncated": sum(full_lengths),
        "truncated": sum(length > max_length for length in full_lengths),
        "skipped_blank": len(notes) - len(kept),
        "longest": max(full_lengths, default=0),
        "max_length": max_length,
    }
    return sequences, counts


def prompt_batch(tokenizer: Any, prompts: Sequence[str]) -> Dict[str, Any]:
    """`input_ids` and `attention_mask` (LongTensors) of prompts encoded as
    note openings are in training (`note_sequences`): note-start token +
    the prompt's tokens, padded on the left (pad id, attention 0) so that
    every row's continuation starts at the same column. Nothing else (no
    `token_type_ids`) is returned, whatever the tokenizer gives."""
    import torch

    start = note_start_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [[start, *ids] for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    width = max(len(row) for row in rows)
    input_ids = [[pad] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    return {
        "input_ids": torch.tensor(input_ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> Dict[str, Any]:
    """`input_ids`, `attention_mask` and `labels` of sequences padded on the
    right to the longest: padding has attention 0 and label -100 (ignored by
    the loss); every real token is its own label (the model shifts), except
    the first of each row, which nothing predicts: -100 there makes the
    Trainer's count of scored tokens (`num_items_in_batch`) the real one."""
    import torch

    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


# Notes are sorted by length within pools of this many batches, drawn at random.
POOL_BATCHES = 50


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> List[List[int]]:
    """Batches of indices into `lengths` that group notes of similar length,
    to limit padding: the indices are shuffled (rng), cut into pools of
    POOL_BATCHES batches, sorted by length within a pool and cut into batches,
    and the batches of all pools are shuffled. Each epoch (a new draw from
    rng) mixes different notes, reproducibly for one seed."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * POOL_BATCHES
    batches: List[List[int]] = []
    for first in range(0, len(order), pool):
        chunk = sorted(order[first : first + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def predicted_tokens(labels: Any) -> int:
    """Tokens a causal LM is scored on in `labels`: all but the first of each
    row (the model shifts), padding (-100) excluded."""
    return int((labels[:, 1:] != -100).sum())


# ---------------------------------------------------------------- models


def fit_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """A byte-level BPE tokenizer (any text encodes; no unknown token) fitted
    on `texts`, with `<|endoftext|>` as BOS, EOS and padding. It is a GPT-2
    tokenizer class on purpose: a generic PreTrainedTokenizerFast also returns
    `token_type_ids`, which GPT-2 adds as token embeddings, so
    `model.generate(**tokenizer(prompt))` would see corrupted inputs."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(texts), vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False, special_tokens=[EOS_TOKEN]
    )
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        unk_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
    )


def scratch_model(
    tokenizer: Any, *, n_layer: int, n_embd: int, n_head: int, n_positions: int, seed: int, dropout: float
) -> Any:
    """A randomly initialised (seeded) GPT-2 sized to the tokenizer; `dropout`
    applies to embeddings, residuals and attention."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        embd_pdrop=dropout,
        resid_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def check_qlora_available(device: str) -> None:
    """Raise a RuntimeError naming what 4-bit QLoRA lacks here."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    elif not device.startswith("cuda"):
        missing.append(f"a CUDA device (device is {device!r})")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package")
    if missing:
        raise RuntimeError("qlora needs " + " and ".join(missing) + "; use plain LoRA (qlora=False) instead")


def load_base(base_model: str, *, qlora: bool, device: str) -> Tuple[Any, Any]:
    """(model, tokenizer) of a pretrained causal LM, hub id or local folder;
    in 4-bit NF4 with `qlora`. The tokenizer pads with EOS when it has no pad."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: Dict[str, Any] = {}
    if qlora:
        from transformers import BitsAndBytesConfig

        compute_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        # One GPU per process: under torchrun each takes its own (LOCAL_RANK), never "auto".
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", torch.device(device).index or 0))}
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        model = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    except (OSError, ValueError) as err:  # a bad path is a ValueError (invalid repo id)
        if Path(base_model).exists():
            raise OSError(f"base model folder {base_model}: not a loadable causal LM: {err}") from err
        raise OSError(
            f"base model {base_model!r}: no such local folder, and not loadable from the "
            f"Hugging Face hub (offline, or no such id): {err}"
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def default_target_modules(model: Any) -> Any:
    """peft's own LoRA targets for the architecture, else every linear layer."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type, "all-linear")


def max_positions(config: Any) -> Optional[int]:
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def parameter_counts(model: Any) -> Tuple[int, int]:
    """(trainable, total); peft's count unpacks 4-bit weights."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# -------------------------------------------------------------- training


class LengthBatchSampler:
    """The Trainer's batch sampler: `length_batches` of the train notes, a
    new seeded draw each epoch (the Trainer calls `set_epoch`). Trainer's own
    `group_by_length` would feed each pool's batches longest first; these are
    shuffled."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size = list(lengths), batch_size
        self.epoch = 0
        self._rng = random.Random(seed)
        self._epochs: List[List[List[int]]] = []  # drawn in order, so epoch k's batches do not depend on calls

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        while len(self._epochs) <= self.epoch:
            self._epochs.append(length_batches(self.lengths, self.batch_size, self._rng))
        return iter(self._epochs[self.epoch])

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


class NoteTrainer(EpochScoringTrainer):
    """Hugging Face `Trainer` over one-note sequences, batched by
    `LengthBatchSampler`; it also sums, per epoch, the token-weighted train
    loss and the padded positions fed to the model. Its evaluation is the
    token-weighted loss on the validation sequences (`eval_dataset`,
    `evaluate_loss`: comparable across batch sizes, unlike the Trainer's
    per-batch mean)."""

    def __init__(self, *args: Any, batch_sampler: LengthBatchSampler, pad_id: int, progress: bool,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_sampler, self.pad_id, self.progress = batch_sampler, pad_id, progress
        self.add_callback(_SamplerEpoch(batch_sampler))
        self.scored_loss: Dict[int, float] = {}  # epoch (from 0) -> sum of loss x scored tokens
        self.scored_tokens: Dict[int, int] = {}
        self.padded_positions = 0

    def get_train_dataloader(self) -> Any:
        from torch.utils.data import DataLoader

        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator)
        return self.accelerator.prepare(loader)

    def compute_loss(self, model: Any, inputs: Dict[str, Any], return_outputs: bool = False, **kwargs: Any) -> Any:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if model.training:
            epoch, tokens = self.batch_sampler.epoch, predicted_tokens(inputs["labels"])
            self.scored_loss[epoch] = self.scored_loss.get(epoch, 0.0) + loss.detach().mean().item() * tokens
            self.scored_tokens[epoch] = self.scored_tokens.get(epoch, 0) + tokens
            self.padded_positions += inputs["input_ids"].numel()
        return (loss, outputs) if return_outputs else loss


    def score(self) -> Tuple[Dict[str, float], Dict[str, Any]]:
        batch_size = self.args.per_device_train_batch_size
        # Each process scores every world-size-th batch; the sums of all are added.
        total, tokens = summed_over_processes(self, loss_sums(
            self.model, self.eval_dataset, batch_size, self.args.device, self.pad_id,
            share=(self.args.process_index, self.args.world_size)))
        loss = mean_loss(total, tokens)
        if self.progress:
            print(f"epoch {round(self.state.epoch)}: validation loss {loss:.4f} (perplexity {perplexity(loss):.2f})",
                  flush=True)
        return {"validation_loss": loss}, {"validation_perplexity": perplexity(loss)}


class _SamplerEpoch(TrainerCallback):
    """Tells the batch sampler each epoch: under DDP, accelerate's shard of
    it does not pass `set_epoch` on, and every epoch would repeat the first's batches."""

    def __init__(self, sampler: LengthBatchSampler) -> None:
        self.sampler = sampler

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sampler.set_epoch(round(state.epoch))


class LastStepLog(TrainerCallback):
    """Logs the last step too (the Trainer logs every `logging_steps` only)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == state.max_steps:
            control.should_log = True


def evaluate_loss(
    model: Any, sequences: Sequence[Sequence[int]], batch_size: int, device: Any, pad_id: int
) -> Tuple[float, int]:
    """(loss, tokens): the token-weighted mean loss over `sequences` (one note
    each, see `note_sequences`) and the number of tokens scored; exp(loss)
    is the perplexity."""
    total, tokens = loss_sums(model, sequences, batch_size, device, pad_id)
    return mean_loss(total, tokens), tokens


def mean_loss(total: float, tokens: float) -> float:
    """The token-weighted mean of `loss_sums`' (summed loss, tokens)."""
    if tokens == 0:
        raise ValueError("no token to score: every sequence is shorter than 2 tokens")
    return total / tokens


def loss_sums(
    model: Any, sequences: Sequence[Sequence[int]], batch_size: int, device: Any, pad_id: int,
    share: Tuple[int, int] = (0, 1),
) -> Tuple[float, int]:
    """(summed loss, tokens) over `sequences`: notes batched by length (no
    shuffling needed) and padded on the right; `share` (index, count) scores
    only the batches whose number is index modulo count, so that `count`
    processes divide the batches that one process would score."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    model.eval()
    total, tokens = 0.0, 0
    index, count = share
    with torch.no_grad():
        for first in range(index * batch_size, len(order), batch_size * count):
            batch = pad_batch([sequences[i] for i in order[first : first + batch_size]], pad_id)
            n = predicted_tokens(batch["labels"])
            if n == 0:
                continue
            loss = model(**{key: value.to(device) for key, value in batch.items()}).loss
            total += loss.item() * n
            tokens += n
    return total, tokens


def perplexity(loss: Optional[float]) -> Optional[float]:
    """exp(loss), None for None; inf rather than an overflow."""
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else math.inf


def _versions(qlora: bool) -> Dict[str, str]:
    names = ["torch", "transformers", "peft", "tokenizers", "spacy"] + (["bitsandbytes"] if qlora else [])
    return {"python": platform.python_version(), **{n: importlib.metadata.version(n) for n in names}}


def adapt_generator(
    train_path: str | Path,
    output_dir: str | Path,
    *,
    base_model: str = "",
    fraction: float = 1.0,
    seed: int = 0,
    epochs: int = 6,
    learning_rate: float = 0.0,
    batch_size: int = 1,
    block_size: int = 1024,
    validation_path: Optional[str | Path] = None,
    lora_r: int = 8,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: str = "",
    qlora: bool = False,
    vocab_size: int = 8000,
    n_layer: int = 4,
    n_embd: int = 256,
    n_head: int = 4,
    n_positions: int = 1024,
    dropout: float = 0.0,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    log_every: int = 10,
    device: str = "cpu",
    limit: int = 0,
    keep_best_epoch: bool = True,
    inline_tags: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train the generator on the texts of the train DocBin and write
    `model/`, `loss.json` and `adapt_config.json` to `output_dir` (atomically:
    the folder appears only when training finished). Returns the config.

    `base_model` empty trains a GPT-2 (`vocab_size`, `n_layer`, `n_embd`,
    `n_head`, `n_positions`, `dropout`) from scratch; otherwise LoRA (`lora_r`,
    `lora_alpha`, `lora_dropout`, `target_modules` comma-separated, empty for
    peft's per-architecture default) adapts the pretrained model, in 4-bit with
    `qlora`. `fraction` of the train documents (seeded choice, after `limit`
    keeps the first N) is used. `learning_rate` 0 picks the mode's default
    (DEFAULT_LEARNING_RATES). Each training sequence is one note (note-start
    + note + EOS, see `note_sequences`) of at most `block_size` tokens, capped
    at the model's window; longer notes are truncated, and counted. The
    Trainer (`NoteTrainer`) feeds batches of `batch_size` notes of similar
    length (`LengthBatchSampler`), padded.
    The validation DocBin, if given, reports a loss and perplexity
    (token-weighted, per note likewise) after each epoch; with
    `keep_best_epoch` the trained weights of the epoch with the lowest
    validation loss are saved (the Trainer's `load_best_model_at_end`; a
    small corpus overfits within a few epochs), else those of the last epoch.
    `device` "auto" is CUDA when available, else CPU. With `inline_tags` the
    notes are learnt with each entity wrapped in its label's tag, so the
    generated notes carry labels (`model/inline_tags.json` lists them)."""
    if epochs < 1 or batch_size < 1 or block_size < 2 or log_every < 1:
        raise ValueError("epochs, batch_size and log_every must be at least 1, block_size at least 2")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    mode = "scratch" if not base_model else ("qlora" if qlora else "lora")
    if qlora and not base_model:
        raise ValueError("qlora needs a pretrained base_model; the scratch model trains in full")
    device = resolve_device(device)
    if qlora:
        check_qlora_available(device)
    if base_model and Path(base_model).exists():
        # Absolute, so the adapter config finds its base from any working directory.
        base_model = str(Path(base_model).resolve())
    arguments = {
        "train_path": str(train_path),
        "output_dir": str(output_dir),
        "base_model": base_model,
        "fraction": fraction,
        "seed": seed,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "block_size": block_size,
        "validation_path": str(validation_path) if validation_path else None,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "target_modules": target_modules,
        "qlora": qlora,
        "vocab_size": vocab_size,
        "n_layer": n_layer,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_positions": n_positions,
        "dropout": dropout,
        "warmup_ratio": warmup_ratio,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "log_every": log_every,
        "device": device,
        "limit": limit,
        "keep_best_epoch": keep_best_epoch,
        "inline_tags": inline_tags,
    }
    start_time = time.perf_counter()
    train_docs = read_docs(train_path)
    texts = note_texts(train_docs, inline_tags)
    labels_tagged = tag_labels(train_docs, train_path) if inline_tags else None
    if limit > 0:
        texts = texts[:limit]
    if not texts:
        raise ValueError(f"{train_path}: the train DocBin holds no documents")
    selected = select_documents(len(texts), fraction, seed)
    train_texts = [texts[i] for i in selected]
    validation_texts = note_texts(read_docs(validation_path), inline_tags) if validation_path else []
    if validation_path and not validation_texts:
        raise ValueError(f"{validation_path}: the validation DocBin holds no documents")

    set_seed(seed)
    lora_settings: Dict[str, Any] = {}
    if mode == "scratch":
        tokenizer = fit_tokenizer(train_texts, vocab_size)
        tokenizer.model_max_length = n_positions  # saved, so users see the model's window
        model = scratch_model(
            tokenizer,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_positions=n_positions,
            seed=seed,
            dropout=dropout,
        )
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        model, tokenizer = load_base(base_model, qlora=qlora, device=device)
        targets = [m.strip() for m in target_modules.split(",") if m.strip()] or default_target_modules(model)
        if qlora:
            model = prepare_model_for_kbit_training(model)
        lora_settings = {"r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "target_modules": targets}
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora_settings))
    if not qlora:  # a 4-bit model was placed on its GPU while loading
        model.to(device)
    window = max_positions(model.config)
    block = min(block_size, window) if window else block_size
    sequences, train_counts = note_sequences(tokenizer, train_texts, block)
    if not sequences:
        raise ValueError(f"{train_path}: the {len(train_texts)} selected documents are all blank")
    validation_sequences, validation_counts = (
        note_sequences(tokenizer, validation_texts, block) if validation_texts else (None, None)
    )
    if validation_sequences is not None and not validation_sequences:
        raise ValueError(f"{validation_path}: the validation documents are all blank")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if progress:
        print(
            f"{train_counts['truncated']} of {train_counts['notes']} train notes are longer than {block} tokens "
            f"(note-start + note + EOS; longest {train_counts['longest']}) and are truncated to it"
            + (
                f"; {validation_counts['truncated']} of {validation_counts['notes']} validation notes"
                if validation_counts
                else ""
            ),
            flush=True,
        )
    trainable, total = parameter_counts(model)
    lr = learning_rate or DEFAULT_LEARNING_RATES[mode]
    validate = validation_sequences is not None
    with checkpoint_dir(output_dir) as trainer_dir:
        trainer = NoteTrainer(
            model=model,
            args=training_arguments(
                trainer_dir,  # the best epoch's weights (for LoRA the adapter), until loaded at the end
                device=device,
                progress=progress,
                validate=validate,
                best_metric="validation_loss" if validate and keep_best_epoch else None,
                greater_is_better=False,
                num_train_epochs=epochs,
                per_device_train_batch_size=batch_size,
                learning_rate=lr,
                weight_decay=weight_decay,  # not on biases and norm weights (Trainer's default split)
                warmup_ratio=warmup_ratio,
                max_grad_norm=max_grad_norm,
                logging_steps=log_every,
                seed=seed,
            ),
            train_dataset=[{"input_ids": sequence} for sequence in sequences],
            eval_dataset=validation_sequences,
            data_collator=lambda notes: pad_batch([note["input_ids"] for note in notes], pad_id),
            callbacks=[LastStepLog()],
            batch_sampler=LengthBatchSampler([len(sequence) for sequence in sequences], batch_size, seed),
            pad_id=pad_id,
            progress=progress,
        )
        if not progress:
            trainer.remove_callback(PrinterCallback)
        trainer.train()
        epochs_run = range(len(trainer.epoch_seconds))
        # Each process saw its own batches: the losses and positions of all of them.
        scored_loss = summed_over_processes(trainer, [trainer.scored_loss[i] for i in epochs_run])
        scored_tokens = summed_over_processes(trainer, [trainer.scored_tokens[i] for i in epochs_run])
        padded_positions = sum(summed_over_processes(trainer, [trainer.padded_positions]))
    # batch_size is per process: the processes share each epoch's batches
    total_steps, steps_per_epoch = trainer.state.global_step, math.ceil(len(trainer.batch_sampler) / world_size())
    validated = {record["epoch"]: record for record in trainer.validation}
    curve: Dict[str, List[Dict[str, Any]]] = {
        "steps": [
            {"step": entry["step"], "epoch": math.ceil(entry["step"] / steps_per_epoch), "loss": entry["loss"]}
            for entry in trainer.state.log_history
            if "loss" in entry
        ],
        "epochs": [
            {
                "epoch": index + 1,
                "train_loss": scored_loss[index] / scored_tokens[index],
                "validation_loss": validated.get(index + 1, {}).get("validation_loss"),
                "validation_perplexity": validated.get(index + 1, {}).get("validation_perplexity"),
            }
            for index in epochs_run
        ],
    }
    # The Trainer loaded the weights of the best epoch (load_best_model_at_end).
    best_epoch = trainer.best_epoch()
    kept = curve["epochs"][(best_epoch or len(curve["epochs"])) - 1]
    if progress and best_epoch is not None:
        print(f"Keeping the weights of epoch {kept['epoch']} (lowest validation loss)", flush=True)
    model.eval()

    config = {
        "arguments": arguments,
        "mode": mode,
        "learning_rate": lr,
        "block_size": block,
        "lora": lora_settings or None,
        "documents": {"available": len(texts), "used": len(selected), "indices": selected},
        "tokens": {
            # One sequence per note: note-start + note + EOS, at most block_size tokens.
            "train": train_counts,
            "validation": validation_counts,
            # Share of the padded batch positions that are padding (all epochs).
            "padding_share": 1.0 - train_counts["tokens"] * epochs / padded_positions,
        },
        "vocab_size": len(tokenizer),
        "steps": total_steps,
        "processes": world_size(),
        "parameters": {"trainable": trainable, "total": total},
        # The epoch whose weights were saved (see keep_best_epoch).
        "kept": kept,
        "validation_perplexity": kept["validation_perplexity"],
        "versions": _versions(qlora),
    }
    config["wall_seconds"] = time.perf_counter() - start_time
    if not is_world_process_zero():  # one process writes; every one loaded the best epoch's weights
        return config
    with atomic_path(output_dir) as tmp:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp / MODEL_DIR)
        tokenizer.save_pretrained(tmp / MODEL_DIR)
        if labels_tagged is not None:
            (tmp / MODEL_DIR / TAGS_FILE).write_text(json.dumps({"labels": labels_tagged}, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")
        (tmp / LOSS_FILE).write_text(json.dumps(curve, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return config


# ------------------------------------------------------------- inference


def generator_model_dir(path: str | Path) -> Path:
    """The folder holding the model or adapter: `path/model` or `path` itself."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such generator folder")
    for folder in (path / MODEL_DIR, path):
        if (folder / ADAPTER_CONFIG).exists() or (folder / "config.json").exists():
            return folder
    raise FileNotFoundError(
        f"{path}: holds neither a LoRA adapter ({ADAPTER_CONFIG}) nor a model (config.json), "
        f"directly or in {MODEL_DIR}/"
    )


def load_generator(path: str | Path, device: str = "cpu") -> Tuple[Any, Any]:
    """(model, tokenizer) from an `adapt_generator` output folder or its
    `model/` folder, in eval mode on `device`. An adapter is loaded on top of
    its base model (read from the adapter config, in full precision). The
    tokenizer pads on the left, as batched generation needs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = generator_model_dir(path)
    if (folder / ADAPTER_CONFIG).exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(resolve_device(device))
    model.eval()
    return model, tokenizer
