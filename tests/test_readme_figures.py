"""scripts/check_readme_figures.py: README tables against the outputs they cite."""

import json

from conftest import REPO, cli
from typer.testing import CliRunner

README = """# Results

<!-- figures from: training/benchmark.md training/evaluation/evaluation.json -->
| pipeline | entity F1 | speed |
| --- | ---: | ---: |
| gold | 0.9523 | not packaged |
| synthetic | **0.9263** | 6,532 words/s |

| an uncited table | 0.1234 |
"""


def workspace(tmp_path, f1=0.92634):
    (tmp_path / "training" / "evaluation").mkdir(parents=True)
    (tmp_path / "training" / "benchmark.md").write_text("| gold | 0.9523 |\n| words/s | 6,532 |\n")
    (tmp_path / "training" / "evaluation" / "evaluation.json").write_text(json.dumps({"f": f1}))
    (tmp_path / "README.md").write_text(README)
    return tmp_path


def run(root):
    return CliRunner().invoke(cli("check_readme_figures"), [str(root / "README.md"), "--root", str(root)])


def test_figures_found_in_their_sources_pass(tmp_path):
    result = run(workspace(tmp_path))
    assert result.exit_code == 0, result.output


def test_a_drifted_figure_or_a_missing_source_fails(tmp_path):
    root = workspace(tmp_path, f1=0.9216)
    result = run(root)
    assert result.exit_code == 1
    assert "README.md:7: 0.9263 is in none of training/benchmark.md, training/evaluation/evaluation.json" in result.output
    assert "0.1234" not in result.output  # a table without a marker is not checked
    (root / "training" / "benchmark.md").write_bytes(b"\xff\xfe 0.9523")
    result = run(root)
    assert result.exit_code == 1 and "benchmark.md: cannot read it" in result.output
    (root / "training" / "benchmark.md").unlink()
    result = run(root)
    assert result.exit_code == 1 and "benchmark.md: missing" in result.output
    (root / "README.md").unlink()
    result = run(root)
    assert result.exit_code == 1 and "README.md: cannot read it" in result.output


def test_the_readme_cites_the_sources_of_its_results_tables():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "<!-- figures from: training/benchmark.md -->" in readme
    assert "<!-- figures from: training/recall/evaluation.json -->" in readme
