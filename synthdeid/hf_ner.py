"""`hf_ner`: a spaCy component that runs a Hugging Face token classifier.

Modelled on spacy-transformers: the factory only records settings; the weights
are read in `initialize()` (from a hub id or a local folder) or in `from_disk()`
(from the pipeline folder, never from the network), and `to_disk()` stores model
and tokenizer inside the pipeline folder, so a saved or packaged pipeline is
self-contained.

    nlp = spacy.blank("es")
    nlp.add_pipe("hf_ner", config={"model": "training/annotator/model"})
    nlp.initialize()
    doc = nlp("Paciente: Ana Ruiz García, ingresa el 12/03/2018 en Valladolid.")

Inference runs the model over the raw text of each doc with the fast
tokenizer's overflowing windows (`max_length`, `stride`), so texts of any length
are covered; every sub-token takes its prediction from the window in which it
sits furthest from an edge (the most context on both sides).

Predictions are read per spaCy token, not per sub-token: each non-whitespace
token takes the label of the first sub-token that overlaps it, and the BIO tags
of the tokens are decoded into spans of whole tokens. This is how the annotator
is trained (`synthdeid.annotator` labels the first sub-token of every word and
masks the others with -100), so continuation sub-tokens carry outputs that were
never supervised and decoding them would add noise; reading per token also
makes every entity token-aligned by construction, with no snapping of
sub-token offsets (and their off-by-a-character edges) onto spaCy tokens, so
there is no `alignment_mode` setting. Training encodes words, inference raw
text: on MEDDOCAN only 0.07% of tokens (units glued to numbers, `25mm`) start
inside one of the encoder's pre-tokens and so get a continuation sub-token.
`synthdeid.annotator` selects its best epoch with this very component.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import srsly
from spacy.errors import Errors
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import filter_spans, minibatch

OUTSIDE = "O"
MODEL_DIR = "model"
CFG_FILE = "cfg.json"
# Prefixes understood when decoding tags: BIO, plus BIOES/BILOU's end and
# single-token tags. A tag without a known prefix is a plain label (IO scheme).
_BEGIN, _INSIDE, _END, _SINGLE = ("B",), ("I",), ("E", "L"), ("S", "U")
_SETTINGS = (
    "model",
    "batch_size",
    "max_length",
    "stride",
    "label_map",
    "ignore_labels",
    "device",
    "overwrite_ents",
)

DEFAULT_CONFIG = {
    "model": "",
    "batch_size": 8,
    "max_length": 512,
    "stride": 64,
    "label_map": {},
    "ignore_labels": [],
    "device": "cpu",
    "overwrite_ents": True,
}


@Language.factory(
    "hf_ner",
    default_config=DEFAULT_CONFIG,
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_hf_ner(
    nlp: Language,
    name: str,
    model: str = "",
    batch_size: int = 8,
    max_length: int = 512,
    stride: int = 64,
    label_map: Dict[str, str] = {},  # noqa: B006 (spaCy passes the config's value)
    ignore_labels: List[str] = [],  # noqa: B006
    device: str = "cpu",
    overwrite_ents: bool = True,
) -> "HFNER":
    """Create the `hf_ner` component.

    model (str): Hugging Face token-classification model: a hub id or a local
        folder with the model and its (fast) tokenizer. Read by `initialize()`
        only; a pipeline loaded from disk uses the copy in its own folder.
    batch_size (int): model windows (sequences) per forward pass.
    max_length (int): sub-tokens per window, special tokens included (capped
        at the tokenizer's `model_max_length`).
    stride (int): sub-tokens shared by consecutive windows of a long text; each
        sub-token is predicted by the window where it is furthest from an edge.
    label_map (Dict[str, str]): model label -> entity label to assign, applied
        to the label part of a tag ("B-PER" -> "PER" -> label_map["PER"]);
        labels not listed are kept; mapping to "O" or "" drops a label.
    ignore_labels (List[str]): labels never assigned; a label is dropped when
        its model name or its mapped name is listed.
    device (str): torch device for inference ("cpu", "cuda", "cuda:1", "mps").
    overwrite_ents (bool): replace the doc's entities (True), or keep existing
        entities and add only predictions that do not overlap them (False).
    """
    return HFNER(
        name,
        vocab=nlp.vocab,
        model=model,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        label_map=label_map,
        ignore_labels=ignore_labels,
        device=device,
        overwrite_ents=overwrite_ents,
    )


class HFNER:
    """Named-entity recognition with a Hugging Face token classifier."""

    def __init__(
        self,
        name: str = "hf_ner",
        *,
        vocab: Any = None,
        model: str = "",
        batch_size: int = 8,
        max_length: int = 512,
        stride: int = 64,
        label_map: Optional[Dict[str, str]] = None,
        ignore_labels: Optional[Sequence[str]] = None,
        device: str = "cpu",
        overwrite_ents: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"hf_ner: batch_size must be at least 1, not {batch_size}")
        if stride < 0:
            raise ValueError(f"hf_ner: stride must not be negative, not {stride}")
        self.name = name
        self.vocab = vocab
        self.cfg: Dict[str, Any] = {
            "model": model,
            "batch_size": batch_size,
            "max_length": max_length,
            "stride": stride,
            "label_map": dict(label_map or {}),
            "ignore_labels": list(ignore_labels or []),
            "device": device,
            "overwrite_ents": overwrite_ents,
            "labels": [],
        }
        self.model: Any = None
        self.tokenizer: Any = None
        self._tag_info: List[Tuple[str, str]] = []  # model id -> (prefix, entity label or "")
        self._window_length = 0

    # ------------------------------------------------------------------ setup

    @property
    def labels(self) -> Tuple[str, ...]:
        """The entity labels this component can assign (after mapping)."""
        return tuple(self.cfg["labels"])

    @property
    def is_initialized(self) -> bool:
        return self.model is not None

    def initialize(
        self,
        get_examples: Optional[Callable[[], Iterable[Example]]] = None,
        *,
        nlp: Optional[Language] = None,
        model: Optional[str] = None,
    ) -> None:
        """Load the model named in the config (or `model`, which overrides it)."""
        source = model or self.cfg["model"]
        if not source:
            raise ValueError(
                f"hf_ner component '{self.name}': no model to initialize from; set "
                f"[components.{self.name}] model to a Hugging Face hub id or a local folder"
            )
        hf_model, tokenizer = load_token_classifier(str(source))
        self.cfg["model"] = str(source)
        self.set_model(hf_model, tokenizer)

    def set_model(self, model: Any, tokenizer: Any) -> None:
        """Use an already loaded model and fast tokenizer (e.g. during training)."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"hf_ner component '{self.name}': a fast tokenizer is required (offset mapping)"
            )
        import torch

        self.model = model.to(torch.device(self.cfg["device"]))
        self.model.eval()
        self.tokenizer = tokenizer
        limit = getattr(tokenizer, "model_max_length", None) or self.cfg["max_length"]
        self._window_length = min(self.cfg["max_length"], limit)
        content = self._window_length - tokenizer.num_special_tokens_to_add()
        if not 0 <= self.cfg["stride"] < content:
            raise ValueError(
                f"hf_ner component '{self.name}': stride {self.cfg['stride']} must be smaller "
                f"than the {content} text sub-tokens a window of {self._window_length} holds"
            )
        self._set_tag_info({int(i): label for i, label in model.config.id2label.items()})

    def _set_tag_info(self, id2label: Dict[int, str]) -> None:
        label_map, ignore = self.cfg["label_map"], set(self.cfg["ignore_labels"])
        info: List[Tuple[str, str]] = []
        labels = set()
        for i in range(len(id2label)):
            prefix, label = split_tag(id2label[i])
            mapped = label_map.get(label, label) if label else ""
            if not mapped or mapped == OUTSIDE or label in ignore or mapped in ignore:
                prefix, mapped = OUTSIDE, ""
            info.append((prefix, mapped))
            if mapped:
                labels.add(mapped)
        if labels and all(label.startswith("LABEL_") for label in labels):
            warnings.warn(
                f"hf_ner component '{self.name}': the model's labels are {sorted(labels)}; "
                "it seems to have no trained token-classification head"
            )
        self._tag_info = info
        self.cfg["labels"] = sorted(labels)

    # -------------------------------------------------------------- inference

    def __call__(self, doc: Doc) -> Doc:
        return self._annotate([doc])[0]

    def pipe(self, stream: Iterable[Doc], *, batch_size: Optional[int] = None) -> Iterator[Doc]:
        """Annotate docs in groups of `batch_size` docs (default: the component's
        `batch_size`); a forward pass always takes at most the component's
        `batch_size` windows, so the results do not depend on the grouping."""
        for docs in minibatch(stream, size=batch_size or self.cfg["batch_size"]):
            yield from self._annotate(list(docs))

    def _annotate(self, docs: List[Doc]) -> List[Doc]:
        if not self.is_initialized:
            raise ValueError(Errors.E109.format(name=self.name))
        for doc, tags in zip(docs, self.predict_token_tags(docs)):
            self._set_ents(doc, decode_tags(doc, tags))
        return docs

    def predict_token_tags(self, docs: Sequence[Doc]) -> List[List[Optional[Tuple[str, str]]]]:
        """Per doc and token, the (prefix, label) predicted for it, None for
        whitespace tokens (prefix "O" with label "" for outside)."""
        import torch

        if not docs:
            return []
        texts = [doc.text for doc in docs]
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self._window_length,
            stride=self.cfg["stride"],
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        n_windows = len(enc["input_ids"])
        pad_id = self.tokenizer.pad_token_id or 0
        device = next(self.model.parameters()).device
        # Longest windows first, so each forward pass pads as little as possible.
        order = sorted(range(n_windows), key=lambda w: -len(enc["input_ids"][w]))
        predictions: List[List[int]] = [[] for _ in range(n_windows)]
        with torch.inference_mode():
            for start in range(0, n_windows, self.cfg["batch_size"]):
                batch = order[start : start + self.cfg["batch_size"]]
                width = max(len(enc["input_ids"][w]) for w in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, w in enumerate(batch):
                    n = len(enc["input_ids"][w])
                    ids[row, :n] = torch.tensor(enc["input_ids"][w])
                    mask[row, :n] = 1
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                best = logits.argmax(-1).cpu().tolist()
                for row, w in enumerate(batch):
                    predictions[w] = best[row][: len(enc["input_ids"][w])]
        # Per doc: sub-token (start, end) -> (distance to the window edge, model id).
        per_doc: List[Dict[Tuple[int, int], Tuple[int, int]]] = [{} for _ in docs]
        for w in range(n_windows):
            best_of = per_doc[enc["overflow_to_sample_mapping"][w]]
            offsets = enc["offset_mapping"][w]
            content = [i for i, seq in enumerate(enc.sequence_ids(w)) if seq == 0]
            last = len(content) - 1
            for j, i in enumerate(content):
                start_char, end_char = offsets[i]
                if end_char <= start_char:
                    continue
                distance = min(j, last - j)
                key = (start_char, end_char)
                if key not in best_of or distance > best_of[key][0]:
                    best_of[key] = (distance, predictions[w][i])
        return [self._token_tags(doc, best_of) for doc, best_of in zip(docs, per_doc)]

    def _token_tags(
        self, doc: Doc, subtokens: Dict[Tuple[int, int], Tuple[int, int]]
    ) -> List[Optional[Tuple[str, str]]]:
        keys = sorted(subtokens)
        tags: List[Optional[Tuple[str, str]]] = []
        p = 0
        for token in doc:
            if token.text.isspace():  # not token.is_space: a bare Vocab leaves it False
                tags.append(None)
                continue
            start, end = token.idx, token.idx + len(token.text)
            while p < len(keys) and keys[p][1] <= start:
                p += 1
            if p < len(keys) and keys[p][0] < end:
                tags.append(self._tag_info[subtokens[keys[p]][1]])
            else:  # the tokenizer dropped this token's characters
                tags.append((OUTSIDE, ""))
        return tags

    def _set_ents(self, doc: Doc, spans: List[Span]) -> None:
        if self.cfg["overwrite_ents"]:
            doc.set_ents(filter_spans(spans), default="outside")
            return
        existing = list(doc.ents)
        taken = {i for ent in existing for i in range(ent.start, ent.end)}
        new = [s for s in filter_spans(spans) if not taken.intersection(range(s.start, s.end))]
        doc.set_ents(new, default="unmodified")

    # ---------------------------------------------------------------- scoring

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        return get_ner_prf(examples, **kwargs)

    # ---------------------------------------------------------- serialisation

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        if not self.is_initialized:
            raise ValueError(Errors.E109.format(name=self.name))
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / CFG_FILE, self.cfg)
        self.model.save_pretrained(path / MODEL_DIR)
        self.tokenizer.save_pretrained(path / MODEL_DIR)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "HFNER":
        path = Path(path)
        model_dir = path / MODEL_DIR
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"{path}: not a saved hf_ner component (no {MODEL_DIR}/config.json); "
                "save the pipeline with nlp.to_disk() after initialize()"
            )
        saved = srsly.read_json(path / CFG_FILE) if (path / CFG_FILE).exists() else {}
        # Settings come from the pipeline config (so they can be overridden at
        # load time); only where the weights came from is restored.
        if saved.get("model"):
            self.cfg["model"] = saved["model"]
        hf_model, tokenizer = load_token_classifier(model_dir, local_files_only=True)
        self.set_model(hf_model, tokenizer)
        return self


