"""De-identify files and folders with a trained pipeline (`synthdeid-deidentify`).

Input: a plain-text file, a folder of `.txt` files (a brat folder: its `.ann`
files are ignored), or a JSONL file of `{"id", "text"}` records with unique
ids (an id becomes the output file's name in `txt` and `brat`). Output: the
de-identified text as `.txt` files (`txt`), one JSONL file with the
replacement spans (`jsonl`), or `.txt` + `.ann` files whose entities mark the
replacements (`brat`). The reversible mapping (original text per replacement)
goes to its own JSONL file, only when asked for.

Documents stream through `nlp.pipe` (memory stays flat), with `n_process`
and `batch_size`. A bad input document (not UTF-8, binary, empty, a broken
JSONL line) is reported by name and skipped, or stops the run
(`on_error="stop"`). Outputs are written to temporary paths and moved into
place only when the run succeeds: a failed run leaves nothing half-written.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import ExitStack
from typing import Any, Dict, Iterator, List, Mapping, Optional, TextIO, Tuple

import spacy
import typer
from spacy.language import Language
from tqdm import tqdm

from .io import atomic_path, decode_utf8, read_text_records, write_json
from .metrics import doc_words

INPUT_FORMATS = ("auto", "txt", "jsonl", "brat")
OUTPUT_FORMATS = ("txt", "jsonl", "brat")


class InputError(ValueError):
    """A document that cannot be read; the message names the file (and line)."""


@dataclass
class Summary:
    documents: int = 0
    skipped: List[str] = field(default_factory=list)
    entities: Counter = field(default_factory=Counter)
    words: int = 0
    seconds: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {
            "documents": self.documents,
            "skipped": self.skipped,
            "entities": dict(self.entities.most_common()),
            "words": self.words,
            "seconds": round(self.seconds, 2),
            "words_per_second": round(self.words / self.seconds, 1) if self.seconds else 0.0,
        }


def decode_text(data: bytes, where: str) -> str:
    if b"\x00" in data:
        raise InputError(f"{where}: binary data (NUL bytes), not text")
    text = decode_utf8(data, where, InputError).lstrip("\ufeff")
    if not text.strip():
        raise InputError(f"{where}: empty document")
    return text


def resolve_format(path: Path, input_format: str) -> str:
    """The input format `auto` stands for: jsonl for a `.jsonl` file, else txt."""
    if input_format == "auto":
        return "jsonl" if path.suffix.lower() == ".jsonl" else "txt"
    return input_format


def read_inputs(path: Path, input_format: str = "auto", max_length: int = 0) -> Iterator[Tuple[str, Any]]:
    """(document id, text or InputError) in a stable order, lazily. A text
    longer than `max_length` characters (if given) is an InputError."""
    def checked(where: str, text: str) -> Any:
        if max_length and len(text) > max_length:
            return InputError(f"{where}: {len(text):,} characters, more than the pipeline's max_length "
                              f"({max_length:,}); split the document or raise nlp.max_length")
        return text

    if resolve_format(path, input_format) == "jsonl":
        if not path.is_file():
            raise InputError(f"{path}: no such JSONL file")
        for record in read_text_records(path, integer_ids=True):
            if record.error:
                yield record.doc_id or record.where, InputError(record.error)
            else:
                yield record.doc_id, checked(record.where, record.text)
        return
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".txt")
        root = path
        if not files:
            raise InputError(f"{path}: no .txt files in this folder")
    else:
        raise InputError(f"{path}: no such file or folder")
    first_file: Dict[str, Path] = {}
    for file in files:
        doc_id = str(file.relative_to(root).with_suffix(""))
        if doc_id in first_file:  # a.txt and a.TXT: one output name
            yield str(file), InputError(f"{file}: same document id {doc_id!r} as {first_file[doc_id]}")
            continue
        first_file[doc_id] = file
        try:
            yield doc_id, checked(str(file), decode_text(file.read_bytes(), str(file)))
        except InputError as err:
            yield doc_id, err


def is_file_name(doc_id: str) -> bool:
    """Whether `doc_id` names a file inside the output folder (ids become file
    names: no absolute paths, no `..`, nothing empty, no name too long)."""
    parts = doc_id.replace("\\", "/").split("/")
    # 255 bytes is the usual limit of one name; ".txt" and ".ann" are added to it.
    return not doc_id.startswith(("/", "\\")) and "\x00" not in doc_id and all(
        part not in ("", ".", "..") and len(part.encode("utf-8")) <= 250 for part in parts)


def check_paths(input_path: Path, output: Path, mapping: Optional[Path], overwrite: bool) -> None:
    """Refuse outputs that would replace or mix with the input or each other:
    a finished run replaces its output (and mapping) as a whole."""
    source = input_path.resolve()
    targets = {"output": output.resolve(), **({"mapping": mapping.resolve()} if mapping else {})}
    for name, target in targets.items():
        if target == source or target in source.parents:
            raise InputError(f"{output if name == 'output' else mapping}: the {name} would replace the input "
                             f"{input_path}")
        if source.is_dir() and source in target.parents:
            raise InputError(f"{target}: the {name} may not lie inside the input folder {input_path}")
        if target.exists() and not overwrite:
            raise InputError(f"{target}: exists; pass --overwrite to replace it")
    if mapping and mapping.is_dir():
        raise InputError(f"{mapping}: is a folder; the mapping is one JSONL file (name a file, e.g. {mapping}.jsonl)")
    if mapping and (targets["mapping"] == targets["output"] or targets["output"] in targets["mapping"].parents):
        raise InputError(f"{mapping}: the mapping (original PII) must be written apart from the output {output}")


def load_pipeline(model: str, redactor: Mapping[str, Any]) -> Language:
    """The pipeline with its `pii_redactor` configured (added if missing)."""
    from . import redact  # noqa: F401  registers pii_redactor for pipelines without it

    try:
        nlp = spacy.load(model)
    except OSError as err:
        raise InputError(f"{model}: cannot load the pipeline ({err})") from None
    if "pii_redactor" in nlp.pipe_names:
        config = {**nlp.get_pipe_config("pii_redactor"), **redactor}
        config.pop("factory", None)
        nlp.replace_pipe("pii_redactor", "pii_redactor", config=config)
    else:
        nlp.add_pipe("pii_redactor", config=dict(redactor))
    return nlp


def brat_entity(text: str, label: str, start: int, end: int) -> str:
    """`LABEL <offsets><TAB><text>` of a brat text-bound annotation. A
    replacement that spans lines (a surrogate name keeps the line break of
    the name it replaces) becomes fragments, one per line, as brat writes them
    (`10 13;14 31`), with the line breaks in its text shown as spaces."""
    lines = list(re.finditer(r"[^\r\n]+", text[start:end]))
    fragments = [f"{start + line.start()} {start + line.end()}" for line in lines]
    shown = " ".join(line.group() for line in lines)
    return f"{label} {';'.join(fragments)}\t{shown}"


class Writer:
    """Writes one output format into (temporary) paths: one file (`jsonl`, or
    `txt` of a single input text) or a folder with a file per document."""

    def __init__(self, output: Path, output_format: str, mapping: Optional[TextIO], writes_file: bool):
        self.output = output
        self.output_format = output_format
        self.mapping = mapping
        self.writes_file = writes_file
        self.jsonl = output.open("w", encoding="utf-8") if output_format == "jsonl" else None
        if not writes_file:
            output.mkdir()

    def write(self, doc_id: str, doc) -> None:
        replacements = doc._.pii_replacements
        if self.mapping:
            for item in replacements:
                self.mapping.write(json.dumps({"id": doc_id, **item}, ensure_ascii=False) + "\n")
        spans = [{"start": r["replacement_start"], "end": r["replacement_end"], "label": r["label"]}
                 for r in replacements]
        if self.jsonl:
            self.jsonl.write(json.dumps({"id": doc_id, "text": doc._.deidentified, "spans": spans},
                                        ensure_ascii=False) + "\n")
        elif self.writes_file:
            self.output.write_text(doc._.deidentified, encoding="utf-8")
        else:
            target = self.output / doc_id
            target.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{target}.txt").write_text(doc._.deidentified, encoding="utf-8")
            if self.output_format == "brat":
                lines = [f"T{i}\t{brat_entity(doc._.deidentified, s['label'], s['start'], s['end'])}\n"
                         for i, s in enumerate(spans, 1)]
                Path(f"{target}.ann").write_text("".join(lines), encoding="utf-8")

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()


def deidentify_files(
    nlp: Language,
    input_path: Path,
    output: Path,
    *,
    input_format: str = "auto",
    output_format: str = "txt",
    mapping: Optional[Path] = None,
    n_process: int = 1,
    batch_size: int = 32,
    on_error: str = "skip",
    overwrite: bool = False,
    progress: bool = True,
    report=print,
) -> Summary:
    """De-identify every document of `input_path` into `output` (an existing
    output or mapping is replaced only with `overwrite`)."""
    if input_format not in INPUT_FORMATS or output_format not in OUTPUT_FORMATS:
        raise ValueError(f"formats: input one of {INPUT_FORMATS}, output one of {OUTPUT_FORMATS}")
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
    if n_process > 1 and nlp.get_pipe_config("pii_redactor").get("consistency") == "corpus":
        raise ValueError("pii_redactor: consistency 'corpus' keeps one mapping in one process; use n_process 1")
    summary = Summary()

    def good_documents() -> Iterator[Tuple[str, str]]:
        for doc_id, text in read_inputs(input_path, input_format, max_length=nlp.max_length):
            if not isinstance(text, InputError) and not writes_file and not is_file_name(doc_id):
                text = InputError(f"{input_path}: id {doc_id!r} cannot name an output file in {output}")
            if isinstance(text, InputError):
                if on_error == "stop":
                    raise text
                report(f"skipped: {text}")
                summary.skipped.append(str(text))
                continue
            yield text, doc_id

    single_text = input_path.is_file() and resolve_format(input_path, input_format) != "jsonl"
    writes_file = output_format == "jsonl" or (single_text and output_format == "txt")
    if output.exists() and output.is_file() != writes_file:
        raise InputError(f"{output}: exists and is a {'file' if output.is_file() else 'folder'}; "
                         f"{output_format} output of {input_path} needs a {'file' if writes_file else 'folder'}")
    check_paths(input_path, output, mapping, overwrite)
    start = time.perf_counter()
    # Everything goes to temporary paths, moved into place only if the run ends well.
    with ExitStack() as stack:
        mapping_file = stack.enter_context(atomic_path(mapping)).open("w", encoding="utf-8") if mapping else None
        writer = Writer(stack.enter_context(atomic_path(output)), output_format, mapping_file, writes_file)
        try:
            docs = nlp.pipe(good_documents(), as_tuples=True, n_process=n_process, batch_size=batch_size)
            for doc, doc_id in tqdm(docs, desc="de-identify", unit="doc", disable=not progress):
                writer.write(doc_id, doc)
                summary.documents += 1
                summary.words += doc_words(doc)
                summary.entities.update(r["label"] for r in doc._.pii_replacements)
        finally:
            writer.close()
            if mapping_file:
                mapping_file.close()
        if not summary.documents:
            raise InputError(f"{input_path}: no document could be read, nothing written")
    summary.seconds = time.perf_counter() - start
    return summary


def cli(
    input_path: Path = typer.Argument(..., help="A .txt file, a folder of .txt files (brat), or a .jsonl file"),
    output: Path = typer.Argument(..., help="Output file (one text, or .jsonl) or folder (txt, brat)"),
    model: str = typer.Option(..., help="Pipeline: installed package name or folder"),
    input_format: str = typer.Option("auto", help="auto (by suffix), txt, jsonl or brat"),
    output_format: str = typer.Option("txt", help="txt, jsonl (text + replacement spans) or brat (.txt + .ann)"),
    strategy: str = typer.Option("mask", help="mask, surrogate, hash or keep"),
    label_strategy: List[str] = typer.Option([], help="LABEL=STRATEGY for one label (repeat)"),
    labels: List[str] = typer.Option([], help="Replace only these labels (repeat); default all"),
    seed: int = typer.Option(0, help="Seed of surrogates and date offsets"),
    consistency: str = typer.Option("document", help="Surrogates per document, or one mapping for the corpus"),
    mapping: Optional[Path] = typer.Option(None, help="Write the reversible mapping (JSONL) here: keep it apart"),
    n_process: int = typer.Option(1, help="Processes for nlp.pipe"),
    batch_size: int = typer.Option(32, help="Documents per batch"),
    on_error: str = typer.Option("skip", help="A bad input document: skip (reported) or stop (nothing written)"),
    overwrite: bool = typer.Option(False, help="Replace an existing output (and mapping) as a whole"),
    summary_path: Optional[Path] = typer.Option(None, "--summary", help="Also write the summary as JSON here"),
):
    """De-identify text files with a synthdeid pipeline; hash keys come from SYNTHDEID_HASH_KEY."""
    strategies = {}
    for item in label_strategy:
        label, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected LABEL=STRATEGY, got {item!r}", param_hint="--label-strategy")
        strategies[label] = value
    redactor = {"strategy": strategy, "strategies": strategies, "labels": list(labels), "seed": seed,
                "consistency": consistency}
    try:
        nlp = load_pipeline(model, redactor)
        summary = deidentify_files(
            nlp, input_path, output, input_format=input_format, output_format=output_format, mapping=mapping,
            n_process=n_process, batch_size=batch_size, on_error=on_error, overwrite=overwrite,
            report=lambda m: tqdm.write(m, file=sys.stderr),  # on its own line, not glued to the progress bar
        )
    except ValueError as err:  # InputError and the redactor's configuration errors
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    figures = summary.as_dict()
    entities = ", ".join(f"{label} {n}" for label, n in figures["entities"].items()) or "none"
    typer.echo(
        f"De-identified {figures['documents']} document(s) ({len(figures['skipped'])} skipped) in "
        f"{figures['seconds']} s, {figures['words_per_second']:,.0f} words/s; entities: {entities}. Wrote {output}"
        + (f" and the mapping to {mapping}" if mapping else "")
    )
    if summary_path:
        write_json(summary_path, figures)


def main() -> None:
    typer.run(cli)


if __name__ == "__main__":
    main()
