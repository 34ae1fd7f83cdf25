"""Generate the synthetic corpus: the adapted generator continues the opening
words of held-out documents (Vakili et al., 2025).

Prompts are the first three words of each validation document. Generation
runs through a spaCy pipeline whose `llm` component (spacy-llm, task
spacy.Raw.v1 with a plain "{{ text }}" template) sends each prompt to the
configured model; the default model is the adapted generator
(`synthdeid.HFCausalLM.v1`, see synthdeid/training/spacy_llm_model.py), but any spacy-llm backend
can replace it in the config.

The synthetic corpus is sized in words, not notes: `size_multiple` is the
ratio of synthetic words to gold train words (whitespace-separated words), so
short generated notes cannot make a corpus that looks large but holds little
text. The target is ceil(size_multiple x gold train words).

Generation proceeds in rounds; a round samples every prompt
`samples_per_prompt` times (sample-major, so a batch mixes prompts). Each output
is checked in generation order and dropped when it is empty, a runaway
repetition, a duplicate of a document already kept (see `drop_reason`) or,
with a `screen`, when it holds a distinctive gold value of an identifying
label (a real patient's name, street or record number that the gold train
notes hold; `synthdeid.training.privacy.GoldValueScreen`): whether the
generator copied it or composed it from pieces, the note is not shared. Rounds
continue until the kept notes' words reach the target, and stop at the note
that crosses it: the corpus is the kept notes up to and including that one,
the same as a full round would give since every batch is seeded on its own.
A run gives up after `max_idle_rounds` rounds in a row that keep nothing.

Each record says why its note ended (`end_reason`: "eos" when the generator
wrote its end-of-sequence token, "length" when it hit max_new_tokens or its
window; None for a backend that does not say). The statistics give the share
of each end reason and the words per note of the synthetic and the gold train
notes (mean, median, p10/p90, histogram); `generation_stats_markdown` renders them.

A generator adapted with inline tags (`generator_tag_labels`) is prompted with
tagged openings; its notes are checked and sized without their tags, and
each record keeps the spans its tags mark (`tag_spans`, for the annotate
step) and the note as written (`tagged`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, TextIO, Tuple

import numpy as np
from catalogue import RegistryError
from confection import Config, ConfigValidationError
from spacy.language import Language
from spacy.util import load_config
from spacy_llm.util import assemble_from_config

from .generator import generator_model_dir, generator_tag_labels
from .inline_tags import entity_spans, tag_text, trimmed, untag
from ..io import ResumeState, atomic_path, folder_digest, read_docs, write_json, write_text
from ..parallel import ENGINES
from .privacy import GoldValueScreen
from .spacy_llm_model import END_REASONS, MODEL_NAME

PROMPT_WORDS = 3
# Fewer new words than this is not a document (gold train docs have 127+).
MIN_NEW_WORDS = 5
# Runaway repetition, measured on the whole text (prompt + continuation);
# none of these rules fires on any of the 450 gold MEDDOCAN train documents:
# - more than half of its word 4-grams repeat an earlier 4-gram of the text
#   (gold train: median 0.003, max 0.32 for a doc with a paragraph pasted twice);
# - some non-blank line occurs more than 3 times (gold train: at most twice);
# - a run of 2+ non-space characters with a letter, repeated 4+ times back to
#   back ("NombreNombreNombreNombre"): loops of tokens without spaces, which
#   the word measures cannot see (a weak generator's typical failure).
REPEAT_NGRAM = 4
MAX_REPEATED_NGRAM_SHARE = 0.5
MAX_LINE_REPEATS = 3
GLUED_LOOP = re.compile(r"(\S{2,}?)\1{3,}")
DROP_REASONS = ("empty", "repetition", "duplicate", "gold_value", "over_target")
SAMPLING_KEYS = ("top_p", "temperature", "max_new_tokens")
# Prompts per pipeline call when the configured model has no batch_size.
DEFAULT_BATCH_SIZE = 16
WORD_CHAR = re.compile(r"\w")
LETTER = re.compile(r"[^\W\d_]")
OPENING = re.compile(r"\S+(?:\s+\S+){0,%d}" % (PROMPT_WORDS - 1))


# ---------------------------------------------------------------- prompts


def prompt_of(text: str) -> str:
    """The text up to the end of its third whitespace-separated word, as
    written (a line break between the words stays a line break)."""
    match = OPENING.search(text)
    return match.group(0) if match else ""


def read_prompts(path: str | Path, tag_labels: Optional[Container[str]] = None) -> List[Tuple[int, str]]:
    """(index of the document in the DocBin, prompt) for every document with
    at least one word; with `tag_labels`, prompts of the texts with the
    entities of those labels tagged."""
    texts = [doc.text if tag_labels is None else
             tag_text(doc.text, [span for span in entity_spans(doc) if span[2] in tag_labels])
             for doc in read_docs(path)]
    prompts = [(i, prompt_of(text)) for i, text in enumerate(texts)]
    prompts = [(i, prompt) for i, prompt in prompts if prompt]
    if not prompts:
        raise ValueError(f"{path}: no document with text to take a prompt from")
    return prompts


def word_count(text: str) -> int:
    """Whitespace-separated words: the unit of the corpus size."""
    return len(text.split())


def gold_word_counts(path: str | Path) -> List[int]:
    """Words of each document of the gold train DocBin."""
    docs = read_docs(path)
    if not docs:
        raise ValueError(f"{path}: the gold train DocBin holds no documents")
    return [word_count(doc.text) for doc in docs]


def corpus_size(path: str | Path) -> Tuple[int, int]:
    """(documents, whitespace-separated words) of a DocBin."""
    counts = gold_word_counts(path)
    return len(counts), sum(counts)


def target_size(size_multiple: float, gold_words: int) -> int:
    """Words the synthetic corpus must reach: ceil(size_multiple x gold train
    words), at least 1."""
    if size_multiple <= 0:
        raise ValueError(f"size_multiple must be positive, not {size_multiple}")
    # round() first: 0.3 * 10 is 3.0000000000000004 in floating point.
    return max(1, math.ceil(round(size_multiple * gold_words, 6)))


# -------------------------------------------------------------- filtering


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def repeated_ngram_share(words: Sequence[str], n: int = REPEAT_NGRAM) -> float:
    """Share of the word n-grams that repeat an earlier n-gram of the same
    sequence: 0 for all distinct, close to 1 for a loop."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def max_line_repeats(text: str) -> int:
    counts = Counter(line.strip() for line in text.splitlines() if line.strip())
    return max(counts.values(), default=0)


