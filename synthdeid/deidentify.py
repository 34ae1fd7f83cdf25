"""De-identify files and folders with a trained pipeline (`synthdeid-deidentify`).

Input: a plain-text file, a folder of `.txt` files (a brat folder: its `.ann`
files are ignored), or a JSONL or Parquet file of `{"id", "text"}` records
with unique ids (an id becomes the output file's name in `txt` and `brat`).
Output: the de-identified text as `.txt` files (`txt`), one JSONL or Parquet
file with the replacement spans (`jsonl`, `parquet`), or `.txt` + `.ann`
files whose entities mark the replacements (`brat`). Parquet needs pyarrow
(the `synthdeid[ray]` extra). The reversible mapping (original text per replacement)
goes to its own JSONL file, only when asked for.

Documents stream through `nlp.pipe` (memory stays flat), with `n_process`
and `batch_size`, or through Ray actors (`engine="ray"`, `ray_engine`). A bad input document (unreadable, not UTF-8, binary, empty,
a broken JSONL line, an output file it cannot have) is reported by name and
line and skipped, or stops the run (`on_error="stop"`). Outputs are written
to temporary paths and moved into place only when the run succeeds: a failed
or killed run (SIGTERM, SIGHUP, SIGINT) leaves nothing half-written, and a
run killed outright (SIGKILL) leaves temporaries that the next run writing
the same output removes. The mapping is created readable by its owner only,
and one output can be written by one run at a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import ExitStack, closing
from typing import Any, Dict, Iterator, List, Mapping, Optional, TextIO, Tuple

import spacy
import typer
from spacy.language import Language
from tqdm import tqdm

from .io import atomic_path, decode_utf8, exclusive, read_parquet_records, read_text_records, write_json
from .parallel import ENGINES
from .ray_engine import Deidentified, ray_pipe, refuse_corpus_consistency

INPUT_FORMATS = ("auto", "txt", "jsonl", "parquet", "brat")
OUTPUT_FORMATS = ("txt", "jsonl", "parquet", "brat")
RECORD_FORMATS = ("jsonl", "parquet")  # one file of id + text records
PARQUET_ROWS = 1024  # rows per Parquet row group written


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
    text = decode_utf8(data, where, InputError)
    if not text.lstrip("\ufeff").strip():
        raise InputError(f"{where}: empty document")
    return text


def shown_path(path: Path) -> str:
    """`path` as text that can be printed: bytes of a name that is not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def resolve_format(path: Path, input_format: str) -> str:
    """The input format `auto` stands for: jsonl for a `.jsonl` file, parquet
    for a `.parquet` file, else txt."""
    if input_format == "auto":
        return {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix.lower(), "txt")
    return input_format


def read_inputs(path: Path, input_format: str = "auto", max_length: int = 0) -> Iterator[Tuple[str, str, Any]]:
    """(document id, where it was read, text or InputError) in a stable
    order, lazily; `where` is the file, or `file:line` of a JSONL record. A
    text keeps its byte-order mark. A text longer than `max_length`
    characters (if given) is an InputError."""
    def checked(where: str, text: str) -> Any:
        if max_length and len(text) > max_length:
            return InputError(f"{where}: {len(text):,} characters, more than the pipeline's max_length "
                              f"({max_length:,}); split the document or raise it (--max-length)")
        return text

    record_format = resolve_format(path, input_format)
    if record_format in RECORD_FORMATS:
        if not path.is_file():
            raise InputError(f"{path}: no such {record_format} file")
        read = read_text_records if record_format == "jsonl" else read_parquet_records
        try:
            records = read(path, integer_ids=True)
        except ValueError as err:  # not Parquet, no id or text column, no pyarrow
            raise InputError(str(err)) from None
        for record in records:
            if record.error:
                yield record.doc_id or record.where, record.where, InputError(record.error)
            else:
                yield record.doc_id, record.where, checked(record.where, record.text)
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
        where = shown_path(file)
        if where != str(file):
            yield where, where, InputError(f"{where}: the file name is not UTF-8, so no output file can be named "
                                           "after it; rename the file")
            continue
        doc_id = str(file.relative_to(root).with_suffix(""))
        if doc_id in first_file:  # a.txt and a.TXT: one output name
            yield str(file), where, InputError(f"{file}: same document id {doc_id!r} as {first_file[doc_id]}")
            continue
        first_file[doc_id] = file
        try:
            yield doc_id, where, checked(where, decode_text(file.read_bytes(), where))
        except InputError as err:
            yield doc_id, where, err
        except OSError as err:
            yield doc_id, where, InputError(f"{where}: cannot be read ({err.strerror or err})")


