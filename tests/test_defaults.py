"""One source for every default: project.yml's vars. A script option that a
workflow command sets from a var has that var's value as its own default, so
that a bare script run trains what the workflow measured."""

import ast
import inspect
import re
from pathlib import Path

import pytest
import srsly
from confection import Config
from conftest import REPO, load_script

SCRIPT = re.compile(r"\bpython\s+(scripts/\S+\.py)\b")
OPTION = re.compile(r'--([a-z][a-z0-9-]*)\s+"?\$\{vars\.(\w+)\}"?(?![\w/.])')  # the whole value, not a path in it
FLAG = re.compile(r"--\$\{vars\.(\w+)\}")


def script_options(script: str):
    """{option name: (default, flag names)} of a typer script's `main`."""
    module = load_script(Path(script).stem)
    options = {}
    for name, parameter in inspect.signature(module.main).parameters.items():
        info = parameter.default
        declared = [d for d in getattr(info, "param_decls", None) or () if d.startswith("--")]
        names = [part.lstrip("-") for d in declared for part in d.split("/")] or [name.replace("_", "-")]
        if isinstance(getattr(info, "default", None), bool) and len(names) == 1:
            names.append(f"no-{names[0]}")  # typer's own --flag/--no-flag
        for option in names:
            options[option] = (getattr(info, "default", info), names)
    return options


def same(default, expected) -> bool:
    if isinstance(default, (int, float)) and not isinstance(default, bool) and not isinstance(expected, str):
        return default == pytest.approx(expected)
    return str(default) == str(expected)


# Script options whose default is no value of its own: None hands the choice
# to the file named here (checked below) or to a documented equivalent.
GENERATE_CONFIG = {"top-p": "top_p", "temperature": "temperature", "batch-size": "batch_size", "seed": "seed",
                   "device": "device"}
EQUIVALENT = {("scripts/train_annotator.py", "base-model"): "the offline all-MiniLM-L6-v2 from its package, "
              "the model export-encoder copies to annotator_base"}
# A script a second command runs with a var of its own: its default is the first command's.
SECOND_USE = {("train-labeller", "scripts/augment.py", "copies"): "labeller_surrogate_copies: the labeller's "
              "copies, for a generator adapted on surrogated notes (0 for one on the notes as written)"}


def set_from_vars():
    """(command, script, option, var) for every `--option ${vars.x}` and `--${vars.flag}` in project.yml."""
    project = srsly.read_yaml(REPO / "project.yml")  # uninterpolated: the ${vars.x} are still there
    for command in project["commands"]:
        for line in command.get("script", []):
            for script in SCRIPT.findall(line):
                tail = line.split(script, 1)[1]
                for option, var in OPTION.findall(tail):
                    yield command["name"], script, option, var
                for var in FLAG.findall(tail):
                    yield command["name"], script, None, var


def test_script_defaults_are_the_project_vars():
    project = srsly.read_yaml(REPO / "project.yml")
    variables = project["vars"]
    generate_model = Config().from_disk(REPO / variables["generate_config"], interpolate=False)["components"]["llm"]["model"]
    options = {}
    disagree = []
    checked = 0
    for command, script, option, var in set_from_vars():
        options.setdefault(script, script_options(script))
        value = variables[var]
        if option is None:  # a flag pair: the var names the side the workflow takes
            default, names = options[script][value]
            expected = names.index(value) == 0
        else:
            assert option in options[script], f"{command}: {script} has no option --{option}"
            default, _ = options[script][option]
            expected = value
        checked += 1
        if default is Ellipsis or (script, option) in EQUIVALENT:  # required, or an equivalent
            continue
        if (command, script, option) in SECOND_USE:
            continue
        if default is None and script == "scripts/generate.py":
            default = generate_model[GENERATE_CONFIG[option]]
        if not same(default, expected):
            disagree.append(f"{command}: {script} --{option or value} defaults to {default!r}, "
                            f"project.yml's {var} is {value!r}")
    assert checked > 40
    assert not disagree, "script defaults that differ from project.yml:\n" + "\n".join(disagree)


def test_library_functions_default_to_what_their_scripts_do():
    """A script's option passed on as `name=name` to a synthdeid function
    has the function's default for it (a caller of the function gets what
    the script runs)."""
    disagree = []
    checked = 0
    for script in sorted((REPO / "scripts").glob("*.py")):
        if script.stem.startswith("benchmark_"):  # benchmarks run smaller settings on purpose, and say so
            continue
        module = load_script(script.stem)
        main = getattr(module, "main", None)
        if main is None:
            continue
        parameters = inspect.signature(main).parameters
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            function = getattr(module, node.func.id, None)
            if not getattr(function, "__module__", "").startswith("synthdeid"):
                continue
            signature = inspect.signature(function).parameters
            for keyword in node.keywords:
                if not (isinstance(keyword.value, ast.Name) and keyword.value.id in parameters):
                    continue
                ours = signature.get(keyword.arg)
                theirs = getattr(parameters[keyword.value.id].default, "default", parameters[keyword.value.id].default)
                if ours is None or ours.default is inspect.Parameter.empty or theirs in (None, Ellipsis):
                    continue
                checked += 1
                if not same(ours.default, theirs):
                    disagree.append(f"{script.name}: {node.func.id}({keyword.arg}=...) defaults to {ours.default!r}, "
                                    f"the script's --{keyword.value.id.replace('_', '-')} to {theirs!r}")
    assert checked > 40
    assert not disagree, "function defaults that differ from their scripts':\n" + "\n".join(disagree)