def glued_loop(text: str) -> Optional[str]:
    """The first back-to-back repetition of a unit with a letter, if any
    (separator lines such as "--------" do not count)."""
    for match in GLUED_LOOP.finditer(text):
        if LETTER.search(match.group(1)):
            return match.group(0)
    return None


def drop_reason(continuation: str, text: str, kept: Container[str],
                screen: Optional[GoldValueScreen] = None) -> Optional[str]:
    """Why a generated document is dropped, or None to keep it.

    continuation: the generated text; text: prompt + continuation; kept: the
    whitespace-collapsed texts (see `collapse_whitespace`) of the documents
    kept so far; screen: the gold values no note may hold.
    """
    if not WORD_CHAR.search(continuation) or len(continuation.split()) < MIN_NEW_WORDS:
        return "empty"
    if (
        repeated_ngram_share(text.split()) > MAX_REPEATED_NGRAM_SHARE
        or max_line_repeats(text) > MAX_LINE_REPEATS
        or glued_loop(text)
    ):
        return "repetition"
    if collapse_whitespace(text) in kept:
        return "duplicate"
    if screen is not None and screen.find(text):
        return "gold_value"
    return None


# ---------------------------------------------------------------- pipeline


def load_generation_config(
    config_path: str | Path,
    generator: Optional[str | Path] = None,
    model_options: Optional[Mapping[str, Any]] = None,
) -> Config:
    """The generation config (not interpolated), with [paths] generator set to
    `generator` and each non-None `model_options` value set in the model
    block. An option the model block lacks (another backend) is an error, so
    it is never silently ignored."""
    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config")
    try:
        raw = load_config(path, interpolate=False)
    except Exception as err:  # noqa: BLE001 (any failure means "not a config")
        raise ValueError(f"{path}: not a readable config ({err})") from err
    llm = raw.get("components", {}).get("llm", {})
    model = llm.get("model")
    if llm.get("factory") != "llm" or not isinstance(model, dict) or not model.get("@llm_models"):
        raise ValueError(f"{path}: needs an `llm` component ([components.llm], factory = \"llm\") with a model block")
    if llm.get("cache", {}).get("path"):
        raise ValueError(
            f"{path}: [components.llm.cache] path must be null: prompts repeat, and the cache would "
            "return the first reply for every later sample"
        )
    overrides: Dict[str, Any] = {}
    if generator is not None:
        if "generator" not in raw.get("paths", {}):
            raise ValueError(f"{path}: no [paths] generator to set the generator folder in")
        overrides["paths.generator"] = str(generator)
    for key, value in (model_options or {}).items():
        if value is None:
            continue
        if key not in model:
            raise ValueError(f"{path}: the model block ({model['@llm_models']}) has no setting {key!r}")
        overrides[f"components.llm.model.{key}"] = value
    return load_config(path, overrides=overrides, interpolate=False)


