"""The ablation study: study files, conditions, resume, aggregation and plots
(on hand-made results), and a tiny real study end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthdeid.training.ablation import (
    Artifacts,
    Paths,
    StudyError,
    collect_results,
    expand,
    load_study,
    run_command,
    run_study,
    write_prefix,
)
from synthdeid.training.ablation_report import aggregate, mean_sd, study_seconds, write_report

REPO = Path(__file__).resolve().parents[1]
LABELS = ["FECHAS", "TERRITORIO"]


def study_file(tmp_path, text):
    path = tmp_path / "study.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_committed_studies_load():
    for name in ("configs/ablation.yml", "configs/ablation_cpu.yml"):
        study = load_study(REPO / name, REPO / "project.yml")
        names = [axis.name for axis in study.axes]
        assert names == ["gold_fraction", "adaptation_fraction", "annotator_quality", "corpus_size", "generator_size"]
        assert expand(study)


def test_default_condition_runs_once_and_scratch_without_data_is_skipped(tmp_path):
    study = load_study(study_file(tmp_path, """
seeds: [0, 1]
axes:
  adaptation:
    sets: [generator_fraction]
    values: [0, 0.5, 1.0]
  size:
    sets: [size_multiple]
    values: [1.0, 2.0]
"""), REPO / "project.yml")
    conditions = expand(study)
    keys = [c.key for c in conditions]
    # (3 + 2 values) x 2 seeds, the default (fraction 1.0 = size 1.0) shared by both axes
    assert len(conditions) == 8 and len(set(keys)) == 8
    default = [c for c in conditions if c.key == "default-seed0"][0]
    assert default.axes == [{"axis": "adaptation", "value": "1.0"}, {"axis": "size", "value": "1.0"}]
    results = collect_results(study, Paths(tmp_path / "corpus", tmp_path / "study"))
    skipped = [r for r in results if r["status"] == "skipped"]
    assert {r["key"] for r in skipped} == {"generator_fraction=0-seed0", "generator_fraction=0-seed1"}
    assert "scratch" in skipped[0]["reason"]


def test_settings_alike_in_their_first_40_characters_stay_two_conditions(tmp_path):
    study = load_study(study_file(tmp_path, """
axes:
  encoder:
    sets: [annotator_base]
    values: [models/sentence-transformers/all-MiniLM-L6-v2, models/sentence-transformers/all-MiniLM-L12-v2]
