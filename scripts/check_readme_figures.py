"""Check that every figure of a README table appears in the output files the
table cites, so that the README cannot drift from the runs it reports.

    python scripts/check_readme_figures.py README.md [--root WORKSPACE]

A table is checked when a comment line before it names its sources,
relative to WORKSPACE (the project folder the run wrote):

    <!-- figures from: training/benchmark.md training/evaluation/evaluation.json -->

A figure with d decimals matches a source number that rounds to it at d
decimals; an integer (commas allowed) matches the same integer. Exit 1 lists
the figures found in no source, or the sources that are missing.
"""

import re
from pathlib import Path
from typing import Dict, List, Set

import typer

MARKER = re.compile(r"<!--\s*figures from:\s*(.+?)\s*-->")
NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])-?\d+(?:\.\d+)?(?:[eE]-?\d+)?(?![\w])")


def numbers(text: str) -> List[str]:
    return NUMBER.findall(text)


def cited_tables(readme: str) -> Dict[int, List[str]]:
    """{line number of a table row: the sources its marker names}."""
    rows: Dict[int, List[str]] = {}
    sources: List[str] = []
    in_table = False
    for number, line in enumerate(readme.splitlines(), 1):
        marker = MARKER.search(line)
        if marker:
            sources, in_table = marker.group(1).split(), False
        elif line.startswith("|") and sources:
            rows[number], in_table = sources, True
        elif in_table:  # the cited table ended
            sources, in_table = [], False
    return rows


def matches(figure: str, available: Set[str]) -> bool:
    plain = figure.replace(",", "")
    if "." not in plain:
        return any(candidate.replace(",", "") == plain for candidate in available)
    decimals = len(plain.split(".")[1])
    target = float(plain)
    for candidate in available:
        try:
            value = float(candidate.replace(",", ""))
        except ValueError:
            continue
        if f"{value:.{decimals}f}" == f"{target:.{decimals}f}":
            return True
    return False


def check(readme_path: Path, root: Path) -> List[str]:
    """The problems: missing sources, figures of a cited table found in none of its sources."""
    try:
        readme = readme_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return [f"{readme_path}: cannot read it ({err})"]
    rows = cited_tables(readme)
    problems: List[str] = []
    loaded: Dict[str, Set[str]] = {}
    for source in sorted({s for sources in rows.values() for s in sources}):
        path = root / source
        try:
            loaded[source] = set(numbers(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            problems.append(f"{path}: missing (cited by {readme_path})")
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{path}: cannot read it ({err}; cited by {readme_path})")
    lines = readme.splitlines()
    for number, sources in rows.items():
        available = set().union(*(loaded.get(s, set()) for s in sources))
        if not available:
            continue
        cells = lines[number - 1].split("|")[2:]  # the first cell names the row
        for figure in numbers(" ".join(cell.replace("*", "") for cell in cells)):
            if not matches(figure, available):
                problems.append(f"{readme_path}:{number}: {figure} is in none of {', '.join(sources)}")
    if not rows:
        problems.append(f"{readme_path}: no table names its sources (<!-- figures from: ... -->)")
    return problems


def main(
    readme: Path = typer.Argument(Path("README.md"), help="The Markdown file to check"),
    root: Path = typer.Option(Path("."), help="Workspace the cited files are relative to"),
):
    problems = check(readme, root)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{readme}: every figure of its cited tables is in its sources")


if __name__ == "__main__":
    typer.run(main)