def model_settings(config: Config) -> Dict[str, Any]:
    """What the records say about the model: its registry name, the generator
    (folder, or a backend's model name), pipeline batch size, base seed (only
    for synthdeid.HFCausalLM.v1, whose batch i uses seed + i) and sampling."""
    model = config.interpolate()["components"]["llm"]["model"]
    name = model["@llm_models"]
    return {
        "model": name,
        "generator": str(model.get("path") or model.get("name") or name),
        "batch_size": int(model.get("batch_size", DEFAULT_BATCH_SIZE)),
        "seed": model.get("seed") if name == MODEL_NAME else None,
        "sampling": {key: model.get(key) for key in SAMPLING_KEYS},
    }


def build_pipeline(config: Config, source: str = "the generation config") -> Language:
    """The spaCy pipeline of `config`, with its model loaded; `source` names
    the config in errors."""
    try:
        return assemble_from_config(config)
    except (ConfigValidationError, RegistryError) as err:
        raise ValueError(f"{source}: bad generation config: {err}") from err


def reply_field(nlp: Language) -> str:
    """The Doc extension the llm task writes its reply to (Raw: llm_reply)."""
    if "llm" not in nlp.pipe_names:
        raise ValueError(f"the pipeline has no `llm` component (it has {nlp.pipe_names})")
    field = getattr(nlp.get_pipe("llm").task, "field", None)
    if not field:
        raise ValueError("the llm task keeps no reply field; use spacy.Raw.v1")
    return field


# --------------------------------------------------------------- generation


def model_of(nlp: Language) -> Any:
    """The model object of the pipeline's llm component, or None (spacy-llm
    0.7 keeps it as `_model` and has no public accessor)."""
    return getattr(nlp.get_pipe("llm"), "_model", None)


def reply_details(model: Any, n: int) -> List[Dict[str, Any]]:
    """Per reply of the model's latest call: end_reason and new_tokens, as
    synthdeid.HFCausalLM.v1 keeps them in `last_details`; None values for a
    backend that keeps none (or not one per reply)."""
    details = getattr(model, "last_details", None)
    if not isinstance(details, list) or len(details) != n:
        return [{"end_reason": None, "new_tokens": None} for _ in range(n)]
    return [{"end_reason": d.get("end_reason"), "new_tokens": d.get("new_tokens")} for d in details]


@dataclass
class Checkpoint:
    """Where a generation stands after a batch that left the target unreached:
    continuing from here gives exactly the records an uninterrupted run gives
    (every batch is seeded by its index), for this target or a larger one."""

    records: int = 0
    batches: int = 0
    rounds: int = 0
    position: int = 0  # the next batch's first item in the round's item list
    round_start_records: int = 0
    idle: int = 0
    generated: int = 0
    dropped: Dict[str, int] = field(default_factory=lambda: {reason: 0 for reason in DROP_REASONS})
    end_reasons: Dict[str, int] = field(default_factory=dict)
    new_tokens: Optional[int] = 0


class BatchGenerator:
    """The generation pipeline of a config, built once (in this process or
    in a Ray actor), called on one batch at a time: (batch index, prompts)
    -> (continuations, details). The model is seeded by the batch's index,
    so a batch gives the same notes wherever and in whatever order it runs."""

    def __init__(self, config: Config, source: str = "the generation config") -> None:
        self.nlp = build_pipeline(config, source)
        self.field = reply_field(self.nlp)
        self.model = model_of(self.nlp)

    def __call__(self, job: Tuple[int, List[str]]) -> Tuple[List[str], List[Dict[str, Any]]]:
        index, prompts = job
        if hasattr(self.model, "n_batches"):
            self.model.n_batches = index
        # One pipeline call of the whole batch is one model batch.
        docs = list(self.nlp.pipe(prompts, batch_size=len(prompts)))
        return [getattr(doc._, self.field) or "" for doc in docs], reply_details(self.model, len(prompts))