"""), REPO / "project.yml")
    conditions = [c for c in expand(study) if c.key != "default-seed0"]
    assert len(conditions) == 2 and conditions[0].key != conditions[1].key
    assert [c.settings["annotator_base"] for c in conditions] == [
        "models/sentence-transformers/all-MiniLM-L6-v2", "models/sentence-transformers/all-MiniLM-L12-v2"]
    assert [c.axes for c in conditions] == [[{"axis": "encoder", "value": "models/sentence-transformers/all-MiniLM-L6-v2"}],
                                            [{"axis": "encoder", "value": "models/sentence-transformers/all-MiniLM-L12-v2"}]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("axes:\n  a:\n    sets: [generator_fractoin]\n    values: [0.5]\n", "unknown setting 'generator_fractoin'"),
        ("axes:\n  a:\n    values: [0.5]\n", "needs 'sets'"),
        ("axes:\n  a:\n    sets: [annotator_epochs]\n    values: [1.5]\n", "annotator_epochs must be int"),
        ("seeds: []\naxes:\n  a:\n    sets: [size_multiple]\n    values: [1]\n", "seeds must be"),
        ("axes: {}\n", "non-empty 'axes'"),
        ("axes:\n  a:\n    sets: [size_multiple]\n    values: [1]\n    colour: red\n", "unknown key(s) colour"),
        ("axes: [\n", "not valid YAML"),
        ("axes:\n  a:\n    sets: [annotator_fraction]\n    values: [0]\n", "annotator_fraction must be in (0, 1]"),
        ("axes:\n  a:\n    sets: [generator_fraction]\n    values: [1.5]\n", "generator_fraction must be in [0, 1]"),
    ],
)
def test_bad_study_files_name_the_file_and_the_value(tmp_path, text, message):
    path = study_file(tmp_path, text)
    with pytest.raises(StudyError) as err:
        load_study(path, REPO / "project.yml")
    assert str(path) in str(err.value) and message in str(err.value)


def test_prefix_is_what_a_smaller_generation_keeps(tmp_path):
    from spacy.tokens import DocBin
    import spacy

    nlp = spacy.blank("es")
    DocBin(docs=[nlp("uno dos tres cuatro cinco seis siete ocho nueve diez")]).to_disk(tmp_path / "gold.spacy")
    generation = tmp_path / "generated.jsonl"
    generation.write_text("".join(json.dumps({"id": i, "text": "a b c"}) + "\n" for i in range(6)), encoding="utf-8")
    # target ceil(0.7 * 10) = 7 words: notes of 3 words until reached -> 3 notes
    assert write_prefix(generation, tmp_path / "out.jsonl", 0.7, tmp_path / "gold.spacy") == 3
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").open()] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="fewer than"):
        write_prefix(generation, tmp_path / "too_big.jsonl", 2.0, tmp_path / "gold.spacy")
    assert not (tmp_path / "too_big.jsonl").exists()


def fake_result(key, axis, value, settings, synthetic, gold, annotator, recall, seed=0):
    def scores(f):
        return {"entity": {"f": f}, "token": {"f": f + 0.01}, "meddocan": {},
                "per_label": {label: f - 0.1 * i for i, label in enumerate(LABELS)}}

    return {
        "key": key, "seed": seed, "axes": [{"axis": axis, "value": value}], "settings": settings,
        "status": "finished", "seconds": 10.0, "seconds_built": 5.0,
        "scores": {"synthetic": scores(synthetic), "gold": scores(gold), "annotator": scores(annotator)},
        "privacy": {"ngram_recall": {"5": recall, "8": recall / 2}, "distinctive_pii_reused": 3,
                    "distinctive_pii": 100, "distinctive_pii_share": 0.03},
        "steps": [{"step": "annotator", "key": "a", "seconds": 5.0, "reused": False}],
    }


def test_study_seconds_counts_each_build_once_even_if_never_marked_built():
    shared = {"step": "annotator", "key": "a", "seconds": 100.0, "reused": True}
    results = [  # corpus g is generated (7 s), then extended (3 s) by a larger condition
        {"steps": [shared, {"step": "generation", "key": "g", "seconds": 7.0, "reused": False}]},
        {"steps": [shared, {"step": "generation", "key": "g", "seconds": 3.0, "reused": False}]},
        {"steps": [shared, {"step": "generation", "key": "g", "seconds": 3.0, "reused": True}]},
    ]
    assert study_seconds(results) == 110.0


def test_report_aggregates_seeds_and_draws_every_plot(tmp_path):
    study = load_study(study_file(tmp_path, """
seeds: [0, 1]
axes:
  adaptation:
    title: Adaptation data
    sets: [generator_fraction]
    values: [0.5, 1.0]
    paper:
      synthetic: {0.5: 0.97, 1.0: 0.973}
      ngram5_recall: {0.5: 0.3, 1.0: 0.12}
