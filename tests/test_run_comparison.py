"""Runs side by side: figures read from each run's step outputs, blank where
a run lacks them, and the labels shown chosen by how much is lost."""

import json

from conftest import cli
from typer.testing import CliRunner

from synthdeid.kinds import LabelKinds
from synthdeid.training.run_comparison import RUN_FILES, comparison_markdown, comparison_rows, losing_labels, read_run


def scores(f, per_label):
    # Every label has 100 test entities but PAIS, which has 10.
    return {"entity": {"micro": {"f": f}, "per_label": {label: {"f": value, "tp": 5, "fn": 5 if label == "PAIS" else 95}
                                                        for label, value in per_label.items()}},
            "token": {"micro": {"f": f + 0.01}, "per_label": {}}}


def write_run(root, synthetic, gold, reuse=None, membership=None):
    outputs = {"evaluation": {"pipelines": {"synthetic": scores(*synthetic), "gold": scores(*gold)}}}
    if reuse is not None:
        outputs["privacy"] = {"pii_reuse": {"labels": {label: {"distinctive_reappearing": n}
                                                       for label, n in reuse.items()}},
                              "ngram_recall": {"5": {"recall": 0.02}}}
    if membership is not None:
        outputs["membership"] = {"pipelines": {"synthetic": {"auc": membership}}}
    for key, data in outputs.items():
        path = root / RUN_FILES[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
    return root


GOLD = (0.95, {"CALLE": 0.9, "FECHAS": 0.98, "HOSPITAL": 0.8, "PAIS": 1.0})


def test_rows_compare_runs_and_leave_what_a_run_lacks_blank(tmp_path):
    default = read_run(write_run(tmp_path / "default", (0.9, {"CALLE": 0.45, "FECHAS": 0.97, "HOSPITAL": 0.6,
                                                              "PAIS": 0.95}), GOLD))
    surrogated = read_run(write_run(tmp_path / "surrogated", (0.95 * 0.98, {"CALLE": 0.9, "FECHAS": 0.98}), GOLD,
                                    reuse={"NOMBRE_SUJETO_ASISTENCIA": 0, "CALLE": 1, "FECHAS": 40}, membership=0.51))
    # Entities lost: CALLE 45, HOSPITAL 20, FECHAS 1, PAIS 0.5 (0.05 of its 10).
    assert losing_labels(default, 3) == ["CALLE", "HOSPITAL", "FECHAS"]
    rows = {row["figure"]: row["values"] for row in comparison_rows({"default": default, "surrogated": surrogated},
                                                                   LabelKinds().kind)}
    assert rows["synthetic / gold entity F1"]["surrogated"] == 0.98 * 0.95 / 0.95
    assert rows["CALLE F1, synthetic / gold"] == {"default": (0.45, 0.9), "surrogated": (0.9, 0.9)}
    assert rows["HOSPITAL F1, synthetic / gold"]["surrogated"] == (None, 0.8)
    assert rows["distinctive gold values reappearing"] == {"default": None, "surrogated": 41}
    assert rows["of them names, places, organisations, identifiers, contacts"]["surrogated"] == 1
    assert rows["membership AUC, synthetic pipeline"] == {"default": None, "surrogated": 0.51}
    markdown = comparison_markdown(comparison_rows({"default": default, "surrogated": surrogated}, LabelKinds().kind))
    assert "| HOSPITAL F1, synthetic / gold | 0.6000 / 0.8000 | - / 0.8000 |" in markdown
    assert "| membership AUC, synthetic pipeline |  | 0.5100 |" in markdown
    assert "gold pipeline" not in markdown  # no run has it: no row


def test_cli_writes_the_table_and_names_bad_arguments(tmp_path):
    run = write_run(tmp_path / "run", (0.9, {"CALLE": 0.8}), (0.95, {"CALLE": 0.9}))
    out = tmp_path / "out" / "comparison.md"
    result = CliRunner().invoke(cli("compare_runs"), [f"a={run}", f"b={run}", "--label", "CALLE", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "| CALLE F1, synthetic / gold | 0.8000 / 0.9000 | 0.8000 / 0.9000 |" in out.read_text(encoding="utf-8")
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["runs"] == {"a": str(run), "b": str(run)}
    for arguments, problem in (([str(run)], "expected NAME=FOLDER"), ([f"a={run}", f"a={run}"], "'a' names two runs"),
                               ([f"a={tmp_path / 'none'}"], "none of training/evaluation")):
        result = CliRunner().invoke(cli("compare_runs"), arguments)
        assert result.exit_code == 1 and problem in result.output, result.output


def test_a_run_without_the_gold_pipeline_or_token_scores_leaves_them_blank(tmp_path):
    run = write_run(tmp_path / "run", (0.9, {"CALLE": 0.8}), (0.95, {"CALLE": 0.9}))
    evaluation = run / RUN_FILES["evaluation"]
    data = json.loads(evaluation.read_text())
    del data["pipelines"]["gold"], data["pipelines"]["synthetic"]["token"]
    evaluation.write_text(json.dumps(data))
    (run / RUN_FILES["membership"]).parent.mkdir(parents=True)
    (run / RUN_FILES["membership"]).write_text("{}")
    read = read_run(run)
    assert read["membership"] == {} and losing_labels(read) == []
    rows = {row["figure"]: row["values"]["run"] for row in comparison_rows({"run": read}, LabelKinds().kind)}
    assert rows["synthetic entity F1"] == 0.9 and rows["synthetic / gold token F1"] is None
    assert not any(figure.endswith("F1, synthetic / gold") for figure in rows)