def generate_corpus(
    config: Config,
    prompts: Sequence[Tuple[int, str]],
    *,
    target_words: int,
    samples_per_prompt: int,
    max_idle_rounds: int = 3,
    source: str = "the generation config",
    progress: bool = True,
    resume: Optional[Tuple[List[Dict[str, Any]], Checkpoint]] = None,
    on_checkpoint: Optional[Callable[[List[Dict[str, Any]], Checkpoint], None]] = None,
    tag_labels: Optional[Sequence[str]] = None,
    screen: Optional[GoldValueScreen] = None,
    engine: str = "local",
    num_workers: int = 2,
    ray_address: Optional[str] = None,
) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """(records, counts): the documents kept until their words reach
    `target_words` (the one that crosses it included), and the counts of
    rounds, batches, generated, kept, words kept, dropped (per reason), end
    reasons of all generated outputs and new tokens generated.

    `resume` (records, checkpoint) continues an earlier run; `on_checkpoint`
    gets the records and a checkpoint after every batch that leaves the target
    unreached. Batch i is seeded by i (`BatchGenerator`), so a resumed run
    continues the sequence of seeds.

    With `tag_labels` (a generator that writes inline tags of these labels),
    a record's `text` is the note without its tags, checked and counted as
    any note; `tag_spans` holds the spans its tags mark ([start, end, label]
    in `text`), `tagged` the note as written and `tag_problems` its
    malformed tags. With a `screen`, a note that holds one of its gold values
    is dropped.

    `engine` "ray" writes the batches on `num_workers` Ray actors (a local
    Ray, or the cluster at `ray_address`), each with the pipeline built once
    (and a GPU of its own when the model's device is "cuda"); the batches are
    read in order and checked here, so the records are the same as the local
    engine's for any number of workers."""
    from tqdm import tqdm

    if target_words < 1 or samples_per_prompt < 1 or max_idle_rounds < 1:
        raise ValueError("target_words, samples_per_prompt and max_idle_rounds must be at least 1")
    if not prompts:
        raise ValueError("no prompts to generate from")
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    settings = model_settings(config)
    batch_size = settings["batch_size"]

    previous, state = resume if resume else ([], Checkpoint())
    records: List[Dict[str, Any]] = list(previous[: state.records])
    kept: set[str] = {collapse_whitespace(record["text"]) for record in records}
    words = sum(word_count(record["text"]) for record in records)
    dropped = {**{reason: 0 for reason in DROP_REASONS}, **state.dropped}
    end_reasons: Counter[str] = Counter(state.end_reasons)
    generated, batches, rounds, idle, new_tokens = (state.generated, state.batches, state.rounds, state.idle,
                                                    state.new_tokens)
    round_start = state.round_start_records
    if idle >= max_idle_rounds:  # the interrupted run had given up at the end of its last round
        raise gave_up(idle, words, target_words, len(records), generated, dropped)
    # Every round samples the same items: (sample, prompt's doc index, prompt).
    items = [(k, i, prompt) for k in range(samples_per_prompt) for i, prompt in prompts]

    def jobs() -> Iterator[Tuple[Tuple[int, List[str]], Tuple[int, List[Tuple[int, int, str]]]]]:
        """((batch index, prompts), (first item, items)) from the checkpoint on, round after round."""
        index, position = batches, state.position
        while True:
            for start in range(position, len(items), batch_size):
                chunk = items[start : start + batch_size]
                yield (index, [prompt for _, _, prompt in chunk]), (start, chunk)
                index += 1
            position = 0

    if engine == "ray":
        from ..parallel import actor_map

        overrides: Dict[str, Any] = {}
        if config.get("paths", {}).get("generator") and Path(settings["generator"]).exists():
            # a folder: the same absolute path on every node, whatever an actor's working directory
            overrides["paths.generator"] = str(Path(settings["generator"]).resolve())
        device = str(config.interpolate()["components"]["llm"]["model"].get("device", "cpu"))
        on_gpu = device.startswith("cuda")  # ("auto" resolves in each actor, which Ray gives no GPU)
        if on_gpu:  # an actor sees only the GPU Ray gave it, as device 0
            overrides["components.llm.model.device"] = "cuda:0"
        on_actors = Config().from_str(config.to_str(), interpolate=False, overrides=overrides)
        results = actor_map(BatchGenerator, (on_actors, source), jobs(), num_workers=num_workers,
                            address=ray_address, gpus_per_worker=int(on_gpu))
    else:
        generator = BatchGenerator(config, source)
        results = ((generator(job), context) for job, context in jobs())
    bar = tqdm(total=target_words, initial=min(words, target_words), desc="generate", unit="word", disable=not progress)
    with closing(results):
        for (continuations, details), (start, chunk) in (results if words < target_words else ()):
            seed = settings["seed"] + batches if settings["seed"] is not None else None
            batches += 1
            for (sample, doc_index, prompt), continuation, detail in zip(chunk, continuations, details):
                generated += 1
                end_reasons[detail["end_reason"] or "unknown"] += 1
                if new_tokens is not None and detail["new_tokens"] is not None:
                    new_tokens += detail["new_tokens"]
                else:
                    new_tokens = None
                if words >= target_words:
                    dropped["over_target"] += 1
                    continue
                text = tagged = prompt + continuation
                if tag_labels is not None:
                    untagged = untag(tagged, tag_labels)
                    text = untagged.text
                    continuation = text[len(untag(prompt, tag_labels).text):]
                reason = drop_reason(continuation, text, kept, screen)
                if reason:
                    dropped[reason] += 1
                    continue
                kept.add(collapse_whitespace(text))
                n_words = word_count(text)
                words += n_words
                records.append(
                    {
                        "id": f"syn-{len(records) + 1:06d}",
                        "text": text,
                        "prompt": prompt,
                        "prompt_doc": doc_index,
                        "round": rounds,
                        "sample": sample,
                        "seed": seed,
                        "sampling": settings["sampling"],
                        "generator": settings["generator"],
                        "end_reason": detail["end_reason"],
                        "new_tokens": detail["new_tokens"],
                        **({"tagged": tagged, "tag_spans": [list(span) for span in trimmed(text, untagged.spans)],
                            "tag_problems": untagged.problems} if tag_labels is not None else {}),
                    }
                )
                bar.update(min(n_words, target_words - bar.n))
            bar.set_postfix(round=rounds, notes=len(records), generated=generated, dropped=sum(dropped.values()))
            if words >= target_words:
                break
            next_position = start + batch_size
            if next_position >= len(items):  # the round is over
                rounds += 1
                idle = idle + 1 if len(records) == round_start else 0
                round_start = len(records)
            if on_checkpoint:
                on_checkpoint(records, Checkpoint(
                    records=len(records), batches=batches, rounds=rounds,
                    position=next_position if next_position < len(items) else 0,
                    round_start_records=round_start, idle=idle,
                    generated=generated, dropped=dict(dropped), end_reasons=dict(end_reasons),
                    new_tokens=new_tokens,
                ))
            if idle >= max_idle_rounds:
                bar.close()
                raise gave_up(idle, words, target_words, len(records), generated, dropped)
    bar.close()
    counts = {
        "rounds": rounds + 1,
        "batches": batches,
        "generated": generated,
        "kept": len(records),
        "words_kept": words,
        "dropped": dropped,
        "end_reasons_generated": dict(end_reasons),
        "tokens_generated": new_tokens,
        "settings": settings,
    }
    return records, counts


