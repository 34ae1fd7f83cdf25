"""project.yml hygiene: a command's `deps` name every file its script runs on,
so that weasel reruns the command when one of them changes."""

import ast
import re
from pathlib import Path
from typing import Sequence, Set

from conftest import REPO
from weasel.util import load_project_config

PACKAGE = "synthdeid"
SCRIPT = re.compile(r"\bpython\s+(scripts/\S+\.py)\b")
SPACY_TRAIN = re.compile(r"\bpython\s+-m\s+spacy\s+train\s+(\S+)")


def package_module(parts: Sequence[str]) -> Set[str]:
    """`{"a/b"}` if synthdeid/a/b.py exists (not a package, a class or a
    function imported with `from synthdeid.a import x`)."""
    name = "/".join(parts)
    return {name} if parts and (REPO / PACKAGE / f"{name}.py").is_file() else set()


def imported_modules(path: Path) -> Set[str]:
    """Names ("io", "training/hf_ner") of the synthdeid modules a file imports
    directly (anywhere in it, lazy imports included, for type checkers only
    not); relative imports count inside the package only."""
    inside = REPO / PACKAGE in path.parents
    package = list(path.parent.relative_to(REPO / PACKAGE).parts) if inside else []
    found: Set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for statement in block.body for node in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE:
                    found |= package_module(parts[1:])
        elif isinstance(node, ast.ImportFrom):
            parts = node.module.split(".") if node.module else []
            if node.level == 0:
                if parts[:1] != [PACKAGE]:
                    continue
                base = parts[1:]
            elif inside:
                base = package[: len(package) - (node.level - 1)] + parts
            else:
                continue
            found |= package_module(base)  # from synthdeid.m import x / from .m import x
            for alias in node.names:  # from synthdeid import m / from . import m
                found |= package_module(base + [alias.name])
    return found


def module_closure(script: Path) -> Set[str]:
    """Every synthdeid module a script imports, directly or through others."""
    todo, seen = list(imported_modules(script)), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(REPO / PACKAGE / f"{name}.py"))
    return seen


def test_module_closure_follows_every_import_form(tmp_path):
    # privacy imports corpus and io, and corpus imports tokenizer; the JSONL
    # reader is io's, so the privacy report does not load the annotator's code
    privacy = module_closure(REPO / "scripts" / "privacy_report.py")
    assert {"training/privacy", "training/corpus", "training/tokenizer", "io"} <= privacy
    assert "training/hf_ner" not in privacy
    script = tmp_path / "x.py"
    script.write_text("import synthdeid.redact\nfrom synthdeid import rules, __version__\n"
                      "from synthdeid.training import corpus\nfrom synthdeid.training.metrics import prf\n")
    assert imported_modules(script) == {"redact", "rules", "training/corpus", "training/metrics"}
    # Relative imports from inside the training package, up and across.
    assert {"io", "redact", "training/narrative"} <= imported_modules(REPO / PACKAGE / "training" / "augment.py")


# Pipelines whose custom component comes from a synthdeid module (through its
# spaCy entry point): a step that loads one runs that module's code.
# The committee runs the annotator's pipeline as one of its members.
PIPELINE_MODULES = {
    "training/annotator/pipeline": {"training/hf_ner"},
    "training/committee": {"training/committee", "training/hf_ner"},
}
# Modules a step reads as files rather than imports: the wheel ships the redactor's and the rules' source.
FILE_DEPS = {"package": {"synthdeid/redact.py", "synthdeid/rules.py"}}


# Data a module reads, by module.
MODULE_DATA = {"kinds": [f"{PACKAGE}/schemes"], "training/frames": [f"{PACKAGE}/frames"]}