"""), REPO / "project.yml")
    results = [
        fake_result("generator_fraction=0.5-seed0", "adaptation", "0.5", {"generator_fraction": 0.5}, 0.80, 0.95, 0.93, 0.03),
        fake_result("generator_fraction=0.5-seed1", "adaptation", "0.5", {"generator_fraction": 0.5}, 0.84, 0.95, 0.93, 0.05, 1),
        fake_result("default-seed0", "adaptation", "1.0", {"generator_fraction": 1.0}, 0.90, 0.95, 0.94, 0.02),
        {"key": "default-seed1", "seed": 1, "axes": [{"axis": "adaptation", "value": "1.0"}],
         "settings": {"generator_fraction": 1.0}, "status": "not run", "reason": "not run yet"},
    ]
    results[0]["synthetic_corpus"] = {"path": str(tmp_path / "report" / "shared" / "corpus-a"), "train": {}}
    rows = aggregate(study, results)[0]["rows"]
    half = rows[0]["figures"]["synthetic_entity"]
    assert half["mean"] == pytest.approx(0.82) and half["sd"] == pytest.approx(0.02828, abs=1e-4) and half["n"] == 2
    assert rows[1]["figures"]["synthetic_entity"] == {"mean": 0.90, "sd": None, "n": 1}
    assert rows[1]["figures"]["ratio_entity"]["mean"] == pytest.approx(0.90 / 0.95)

    plots = write_report(study, results, tmp_path / "report")
    assert set(plots) == {"adaptation", "annotator_vs_synthetic", "privacy", "per_label"}
    for name in plots.values():
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    published = json.loads((tmp_path / "report" / "report.json").read_text())
    assert published["conditions"][0]["synthetic_corpus"] == {"path": "shared/corpus-a", "train": {}}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| 0.5 | 0.820 ± 0.028 |" in report
    assert "| 1.0 | 0.900 |" in report and "0.973" in report
    assert "3 of 4 conditions finished" in report
    tables, rows = [], []
    for line in report.splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line.count("|"))
        elif rows:
            tables.append(rows)
            rows = []
    assert len(tables) == 2 and all(len(set(rows)) == 1 for rows in tables)  # rows have their header's columns
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(saved["conditions"]) == 4


def test_mean_sd():
    assert mean_sd([1.0]) == {"mean": 1.0, "sd": None, "n": 1}
    assert mean_sd([1.0, 3.0])["sd"] == pytest.approx(2 ** 0.5)


TINY_STUDY = """
seeds: [0]
defaults:
  annotator_base: "{encoder}"
  annotator_epochs: 1
  annotator_batch_size: 8
  annotator_window_words: 64
  train_max_steps: 20
  train_eval_frequency: 10
  generator_epochs: 1
  generator_layers: 1
  generator_width: 32
  generator_heads: 2
  generator_vocab_size: 600
  generator_block_size: 128
  samples_per_prompt: 2
  size_multiple: 0.05
axes:
  corpus_size:
    title: Synthetic corpus size
    sets: [size_multiple]
    values: [0.05, 0.1]
