"""Package a trained de-identification pipeline (with the PII redactor) as a wheel."""

import json
from pathlib import Path
from typing import Optional

import typer

from synthdeid.io import read_docs
from synthdeid.kinds import read_label_kinds
from synthdeid.training.packaging import MEDDOCAN_SOURCE, package_pipeline, performance_from_evaluation


def main(
    pipeline_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Trained pipeline"),
    output_dir: Path = typer.Argument(..., help="Where the package folder goes"),
    name: str = typer.Option(..., help="Package name (the language code is prefixed unless it has it)"),
    version: str = typer.Option(..., help="Package version"),
    trained_on: str = typer.Option(..., help="What the pipeline was trained on, for meta.json"),
    description: str = typer.Option("De-identification of Spanish clinical text (MEDDOCAN labels)."),
    evaluation: Optional[Path] = typer.Option(None, exists=True, help="evaluation.json with its scores"),
    evaluation_name: str = typer.Option("", help="The pipeline's name in evaluation.json (needed with --evaluation)"),
    check_docs: Optional[Path] = typer.Option(
        None, exists=True, help="DocBin whose texts check that pruning the vocabulary changes no prediction"
    ),
    check_limit: int = typer.Option(50, help="Check texts used from --check-docs"),
    rules: bool = typer.Option(True, "--rules/--no-rules", help="Add the pii_rules safety net before the redactor"),
    corpus_name: str = typer.Option(MEDDOCAN_SOURCE["name"], help="The gold corpus, for meta.json's sources"),
    corpus_url: str = typer.Option(MEDDOCAN_SOURCE["url"], help="Where the gold corpus is published"),
    corpus_license: str = typer.Option(MEDDOCAN_SOURCE["license"], help="The gold corpus's licence, the wheel's"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind for the redactor's surrogates, over the "
                                             "shipped schemes and the guesses from label names; empty: none"),
):
    performance = None
    if evaluation is not None and not evaluation_name:
        raise typer.BadParameter("name the pipeline whose scores to take from --evaluation",
                                 param_hint="--evaluation-name")
    if evaluation is not None:
        performance = performance_from_evaluation(
            json.loads(evaluation.read_text(encoding="utf-8")), evaluation_name
        )
    try:
        kinds = read_label_kinds(label_kinds) if label_kinds else None
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--label-kinds") from None
    wheel = package_pipeline(
        pipeline_dir,
        output_dir,
        name=name,
        version=version,
        description=description,
        trained_on=trained_on,
        performance=performance,
        check_texts=[doc.text for doc in read_docs(check_docs)[:check_limit]] if check_docs else [],
        rules=rules,
        label_kinds=kinds,
        source={"name": corpus_name, "url": corpus_url, "license": corpus_license},
    )
    typer.echo(f"Built {wheel}")


if __name__ == "__main__":
    typer.run(main)