def test_commands_depend_on_their_scripts_modules_and_configs():
    """Every module a step runs is a dep (else weasel skips a changed step),
    and no module it does not run is (else a change reruns it for nothing)."""
    project = load_project_config(REPO)
    missing, stale = [], []
    for command in project["commands"]:
        deps = set(command.get("deps", []))
        used = set(FILE_DEPS.get(command["name"], set()))
        # A script among the deps is run by the step's own script (the ablation study runs them).
        for script in (dep for dep in deps if dep.startswith("scripts/") and dep.endswith(".py")):
            used |= {f"{PACKAGE}/{m}.py" for m in module_closure(REPO / script)}
        for pipeline, modules in PIPELINE_MODULES.items():
            if pipeline in deps:
                closure = set(modules).union(*(module_closure(REPO / PACKAGE / f"{m}.py") for m in modules))
                needed = {f"{PACKAGE}/{m}.py" for m in closure}
                missing += [f"{command['name']}: {dep} (loads {pipeline})" for dep in sorted(needed - deps)]
                used |= needed
        for line in command.get("script", []):
            for script in SCRIPT.findall(line):
                needed = {script} | {f"{PACKAGE}/{m}.py" for m in module_closure(REPO / script)}
                missing += [f"{command['name']}: {dep}" for dep in sorted(needed - deps)]
                used |= needed
            missing += [f"{command['name']}: {cfg}" for cfg in SPACY_TRAIN.findall(line) if cfg not in deps]
        for module, data in MODULE_DATA.items():  # files a module reads are deps with it
            if f"{PACKAGE}/{module}.py" in used:
                used |= set(data)
                missing += [f"{command['name']}: {path} (read by {module}.py)" for path in data if path not in deps]
        stale += [f"{command['name']}: {dep}" for dep in sorted(deps - used) if dep.startswith(f"{PACKAGE}/")]
    assert not missing, "deps missing from project.yml:\n" + "\n".join(missing)
    assert not stale, "deps on modules the step does not run:\n" + "\n".join(stale)


def test_flag_vars_can_be_overridden_on_the_command_line():
    # weasel drops every "--" of an override ("--vars.qlora=--qlora" arrives
    # as "qlora"), so a var holds a flag's name and the command adds the dashes.
    from weasel.util import parse_config_overrides

    defaults = load_project_config(REPO)
    assert not [name for name, value in defaults["vars"].items() if str(value).startswith("--")]
    flips = {"annotator_word_features": "no-word-features", "annotator_group_by_length": "no-group-by-length",
             "qlora": "qlora"}
    overrides = parse_config_overrides([f"--vars.{name}={value}" for name, value in flips.items()])
    project = load_project_config(REPO, overrides=overrides)
    scripts = {command["name"]: " ".join(command["script"]) for command in project["commands"]}
    assert " --no-word-features " in scripts["train-annotator"]
    assert " --no-group-by-length " in scripts["train-annotator"]
    assert " --qlora " in scripts["adapt-generator"]


def test_a_hub_id_base_and_a_device_reach_train_annotator(tmp_path):
    """`--vars.annotator_base=<hub id>` must not stop weasel with a missing
    dependency (a hub id is no path), and `--vars.device` must reach the
    annotator's training, the costliest step."""
    import shutil
    import subprocess
    import sys

    project = load_project_config(REPO)
    (command,) = [c for c in project["commands"] if c["name"] == "train-annotator"]
    shutil.copy(REPO / "project.yml", tmp_path / "project.yml")
    for dep in command["deps"]:
        (tmp_path / dep).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / dep).touch()
    run = subprocess.run(
        [sys.executable, "-m", "weasel", "run", "train-annotator", str(tmp_path), "--dry",
         "--vars.annotator_base=some-org/some-encoder", "--vars.device=cuda:1"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "--base-model some-org/some-encoder" in run.stdout and "--device cuda:1" in run.stdout, run.stdout


def test_every_script_that_can_run_on_a_gpu_gets_the_projects_device():
    """A script with a --gpu-id (spaCy pipelines) or --device (torch models)
    option is given the project's var in every command that runs it, and so
    is `spacy train`: no step falls back to the CPU behind the user's back."""
    import inspect

    from conftest import load_script
    from weasel.util import parse_config_overrides

    overrides = parse_config_overrides(["--vars.gpu_id=7", "--vars.device=cuda:7"])
    project = load_project_config(REPO, overrides=overrides)
    checked = set()
    for command in project["commands"]:
        for line in command["script"]:
            wanted = []
            if SPACY_TRAIN.search(line):
                wanted.append("--gpu-id 7")
            for script in SCRIPT.findall(line):
                options = inspect.signature(load_script(Path(script).stem).main).parameters
                wanted += [flag for name, flag in (("gpu_id", "--gpu-id 7"), ("device", "--device cuda:7"))
                           if name in options]
                checked.add(Path(script).stem)
            missing = [flag for flag in wanted if flag not in line]
            assert not missing, f"{command['name']}: {line} lacks {missing}"
    assert {"annotate", "relabel", "evaluate", "membership", "tune_break_penalty", "train_annotator"} <= checked
