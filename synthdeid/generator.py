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

Both use the plain language-modelling objective: every document is tokenised
and followed by the end-of-sequence token, the documents are concatenated and
cut into `block_size` blocks, and the labels are the inputs.

Output folder (written atomically):
    model/               full model (scratch) or adapter (lora), with tokenizer
    loss.json            loss every `log_every` steps and per epoch
    adapt_config.json    parameters, mode, data and parameter counts, versions
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import platform
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .annotator import read_docbin, set_seed
from .io import atomic_path

MODEL_DIR = "model"
LOSS_FILE = "loss.json"
CONFIG_FILE = "adapt_config.json"
ADAPTER_CONFIG = "adapter_config.json"
EOS_TOKEN = "<|endoftext|>"
# Peak learning rates used when `learning_rate` is 0: a model trained from
# random weights needs a much larger step than a LoRA adapter on a pretrained one.
DEFAULT_LEARNING_RATES = {"scratch": 1e-3, "lora": 2e-4, "qlora": 2e-4}


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


def read_texts(path: str | Path) -> List[str]:
    return [doc.text for doc in read_docbin(path)]


def lm_blocks(tokenizer: Any, texts: Sequence[str], block_size: int) -> Tuple[Any, int]:
    """(blocks, tokens): the texts tokenised, each followed by EOS, concatenated
    and cut into a LongTensor of `block_size`-token rows; the incomplete tail is
    dropped. `tokens` counts the whole stream."""
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-sequence token to separate documents")
    stream: List[int] = []
    # verbose=False: documents longer than the model's window are expected here.
    for ids in tokenizer(list(texts), verbose=False)["input_ids"]:
        stream.extend(ids)
        if not ids or ids[-1] != eos:
            stream.append(eos)
    n_blocks = len(stream) // block_size
    blocks = torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
    return blocks, len(stream)


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


def scratch_model(tokenizer: Any, *, n_layer: int, n_embd: int, n_head: int, n_positions: int, seed: int) -> Any:
    """A randomly initialised (seeded) GPT-2 sized to the tokenizer."""
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
        kwargs["device_map"] = {"": torch.device(device).index or 0}
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