def is_file_name(doc_id: str) -> bool:
    """Whether `doc_id` names a file inside the output folder (ids become file
    names: no absolute paths, no `..`, nothing empty, no name too long)."""
    parts = doc_id.replace("\\", "/").split("/")
    # 255 bytes is the usual limit of one name; ".txt" and ".ann" are added to it.
    return not doc_id.startswith(("/", "\\")) and "\x00" not in doc_id and all(
        part not in ("", ".", "..") and len(part.encode("utf-8")) <= 250 for part in parts)


def is_mapping_file(path: Path) -> bool:
    """Whether `path` is empty or starts with a line this command's mapping writes."""
    with path.open("rb") as data:
        first = data.readline()
    if not first.strip():
        return True
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and {"id", "label", "replacement", "text"} <= set(record)


def check_paths(input_path: Path, output: Path, mapping: Optional[Path], overwrite: bool,
                model: Optional[str] = None) -> None:
    """Refuse outputs that would replace or mix with the input, the pipeline
    or each other: a finished run replaces its output (and mapping) as a whole."""
    source = input_path.resolve()
    targets = {"output": output, **({"mapping": mapping} if mapping else {})}
    model_dir = Path(model).resolve() if model and Path(model).is_dir() else None
    for name, path in targets.items():
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link; name the real path of the {name}")
        target = path.resolve()
        if target == source or target in source.parents:
            raise InputError(f"{path}: the {name} would replace the input {input_path}")
        if source.is_dir() and source in target.parents:
            raise InputError(f"{target}: the {name} may not lie inside the input folder {input_path}")
        if model_dir and (target == model_dir or model_dir in target.parents or target in model_dir.parents):
            raise InputError(f"{path}: the {name} would replace or lie inside the pipeline {model}")
        if target.exists() and not overwrite:
            raise InputError(f"{target}: exists; pass --overwrite to replace it")
    if mapping and mapping.is_dir():
        raise InputError(f"{mapping}: is a folder; the mapping is one JSONL file (name a file, e.g. {mapping}.jsonl)")
    if mapping and (mapping.resolve() == output.resolve() or output.resolve() in mapping.resolve().parents):
        raise InputError(f"{mapping}: the mapping (original PII) must be written apart from the output {output}")
    if mapping and mapping.is_file() and not is_mapping_file(mapping):
        raise InputError(f"{mapping}: exists and is not a mapping this command wrote; it is not replaced")


REDACTOR_SETTINGS = ("strategy", "strategies", "labels", "seed", "consistency")


def open_pipeline(model: str) -> Language:
    from . import redact, rules  # noqa: F401  register pii_redactor and pii_rules for pipeline folders

    try:
        return spacy.load(model)
    except OSError as err:
        raise InputError(f"{model}: cannot load the pipeline ({err})") from None


def configure_redactor(nlp: Language, redactor: Mapping[str, Any]) -> bool:
    """Give `nlp`'s `pii_redactor` its saved settings with `redactor`'s on
    top (`strategies` add to the saved ones), or add the component, with its
    defaults, if the pipeline has none. Returns whether it had one."""
    saved = "pii_redactor" in nlp.pipe_names
    if saved:
        config = nlp.get_pipe_config("pii_redactor")
        config = {**config, **redactor, "strategies": {**config.get("strategies", {}), **redactor.get("strategies", {})}}
        config.pop("factory", None)
        nlp.replace_pipe("pii_redactor", "pii_redactor", config=config)
    else:
        nlp.add_pipe("pii_redactor", config=dict(redactor))
    return saved


def load_redacting_pipeline(model: str, redactor: Mapping[str, Any]) -> Language:
    """The pipeline with its `pii_redactor` configured (`configure_redactor`)."""
    nlp = open_pipeline(model)
    configure_redactor(nlp, redactor)
    return nlp


def redactor_settings(nlp: Language, options: Mapping[str, Any], saved: bool) -> Dict[str, Dict[str, Any]]:
    """The redactor settings a run uses, each with where it came from: an
    option, the pipeline's saved config, or the component's default."""
    config = nlp.get_pipe_config("pii_redactor")
    return {key: {"value": config[key], "from": "option" if key in options else "pipeline" if saved else "default"}
            for key in REDACTOR_SETTINGS}


