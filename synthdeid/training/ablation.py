"""The ablation study of Vakili et al. (2025), Tables 1-5, as one resumable run.

A study file (YAML, see configs/ablation.yml) names axes; each axis is a list
of values, and each value overrides some settings of the defaults. A
condition is the defaults with one axis value applied, repeated for every
seed; conditions that end up with the same settings (the default condition
sits on every axis) run once.

A condition runs project.yml's own command lines (`WorkflowCommands`: its
settings for the vars, the study's files for the workflow's paths): the
annotator (`train-annotator`, `build-annotator`) and a gold pipeline
(`train-gold`) on a nested seeded subset of the gold train split (in words:
the same documents teach the annotator and adapt the generator), the
generator (`adapt-generator`), generation (`generate`), machine annotation by
the condition's annotator and augmentation (`annotate`, `augment`) and the
synthetic pipeline (`train-synthetic`). Three steps are the study's own: the
subset, the evaluation of one pipeline on the gold test set and the privacy
report without a wheel. Every artifact lives under `shared/<kind>/<key>/`,
where the key holds exactly the settings it depends on (the vars its
commands use), so conditions reuse what they share (one annotator per gold
fraction, one generator per adaptation fraction and size). Each generator
has one corpus that grows to the largest size a condition asks of it
(generation resumes where it stopped); a smaller corpus is its prefix, which
is what a smaller run would have generated because generation is seeded per
batch and keeps notes in order (synthdeid.training.synthesis).

Resuming: an artifact is finished when its `done.json` exists (written last,
atomically); an unfinished folder is removed and built again, except a
generation, which continues. A condition is finished when its `result.json`
exists. Artifacts are keyed by settings, not by code: after changing the code
a step runs, delete `shared/<kind>/` (or the whole study folder) to rebuild.
A var that project.yml's commands start to use joins the keys by itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

from ..io import atomic_path, write_json

# Settings a study may set, with the project.yml variable that gives the
# default (same name) and their types.
SETTINGS: Dict[str, type] = {
    "annotator_base": str,
    "annotator_epochs": int,
    "annotator_min_steps": int,
    "annotator_batch_size": int,
    "annotator_learning_rate": float,
    "annotator_window_words": int,
    "annotator_word_features": str,
    "annotator_lexical_rows": int,
    "annotator_precision": str,
    "annotator_group_by_length": str,
    "lang": str,
    "label_kinds": str,
    "frames": str,
    "deid_config": str,
    "gpu_id": int,
    "train_max_steps": int,
    "train_eval_frequency": int,
    "generator_base": str,
    "generator_corpus": str,
    "inline_tags": str,
    "screen_gold_values": str,
    "generator_epochs": int,
    "generator_learning_rate": float,
    "generator_batch_size": int,
    "generator_block_size": int,
    "generator_layers": int,
    "generator_width": int,
    "generator_heads": int,
    "generator_vocab_size": int,
    "generator_dropout": float,
    "lora_r": int,
    "lora_alpha": int,
    "lora_dropout": float,
    "lora_target_modules": str,
    "qlora": str,
    "generate_config": str,
    "size_multiple": float,
    "samples_per_prompt": int,
    "top_p": float,
    "temperature": float,
    "generate_batch_size": int,
    "device": str,
    "train_launcher": str,
    "parallel_engine": str,
    "parallel_workers": int,
    "ray_address": str,
    "synthetic_validation_fraction": float,
    "tag_policy": str,
    "surrogate_copies": int,
    "narrative_notes": int,
    "name_pool": str,
}
# Settings that only exist in a study: the share of gold train words the
# annotator (and the gold pipeline) and the generator learn from.
STUDY_SETTINGS: Dict[str, type] = {"annotator_fraction": float, "generator_fraction": float}
STUDY_DEFAULTS = {"annotator_fraction": 1.0, "generator_fraction": 1.0}

class StudyError(ValueError):
    """A study file that cannot be run (names the file and the bad value)."""


@dataclass(frozen=True)
class AxisValue:
    label: str
    settings: Dict[str, Any]


@dataclass(frozen=True)
class Axis:
    name: str
    title: str
    parameter: str  # what the plot's x axis shows
    values: List[AxisValue]
    # Published figures to print beside ours: {"synthetic"|"gold"|"ngram5_recall": {value label: figure}, "note": str}
    paper: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Condition:
    key: str
    seed: int
    settings: Dict[str, Any]
    axes: List[Dict[str, str]] = field(default_factory=list)  # [{"axis", "value"}]


@dataclass(frozen=True)
class Study:
    path: Path
    seeds: List[int]
    defaults: Dict[str, Any]
    axes: List[Axis]


def _typed(name: str, value: Any, where: str) -> Any:
    kinds = {**SETTINGS, **STUDY_SETTINGS}
    if name not in kinds:
        raise StudyError(f"{where}: unknown setting {name!r} (known: {', '.join(sorted(kinds))})")
    kind = kinds[name]
    try:
        if kind is int and (isinstance(value, bool) or float(value) != int(value)):
            raise ValueError
        typed = kind(value) if value is not None else ""
    except (TypeError, ValueError):
        raise StudyError(f"{where}: {name} must be {kind.__name__}, not {value!r}") from None
    lowest = {"annotator_fraction": 0.0, "generator_fraction": -1e-9}.get(name)
    if lowest is not None and not lowest < typed <= 1:
        raise StudyError(f"{where}: {name} must be in {'(0' if lowest == 0 else '[0'}, 1], not {value!r}")
    return typed


def project_defaults(project_file: str | Path) -> Dict[str, Any]:
    """The study's base settings: project.yml's vars (the main workflow's defaults)."""
    project_vars = yaml.safe_load(Path(project_file).read_text(encoding="utf-8")).get("vars", {})
    missing = sorted(set(SETTINGS) - set(project_vars))
    if missing:
        raise StudyError(f"{project_file}: vars lacks {', '.join(missing)}")
    defaults = {name: _typed(name, project_vars[name], str(project_file)) for name in SETTINGS}
    return {**defaults, **STUDY_DEFAULTS}


def load_study(path: str | Path, project_file: str | Path = "project.yml") -> Study:
    """Read and check a study file; every error names the file and the value."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise StudyError(f"{path}: expected a mapping with a non-empty 'axes' mapping")
    unknown = set(data) - {"seeds", "defaults", "axes", "description"}
    if unknown:
        raise StudyError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"{path}: seeds must be a non-empty list of integers, not {seeds!r}")
    defaults = project_defaults(project_file)
    for name, value in (data.get("defaults") or {}).items():
        defaults[name] = _typed(name, value, f"{path}: defaults")
    axes = []
    for name, spec in data["axes"].items():
        where = f"{path}: axis {name}"
        if not isinstance(spec, dict) or not isinstance(spec.get("values"), list) or not spec["values"]:
            raise StudyError(f"{where}: expected a mapping with a non-empty 'values' list")
        sets = spec.get("sets", [])
        sets = [sets] if isinstance(sets, str) else list(sets)
        values = []
        for raw in spec["values"]:
            if isinstance(raw, dict):
                raw = dict(raw)
                label = str(raw.pop("label", "")) or ", ".join(f"{k}={v}" for k, v in raw.items())
                settings = {k: _typed(k, v, where) for k, v in raw.items()}
            else:
                if not sets:
                    raise StudyError(f"{where}: a plain value ({raw!r}) needs 'sets' (the settings it gives)")
                settings = {k: _typed(k, raw, where) for k in sets}
                label = str(raw)
            values.append(AxisValue(label, settings))
        unknown = set(spec) - {"title", "parameter", "sets", "values", "paper"}
        if unknown:
            raise StudyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        paper = {
            series: figures if series == "note" else {str(value): float(f) for value, f in figures.items()}
            for series, figures in (spec.get("paper") or {}).items()
        }
        axes.append(Axis(name, str(spec.get("title", name)), str(spec.get("parameter", ", ".join(sets))), values, paper))
    return Study(path, seeds, defaults, axes)


def _fmt(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:40] or "none"


def condition_key(settings: Mapping[str, Any], defaults: Mapping[str, Any], seed: int) -> str:
    """A readable folder name: the settings that differ from the defaults."""
    changed = [f"{name}={_fmt(settings[name])}" for name in sorted(settings) if settings[name] != defaults[name]]
    return ("-".join(changed) or "default") + f"-seed{seed}"


def expand(study: Study) -> List[Condition]:
    """Every (axis value, seed) as a condition; equal settings run once."""
    by_key: Dict[str, Condition] = {}
    for axis in study.axes:
        for value in axis.values:
            settings = {**study.defaults, **value.settings}
            for seed in study.seeds:
                key = condition_key(settings, study.defaults, seed)
                if key in by_key and by_key[key].settings != settings:  # values alike in their first 40 characters
                    content = json.dumps(settings, sort_keys=True, default=str)
                    key += "-" + hashlib.sha1(content.encode("utf-8")).hexdigest()[:10]
                condition = by_key.setdefault(key, Condition(key, seed, settings))
                condition.axes.append({"axis": axis.name, "value": value.label})
    return list(by_key.values())


def skip_reason(settings: Mapping[str, Any]) -> Optional[str]:
    if settings["generator_fraction"] == 0 and not settings["generator_base"]:
        return "no adaptation data: a generator trained from scratch on nothing cannot generate"
    return None


def artifact_key(label: str, settings: Mapping[str, Any], names: Sequence[str], seed: int, *upstream: str) -> str:
    """`label-seedN-hash`: the label for people, the hash of every setting
    (and upstream artifact) the artifact depends on for uniqueness."""
    content = json.dumps([{name: settings[name] for name in names}, seed, upstream], sort_keys=True)
    return f"{label}-seed{seed}-{hashlib.sha1(content.encode('utf-8')).hexdigest()[:10]}"


def generator_label(s: Mapping[str, Any]) -> str:
    base = Path(s["generator_base"]).name if s["generator_base"] else f"scratch{s['generator_layers']}x{s['generator_width']}"
    return f"{_fmt(base)}-f{_fmt(s['generator_fraction'])}-e{s['generator_epochs']}"


@dataclass
class Paths:
    """The main workflow's corpus (the study's input) and the study folder."""

    corpus: Path
    study_dir: Path
    python: str = sys.executable
    project: Path = Path("project.yml")

    @property
    def train(self) -> Path:
        return self.corpus / "train.spacy"

    @property
    def validation(self) -> Path:
        return self.corpus / "validation.spacy"

    @property
    def test(self) -> Path:
        return self.corpus / "test.spacy"

    @property
    def tokenizer(self) -> Path:
        return self.corpus / "tokenizer"

    def shared(self, kind: str, key: str) -> Path:
        return self.study_dir / "shared" / kind / key


VAR = re.compile(r"\$\{vars\.(\w+)\}")
# The workflow's own files that a study step reads or writes: each is given
# the study's file in its place (see `WorkflowCommands.lines`).
WORKFLOW_PATH = re.compile(r"^(corpus|training|packages)/")


class WorkflowCommands:
    """The command lines of project.yml's commands, as a study condition runs
    them: its settings for the vars, the study's files for the workflow's."""

    def __init__(self, project_file: str | Path, python: str = sys.executable):
        project = yaml.safe_load(Path(project_file).read_text(encoding="utf-8"))
        self.scripts = {command["name"]: command.get("script", []) for command in project.get("commands", [])}
        self.project_file, self.python = Path(project_file), python

    def _script(self, name: str) -> List[str]:
        if name not in self.scripts:
            raise StudyError(f"{self.project_file}: no command {name!r}, which the study runs")
        return self.scripts[name]

    def variables(self, *names: str) -> List[str]:
        """The vars the commands' lines use: what their artifact depends on."""
        return sorted({var for name in names for line in self._script(name) for var in VAR.findall(line)})

    def lines(self, name: str, values: Mapping[str, Any], files: Mapping[str, Path | str]) -> List[List[str]]:
        """The command's lines as argument lists; a workflow path that
        `files` does not map is an error (the study has no file for it)."""
        commands = []
        for line in self._script(name):
            missing = sorted(set(VAR.findall(line)) - set(values))
            if missing:
                raise StudyError(f"{self.project_file}: command {name!r} uses vars the study does not set: "
                                 f"{', '.join(missing)}")
            # Vars first: a path may be built from one (`${vars.generator_corpus}/train.spacy`).
            tokens = [VAR.sub(lambda match: str(values[match.group(1)]), token) for token in shlex.split(line)]
            unmapped = [token for token in tokens if WORKFLOW_PATH.match(token) and token not in files]
            if unmapped:
                raise StudyError(f"{self.project_file}: command {name!r} reads or writes {', '.join(unmapped)}, "
                                 "which the study has no file for")
            argv = [str(files[token]) if token in files else token for token in tokens]
            commands.append([self.python if argv[0] == "python" else argv[0], *argv[1:]])
        return commands