class GaveUp(RuntimeError):
    """Generation stopped short of its target: rounds in a row kept nothing."""


def gave_up(idle: int, words: int, target: int, documents: int, generated: int, dropped: Mapping) -> GaveUp:
    return GaveUp(
        f"gave up: {idle} rounds in a row kept no new document ({words} of {target} words kept in "
        f"{documents} documents, {generated} generated, dropped {dict(dropped)}); check the generator and "
        "max_new_tokens"
    )


class ProgressFiles:
    """Beside OUTPUT, OUTPUT.partial holds the records kept so far (appended
    after every batch) and OUTPUT.resume.json the last checkpoint with what
    it depends on (model settings, the model folder's contents, prompts,
    samples per prompt). A later run
    with the same settings resumes from the partial file, or, once OUTPUT is
    finished, from OUTPUT itself (to grow it); other settings start afresh."""

    def __init__(self, output: Path, fingerprint: Mapping[str, Any]):
        self.output = output
        self.partial = output.with_name(output.name + ".partial")
        self.state = ResumeState(output.with_name(output.name + ".resume.json"), fingerprint)

    def load(self) -> Optional[Tuple[List[Dict[str, Any]], Checkpoint]]:
        progress = self.state.load()
        if progress is None:
            return None
        try:
            checkpoint = Checkpoint(**progress)
        except TypeError:  # not a checkpoint this code wrote: start afresh
            return None
        source = self.partial if self.partial.is_file() else self.output
        if not source.is_file():
            return None
        records = []
        with source.open(encoding="utf-8") as lines:
            for line in lines:
                if len(records) == checkpoint.records:
                    break
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by the interruption
                    break
        if len(records) < checkpoint.records:
            return None
        return records, checkpoint

    @contextmanager
    def recording(self, earlier: Optional[Tuple[List[Dict[str, Any]], Checkpoint]]):
        """Yield the on_checkpoint callback; the partial file goes when the run
        ends well. Nothing is written before the first checkpoint, so a run that
        fails while loading leaves no files behind."""
        written = earlier[1].records if earlier else 0
        with ExitStack() as stack:
            partial: Optional[TextIO] = None

            def on_checkpoint(current: List[Dict[str, Any]], state: Checkpoint) -> None:
                nonlocal written, partial
                if partial is None:
                    # The partial file first, whole, then the state that counts its
                    # records: an interruption in between leaves the two consistent.
                    write_jsonl(self.partial, current[:written])
                    partial = stack.enter_context(self.partial.open("a", encoding="utf-8"))
                for record in current[written : state.records]:
                    partial.write(json.dumps(record, ensure_ascii=False) + "\n")
                partial.flush()
                written = state.records
                self._save(state)

            yield on_checkpoint
        self.partial.unlink(missing_ok=True)

    def _save(self, checkpoint: Checkpoint) -> None:
        self.state.save(asdict(checkpoint))


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")