def brat_entity(text: str, label: str, start: int, end: int) -> str:
    """`LABEL <offsets><TAB><text>` of a brat text-bound annotation. A
    replacement that spans lines (a surrogate name keeps the line break of
    the name it replaces) becomes fragments, one per line, as brat writes them
    (`10 13;14 31`), with the line breaks in its text shown as spaces."""
    lines = list(re.finditer(r"[^\r\n]+", text[start:end]))
    fragments = [f"{start + line.start()} {start + line.end()}" for line in lines]
    shown = " ".join(line.group() for line in lines)
    return f"{label} {';'.join(fragments)}\t{shown}"


def open_private(path: Path) -> TextIO:
    """A new file only its owner can read or write (the mapping holds the original PII)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8")


class Writer:
    """Writes one output format into (temporary) paths: one file (`jsonl`, or
    `txt` of a single input text) or a folder with a file per document."""

    def __init__(self, output: Path, output_format: str, mapping: Optional[TextIO], writes_file: bool):
        self.output = output
        self.output_format = output_format
        self.mapping = mapping
        self.writes_file = writes_file
        self.jsonl = output.open("w", encoding="utf-8") if output_format == "jsonl" else None
        self.parquet = ParquetRows(output) if output_format == "parquet" else None
        if not writes_file:
            output.mkdir()

    def write(self, doc_id: str, where: str, result: Deidentified, prefix: str = "") -> None:
        """Write one document, `prefix` (a byte-order mark) before its text,
        offsets counted with it. A document whose output file cannot be
        written raises InputError and leaves none of its files."""
        text = prefix + result.deidentified
        shift = len(prefix)
        replacements = [{**r, "start": r["start"] + shift, "end": r["end"] + shift,
                         "replacement_start": r["replacement_start"] + shift,
                         "replacement_end": r["replacement_end"] + shift} for r in result.replacements]
        spans = [{"start": r["replacement_start"], "end": r["replacement_end"], "label": r["label"]}
                 for r in replacements]
        if self.jsonl:
            self.jsonl.write(json.dumps({"id": doc_id, "text": text, "spans": spans}, ensure_ascii=False) + "\n")
        elif self.parquet:
            self.parquet.add({"id": doc_id, "text": text, "spans": spans})
        elif self.writes_file:
            self.output.write_bytes(text.encode("utf-8"))
        else:
            self._write_files(self.output / doc_id, where, text, spans)
        if self.mapping:
            for item in replacements:
                self.mapping.write(json.dumps({"id": doc_id, **item}, ensure_ascii=False) + "\n")

    def _write_files(self, target: Path, where: str, text: str, spans: List[Dict[str, Any]]) -> None:
        files = {Path(f"{target}.txt"): text}
        if self.output_format == "brat":
            files[Path(f"{target}.ann")] = "".join(
                f"T{i}\t{brat_entity(text, s['label'], s['start'], s['end'])}\n" for i, s in enumerate(spans, 1))
        written = []
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            for path, content in files.items():
                with path.open("xb") as out:  # never over another document's file
                    written.append(path)
                    out.write(content.encode("utf-8"))
        except OSError as err:
            for path in written:
                path.unlink(missing_ok=True)
            name = os.path.relpath(err.filename, self.output) if err.filename else target.name
            taken = isinstance(err, (FileExistsError, IsADirectoryError, NotADirectoryError))
            reason = "another document's output has that name" if taken else err.strerror or err
            raise InputError(f"{where}: cannot write its output file {name} ({reason})") from None

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.parquet:
            self.parquet.close()


class ParquetRows:
    """A Parquet file of `id`, `text` and `spans` (start, end, label) rows,
    written a row group of `PARQUET_ROWS` rows at a time."""

    def __init__(self, path: Path):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("writing Parquet needs pyarrow: pip install 'synthdeid[ray]'") from None
        span = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("label", pa.string())])
        self.schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("spans", pa.list_(span))])
        self.pa = pa
        self.writer = pq.ParquetWriter(str(path), self.schema)
        self.rows: List[Dict[str, Any]] = []

    def add(self, row: Dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) == PARQUET_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


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
    model: Optional[str] = None,
    progress: bool = True,
    report=print,
    engine: str = "local",
    num_workers: int = 2,
    ray_address: Optional[str] = None,
) -> Summary:
    """De-identify every document of `input_path` into `output` (an existing
    output or mapping is replaced only with `overwrite`; neither may lie in
    the pipeline folder `model`). `engine` "local" runs `nlp.pipe` with
    `n_process`; "ray" runs `model` (a folder or package every Ray node can
    load) with `nlp`'s redactor settings on `num_workers` Ray actors, of the
    cluster at `ray_address` or of a local Ray."""
    if input_format not in INPUT_FORMATS or output_format not in OUTPUT_FORMATS:
        raise ValueError(f"formats: input one of {INPUT_FORMATS}, output one of {OUTPUT_FORMATS}")
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', not {on_error!r}")
    if n_process < 1 or batch_size < 1:
        raise ValueError(f"n_process and batch_size must be at least 1, not {n_process} and {batch_size}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "ray":
        if not model:
            raise ValueError("the ray engine loads the pipeline on each actor: name it (model)")
        refuse_corpus_consistency(nlp)
    elif n_process > 1 and nlp.get_pipe_config("pii_redactor").get("consistency") == "corpus":
        raise ValueError("pii_redactor: consistency 'corpus' keeps one mapping in one process; use n_process 1")
    summary = Summary()

    def skip(error: InputError) -> None:
        if on_error == "stop":
            raise error
        report(f"skipped: {error}")
        summary.skipped.append(str(error))

    def good_documents() -> Iterator[Tuple[str, Tuple[str, str, str]]]:
        for doc_id, where, text in read_inputs(input_path, input_format, max_length=nlp.max_length):
            if not isinstance(text, InputError) and not writes_file and not is_file_name(doc_id):
                text = InputError(f"{where}: id {doc_id!r} cannot name an output file in {output}")
            if isinstance(text, InputError):
                skip(text)
                continue
            # A byte-order mark is no part of the note: it goes back in front of the output.
            bom = "\ufeff" if text.startswith("\ufeff") else ""
            yield text[len(bom):], (doc_id, where, bom)

    single_text = input_path.is_file() and resolve_format(input_path, input_format) not in RECORD_FORMATS
    writes_file = output_format in RECORD_FORMATS or (single_text and output_format == "txt")
    if output.exists() and output.is_file() != writes_file:
        raise InputError(f"{output}: exists and is a {'file' if output.is_file() else 'folder'}; "
                         f"{output_format} output of {input_path} needs a {'file' if writes_file else 'folder'}")
    check_paths(input_path, output, mapping, overwrite, model)
    start = time.perf_counter()
    # Everything goes to temporary paths, moved into place only if the run ends well.
    with ExitStack() as stack:
        for target in (output, mapping):
            if target:
                stack.enter_context(exclusive(target))
        mapping_file = open_private(stack.enter_context(atomic_path(mapping, replace=overwrite))) if mapping else None
        writer = Writer(stack.enter_context(atomic_path(output, replace=overwrite)), output_format, mapping_file,
                        writes_file)
        try:
            if engine == "ray":
                settings = {k: v for k, v in nlp.get_pipe_config("pii_redactor").items() if k != "factory"}
                # closed on any error, so the Ray it started stops with the run
                results = stack.enter_context(closing(ray_pipe(
                    good_documents(), model, settings, num_workers=num_workers, batch_size=batch_size,
                    max_length=nlp.max_length, address=ray_address)))
            else:
                docs = nlp.pipe(good_documents(), as_tuples=True, n_process=n_process, batch_size=batch_size)
                results = ((Deidentified.of_doc(doc), context) for doc, context in docs)
            for result, (doc_id, where, bom) in tqdm(results, desc="de-identify", unit="doc", disable=not progress):
                try:
                    writer.write(doc_id, where, result, bom)
                except InputError as err:
                    skip(err)
                    continue
                summary.documents += 1
                summary.words += result.words
                summary.entities.update(r["label"] for r in result.replacements)
        finally:
            writer.close()
            if mapping_file:
                mapping_file.close()
        if not summary.documents:
            raise InputError(f"{input_path}: no document could be read, nothing written")
    summary.seconds = time.perf_counter() - start
    return summary


def exit_on_signal(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP end the run as SIGINT does, through every cleanup:
    no temporary output or mapping stays behind."""
    raise SystemExit(128 + signum)


