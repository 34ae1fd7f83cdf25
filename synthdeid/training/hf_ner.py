"""`hf_ner`: a spaCy component that runs a Hugging Face token classifier.

Modelled on spacy-transformers: the factory only records settings; the weights
are read in `initialize()` (from a hub id or a local folder) or in `from_disk()`
/ `from_bytes()` (from the pipeline, never from the network), and
`to_disk()` / `to_bytes()` store model and tokenizer inside the pipeline, so a
saved or packaged pipeline is self-contained.

    nlp = spacy.blank("es")
    nlp.add_pipe("hf_ner", config={"model": "training/annotator/model"})
    nlp.initialize()
    doc = nlp("Paciente: Ana Ruiz García, ingresa el 12/03/2018 en Valladolid.")

Inference encodes text exactly as `synthdeid.training.annotator` trains the model: the
doc's non-whitespace tokens are the words of `is_split_into_words` input
(`encode_words`), cut into windows of at most `window_words` words and
`max_length` sub-tokens that overlap by `stride` words, so texts of any
length are covered and every word is read from the window in which it sits
furthest from an edge. Each word takes the scores of its first sub-token (the
only one supervised in training), and the words' BIO tags are decoded into
spans of whole tokens, so every entity is token-aligned by construction.

Two additions to the encoder, both stored in the model folder when the
annotator was trained with them: word features (`WordFeatures`, in
`WORD_FEATURES_FILE`), added to the sub-token embeddings, give an uncased
encoder back the case, digits and accents of each word (`word_shape`) and,
as hashed embeddings, the word itself; and `decoding = "viterbi"`
picks the best tag sequence that is valid BIO (no I-X after O or another
label) instead of each word's best tag. The classifier scores each word on
its own and often opens a new entity (B-) inside one ("hermano gemelo" as two
entities); Viterbi charges `break_penalty` for a B- right after an entity's
word, so an entity is split only where the scores clearly say so.
"""

from __future__ import annotations

import functools
import hashlib
import json
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

from ..io import folder_from_bytes, folder_to_bytes, start_component_folder
from .metrics import OUTSIDE

MODEL_DIR = "model"
CFG_FILE = "cfg.json"
WORD_FEATURES_FILE = "word_shape_embeddings.safetensors"  # named when it held shapes only; kept so older models load
IGNORE_INDEX = -100  # label of sub-tokens without a loss (all but a word's first)
DECODINGS = ("viterbi", "greedy")
# Prefixes understood when decoding tags: BIO, plus BIOES/BILOU's end and
# single-token tags. A tag without a known prefix is a plain label (IO scheme).
_BEGIN, _INSIDE, _END, _SINGLE = ("B",), ("I",), ("E", "L"), ("S", "U")
# Word shapes (`word_shape`): 0 marks special and padding sub-tokens.
_CASES = ("none", "lower", "title", "upper", "mixed")
N_WORD_SHAPES = 1 + len(_CASES) * 4

