"""Run the workflow step by step, timing each, and print the project's figures.

Every number in the README's results table comes from this script's output:
    python scripts/benchmark.py --vars.corpus_dir=../shared/meddocan
Extra `--vars.NAME=VALUE` options are passed on to weasel. Steps are forced
to rerun so that their wall time is measured; `--step NAME` (repeatable) times
only those steps, runs the others only if their outputs are out of date, and
carries over their times from the previous training/benchmark.json. After the
main workflow (`all`) the `gap` workflow runs and is timed on its own.

Each step's time is saved as soon as it ends (training/benchmark_steps.json):
`--resume` keeps the recorded time of every step that weasel finds up to date
and runs the rest, so a long benchmark can be interrupted (or stopped with
`--stop-after STEP`) and continued.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import spacy
import typer
from weasel.cli.run import check_rerun
from weasel.util import load_project_config

from synthdeid.io import doc_words, read_docs, write_json, write_text

app = typer.Typer(add_completion=False)
STEPS_FILE = "training/benchmark_steps.json"


def packaged_pipeline_speed(package_dir: Path, test_path: Path, batch_size: int = 16) -> dict:
    """Words per second of the packaged pipeline (as installed: with the rules and the redactor)."""
    import synthdeid.redact  # noqa: F401  the package registers its components the same way
    import synthdeid.rules  # noqa: F401

    inner = next(p for p in package_dir.glob("*/*") if (p / "config.cfg").exists())
    nlp = spacy.load(inner)
    texts = [doc.text for doc in read_docs(test_path)]
    words = sum(doc_words(nlp.make_doc(text)) for text in texts)
    start = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=batch_size):
        pass
    seconds = time.perf_counter() - start
    return {"documents": len(texts), "words": words, "seconds": seconds, "words_per_second": words / seconds}


def optional_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def run_steps(
    project_dir: Path, names: List[str], overrides: List[str], commands: dict, *, step: List[str], resume: bool,
    previous: dict, stop_after: Optional[str],
) -> Tuple[Dict[str, float], bool]:
    """Run `names` in order, timing each; returns (seconds per step, whether
    `stop_after` was reached). Each time is also saved in STEPS_FILE at once,
    so an interrupted benchmark resumes where it stopped."""
    steps_path = project_dir / STEPS_FILE
    recorded = json.loads(steps_path.read_text(encoding="utf-8")) if resume and steps_path.exists() else {}
    seconds: Dict[str, float] = {}
    for name in names:
        if resume and name in recorded and not check_rerun(project_dir, commands[name]):
            typer.echo(f"benchmark: {name} is up to date, keeping its time ({recorded[name]:.0f} s)")
            seconds[name] = recorded[name]
        else:
            # A step with no earlier time (new in the workflow) is timed too.
            timed = not step or name in step or name not in previous
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "weasel", "run", name, str(project_dir), *(["--force"] if timed else []), *overrides],
                check=True,
            )
            seconds[name] = time.perf_counter() - start if timed else previous[name]
            recorded[name] = seconds[name]
            write_json(steps_path, recorded)
        if name == stop_after:
            return seconds, True
    return seconds, False


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def main(
    ctx: typer.Context,
    project_dir: Path = typer.Option(Path("."), help="The weasel project folder"),
    workflow: str = typer.Option("all", help="The workflow whose steps are timed"),
    extra_workflow: List[str] = typer.Option(["gap"], help="Workflows run and timed after it (the gap decomposition)"),
    step: List[str] = typer.Option([], help="Time only these steps (default: every step)"),
    resume: bool = typer.Option(False, help=f"Keep the times in {STEPS_FILE} of steps that are up to date"),
    stop_after: Optional[str] = typer.Option(None, help="Stop after this step, without the report"),
    report_only: bool = typer.Option(
        False, help=f"Run nothing: report the outputs there are, with the times in {STEPS_FILE}"
    ),
):
    overrides = list(ctx.args)
    config = load_project_config(
        project_dir, overrides=dict(arg.lstrip("-").split("=", 1) for arg in overrides)
    )
    project_vars = config["vars"]
    commands = {command["name"]: command for command in config["commands"]}
    previous_path = project_dir / "training/benchmark.json"
    previous = json.loads(previous_path.read_text(encoding="utf-8")) if step else {}
    previous = {**previous.get("step_seconds", {}), **previous.get("extra_step_seconds", {})}
    timings = {}
    recorded = json.loads((project_dir / STEPS_FILE).read_text(encoding="utf-8")) if report_only else {}
    for name in [workflow, *extra_workflow]:
        if report_only:
            missing = [step_name for step_name in config["workflows"][name] if step_name not in recorded]
            if missing:
                typer.echo(f"benchmark: no recorded time in {STEPS_FILE} for {', '.join(missing)}; run them first", err=True)
                raise typer.Exit(1)
            timings[name] = {step_name: recorded[step_name] for step_name in config["workflows"][name]}
            continue
        timings[name], stopped = run_steps(
            project_dir, config["workflows"][name], overrides, commands,
            step=step, resume=resume, previous=previous, stop_after=stop_after,
        )
        if stopped:
            typer.echo(f"benchmark: stopped after {stop_after}; rerun with --resume to go on")
            return
    step_seconds = timings.pop(workflow)
    extra_step_seconds = {name: sec for steps in timings.values() for name, sec in steps.items()}
    corpus_stats = json.loads((project_dir / "corpus/stats.json").read_text(encoding="utf-8"))
    evaluation = json.loads(
        (project_dir / "training/evaluation/evaluation.json").read_text(encoding="utf-8")
    )
    package_dir = project_dir / "packages" / (
        f"{project_vars['lang']}_{project_vars['package_name']}-{project_vars['package_version']}"
    )
    results = {
        "vars": project_vars,
        "step_seconds": step_seconds,
        "workflow_seconds": sum(step_seconds.values()),
        "extra_step_seconds": extra_step_seconds,
        "alignment": {
            split: {k: v for k, v in stats.items() if k.startswith("align") or k == "spans"}
            for split, stats in corpus_stats["splits"].items()
        },
        "scores": {
            name: {
                "entity": s["entity"]["micro"],
                "token": s["token"]["micro"],
                "meddocan": s["meddocan"],
            }
            for name, s in evaluation["pipelines"].items()
        },
        "synthetic_gold_ratio": evaluation.get("synthetic_gold_ratio"),
        "generation": optional_json(project_dir / "corpus/synthetic/generation_stats.json"),
        "annotation": optional_json(project_dir / "corpus/synthetic/stats.json"),
        "privacy": optional_json(project_dir / "training/privacy/privacy.json"),
        "gap": (project_dir / "training/gap/gap.md").read_text(encoding="utf-8")
        if (project_dir / "training/gap/gap.md").exists()
        else None,
        "packaged_pipeline_speed": packaged_pipeline_speed(
            package_dir, project_dir / "corpus/test.spacy"
        ),
    }
    report = markdown(results)
    write_json(project_dir / "training/benchmark.json", results)
    write_text(project_dir / "training/benchmark.md", report)
    typer.echo(report)


def markdown(results: dict) -> str:
    lines = ["## Quality", "", "| pipeline | entity P | entity R | entity F1 | token F1 | MEDDOCAN span F1 (strict / merged) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in results["scores"].items():
        e, t, m = s["entity"], s["token"], s["meddocan"]
        lines.append(
            f"| {name} | {e['p']:.4f} | {e['r']:.4f} | {e['f']:.4f} | {t['f']:.4f} "
            f"| {m['subtrack2_strict']['f']:.4f} / {m['subtrack2_merged']['f']:.4f} |"
        )
    if results.get("synthetic_gold_ratio"):
        ratio = results["synthetic_gold_ratio"]
        lines += ["", f"Synthetic/gold F1 ratio: entity {ratio['entity']:.4f}, token {ratio['token']:.4f}."]
    generation = results.get("generation")
    if generation:
        dropped = ", ".join(f"{reason} {n}" for reason, n in generation["dropped"].items())
        ends = ", ".join(f"{reason} {v['share']:.1%}" for reason, v in generation["end_reasons"]["kept"].items())
        words = generation["words_per_note"]
        lines += ["", "## Synthetic corpus", "",
                  f"Generated {generation['generated']} notes in {generation['rounds']} round(s), kept "
                  f"{generation['kept']} (dropped: {dropped}): {generation['words_kept']} words, "
                  f"{generation['words_ratio']:.2f}x the gold train words (target {generation['size_multiple']:g}x). "
                  f"Notes ended by: {ends}. Words per note: synthetic mean {words['synthetic']['mean']:.0f} "
                  f"(median {words['synthetic']['median']:.0f}, p90 {words['synthetic']['p90']:.0f}), gold train "
                  f"mean {words['gold_train']['mean']:.0f} (median {words['gold_train']['median']:.0f}, "
                  f"p90 {words['gold_train']['p90']:.0f}). Generator throughput "
                  f"{generation['docs_per_second']:.2f} notes/s"
                  + (f", {generation['tokens_kept_per_second']:.0f} tokens/s (kept text, generator tokenizer, "
                     "prompting and filtering included)" if generation["tokens_kept"] is not None else "")
                  + "."]
    annotation = results.get("annotation")
    if annotation:
        lines += ["", f"Machine annotation: {annotation['documents_per_second']:.2f} notes/s "
                  f"({annotation['annotate_seconds']:.0f} s)."]
    privacy = results.get("privacy")
    if privacy:
        pii = privacy["pii_reuse"]["total"]
        recall = ", ".join(f"{n}-gram recall {r['recall']:.4f}" for n, r in privacy["ngram_recall"].items())
        lines += ["", f"Privacy: {recall}; longest copied passage {privacy['copied_passages']['longest'][0]['tokens']} "
                  f"tokens; {pii['reappearing']} of {pii['unique']} gold PII strings reappear verbatim "
                  f"({pii['distinctive_reappearing']} of {pii['distinctive']} distinctive ones)."]
    if results.get("gap"):
        lines += ["", "## Gap decomposition", "", results["gap"].split("\n", 2)[2].strip()]
    lines += ["", "## Span alignment of the corpus converter", "", "| split | spans | figures |", "| --- | ---: | --- |"]
    for split, stats in results["alignment"].items():
        figures = ", ".join(f"{k}: {v}" for k, v in stats.items() if k != "spans")
        lines.append(f"| {split} | {stats.get('spans', '')} | {figures} |")
    lines += ["", "## Wall time (seconds)", "", "| step | seconds |", "| --- | ---: |"]
    lines += [f"| {step} | {sec:.0f} |" for step, sec in results["step_seconds"].items()]
    lines.append(f"| **workflow total** | {results['workflow_seconds']:.0f} |")
    for step, sec in results.get("extra_step_seconds", {}).items():
        lines.append(f"| {step} (gap decomposition, not in `all`) | {sec:.0f} |")
    speed = results["packaged_pipeline_speed"]
    lines += ["", f"Packaged pipeline inference: {speed['words_per_second']:.0f} words/s "
              f"({speed['words']} words in {speed['seconds']:.1f} s, one process)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    app()