def cli(
    input_path: Path = typer.Argument(..., help="A .txt file, a folder of .txt files (brat), or a .jsonl or "
                                                "a .parquet file of id and text records"),
    output: Path = typer.Argument(..., help="Output file (one text, .jsonl or .parquet) or folder (txt, brat)"),
    model: str = typer.Option(..., help="Pipeline: installed package name or folder"),
    input_format: str = typer.Option("auto", help="auto (by suffix), txt, jsonl, parquet or brat"),
    output_format: str = typer.Option("txt", help="txt, jsonl or parquet (text + replacement spans), or brat "
                                                  "(.txt + .ann)"),
    strategy: Optional[str] = typer.Option(None, help="mask, surrogate, hash or keep [default: the pipeline's]"),
    label_strategy: List[str] = typer.Option([], help="LABEL=STRATEGY for one label (repeat); adds to the pipeline's"),
    labels: List[str] = typer.Option([], help="Replace only these labels (repeat) [default: the pipeline's]"),
    seed: Optional[int] = typer.Option(None, help="Seed of surrogates and date offsets [default: the pipeline's]"),
    consistency: Optional[str] = typer.Option(None, help="document, corpus (one mapping for the corpus, one "
                                                         "process) or keyed (from the hash key: the same on every "
                                                         "worker) [default: the pipeline's]"),
    mapping: Optional[Path] = typer.Option(None, help="Write the reversible mapping (JSONL) here: keep it apart"),
    n_process: int = typer.Option(1, min=1, help="Processes for nlp.pipe (local engine)"),
    engine: str = typer.Option("local", help="local (nlp.pipe) or ray (actors; needs synthdeid[ray])"),
    num_workers: int = typer.Option(2, min=1, help="Ray actors, one CPU each (ray engine)"),
    ray_address: Optional[str] = typer.Option(None, help="Address of a Ray cluster [default: a local Ray]"),
    batch_size: int = typer.Option(32, min=1, help="Documents per batch"),
    max_length: Optional[int] = typer.Option(None, min=1, help="Longest text in characters [default: the "
                                                               "pipeline's, 1,000,000]; about 1 GB of memory "
                                                               "per 100,000 characters"),
    on_error: str = typer.Option("skip", help="A bad input document: skip (reported) or stop (nothing written)"),
    overwrite: bool = typer.Option(False, help="Replace an existing output (and mapping) as a whole"),
    summary_path: Optional[Path] = typer.Option(None, "--summary", help="Also write the summary as JSON here"),
):
    """De-identify text files with a synthdeid pipeline; hash keys come from SYNTHDEID_HASH_KEY
    (or the pipeline's hash_key_file)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    strategies = {}
    for item in label_strategy:
        label, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected LABEL=STRATEGY, got {item!r}", param_hint="--label-strategy")
        strategies[label] = value
    options = {"strategy": strategy, "strategies": strategies or None, "labels": list(labels) or None, "seed": seed,
               "consistency": consistency}
    options = {key: value for key, value in options.items() if value is not None}
    try:
        nlp = open_pipeline(model)
        settings = redactor_settings(nlp, options, saved=configure_redactor(nlp, options))
        if max_length:
            nlp.max_length = max_length
        summary = deidentify_files(
            nlp, input_path, output, input_format=input_format, output_format=output_format, mapping=mapping,
            n_process=n_process, batch_size=batch_size, on_error=on_error, overwrite=overwrite, model=model,
            report=lambda m: tqdm.write(m, file=sys.stderr),  # on its own line, not glued to the progress bar
            engine=engine, num_workers=num_workers, ray_address=ray_address,
        )
    except (ValueError, OSError) as err:  # InputError, the redactor's configuration errors, files
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    figures = {**summary.as_dict(), "redactor": settings}
    entities = ", ".join(f"{label} {n}" for label, n in figures["entities"].items()) or "none"
    used = ", ".join(f"{key} {describe(item['value'])} ({item['from']})" for key, item in settings.items())
    typer.echo(
        f"De-identified {figures['documents']} document(s) ({len(figures['skipped'])} skipped) in "
        f"{figures['seconds']} s, {figures['words_per_second']:,.0f} words/s; entities: {entities}. Wrote {output}"
        + (f" and the mapping to {mapping}" if mapping else "") + f". Redactor: {used}."
    )
    if summary_path:
        write_json(summary_path, figures)


def describe(value: Any) -> str:
    """A redactor setting as the summary shows it (an empty list of labels is all of them)."""
    if value == []:
        return "all"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}" if value else "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def main() -> None:
    typer.run(cli)


if __name__ == "__main__":
    main()
