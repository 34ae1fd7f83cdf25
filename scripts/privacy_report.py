"""Privacy report of a synthetic corpus against the gold train texts: n-gram
recall, longest copied passages and gold PII strings reappearing verbatim.

    python scripts/privacy_report.py GOLD_TRAIN SYNTHETIC OUT_DIR [--ngram 5 --ngram 8] [--top 5] [--examples 5]
        [--pipeline WHEEL] [--baseline SURROGATED_GOLD_TRAIN]

GOLD_TRAIN is a DocBin (or brat folder / corpus .jsonl) with the gold
entities; SYNTHETIC is the generation .jsonl or an annotated .spacy DocBin.
Writes OUT_DIR/privacy.md and OUT_DIR/privacy.json.
"""

from pathlib import Path
from typing import List, Optional

import typer

try:
    from synthdeid.kinds import read_label_kinds
    from synthdeid.training.privacy import DEFAULT_NGRAMS, privacy_report
except ImportError:  # run from a checkout where the package is not installed
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthdeid.kinds import read_label_kinds
    from synthdeid.training.privacy import DEFAULT_NGRAMS, privacy_report


def main(
    gold: Path = typer.Argument(..., help="Gold train corpus with entities (.spacy, brat folder or corpus .jsonl)"),
    synthetic: Path = typer.Argument(..., help="Synthetic corpus: generation .jsonl or annotated .spacy"),
    output_dir: Path = typer.Argument(..., help="Folder for privacy.md and privacy.json"),
    ngram: List[int] = typer.Option(list(DEFAULT_NGRAMS), help="n-gram size for the recall (repeat the option)"),
    top: int = typer.Option(5, help="Longest copied passages to list"),
    examples: int = typer.Option(5, help="Reappearing PII strings to list per label"),
    pipeline: Optional[Path] = typer.Option(
        None, help="Shipped pipeline (wheel, package or pipeline folder): count the gold-only PII tokens it stores"
    ),
    baseline: Optional[Path] = typer.Option(
        None, help="The gold corpus surrogated (scripts/surrogate_gold.py): the PII reuse chance alone gives"
    ),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind, over the shipped schemes and guesses"),
):
    try:
        privacy_report(gold, synthetic, output_dir, ngram, top=top, examples=examples, pipeline=pipeline,
                       baseline=baseline, label_kinds=read_label_kinds(label_kinds) if label_kinds else None)
    except ValueError as err:  # CorpusError, AnnotateError (unreadable inputs) and bad option values
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