def evaluate_loss(model: Any, blocks: Any, batch_size: int, device: Any) -> float:
    """Mean token loss over `blocks` (all of equal length)."""
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for first in range(0, len(blocks), batch_size):
            batch = blocks[first : first + batch_size].to(device)
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
            total += loss.item() * len(batch)
    return total / len(blocks)


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
    epochs: int = 4,
    learning_rate: float = 0.0,
    batch_size: int = 8,
    block_size: int = 256,
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
    n_positions: int = 512,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    log_every: int = 10,
    device: str = "auto",
    limit: int = 0,
    progress: bool = True,
) -> Dict[str, Any]:
    """Train the generator on the texts of the train DocBin and write
    `model/`, `loss.json` and `adapt_config.json` to `output_dir` (atomically:
    the folder appears only when training finished). Returns the config.

    `base_model` empty trains a GPT-2 (`vocab_size`, `n_layer`, `n_embd`,
    `n_head`, `n_positions`) from scratch; otherwise LoRA (`lora_r`,
    `lora_alpha`, `lora_dropout`, `target_modules` comma-separated, empty for
    peft's per-architecture default) adapts the pretrained model, in 4-bit with
    `qlora`. `fraction` of the train documents (seeded choice, after `limit`
    keeps the first N) is used. `learning_rate` 0 picks the mode's default
    (DEFAULT_LEARNING_RATES). `block_size` is capped at the model's window.
    The validation DocBin, if given, only reports a loss after each epoch.
    `device` "auto" is CUDA when available, else CPU."""
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    if epochs < 1 or batch_size < 1 or block_size < 2 or log_every < 1:
        raise ValueError("epochs, batch_size and log_every must be at least 1, block_size at least 2")
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
        "warmup_ratio": warmup_ratio,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "log_every": log_every,
        "device": device,
        "limit": limit,
    }
    start_time = time.perf_counter()
    texts = read_texts(train_path)
    if limit > 0:
        texts = texts[:limit]
    if not texts:
        raise ValueError(f"{train_path}: the train DocBin holds no documents")
    selected = select_documents(len(texts), fraction, seed)
    train_texts = [texts[i] for i in selected]
    validation_texts = read_texts(validation_path) if validation_path else []
    if validation_path and not validation_texts:
        raise ValueError(f"{validation_path}: the validation DocBin holds no documents")

    set_seed(seed)
    lora_settings: Dict[str, Any] = {}
    if mode == "scratch":
        tokenizer = fit_tokenizer(train_texts, vocab_size)
        tokenizer.model_max_length = n_positions  # saved, so users see the model's window
        model = scratch_model(
            tokenizer, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions, seed=seed
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
    blocks, train_tokens = lm_blocks(tokenizer, train_texts, block)
    if len(blocks) == 0:
        raise ValueError(
            f"{train_path}: the {len(train_texts)} selected documents make {train_tokens} tokens, "
            f"fewer than one block of {block}; lower block_size"
        )
    validation_blocks, validation_tokens = (
        lm_blocks(tokenizer, validation_texts, block) if validation_texts else (None, 0)
    )
    if validation_blocks is not None and len(validation_blocks) == 0:
        raise ValueError(f"{validation_path}: {validation_tokens} tokens, fewer than one block of {block}")
    trainable, total = parameter_counts(model)
    lr = learning_rate or DEFAULT_LEARNING_RATES[mode]

    params = [p for p in model.parameters() if p.requires_grad]
    # Biases and norm weights (1-D) are not decayed.
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    steps_per_epoch = math.ceil(len(blocks) / batch_size)
    total_steps = steps_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    order_rng = random.Random(seed)

    curve: Dict[str, List[Dict[str, Any]]] = {"steps": [], "epochs": []}
    step, window_losses = 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = list(range(len(blocks)))
        order_rng.shuffle(order)
        epoch_losses = []
        bar = tqdm(
            range(0, len(order), batch_size), desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress
        )
        for first in bar:
            batch = blocks[order[first : first + batch_size]].to(device)
            # Blocks are never padded; the explicit mask only says so (no warning).
            loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            epoch_losses.append(loss.item())
            window_losses.append(epoch_losses[-1])
            if step % log_every == 0 or step == total_steps:
                curve["steps"].append({"step": step, "epoch": epoch, "loss": sum(window_losses) / len(window_losses)})
                window_losses = []
                bar.set_postfix(loss=f"{curve['steps'][-1]['loss']:.4f}")
        record = {
            "epoch": epoch,
            "train_loss": sum(epoch_losses) / len(epoch_losses),
            "validation_loss": (
                evaluate_loss(model, validation_blocks, batch_size, device) if validation_blocks is not None else None
            ),
        }
        curve["epochs"].append(record)
        if progress:
            validation = record["validation_loss"]
            print(
                f"epoch {epoch}: train loss {record['train_loss']:.4f}"
                + (f", validation loss {validation:.4f}" if validation is not None else ""),
                flush=True,
            )
    model.eval()

    config = {
        "arguments": arguments,
        "mode": mode,
        "learning_rate": lr,
        "block_size": block,
        "lora": lora_settings or None,
        "documents": {"available": len(texts), "used": len(selected), "indices": selected},
        "tokens": {
            "train": train_tokens,
            "train_blocks": len(blocks),
            "training_tokens_per_epoch": len(blocks) * block,
            "validation": validation_tokens,
        },
        "vocab_size": len(tokenizer),
        "steps": total_steps,
        "parameters": {"trainable": trainable, "total": total},
        "final": curve["epochs"][-1],
        "versions": _versions(qlora),
    }
    with atomic_path(output_dir) as tmp:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp / MODEL_DIR)
        tokenizer.save_pretrained(tmp / MODEL_DIR)
        (tmp / LOSS_FILE).write_text(json.dumps(curve, indent=2) + "\n", encoding="utf-8")
        config["wall_seconds"] = time.perf_counter() - start_time
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