"""


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, meddocan):
    corpus = tmp_path_factory.mktemp("ablation") / "corpus"
    subprocess.run(
        [sys.executable, "scripts/convert_corpus.py", str(meddocan), str(corpus),
         "--limit", "12", "--validation-fraction", "0.25"],
        check=True, cwd=REPO,
    )
    return corpus


def test_a_growing_artifact_stays_usable_for_smaller_requests_while_it_grows(tmp_path):
    ran = []

    def build(size, run):
        artifacts = Artifacts(Paths(tmp_path / "corpus", tmp_path / "study"), run=run)
        return artifacts._build("generation", "g", lambda out: [["grow", str(size)]], [],
                                enough=lambda finished: finished["size_multiple"] >= size, resumable=True,
                                record={"size_multiple": size})

    def interrupted(command):
        ran.append(command)
        raise KeyboardInterrupt

    build(1.0, ran.append)
    with pytest.raises(KeyboardInterrupt):
        build(4.0, interrupted)  # growth dies: the 1x output is still there and recorded
    build(0.5, ran.append)
    assert ran == [["grow", "1.0"], ["grow", "4.0"]]
    build(4.0, ran.append)
    assert ran[-1] == ["grow", "4.0"] and len(ran) == 3
    done = json.loads((tmp_path / "study" / "shared" / "generation" / "g" / "done.json").read_text())
    assert done["size_multiple"] == 4.0


def test_a_synthetic_corpus_without_entities_trains_one_step(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(study_file(tmp_path, TINY_STUDY.format(encoder="unused")), REPO / "project.yml")
    settings = expand(study)[0].settings
    ran = []
    artifacts = Artifacts(Paths(tmp_path / "corpus", tmp_path / "study"), run=ran.append)
    for entities in (0, 7):
        corpus = tmp_path / f"x0.05-annotator-{entities}-seed0-abc"
        corpus.mkdir()
        (corpus / "stats.json").write_text(json.dumps({"splits": {"train": {"entities": entities}}}))
        artifacts.synthetic_pipeline(settings, 0, corpus, [])
    assert [c[c.index("--training.max_steps") + 1] for c in ran] == ["1", "20"]


@pytest.mark.slow
def test_tiny_study_end_to_end_resumes_after_an_interruption(tiny_corpus, minilm_path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    study = load_study(study_file(tmp_path, TINY_STUDY.format(encoder=minilm_path)), REPO / "project.yml")
    paths = Paths(tiny_corpus, tmp_path / "study")
    commands = []

    def interrupted(command):
        commands.append(command)
        # The second condition's synthetic pipeline dies half-way through.
        if "spacy" in command and "/synthetic_pipeline/x0.1-" in " ".join(command):
            Path(command[command.index("--output") + 1], "half-written").write_text("x")
            raise KeyboardInterrupt
        run_command(command)

    with pytest.raises(KeyboardInterrupt):
        run_study(study, paths, run=interrupted)
    results = collect_results(study, paths)
    assert [r["status"] for r in results] == ["finished", "not run"]
    first_run = len(commands)
    # the shared artifacts were built once; the one generation grew from 0.05 to 0.1 (resumed)
    assert sum("scripts/train_annotator.py" in c for c in commands) == 1
    generations = [c for c in commands if "scripts/generate.py" in c]
    assert [c[c.index("--size-multiple") + 1] for c in generations] == ["0.05", "0.1"]
    assert len({c[c.index(str(paths.train)) + 2] for c in generations}) == 1  # same generated.jsonl

    reports = []
    def recorded(command):
        commands.append(command)
        run_command(command)

    results = run_study(study, paths, run=recorded, on_result=reports.append)
    resumed = commands[first_run:]
    # only the unfinished condition's own steps ran again: its corpus was kept,
    # its interrupted pipeline was rebuilt from scratch, then the evaluation
    assert [Path(c[1]).name if c[1] != "-m" else "spacy train" for c in resumed] == [
        "spacy train", "evaluate.py", "privacy_report.py"]
    synthetic = [r for r in (tmp_path / "study" / "shared" / "synthetic_pipeline").iterdir()]
    assert all(not (folder / "half-written").exists() for folder in synthetic)
    assert [r["status"] for r in results] == ["finished", "finished"] and len(reports) == 1
    small, large = results
    assert large["synthetic_corpus"]["train"]["words"] > small["synthetic_corpus"]["train"]["words"]
    # the larger corpus holds the smaller one's notes (generation resumed), so
    # it repeats every gold 5-gram the smaller one does
    assert large["privacy"]["ngram_recall"]["5"] >= small["privacy"]["ngram_recall"]["5"]
    for result in results:
        assert set(result["scores"]) == {"synthetic", "gold", "annotator"}
        assert {step["step"] for step in result["steps"]} >= {"annotator", "gold_pipeline", "generator", "generation",
                                                              "synthetic_corpus", "synthetic_pipeline", "evaluation",
                                                              "privacy"}
    # a third run does nothing, and the report with its plots comes from the script
    subprocess.run(
        [sys.executable, "scripts/ablation.py", str(study.path), str(paths.study_dir), "--corpus", str(tiny_corpus)],
        check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    report = (paths.study_dir / "report.md").read_text()
    assert "2 of 2 conditions finished" in report and "axis_corpus_size.png" in report
    assert (paths.study_dir / "per_label.png").is_file()  # 0.05 is the default condition
    assert (paths.study_dir / "axis_corpus_size.png").read_bytes().startswith(b"\x89PNG")


def workflow_options():
    """{script: option names} that `all`'s commands pass (flags by their
    positive name), from project.yml as written."""
    import re

    import srsly

    project = srsly.read_yaml(REPO / "project.yml")
    steps = set(project["workflows"]["all"])
    options = {}
    for command in project["commands"]:
        if command["name"] not in steps:
            continue
        for line in command["script"]:
            match = re.search(r"(?:python|\$\{vars\.train_launcher\}) (?:-m spacy (train)|scripts/(\w+)\.py)", line)
            if not match:
                continue
            names = set()
            for option in re.findall(r"--(\$\{vars\.\w+\}|[\w.-]+)", line):
                if option.startswith("${"):  # a flag pair: the var names the side
                    option = project["vars"][option[7:-1]]
                names.add(option[3:] if option.startswith("no-") else option)
            options.setdefault(match.group(1) or match.group(2), set()).update(names)
    return options


def test_a_study_condition_passes_every_option_that_all_passes(tmp_path, monkeypatch):
    """The study builds its own command lines: none may leave out a setting
    that `all` gives the same script (else a condition silently trains with
    the script's default, not the workflow's setting)."""
    monkeypatch.chdir(REPO)
    study = load_study(study_file(tmp_path, TINY_STUDY.format(encoder="unused")), REPO / "project.yml")
    settings = expand(study)[0].settings
    ran = []
    artifacts = Artifacts(Paths(tmp_path / "corpus", tmp_path / "study"), run=ran.append)
    monkeypatch.setattr("synthdeid.training.ablation.write_prefix", lambda *args: 0)
    artifacts.annotator(settings, 0, [])
    artifacts.gold_pipeline(settings, 0, [])
    generation = artifacts.generation(settings, 0, [])
    artifacts.synthetic_corpus(settings, 0, generation, tmp_path / "annotator" / "pipeline", [])
    study_options = {}
    for command in ran:
        script = "train" if command[1:4] == ["-m", "spacy", "train"] else Path(command[1]).stem
        names = {a[2:][3:] if a.startswith("--no-") else a[2:] for a in command if a.startswith("--")}
        study_options.setdefault(script, set()).update(names)
    expected = workflow_options()
    checked = sorted(set(study_options) & set(expected))
    assert checked == ["adapt_generator", "annotate", "augment", "build_annotator_pipeline", "generate",
                       "surrogate_gold", "train", "train_annotator"]
    missing = {script: sorted(expected[script] - study_options[script]) for script in checked}
    assert not any(missing.values()), f"options `all` passes that the study does not: {missing}"


def test_workflow_commands_refuse_what_the_study_cannot_supply(tmp_path):
    from synthdeid.training.ablation import WorkflowCommands

    project = tmp_path / "project.yml"
    project.write_text(
        "commands:\n"
        "  - name: step\n"
        "    script:\n"
        "      - 'python scripts/x.py corpus/train.spacy corpus/extra.spacy --n ${vars.n} --base \"${vars.base}\"'\n",
        encoding="utf-8",
    )
    commands = WorkflowCommands(project, python="PY")
    assert commands.variables("step") == ["base", "n"]
    files = {"corpus/train.spacy": "/s/train.spacy", "corpus/extra.spacy": "/s/extra.spacy"}
    assert commands.lines("step", {"n": 3, "base": ""}, files) == [
        ["PY", "scripts/x.py", "/s/train.spacy", "/s/extra.spacy", "--n", "3", "--base", ""]]
    with pytest.raises(StudyError, match="reads or writes corpus/extra.spacy, which the study has no file for"):
        commands.lines("step", {"n": 3, "base": ""}, {"corpus/train.spacy": "/s/train.spacy"})
    with pytest.raises(StudyError, match="uses vars the study does not set: n"):
        commands.lines("step", {"base": ""}, files)
    with pytest.raises(StudyError, match="no command 'other'"):
        commands.lines("other", {}, files)
    # A path built from a var is the study's file too, or refused.
    project.write_text("commands:\n  - name: adapt\n    script:\n      - 'python a.py ${vars.texts}/train.spacy'\n",
                       encoding="utf-8")
    commands = WorkflowCommands(project, python="PY")
    assert commands.lines("adapt", {"texts": "corpus"}, files) == [["PY", "a.py", "/s/train.spacy"]]
    with pytest.raises(StudyError, match="reads or writes corpus/surrogated/train.spacy"):
        commands.lines("adapt", {"texts": "corpus/surrogated"}, files)