Runner = Callable[[List[str]], None]


def run_command(command: List[str]) -> None:
    """Run one step's command (its output shows as it runs); fail loudly."""
    print("$ " + " ".join(command), flush=True)
    completed = subprocess.run(command)
    if completed.returncode:
        raise RuntimeError(f"command failed with exit status {completed.returncode}: {' '.join(command)}")


class Artifacts:
    """Builds (or reuses) the study's artifacts; records each one's wall time."""

    def __init__(self, paths: Paths, run: Runner = run_command):
        self.paths = paths
        self.run = run
        self.workflow = WorkflowCommands(paths.project, paths.python)

    def _build(self, kind: str, key: str, commands: Callable[[Path], List[List[str]]],
               steps: List[Dict[str, Any]], enough: Callable[[Dict[str, Any]], bool] = lambda record: True,
               resumable: bool = False, record: Optional[Dict[str, Any]] = None) -> Path:
        """Build an artifact unless a finished one is `enough`. An unfinished
        folder is removed first, unless its commands resume by themselves."""
        folder = self.paths.shared(kind, key)
        done = folder / "done.json"
        if done.is_file():
            finished = json.loads(done.read_text(encoding="utf-8"))
            if enough(finished):
                steps.append({"step": kind, "key": key, "seconds": finished["seconds"], "reused": True})
                return folder
            if not resumable:
                done.unlink()  # to be rebuilt
            # A resumable artifact keeps its record while it grows: its commands
            # replace the finished output only when they end, so a smaller
            # request after an interrupted growth still finds it.
        if folder.exists() and not resumable:
            shutil.rmtree(folder)  # left by an interrupted run: start it again
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        planned = commands(folder)
        for command in planned:
            self.run(command)
        seconds = time.perf_counter() - start
        write_json(done, {"step": kind, "key": key, "seconds": round(seconds, 1), "commands": planned, **(record or {})})
        steps.append({"step": kind, "key": key, "seconds": round(seconds, 1), "reused": False})
        return folder

    def script(self, name: str, *args: Any) -> List[str]:
        """A study-only step (`subset_corpus`, one pipeline's evaluation, the privacy report without a wheel)."""
        return [self.paths.python, f"scripts/{name}.py", *[str(a) for a in args]]

    def workflow_lines(self, command: str, s: Mapping[str, Any], seed: int, files: Mapping[str, Path | str],
                       **values: Any) -> List[List[str]]:
        """project.yml's `command` with the condition's settings and seed (and
        `values` on top) and the study's files for the workflow's."""
        corpus = {"corpus/train.spacy": self.paths.train, "corpus/validation.spacy": self.paths.validation,
                  "corpus/test.spacy": self.paths.test, "corpus/tokenizer": self.paths.tokenizer}
        return self.workflow.lines(command, {**s, "seed": seed, **values}, {**corpus, **files})

    def key_names(self, *commands: str, study: Sequence[str] = (), leave: Sequence[str] = ()) -> List[str]:
        """The settings an artifact depends on: the vars its workflow commands
        use (the seed and upstream artifacts are keyed apart) and `study`'s."""
        return sorted(set(self.workflow.variables(*commands)) - {"seed", *leave} | set(study))

    def gold_subset(self, fraction: float, seed: int, steps: List[Dict[str, Any]]) -> Path:
        """Nested: one seeded document order, each fraction a prefix of it."""
        if fraction == 1.0:
            return self.paths.train
        folder = self._build(
            "gold_subset", f"{_fmt(fraction)}-seed{seed}",
            lambda out: [self.script("subset_corpus", self.paths.train, out / "train.spacy",
                                     "--fraction", fraction, "--seed", seed)],
            steps,
        )
        return folder / "train.spacy"

    def annotator(self, s: Mapping[str, Any], seed: int, steps: List[Dict[str, Any]]) -> Path:
        train = self.gold_subset(s["annotator_fraction"], seed, steps)
        commands = ("train-annotator", "build-annotator")
        folder = self._build(
            "annotator",
            artifact_key(f"f{_fmt(s['annotator_fraction'])}-e{s['annotator_epochs']}"
                         + (f"-min{s['annotator_min_steps']}" if s["annotator_min_steps"] else ""), s,
                         self.key_names(*commands, study=["annotator_fraction"]), seed),
            lambda out: [
                line
                for command in commands
                for line in self.workflow_lines(command, s, seed, {
                    "corpus/train.spacy": train, "training/annotator/model": out / "model",
                    "training/annotator/pipeline": out / "pipeline"})
            ],
            steps,
        )
        return folder / "pipeline"

    def gold_pipeline(self, s: Mapping[str, Any], seed: int, steps: List[Dict[str, Any]]) -> Path:
        train = self.gold_subset(s["annotator_fraction"], seed, steps)
        folder = self._build(
            "gold_pipeline",
            artifact_key(f"f{_fmt(s['annotator_fraction'])}", s,
                         self.key_names("train-gold", study=["annotator_fraction"]), seed),
            lambda out: self.workflow_lines("train-gold", s, seed, {"corpus/train.spacy": train, "training/gold": out}),
            steps,
        )
        return folder / "model-best"

    def surrogated_notes(self, s: Mapping[str, Any], seed: int, train: Path,
                         steps: List[Dict[str, Any]]) -> Dict[str, Path]:
        """With `generator_corpus` "corpus/surrogated": its train and
        validation files, `train` (a gold subset) and the validation notes
        surrogated by `surrogate-gold`; nothing for the notes as written."""
        if s["generator_corpus"] == "corpus":
            return {}
        folder = self._build(
            "surrogated", artifact_key(Path(train).parent.name, s, self.key_names("surrogate-gold"), seed, str(train)),
            lambda out: self.workflow_lines("surrogate-gold", s, seed, {
                "corpus/train.spacy": train, "corpus/surrogated": out}),
            steps,
        )
        return {f"{s['generator_corpus']}/{split}.spacy": folder / f"{split}.spacy" for split in ("train", "validation")}

    def generator(self, s: Mapping[str, Any], seed: int, steps: List[Dict[str, Any]]) -> str:
        if s["generator_fraction"] == 0:
            return s["generator_base"]  # no adaptation: the pretrained base as it is
        train = self.gold_subset(s["generator_fraction"], seed, steps)
        notes = {"corpus/train.spacy": train, **self.surrogated_notes(s, seed, train, steps)}
        folder = self._build(
            "generator", artifact_key(generator_label(s), s, self.key_names("adapt-generator"), seed),
            # The subset is the study's generator_fraction: the script adapts on all of it.
            lambda out: self.workflow_lines("adapt-generator", s, seed, {**notes, "training/generator": out},
                                            generator_fraction=1.0),
            steps,
        )
        return str(folder)

    def generation(self, s: Mapping[str, Any], seed: int, steps: List[Dict[str, Any]]) -> Path:
        """One growing corpus per generator: a condition asking for more than
        it holds extends it (generate.py resumes), smaller ones take prefixes."""
        generator = self.generator(s, seed, steps)
        size_multiple = s["size_multiple"]
        names = self.key_names("adapt-generator", "generate", leave=["size_multiple"])
        folder = self._build(
            "generation", artifact_key(generator_label(s), s, names, seed),
            # Prompts from the validation notes as the generator learnt them; the whole gold train sets the target.
            lambda out: self.workflow_lines("generate", s, seed, {
                **self.surrogated_notes(s, seed, self.paths.train, steps),
                "training/generator": generator, "corpus/synthetic/generated.jsonl": out / "generated.jsonl",
                "corpus/synthetic/generation_stats.json": out / "generation_stats.json"}),
            steps,
            enough=lambda finished: finished["size_multiple"] >= size_multiple,
            resumable=True,
            record={"size_multiple": size_multiple},
        )
        return folder / "generated.jsonl"

    def synthetic_corpus(self, s: Mapping[str, Any], seed: int, generation: Path, annotator: Path,
                         steps: List[Dict[str, Any]]) -> Path:
        """The prefix of `generation` holding size_multiple x gold train words,
        labelled by the condition's annotator, and its train notes with their
        surrogate copies and narrative notes (as `all`)."""
        commands = ("annotate", "augment")
        key = artifact_key(
            f"x{_fmt(s['size_multiple'])}-annotator-f{_fmt(s['annotator_fraction'])}-{generator_label(s)}",
            s, self.key_names(*commands, study=["size_multiple"], leave=["labeller_pipeline"]), seed,
            generation.parent.name, annotator.parent.name,
        )

        def build(out: Path) -> List[List[str]]:
            write_prefix(generation, out / "generated.jsonl", s["size_multiple"], self.paths.train)
            files = {"corpus/synthetic/generated.jsonl": out / "generated.jsonl", "corpus/synthetic": out,
                     "corpus/synthetic/train.spacy": out / "train.spacy",
                     "corpus/synthetic/train_augmented.spacy": out / "train_augmented.spacy"}
            return [line for command in commands
                    for line in self.workflow_lines(command, s, seed, files, labeller_pipeline=annotator)]

        return self._build("synthetic_corpus", key, build, steps)

    def synthetic_pipeline(self, s: Mapping[str, Any], seed: int, corpus: Path, steps: List[Dict[str, Any]]) -> Path:
        key = artifact_key(corpus.name.split("-seed")[0], s, self.key_names("train-synthetic"), seed, corpus.name)
        annotated = json.loads((corpus / "stats.json").read_text(encoding="utf-8"))["splits"]["train"]["entities"]
        # An annotator that labels nothing (too little gold, too few steps) leaves
        # the NER without labels: it can predict none however long it trains, and
        # spaCy trains such a model many times slower. One step gives the
        # pipeline that the evaluation then scores.
        max_steps = s["train_max_steps"] if annotated else 1
        folder = self._build(
            "synthetic_pipeline", key,
            lambda out: self.workflow_lines("train-synthetic", s, seed, {
                "training/synthetic": out, "corpus/synthetic/train_augmented.spacy": corpus / "train_augmented.spacy",
                "corpus/synthetic/validation.spacy": corpus / "validation.spacy"}, train_max_steps=max_steps),
            steps,
            record={"train_entities": annotated, "max_steps": max_steps},
        )
        return folder / "model-best"

    def scores(self, pipeline: Path, gpu_id: int, steps: List[Dict[str, Any]]) -> Dict[str, Any]:
        """The pipeline's scores on the gold test set (computed once per pipeline, on GPU `gpu_id`)."""
        folder = self._build(
            "evaluation", f"{pipeline.parent.parent.name}-{pipeline.parent.name}",
            lambda out: [self.script("evaluate", self.paths.test, out, "--pipeline", f"model={pipeline}",
                                     "--gpu-id", gpu_id)],
            steps,
        )
        return json.loads((folder / "evaluation.json").read_text(encoding="utf-8"))["pipelines"]["model"]

    def privacy(self, s: Mapping[str, Any], seed: int, corpus: Path, steps: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Against the gold text the generator learnt from."""
        gold = self.gold_subset(s["generator_fraction"], seed, steps) if s["generator_fraction"] else self.paths.train
        folder = self._build(
            "privacy", corpus.name,
            lambda out: [self.script("privacy_report", gold, corpus / "generated.jsonl", out, "--ngram", 5, "--ngram", 8)],
            steps,
        )
        return json.loads((folder / "privacy.json").read_text(encoding="utf-8"))


def write_prefix(generation: Path, output: Path, size_multiple: float, gold_train: Path) -> int:
    """Copy the notes of `generation` up to the one that reaches the target
    word count (exactly what generating that size would have kept)."""
    from .synthesis import corpus_size, target_size, word_count

    target = target_size(size_multiple, corpus_size(gold_train)[1])
    kept, words = [], 0
    with generation.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if words >= target:
                break
            kept.append(line)
            try:
                words += word_count(json.loads(line)["text"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{generation}:{number}: not a generated record ({err!r})") from None
    if words < target:
        raise RuntimeError(f"{generation}: holds {words} words, fewer than the {target} asked for")
    with atomic_path(output) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")
    return len(kept)


def headline(scores: Mapping[str, Any]) -> Dict[str, Any]:
    """The figures a study keeps of an evaluation."""
    return {
        "entity": scores["entity"]["micro"],
        "token": scores["token"]["micro"],
        "meddocan": {name: scores["meddocan"][name]["f"] for name in scores["meddocan"]},
        "per_label": {label: s["f"] for label, s in scores["entity"]["per_label"].items()},
    }


def privacy_figures(report: Mapping[str, Any]) -> Dict[str, Any]:
    total = report["pii_reuse"]["total"]
    return {
        "ngram_recall": {n: figures["recall"] for n, figures in report["ngram_recall"].items()},
        "distinctive_pii_reused": total["distinctive_reappearing"],
        "distinctive_pii": total["distinctive"],
        "distinctive_pii_share": total["distinctive_share"],
    }


def run_condition(condition: Condition, artifacts: Artifacts) -> Dict[str, Any]:
    s, seed = condition.settings, condition.seed
    steps: List[Dict[str, Any]] = []
    annotator = artifacts.annotator(s, seed, steps)
    gold = artifacts.gold_pipeline(s, seed, steps)
    generation = artifacts.generation(s, seed, steps)
    corpus = artifacts.synthetic_corpus(s, seed, generation, annotator, steps)
    synthetic = artifacts.synthetic_pipeline(s, seed, corpus, steps)
    annotated = json.loads((corpus / "stats.json").read_text(encoding="utf-8"))
    return {
        "status": "finished",
        "scores": {
            "synthetic": headline(artifacts.scores(synthetic, s["gpu_id"], steps)),
            "gold": headline(artifacts.scores(gold, s["gpu_id"], steps)),
            "annotator": headline(artifacts.scores(annotator, s["gpu_id"], steps)),
        },
        "privacy": privacy_figures(artifacts.privacy(s, seed, corpus, steps)),
        "synthetic_corpus": {"path": str(corpus), **annotated["splits"]},
        "steps": steps,
        "seconds_built": round(sum(step["seconds"] for step in steps if not step["reused"]), 1),
    }


def condition_result_path(paths: Paths, condition: Condition) -> Path:
    return paths.study_dir / "conditions" / condition.key / "result.json"


def collect_results(study: Study, paths: Paths) -> List[Dict[str, Any]]:
    """Every condition of the study: its result if finished, else its status."""
    results = []
    for condition in expand(study):
        target = condition_result_path(paths, condition)
        if target.is_file():
            results.append(json.loads(target.read_text(encoding="utf-8")))
            continue
        reason = skip_reason(condition.settings)
        results.append({"key": condition.key, "seed": condition.seed, "axes": condition.axes,
                        "settings": condition.settings, "status": "skipped" if reason else "not run",
                        "reason": reason or "not run yet"})
    return results


def run_study(study: Study, paths: Paths, *, axes: Optional[Sequence[str]] = None, run: Runner = run_command,
              log: Callable[[str], None] = print,
              on_result: Optional[Callable[[List[Dict[str, Any]]], Any]] = None) -> List[Dict[str, Any]]:
    """Run (or resume) every condition (of `axes` only, if given); after each
    one `on_result` gets all results so far. Returns all the study's results."""
    for needed in (paths.train, paths.validation, paths.test, paths.tokenizer):
        if not needed.exists():
            raise FileNotFoundError(f"{needed}: missing; run the main workflow's `corpus` step first")
    conditions = expand(study)
    todo = [c for c in conditions if axes is None or any(a["axis"] in axes for a in c.axes)]
    artifacts = Artifacts(paths, run)
    start = time.perf_counter()
    for number, condition in enumerate(todo, 1):
        target = condition_result_path(paths, condition)
        elapsed = (time.perf_counter() - start) / 60
        if target.is_file():
            log(f"[{number}/{len(todo)}] {condition.key}: finished before, reused ({elapsed:.1f} min so far)")
            continue
        result = {"key": condition.key, "seed": condition.seed, "axes": condition.axes, "settings": condition.settings}
        reason = skip_reason(condition.settings)
        log(f"[{number}/{len(todo)}] {condition.key}: {'skipped: ' + reason if reason else 'running'} "
            f"({elapsed:.1f} min so far)")
        if reason:
            result.update(status="skipped", reason=reason)
        else:
            began = time.perf_counter()
            result.update(run_condition(condition, artifacts))
            result["seconds"] = round(time.perf_counter() - began, 1)
        write_json(target, result)
        if on_result:
            on_result(collect_results(study, paths))
    log(f"{len(todo)} condition(s) done in {(time.perf_counter() - start) / 60:.1f} min")
    return collect_results(study, paths)