DEFAULT_CONFIG = {
    "model": "",
    "batch_size": 8,
    "window_words": 128,
    "max_length": 512,
    "stride": 32,
    "decoding": "viterbi",
    "break_penalty": 2.0,
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
    window_words: int = 128,
    max_length: int = 512,
    stride: int = 32,
    decoding: str = "viterbi",
    break_penalty: float = 2.0,
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
    window_words (int): most words (non-whitespace tokens) per window; use the
        annotator's training window (a model never saw later positions).
    max_length (int): most sub-tokens per window, special tokens included
        (capped at the tokenizer's `model_max_length`).
    stride (int): words shared by consecutive windows of a long text; each
        word is predicted by the window where it is furthest from an edge.
    decoding (str): "viterbi" (the best valid BIO sequence) or "greedy" (each
        word's best tag).
    break_penalty (float): Viterbi only: log-probability charged for a B- tag
        right after a word of an entity (a new entity with no gap); 0 turns it
        off. MEDDOCAN validation: 0.9380 at 0, 0.9445 at 2.0, 0.9458 at 3.0,
        then recall falls (`scripts/tune_break_penalty.py`).
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
        window_words=window_words,
        max_length=max_length,
        stride=stride,
        decoding=decoding,
        break_penalty=break_penalty,
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
        window_words: int = 128,
        max_length: int = 512,
        stride: int = 32,
        decoding: str = "viterbi",
        break_penalty: float = 2.0,
        label_map: Optional[Dict[str, str]] = None,
        ignore_labels: Optional[Sequence[str]] = None,
        device: str = "cpu",
        overwrite_ents: bool = True,
    ) -> None:
        if batch_size < 1 or window_words < 1:
            raise ValueError(f"hf_ner: batch_size and window_words must be at least 1, not {batch_size}, {window_words}")
        if not 0 <= stride < window_words:
            raise ValueError(f"hf_ner: stride must be in [0, window_words={window_words}), not {stride}")
        if decoding not in DECODINGS:
            raise ValueError(f"hf_ner: decoding must be one of {DECODINGS}, not {decoding!r}")
        if not break_penalty >= 0:
            raise ValueError(f"hf_ner: break_penalty must be at least 0, not {break_penalty!r}")
        self.name = name
        self.vocab = vocab
        self.cfg: Dict[str, Any] = {
            "model": model,
            "batch_size": batch_size,
            "window_words": window_words,
            "max_length": max_length,
            "stride": stride,
            "decoding": decoding,
            "break_penalty": float(break_penalty),
            "label_map": dict(label_map or {}),
            "ignore_labels": list(ignore_labels or []),
            "device": device,
            "overwrite_ents": overwrite_ents,
            "labels": [],
        }
        self.model: Any = None
        self.tokenizer: Any = None
        self.word_features: Optional[WordFeatures] = None
        self._tag_info: List[Tuple[str, str]] = []  # model id -> (prefix, entity label or "")
        self._outside_id = 0
        self._transitions: Any = None  # BIO-valid (previous id, id) pairs, for Viterbi
        self._breaks: Any = None  # (previous id, id) pairs that begin an entity right after one
        self._start_allowed: Any = None
        self._max_length = self._content_length = 0

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
        folder = Path(str(source))
        self.set_model(hf_model, tokenizer, WordFeatures.load(folder) if folder.is_dir() else None)

    def set_model(self, model: Any, tokenizer: Any, word_features: Optional[WordFeatures] = None) -> None:
        """Use an already loaded model, fast tokenizer and `WordFeatures`
        (None: the model was trained without them), e.g. during training."""
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"hf_ner component '{self.name}': a fast tokenizer is required (word ids)")
        import torch

        device = torch.device(self.cfg["device"])
        self.model = model.to(device)
        self.model.eval()
        self.word_features = word_features.to(device) if word_features is not None else None
        self.tokenizer = tokenizer
        limit = getattr(tokenizer, "model_max_length", None) or self.cfg["max_length"]
        self._max_length = min(self.cfg["max_length"], limit)
        self._content_length = self._max_length - tokenizer.num_special_tokens_to_add()
        if self._content_length < 1:
            raise ValueError(f"hf_ner component '{self.name}': max_length {self.cfg['max_length']} leaves no room for text")
        self._set_tag_info({int(i): label for i, label in model.config.id2label.items()})

    def _set_tag_info(self, id2label: Dict[int, str]) -> None:
        import numpy

        label_map, ignore = self.cfg["label_map"], set(self.cfg["ignore_labels"])
        info: List[Tuple[str, str]] = []
        labels = set()
        model_tags = [split_tag(id2label[i]) for i in range(len(id2label))]
        for prefix, label in model_tags:
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
        self._outside_id = next((i for i, (prefix, _) in enumerate(model_tags) if prefix == OUTSIDE), 0)
        self.cfg["labels"] = sorted(labels)
        # Viterbi constraints in the model's own tag space (BIO models only):
        # I-X may follow only B-X or I-X, and may not start a text. An IO model
        # (bare labels, read as I-X) has no B- tag to open an entity with.
        self._transitions = self._breaks = self._start_allowed = None
        prefixes = {prefix for prefix, _ in model_tags}
        if prefixes <= {OUTSIDE, "B", "I"} and "B" in prefixes:
            n = len(model_tags)
            allowed = numpy.ones((n, n), dtype=bool)
            for j, (prefix, label) in enumerate(model_tags):
                if prefix == "I":
                    allowed[:, j] = [p in ("B", "I") and l == label for p, l in model_tags]
            self._transitions = allowed
            in_entity = numpy.array([prefix in ("B", "I") for prefix, _ in model_tags])
            begins = numpy.array([prefix == "B" for prefix, _ in model_tags])
            self._breaks = in_entity[:, None] & begins[None, :]
            self._start_allowed = numpy.array([prefix != "I" for prefix, _ in model_tags])

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
        self.set_annotations(docs, self.predict_word_scores(docs))
        return docs

    def set_annotations(self, docs: Sequence[Doc], word_scores: Sequence[Any]) -> None:
        """Decode each doc's `predict_word_scores` into its entities (so the
        model runs once when only the decoding settings change)."""
        for doc, scores in zip(docs, word_scores):
            self._set_ents(doc, decode_tags(doc, self.decode_word_scores(doc, scores)))

    def predict_token_tags(self, docs: Sequence[Doc]) -> List[List[Optional[Tuple[str, str]]]]:
        """Per doc and token, the (prefix, label) predicted for it, None for
        whitespace tokens (prefix "O" with label "" for outside)."""
        return [self.decode_word_scores(doc, scores) for doc, scores in zip(docs, self.predict_word_scores(docs))]

    def predict_word_scores(self, docs: Sequence[Doc]) -> List[Any]:
        """Per doc, a (words, model tags) array of log-probabilities; the words
        are the doc's non-whitespace tokens.

        Each doc's non-whitespace tokens are encoded as words
        (`encode_words`), exactly as `synthdeid.training.annotator` encodes its training
        windows, and cut into windows of at most `window_words` words and
        `max_length` sub-tokens that overlap by `stride` words; every word takes
        the scores of its first sub-token from the window where it sits
        furthest from an edge."""
        import numpy
        import torch

        if not docs:
            return []
        words_of = [[t.text for t in doc if not t.text.isspace()] for doc in docs]
        # (doc, first word, per word: its first sub-token or -1, model inputs)
        windows: List[Tuple[int, int, List[int], Dict[str, List[int]]]] = []
        for d, words in enumerate(words_of):
            pieces = encode_words(self.tokenizer, words)
            for first, last in word_windows(
                [len(p) for p in pieces], self.cfg["window_words"], self._content_length, self.cfg["stride"]
            ):
                ids, features, heads = window_inputs(self.tokenizer, words[first:last], self._max_length, self.word_features)
                windows.append((d, first, heads, {"input_ids": ids, "attention_mask": [1] * len(ids), "feature_ids": features}))
        pad_id = self.tokenizer.pad_token_id or 0
        device = next(self.model.parameters()).device
        # Per doc and word: (distance to the window edge, scores of its first sub-token).
        best: List[Dict[int, Tuple[int, Any]]] = [{} for _ in docs]
        # Longest windows first, so each forward pass pads as little as possible.
        order = sorted(range(len(windows)), key=lambda w: -len(windows[w][3]["input_ids"]))
        with torch.inference_mode():
            for start in range(0, len(order), self.cfg["batch_size"]):
                batch = [windows[w] for w in order[start : start + self.cfg["batch_size"]]]
                inputs = {k: v.to(device) for k, v in pad_windows([w[3] for w in batch], pad_id).items()}
                logits = forward(self.model, self.word_features, inputs["input_ids"], inputs["attention_mask"], inputs["feature_ids"]).logits
                scores = torch.log_softmax(logits.float(), -1).cpu().numpy()
                for row, (d, first, heads, _) in enumerate(batch):
                    last = len(heads) - 1
                    for j, head in enumerate(heads):
                        if head < 0:
                            continue
                        distance = min(j, last - j)
                        word = first + j
                        if word not in best[d] or distance > best[d][word][0]:
                            best[d][word] = (distance, scores[row, head])
        matrices = []
        for n_words, scores in zip(map(len, words_of), best):
            matrix = numpy.full((n_words, len(self._tag_info)), -1e9, dtype="float32")
            for word in range(n_words):
                if word in scores:
                    matrix[word] = scores[word][1]
                else:  # a word the windows could not hold (sub-token budget): outside
                    matrix[word, self._outside_id] = 0.0
            matrices.append(matrix)
        return matrices

    def decode_word_scores(self, doc: Doc, matrix: Any) -> List[Optional[Tuple[str, str]]]:
        """Per token of `doc`, its (prefix, label) decoded from the doc's
        `predict_word_scores` with the component's `decoding` settings."""
        import numpy

        n_words = len(matrix)
        if self.cfg["decoding"] == "viterbi" and self._transitions is not None:
            transitions = numpy.where(self._transitions, 0.0, -numpy.inf)
            transitions[self._breaks] -= self.cfg["break_penalty"]
            ids = viterbi(matrix, transitions, self._start_allowed)
        else:
            ids = matrix.argmax(-1).tolist() if n_words else []
        tags: List[Optional[Tuple[str, str]]] = []
        word = 0
        for token in doc:
            if token.text.isspace():  # not token.is_space: a bare Vocab leaves it False
                tags.append(None)
            else:
                tags.append(self._tag_info[ids[word]])
                word += 1
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
        """Write `cfg.json` and `model/` (weights, tokenizer, word
        features) to `path`; "cfg" or "model" in `exclude` leaves one out."""
        if not self.is_initialized:
            raise ValueError(Errors.E109.format(name=self.name))
        path = start_component_folder(path, self.cfg, CFG_FILE, exclude)
        if "model" not in exclude:
            self.model.save_pretrained(path / MODEL_DIR)
            self.tokenizer.save_pretrained(path / MODEL_DIR)
            if self.word_features is not None:
                self.word_features.save(path / MODEL_DIR)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "HFNER":
        path = Path(path)
        if "cfg" not in exclude and (path / CFG_FILE).exists():
            # Settings come from the pipeline config (so they can be overridden
            # at load time); only where the weights came from is restored.
            saved = srsly.read_json(path / CFG_FILE)
            if saved.get("model"):
                self.cfg["model"] = saved["model"]
        if "model" in exclude:
            return self
        model_dir = path / MODEL_DIR
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(
                f"{path}: not a saved hf_ner component (no {MODEL_DIR}/config.json); "
                "save the pipeline with nlp.to_disk() after initialize()"
            )
        hf_model, tokenizer = load_token_classifier(model_dir, local_files_only=True)
        self.set_model(hf_model, tokenizer, WordFeatures.load(model_dir))
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        """The component as bytes: its settings and the files of `to_disk`."""
        return folder_to_bytes(lambda folder: self.to_disk(folder, exclude=exclude))

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "HFNER":
        return folder_from_bytes(bytes_data, lambda folder: self.from_disk(folder, exclude=exclude))


# ------------------------------------------------------------ word encoding


def word_shape(word: str) -> int:
    """A word's shape id in [1, N_WORD_SHAPES): its case pattern (no letters,
    lower, Title, UPPER, mixed), whether it has a digit and whether it has a
    non-ASCII letter (accents, ñ), which an uncased encoder loses."""
    letters = [c for c in word if c.isalpha()]
    if not letters:
        case = 0
    elif all(c.islower() for c in letters):
        case = 1
    elif letters[0].isupper() and all(c.islower() for c in letters[1:]):
        case = 3 if len(letters) == 1 and word.isupper() else 2
    elif all(c.isupper() for c in letters):
        case = 3
    else:
        case = 4
    digit = any(c.isdigit() for c in word)
    accent = any(ord(c) > 127 for c in letters)
    return 1 + case * 4 + 2 * digit + accent


def pad_windows(features: Sequence[Dict[str, List[int]]], pad_id: int) -> Dict[str, Any]:
    """LongTensors of the windows' inputs, padded on the right to the longest:
    input ids with `pad_id`, labels with IGNORE_INDEX (no loss), the rest
    (attention mask, feature ids: one tuple per position) with 0."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}
    batch = {}
    for key, values in features[0].items():
        inner = (len(values[0]),) if isinstance(values[0], (tuple, list)) else ()
        batch[key] = torch.full((len(features), width, *inner), fill.get(key, 0), dtype=torch.long)
    for row, feature in enumerate(features):
        for key, values in feature.items():
            batch[key][row, : len(values)] = torch.tensor(values)
    return batch


def _encode(tokenizer: Any, words: Sequence[str], **options: Any) -> Tuple[List[str], Any]:
    """(words as the encoder reads them, encoding) of `is_split_into_words`
    input. A word of several characters whose encoding holds the unknown
    token is read with spaces around each character the tokenizer does not
    know, so "Ana🩺Madrid" gives `ana [UNK] madrid`, not one `[UNK]` that
    hides the name; it stays one word."""
    # verbose=False: a whole document is longer than the model's window by design.
    words = list(words)
    enc = tokenizer(words, is_split_into_words=True, verbose=False, **options)
    unk = tokenizer.unk_token_id
    if unk is None:
        return words, enc
    hidden = {w for t, w in zip(enc["input_ids"], enc.word_ids()) if t == unk and w is not None and len(words[w]) > 1}
    if not hidden:
        return words, enc

    def unknown(char: str) -> bool:
        return tokenizer(char, add_special_tokens=False)["input_ids"] in ([unk], [])

    for w in hidden:
        words[w] = "".join(f" {c} " if unknown(c) else c for c in words[w]).strip()
    return words, tokenizer(words, is_split_into_words=True, verbose=False, **options)


def encode_words(tokenizer: Any, words: Sequence[str]) -> List[List[int]]:
    """Per word, its sub-token ids as `is_split_into_words` input gives them
    (no special tokens; see `_encode`); a word the tokenizer drops gets none."""
    if not words:
        return []
    _, enc = _encode(tokenizer, words, add_special_tokens=False)
    pieces: List[List[int]] = [[] for _ in words]
    for token_id, word in zip(enc["input_ids"], enc.word_ids()):
        if word is not None:
            pieces[word].append(token_id)
    return pieces


def word_windows(lengths: Sequence[int], window_words: int, budget: int, stride: int = 0) -> List[Tuple[int, int]]:
    """(first, end) word ranges covering all words: at most `window_words`
    words and `budget` sub-tokens each (a single longer word is kept alone
    and truncated), consecutive windows sharing `stride` words where the
    budget allows."""
    windows: List[Tuple[int, int]] = []
    n, start = len(lengths), 0
    while start < n:
        end, used = start, 0
        while end < n and end - start < window_words and (used + lengths[end] <= budget or end == start):
            used += lengths[end]
            end += 1
        windows.append((start, end))
        if end == n:
            break
        start = max(start + 1, end - stride)
    return windows


def window_inputs(
    tokenizer: Any, words: Sequence[str], max_length: int, word_features: Optional[WordFeatures] = None
) -> Tuple[List[int], List[Tuple[int, ...]], List[int]]:
    """(input ids with special tokens, per id its word's feature ids (all 0
    for special tokens, or without `word_features`), per word the position of
    its first sub-token or -1 when truncation at `max_length` dropped it) of
    one window of words."""
    words, enc = _encode(tokenizer, words, truncation=True, max_length=max_length)
    ids = list(enc["input_ids"])
    padding = word_features.padding() if word_features is not None else (0,)
    features = [padding] * len(ids)
    firsts = [-1] * len(words)
    for position, word in enumerate(enc.word_ids()):
        if word is None:
            continue
        if word_features is not None:
            features[position] = word_features.ids(words[word])
        if firsts[word] < 0:
            firsts[word] = position
    return ids, features, firsts


class WordFeatures:
    """Trainable embeddings of word-level features, added to every sub-token
    of the word: its shape (`word_shape`) and, with `lexical_rows` > 0,
    hashed embeddings of the lower-cased word with its accents, of its first
    and of its last three characters (spaCy's NORM, PREFIX and SUFFIX
    features, as the gold pipeline's MultiHashEmbed embeds them). An uncased
    English WordPiece encoder splits Spanish words into fragments and drops
    their accents; these give the classifier the word itself back.

    One embedding table holds all features (`layout`: rows per feature, in
    order); each hashed key takes two rows of its feature, summed, so two
    keys rarely share both. Row 0 is padding (special tokens)."""

    # The hashed features: each maps the lower-cased word to its key.
    HASHED = {"norm": lambda lower: lower, "prefix": lambda lower: lower[:3], "suffix": lambda lower: lower[-3:]}

    def __init__(self, embedding: Any, layout: Dict[str, int]) -> None:
        if list(layout)[:1] != ["shape"] or not set(layout) - {"shape"} <= set(self.HASHED):
            raise ValueError(
                f"word features: the layout {layout} is not shape followed by some of {tuple(self.HASHED)}"
            )
        if embedding.num_embeddings != sum(layout.values()):
            raise ValueError(f"word features: {embedding.num_embeddings} rows, the layout {layout} needs {sum(layout.values())}")
        self.embedding = embedding
        self.layout = dict(layout)
        offsets, offset = {}, 0
        for feature, rows in self.layout.items():
            offsets[feature] = offset
            offset += rows
        self._offsets = offsets
        self.ids = functools.lru_cache(maxsize=200_000)(self._ids)

    @classmethod
    def new(cls, size: int, lexical_rows: int = 0) -> "WordFeatures":
        """Zero-initialised features (training starts from the encoder's own
        behaviour) of width `size`; `lexical_rows` rows for the hashed words,
        a quarter as many for prefixes and for suffixes (0: shapes only)."""
        import torch

        if lexical_rows < 0:
            raise ValueError(f"word features: lexical_rows must be at least 0, not {lexical_rows}")
        layout = {"shape": N_WORD_SHAPES}
        if lexical_rows:
            layout.update(norm=lexical_rows, prefix=max(1, lexical_rows // 4), suffix=max(1, lexical_rows // 4))
        embedding = torch.nn.Embedding(sum(layout.values()), size, padding_idx=0)
        torch.nn.init.zeros_(embedding.weight)
        return cls(embedding, layout)

    @property
    def width(self) -> int:
        """Feature ids per sub-token."""
        return 1 + 2 * (len(self.layout) - 1)

    def _ids(self, word: str) -> Tuple[int, ...]:
        ids = [word_shape(word)]
        lower = word.lower()
        for feature in list(self.layout)[1:]:
            key = self.HASHED[feature](lower)
            digest = hashlib.blake2b(f"{feature}:{key}".encode("utf-8"), digest_size=8).digest()
            rows, offset = self.layout[feature], self._offsets[feature]
            ids.extend(offset + int.from_bytes(digest[i : i + 4], "little") % rows for i in (0, 4))
        return tuple(ids)

    def padding(self) -> Tuple[int, ...]:
        return (0,) * self.width

    def __call__(self, feature_ids: Any) -> Any:
        return self.embedding(feature_ids).sum(-2)

    def to(self, device: Any) -> "WordFeatures":
        self.embedding.to(device)
        return self

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        weight = self.embedding.weight.detach().cpu().contiguous()
        save_file({"weight": weight}, str(Path(folder) / WORD_FEATURES_FILE), metadata={"layout": json.dumps(self.layout)})

    @classmethod
    def load(cls, folder: str | Path) -> Optional["WordFeatures"]:
        """The features saved in a model folder, or None. A file without a
        layout holds word shapes only (as saved before lexical features)."""
        path = Path(folder) / WORD_FEATURES_FILE
        if not path.exists():
            return None
        import torch
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            weight = f.get_tensor("weight")
            metadata = f.metadata() or {}
        layout = json.loads(metadata["layout"]) if "layout" in metadata else {"shape": N_WORD_SHAPES}
        if layout.get("shape") != N_WORD_SHAPES:
            raise ValueError(f"{path}: {layout.get('shape')} word shapes, this version of hf_ner has {N_WORD_SHAPES}")
        embedding = torch.nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=0)
        embedding.weight.data.copy_(weight)
        embedding.eval()
        try:
            return cls(embedding, layout)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def forward(model: Any, word_features: Any, input_ids: Any, attention_mask: Any, feature_ids: Any, labels: Any = None) -> Any:
    """The token classifier's output. With `WordFeatures`, they are added to
    the sub-token embeddings (`inputs_embeds`). Only ids (or
    embeddings), mask and labels reach the model: token type ids keep the
    model's default, as in training."""
    inputs = {"attention_mask": attention_mask}
    if labels is not None:
        inputs["labels"] = labels
    if word_features is None:
        return model(input_ids=input_ids, **inputs)
    return model(inputs_embeds=model.get_input_embeddings()(input_ids) + word_features(feature_ids), **inputs)


def viterbi(scores: Any, transitions: Any, start_allowed: Any) -> List[int]:
    """The highest-scoring tag sequence: the sum of per-word log-probabilities
    and of `transitions[previous, next]` scores (-inf forbids a transition)."""
    import numpy

    n, k = scores.shape
    if n == 0:
        return []
    best = numpy.where(start_allowed, scores[0], -numpy.inf)
    back = numpy.zeros((n, k), dtype=numpy.int64)
    for i in range(1, n):
        total = best[:, None] + transitions
        back[i] = total.argmax(0)
        best = total.max(0) + scores[i]
    path = [int(best.argmax())]
    for i in range(n - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return path[::-1]


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