def generator_token_count(generator: str, texts: List[str]) -> Optional[int]:
    """How many tokens of the generator's own tokenizer `texts` hold, or None
    when the generator is not a local model folder (another spacy-llm backend)."""
    try:
        folder = generator_model_dir(generator)
    except FileNotFoundError:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


HISTOGRAM_BIN_WORDS = 50
HISTOGRAM_BAR = 40


def describe(values: Sequence[int]) -> Dict[str, Any]:
    """notes, mean, median, p10, p90, min and max of per-note counts."""
    if not values:
        return {"notes": 0, "mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    return {
        "notes": len(values),
        "mean": sum(values) / len(values),
        "median": float(np.percentile(values, 50)),
        "p10": float(np.percentile(values, 10)),
        "p90": float(np.percentile(values, 90)),
        "min": min(values),
        "max": max(values),
    }


def histogram(series: Mapping[str, Sequence[int]], bin_width: int = HISTOGRAM_BIN_WORDS) -> Dict[str, Any]:
    """Counts per bin of `bin_width` words for each series, on shared bins:
    bin i holds [edges[i], edges[i + 1]); the last edge is past the longest."""
    longest = max((max(values) for values in series.values() if values), default=0)
    n_bins = longest // bin_width + 1
    counts = {}
    for name, values in series.items():
        row = [0] * n_bins
        for value in values:
            row[value // bin_width] += 1
        counts[name] = row
    return {"bin_width": bin_width, "edges": [i * bin_width for i in range(n_bins + 1)], "counts": counts}


def end_reason_shares(counts: Mapping[str, int]) -> Dict[str, Dict[str, float]]:
    """{reason: {count, share}}: "eos" and "length" always, others if seen."""
    total = sum(counts.values())
    reasons = list(END_REASONS) + sorted(set(counts) - set(END_REASONS))
    return {r: {"count": counts.get(r, 0), "share": counts.get(r, 0) / total if total else 0.0} for r in reasons}


def _number(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def generation_stats_markdown(stats: Mapping[str, Any]) -> str:
    """A Markdown report of the generation statistics: size against its word
    target, end reasons, words per note (synthetic vs gold train) and a text
    histogram of the words per note (share of each corpus's notes per bin)."""
    lines = [
        "# Generation statistics",
        "",
        f"Kept {stats['kept']:,} of {stats['generated']:,} generated notes in {stats['rounds']} round(s), "
        f"{stats['seconds']:.0f} s.",
        "",
        "| size | words |",
        "| --- | ---: |",
        f"| gold train | {stats['gold_train_words']:,} ({stats['gold_train_docs']:,} notes) |",
        f"| target (size_multiple {stats['size_multiple']:g}) | {stats['words_target']:,} |",
        f"| kept | {stats['words_kept']:,} ({stats['kept']:,} notes) |",
        f"| kept / gold train | {stats['words_ratio']:.3f} |",
        "",
        "Dropped: " + ", ".join(f"{reason} {n:,}" for reason, n in stats["dropped"].items()) + ".",
        "",
        (f"gold_value: the note held one of the {stats['screened_gold_values']:,} distinctive gold values of "
         "identifying labels (names, places, identifiers, contacts) of the gold train notes."
         if stats.get("screened_gold_values") is not None else "Notes were not screened for gold values."),
        "",
        "## End reasons",
        "",
        "eos: the generator wrote its end-of-sequence token; length: it hit max_new_tokens or its window.",
        "",
        "| end reason | kept notes | share | all generated | share |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    kept, generated = stats["end_reasons"]["kept"], stats["end_reasons"]["generated"]
    for reason in list(kept) + [r for r in generated if r not in kept]:
        k = kept.get(reason, {"count": 0, "share": 0.0})
        g = generated.get(reason, {"count": 0, "share": 0.0})
        lines.append(f"| {reason} | {k['count']:,} | {k['share']:.1%} | {g['count']:,} | {g['share']:.1%} |")
    words = stats["words_per_note"]
    lines += [
        "",
        "## Words per note",
        "",
        "| notes | count | mean | median | p10 | p90 | min | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in words.items():
        lines.append(
            f"| {name} | {row['notes']:,} | {_number(row['mean'])} | {_number(row['median'])} | "
            f"{_number(row['p10'])} | {_number(row['p90'])} | {_number(row['min'])} | {_number(row['max'])} |"
        )
    hist = stats["words_histogram"]
    names = list(hist["counts"])
    totals = {name: sum(hist["counts"][name]) or 1 for name in names}
    top = max((c / totals[name] for name in names for c in hist["counts"][name]), default=0.0) or 1.0
    lines += [
        "",
        f"Share of each corpus's notes per bin of {hist['bin_width']} words "
        f"(bars scaled to the largest share, {HISTOGRAM_BAR} `#`):",
        "",
        "```",
    ]
    label_width = len(f"{hist['edges'][-2]}-{hist['edges'][-1] - 1}")
    for i in range(len(hist["edges"]) - 1):
        label = f"{hist['edges'][i]}-{hist['edges'][i + 1] - 1}".rjust(label_width)
        for j, name in enumerate(names):
            share = hist["counts"][name][i] / totals[name]
            bar = "#" * round(HISTOGRAM_BAR * share / top)
            lines.append(f"{label if j == 0 else ' ' * label_width} {name:<10} {share:6.1%} {bar}")
    lines.append("```")
    if "inline_tags" in stats:
        tags = stats["inline_tags"]
        lines += ["", f"Inline tags: {tags['spans']:,} spans in the kept notes; {tags['malformed']:,} malformed tags "
                  f"(marking nothing) in {tags['notes_with_malformed']:,} notes."]
    return "\n".join(lines) + "\n"


def generate(
    validation_path: str | Path,
    gold_train_path: str | Path,
    output_path: str | Path,
    *,
    config_path: str | Path,
    generator: Optional[str | Path] = None,
    model_options: Optional[Mapping[str, Any]] = None,
    size_multiple: float = 1.0,
    samples_per_prompt: int = 8,
    max_idle_rounds: int = 3,
    stats_path: Optional[str | Path] = None,
    progress: bool = True,
    resume: bool = True,
    screen_gold_values: bool = True,
    label_kinds: Optional[Mapping[str, Any]] = None,
    engine: str = "local",
    num_workers: int = 2,
    ray_address: Optional[str] = None,
) -> Dict[str, Any]:
    """Write the synthetic corpus as JSONL to `output_path` (one record per
    document) and return its statistics, also written to `stats_path` if
    given, with a Markdown rendering (`generation_stats_markdown`) next to it (same name,
    .md). The corpus is sized in words: generation stops at the note whose
    words bring the kept total to ceil(size_multiple x gold train words).

    With `resume`, a run that was interrupted continues where it stopped, and
    a finished corpus grows to a larger size_multiple by generating only the
    rest (see ProgressFiles); the result equals an uninterrupted run's.
    `generator` and `model_options` (max_new_tokens, top_p, temperature,
    batch_size, seed, device; None keeps the config's value) override the
    config at `config_path`.

    With `screen_gold_values`, no kept note holds a distinctive gold value
    of an identifying label of the gold train notes (`GoldValueScreen`;
    `label_kinds` over the shipped schemes say which labels identify).
    `engine`, `num_workers` and `ray_address`: see `generate_corpus`; the
    corpus is the same on either engine, so a run resumes on the other."""
    start = time.perf_counter()
    config = load_generation_config(config_path, generator, model_options)
    settings = model_settings(config)
    try:
        tag_labels = generator_tag_labels(settings["generator"])
    except FileNotFoundError:  # not a local model folder (another spacy-llm backend)
        tag_labels = None
    prompts = read_prompts(validation_path, tag_labels)
    gold_counts = gold_word_counts(gold_train_path)
    gold_docs, gold_words = len(gold_counts), sum(gold_counts)
    screen = GoldValueScreen.from_path(gold_train_path, label_kinds) if screen_gold_values else None
    target = target_size(size_multiple, gold_words)
    output_path = Path(output_path)
    if Path(settings["generator"]).exists():  # the same folder however it is spelled
        settings["generator"] = str(Path(settings["generator"]).resolve())
    try:  # a model retrained in the same folder must not continue the old one's corpus
        model_sha256 = folder_digest(generator_model_dir(settings["generator"]))
    except FileNotFoundError:  # not a local model folder (another spacy-llm backend)
        model_sha256 = None
    progress_files = ProgressFiles(output_path, {
        "model": settings, "model_sha256": model_sha256, "prompts": prompts, "samples_per_prompt": samples_per_prompt,
        "screen_sha256": screen.digest() if screen else None,
    })
    earlier = progress_files.load() if resume else None
    if earlier and sum(word_count(record["text"]) for record in earlier[0][:-1]) >= target:
        # The saved corpus is larger than this target: an uninterrupted run would
        # have stopped earlier, with other counts, so generate afresh.
        print(f"{output_path}: the saved corpus is larger than {target} words; generating afresh", flush=True)
        earlier = None
    with progress_files.recording(earlier) as on_checkpoint:
        records, counts = generate_corpus(
            config,
            prompts,
            target_words=target,
            samples_per_prompt=samples_per_prompt,
            max_idle_rounds=max_idle_rounds,
            source=str(config_path),
            progress=progress,
            resume=earlier,
            on_checkpoint=on_checkpoint,
            tag_labels=tag_labels,
            screen=screen,
            engine=engine,
            num_workers=num_workers,
            ray_address=ray_address,
        )
        if stats_path:  # the old stats would describe the old corpus beside the new one
            for marker in (Path(stats_path), Path(stats_path).with_suffix(".md")):
                marker.unlink(missing_ok=True)
        write_jsonl(output_path, records)
    seconds = time.perf_counter() - start
    settings = counts.pop("settings")
    generated_reasons = counts.pop("end_reasons_generated")
    words = counts["words_kept"]
    synthetic_counts = [word_count(record["text"]) for record in records]
    kept_reasons = Counter(record["end_reason"] or "unknown" for record in records)
    tokens = generator_token_count(settings["generator"], [record.get("tagged", record["text"]) for record in records])
    stats = {
        "resumed_from": {"records": earlier[1].records, "batches": earlier[1].batches} if earlier else None,
        "prompts": len(prompts),
        "samples_per_prompt": samples_per_prompt,
        **counts,
        # The target is in words (whitespace-separated) since sizes are words.
        "target": target,
        "target_unit": "words",
        "size_multiple": size_multiple,
        "words_target": target,
        "words_ratio": words / gold_words,
        "words_per_doc": words / len(records),
        "gold_train_docs": gold_docs,
        "gold_train_words": gold_words,
        "screened_gold_values": len(screen.values) if screen else None,
        "end_reasons": {
            "kept": end_reason_shares(kept_reasons),
            "generated": end_reason_shares(generated_reasons),
        },
        "words_per_note": {"synthetic": describe(synthetic_counts), "gold_train": describe(gold_counts)},
        "words_histogram": histogram({"synthetic": synthetic_counts, "gold_train": gold_counts}),
        "seconds": seconds,
        "docs_per_second": len(records) / seconds,
        "generated_per_second": counts["generated"] / seconds,
        "tokens_generated_per_second": (
            counts["tokens_generated"] / seconds if counts["tokens_generated"] is not None else None
        ),
        "tokens_kept": tokens,
        "tokens_kept_per_second": tokens / seconds if tokens is not None else None,
        "model": {key: settings[key] for key in ("model", "generator", "batch_size", "seed")},
        "sampling": settings["sampling"],
        "config": str(config_path),
        "validation": str(validation_path),
        "gold_train": str(gold_train_path),
        "output": str(output_path),
    }
    if tag_labels is not None:
        stats["inline_tags"] = {
            "labels": tag_labels,
            "spans": sum(len(record["tag_spans"]) for record in records),
            "malformed": sum(len(record["tag_problems"]) for record in records),
            "notes_with_malformed": sum(bool(record["tag_problems"]) for record in records),
        }
    if stats_path:
        write_json(stats_path, stats)
        write_text(Path(stats_path).with_suffix(".md"), generation_stats_markdown(stats))
    return stats