def split_tag(tag: str) -> Tuple[str, str]:
    """'B-X' -> ('B', 'X'); 'X' -> ('I', 'X'); 'O' -> ('O', '')."""
    if tag == OUTSIDE or not tag:
        return OUTSIDE, ""
    head, found, label = tag.partition("-")
    if found and head in _BEGIN + _INSIDE + _END + _SINGLE and label:
        return head, label
    return "I", tag


def decode_tags(doc: Doc, tags: Sequence[Optional[Tuple[str, str]]]) -> List[Span]:
    """Spans of whole tokens from per-token (prefix, label) tags.

    B- starts an entity; I- (or a plain label) continues an entity of the same
    label and otherwise starts one; E-/L- ends one, S-/U- is a single token;
    "O" ends the current entity. Whitespace tokens (tag None) neither end nor
    extend an entity, so an entity may span them but never starts or ends on one.
    """
    spans: List[Span] = []
    current: Optional[List[Any]] = None  # [start, end, label]

    def close() -> None:
        nonlocal current
        if current is not None:
            spans.append(Span(doc, current[0], current[1], label=current[2]))
            current = None

    for i, tag in enumerate(tags):
        if tag is None:
            continue
        prefix, label = tag
        if prefix == OUTSIDE or not label:
            close()
            continue
        if prefix in _BEGIN or prefix in _SINGLE or current is None or current[2] != label:
            close()
            current = [i, i + 1, label]
        else:
            current[1] = i + 1
        if prefix in _END or prefix in _SINGLE:
            close()
    close()
    return spans


def load_token_classifier(
    name_or_path: str | Path, *, local_files_only: bool = False, **model_kwargs: Any
) -> Tuple[Any, Any]:
    """(model, fast tokenizer) from a local folder or a hub id, with an error
    that names `name_or_path` when neither works."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    path = Path(name_or_path)
    is_local = path.exists()
    if local_files_only and not is_local:
        raise FileNotFoundError(f"{name_or_path}: no such model folder")
    if is_local and not (path / "config.json").exists():
        raise FileNotFoundError(f"{name_or_path}: not a Hugging Face model folder (no config.json)")
    if not is_local and (str(name_or_path).startswith((".", "/", "~")) or "\\" in str(name_or_path)):
        raise FileNotFoundError(f"{name_or_path}: no such model folder")
    local = local_files_only or is_local
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=local)
        model = AutoModelForTokenClassification.from_pretrained(
            str(name_or_path), local_files_only=local, **model_kwargs
        )
    except (OSError, ValueError) as err:
        where = "the local folder" if is_local else "a Hugging Face hub id (offline or not found?)"
        raise OSError(f"{name_or_path}: could not load a token-classification model from {where}: {err}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{name_or_path}: the tokenizer is not a fast tokenizer (offsets are needed)")
    return model, tokenizer
