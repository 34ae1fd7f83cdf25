"""Convert a gold corpus to DocBins: train, validation (the corpus's own, or a
seeded split carved from train) and test; plus the customised tokenizer and
stats.json.

    python scripts/convert_corpus.py CORPUS_DIR OUTPUT_DIR [--lang es] [--label-map MAP.json] [--spans-key KEY]
        [--label-kinds KINDS.json]

CORPUS_DIR holds `train` and `dev` or `test` (and maybe `validation`), each a
brat folder, a `.jsonl` or a `.spacy` file, or a `corpus.json` naming them.
The label table it prints gives each label's kind and where it came from.
"""

from pathlib import Path
from typing import Optional

import typer

try:
    from synthdeid.kinds import LabelKinds, read_label_kinds
    from synthdeid.training.corpus import CorpusError, convert_corpus, corpus_parts, read_label_map
except ImportError:  # run from a checkout where the package is not installed
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthdeid.kinds import LabelKinds, read_label_kinds
    from synthdeid.training.corpus import CorpusError, convert_corpus, corpus_parts, read_label_map


def main(
    corpus_dir: Path = typer.Argument(..., help="Folder of the gold corpus: train and dev/test (or corpus.json)"),
    output_dir: Path = typer.Argument(..., help="Folder for the DocBins, tokenizer/ and stats.json"),
    lang: str = typer.Option("es", help="spaCy language code of the corpus: its tokenizer"),
    label_map: str = typer.Option("", help="JSON file mapping the corpus's labels to new labels or null (drop); "
                                           "empty: labels as they are"),
    spans_key: Optional[str] = typer.Option(None, help="DocBin input: read this span group instead of doc.ents"),
    label_kinds: str = typer.Option("", help="JSON file of label -> kind over the shipped schemes and the guesses "
                                             "from label names, for the label table; empty: none"),
    validation_fraction: float = typer.Option(0.1, help="Share of train documents held out for validation, "
                                                        "when the corpus has no validation set"),
    seed: int = typer.Option(0, help="Seed of the train/validation split"),
    limit: int = typer.Option(0, help="Read only the first N documents of each input (0: all)"),
):
    try:
        kinds = LabelKinds(read_label_kinds(label_kinds) if label_kinds else None)
        parts = corpus_parts(corpus_dir)
        convert_corpus(
            parts["train"],
            parts["test"],
            output_dir,
            validation_path=parts.get("validation"),
            lang=lang,
            label_map=read_label_map(label_map) if label_map else None,
            spans_key=spans_key,
            kind_of=lambda label: kinds.entry(label)[::2],
            validation_fraction=validation_fraction,
            seed=seed,
            limit=limit or None,
        )
    except (CorpusError, OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
