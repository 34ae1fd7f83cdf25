"""File helpers: the one DocBin reader, the one reader of `{"id", "text"}`
JSONL files, atomic output (a step either leaves a complete output or
none), loading and saving spaCy pipeline folders with checks, the
folder-and-bytes serialisation that spaCy components holding files share,
and the word count of the speed figures."""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type, TypeVar

import spacy
import srsly
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab


def doc_words(doc: Doc) -> int:
    """Words of a doc for speed figures: its tokens, whitespace tokens excluded."""
    return sum(not token.is_space for token in doc)


def read_docs(path: str | Path, vocab: Optional[Vocab] = None) -> List[Doc]:
    """The docs of a `.spacy` DocBin, with a blank multilingual vocab unless
    `vocab` is given. A missing file raises FileNotFoundError, anything else
    that is not a DocBin ValueError, both naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such DocBin")
    try:
        docbin = DocBin().from_disk(path)
    except Exception as err:  # noqa: BLE001 (any failure means "not a DocBin")
        raise ValueError(f"{path}: not a readable spaCy DocBin ({err})") from err
    return list(docbin.get_docs(vocab or spacy.blank("xx").vocab))


# Marks a temporary folder of atomic_path as this project's, with the pid and
# host of the process that made it, so a later run can tell a stale one.
OWNER_FILE = ".synthdeid-owner"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> List[Path]:
    """Remove the temporary folders that runs writing `target` left behind
    when they were killed before they could clean up (SIGKILL, a crash): those
    whose owner process on this host is gone. Returns what was removed."""
    target = Path(target)
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*"):
        owner = candidate / OWNER_FILE
        try:
            pid, host = owner.read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            continue  # not one of ours
        if host == socket.gethostname() and not _process_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextmanager
def atomic_path(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `target` only on success.

    Works for files and directories alike: the caller writes whatever it wants
    at the yielded path. On an exception (or a signal turned into one) the
    temporary output is removed and an existing `target` is left untouched.
    An existing folder is first moved aside whole, in one rename, and deleted
    only once the new one is in place. With `replace=False` a `target` that
    appeared while the caller was writing is left as it is (FileExistsError).
    Temporaries of earlier runs that were killed are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() and target.is_dir():
        raise IsADirectoryError(f"{target}: is a link to a folder; name the folder itself")
    remove_stale_temporaries(target)
    tmp_dir: Optional[Path] = None
    try:
        # A signal between creating the temporary and naming it would leave
        # one that no cleanup knows of: it waits until both are done.
        with _ending_signals_held():
            tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            (tmp_dir / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}", encoding="utf-8")
        tmp = tmp_dir / target.name
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        if target.exists() or target.is_symlink():
            if not replace:
                raise FileExistsError(f"{target}: appeared while this run was writing it; left as it is")
            if target.is_dir() and not target.is_symlink():
                if not tmp.is_dir():  # a file must not wipe out a folder that happens to have its name
                    raise IsADirectoryError(f"{target}: is a folder; a file cannot replace it")
                os.replace(target, tmp_dir / "replaced")  # removed below, with the temporary folder
        os.replace(tmp, target)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            if tmp_dir.exists():
                warnings.warn(f"could not remove all of {tmp_dir} (a replaced output or an unfinished one); "
                              "the next run writing the same output removes it, or remove it by hand")


@contextmanager
def _ending_signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back for the block; one that came
    meanwhile goes to its handler when it ends. (Handlers, not the signal
    mask: a process-directed signal reaches whichever thread does not mask it,
    and its Python handler then runs in the main thread at once.)"""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    caught: List[int] = []
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    held = [signum for signum, handler in handlers.items() if handler is not None]  # None: set outside Python
    for signum in held:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum in held:
            signal.signal(signum, handlers[signum])
        for signum in caught:
            signal.raise_signal(signum)


@contextmanager
def exclusive(target: str | Path) -> Iterator[None]:
    """Hold a lock on writing `target` for the block; another process that
    asks for it meanwhile gets FileExistsError at once."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{target.name}.lock"
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"{target}: another run is writing it now") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def folder_digest(path: str | Path) -> Optional[str]:
    """SHA-256 over the names and contents of the files under `path` (None if
    it is not a folder): a resumable step keys its checkpoints on the model's
    contents, so a model retrained in the same place is not mixed with the old."""
    path = Path(path)
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
        with file.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


T = TypeVar("T")


def start_component_folder(path: str | Path, cfg: Dict[str, Any], cfg_file: str, exclude: Any) -> Path:
    """Create a component's `to_disk` folder and write its settings there
    (unless "cfg" is in `exclude`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if "cfg" not in exclude:
        srsly.write_json(path / cfg_file, cfg)
    return path


def folder_to_bytes(write: Callable[[Path], None]) -> bytes:
    """The files that `write(folder)` saves, as one msgpack blob: `to_bytes`
    for a component whose `to_disk` writes a folder of files."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        files = {str(f.relative_to(tmp)): f.read_bytes() for f in sorted(Path(tmp).rglob("*")) if f.is_file()}
    return srsly.msgpack_dumps({"files": files})


def folder_from_bytes(data: bytes, read: Callable[[Path], T]) -> T:
    """`read(folder)` on the files of a `folder_to_bytes` blob."""
    files = srsly.msgpack_loads(data)["files"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return read(Path(tmp))


class PipelineFolderError(ValueError):
    """A folder that is not the saved spaCy pipeline a step needs (the message names it)."""


class DeviceError(ValueError):
    """A GPU asked for that the pipeline cannot run on (the message says why)."""


# Components that place their models themselves, not on thinc's ops: factory ->
# (the setting, its value for GPU n, -1 the CPU). hf_ner runs a torch model on its
# `device`; ner_committee loads its member pipelines on its `gpu_id`.
OWN_DEVICE_SETTINGS: Dict[str, Tuple[str, Callable[[int], Any]]] = {
    "hf_ner": ("device", lambda gpu_id: f"cuda:{gpu_id}" if gpu_id >= 0 else "cpu"),
    "ner_committee": ("gpu_id", lambda gpu_id: gpu_id),
}


def gpu_overrides(config: Dict[str, Any], gpu_id: int) -> Tuple[Dict[str, Any], bool]:
    """What running a pipeline of `config` (its config.cfg) on GPU `gpu_id`
    (-1: the CPU, whatever device it was saved with) takes: config overrides
    of the components in OWN_DEVICE_SETTINGS, and whether other components
    hold thinc models (tok2vec, ner, transformer), which need thinc's ops on
    the GPU."""
    components = config.get("components", {})
    overrides = {}
    for name, block in components.items():
        if block.get("factory") in OWN_DEVICE_SETTINGS:
            setting, value = OWN_DEVICE_SETTINGS[block["factory"]]
            overrides[f"components.{name}.{setting}"] = value(gpu_id)
    thinc_models = gpu_id >= 0 and any("model" in block for block in components.values()
                                       if block.get("factory") not in OWN_DEVICE_SETTINGS)
    return overrides, thinc_models


def use_gpu(gpu_id: int, *, thinc: bool = True) -> None:
    """Make GPU `gpu_id` the device of what is loaded next: with `thinc`,
    spaCy's own (`spacy.require_gpu`, as `spacy train --gpu-id`; it needs
    cupy); without, only check that torch sees the GPU. -1 (the CPU) does
    nothing."""
    if gpu_id < 0:
        return
    if thinc:
        try:
            spacy.require_gpu(gpu_id)
        except Exception as err:  # no cupy (ValueError), or no such device (cupy's own error)
            spacy.require_cpu()  # require_gpu switches the ops before it fails on the device
            raise DeviceError(f"gpu_id {gpu_id}: spaCy cannot run on this GPU ({err}); it needs a CUDA GPU "
                              "and cupy (pip install 'spacy[cuda12x]'), or use -1 for the CPU") from None
        return
    import torch

    if gpu_id >= torch.cuda.device_count():
        raise DeviceError(f"gpu_id {gpu_id}: torch sees {torch.cuda.device_count()} CUDA GPU(s); "
                          "use -1 for the CPU")


def load_pipeline(folder: str | Path, config: Optional[Dict[str, Any]] = None, gpu_id: int = -1) -> Language:
    """`spacy.load` a saved pipeline folder, with `config` overrides, on GPU
    `gpu_id` (-1: the CPU; see `gpu_overrides`)."""
    folder = Path(folder)
    if not (folder / "config.cfg").is_file():
        raise PipelineFolderError(f"{folder}: not a saved spaCy pipeline (no config.cfg)")
    devices, thinc_models = gpu_overrides(spacy.util.load_config(folder / "config.cfg", interpolate=False), gpu_id)
    use_gpu(gpu_id, thinc=thinc_models)
    return spacy.load(folder, config={**devices, **(config or {})})


def load_ner_pipeline(folder: str | Path, config: Optional[Dict[str, Any]] = None, gpu_id: int = -1) -> Language:
    """`load_pipeline`, checking that some component assigns entities."""
    nlp = load_pipeline(folder, config, gpu_id)
    if not any("doc.ents" in nlp.get_pipe_meta(name).assigns for name in nlp.pipe_names):
        raise PipelineFolderError(f"{folder}: no component of the pipeline {nlp.pipe_names} assigns entities")
    return nlp


def save_pipeline(nlp: Language, output_dir: str | Path) -> Path:
    """Save `nlp` to `output_dir` atomically, once the saved folder has loaded
    on its own and run."""
    with atomic_path(output_dir) as tmp:
        nlp.to_disk(tmp)
        spacy.load(tmp)("Prueba.")
    return Path(output_dir)


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | Path, data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def decode_utf8(data: bytes, where: str, error: Type[Exception], first_line: int = 1) -> str:
    """`data` as text; bytes that are not UTF-8 raise `error("<where>:<line>: ...")`
    (`first_line`: the line `data` starts on)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        raise error(f"{where}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x})") from None


def read_json(path: str | Path, what: str) -> Any:
    """The JSON content of the file `path`, a `what` ("frames file"); a
    ValueError naming the file (and the line) where it cannot be read or is
    no JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the {what} ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f":{err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ValueError(f"{path}{where}: not a JSON {what} ({err})") from None


def json_error(where: str, err: json.JSONDecodeError) -> str:
    """`<where>: invalid JSON (<what> at column N)`; some of json's messages
    already end in "at"."""
    what = err.msg[: -len(" at")] if err.msg.endswith(" at") else err.msg
    return f"{where}: invalid JSON ({what} at column {err.colno})"


def id_problem(value: Any, integer_ids: bool) -> Optional[str]:
    """Why `value` cannot be a document id (None if it can): ids are
    non-empty strings, or also integers with `integer_ids` (never booleans)."""
    id_types = (str, int) if integer_ids else (str,)
    if isinstance(value, bool) or not isinstance(value, id_types) or not str(value).strip():
        kind = "a non-empty string or an integer" if integer_ids else "a non-empty string"
        return f"must be {kind}, got {value!r}"
    return None


def unencodable(text: str) -> Optional[int]:
    """The position of the first character UTF-8 cannot encode (a lone
    surrogate such as JSON's "\\ud800"), None if there is none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return err.start
    return None


@dataclass(frozen=True)
class TextRecord:
    """One non-blank line of an `{"id", "text"}` JSONL file: its id and text,
    or `error`, the line's problem as `<file>:<line>: ...` (`doc_id` is set
    when the id was read). `tag_spans`: the (start, end, label) spans that
    the inline tags of a generator adapted on tagged notes marked, when the
    record has them."""

    where: str
    doc_id: Optional[str] = None
    text: Optional[str] = None
    error: Optional[str] = None
    tag_spans: Optional[List[Tuple[int, int, str]]] = None


def tag_spans_problem(spans: Any, text: str) -> Optional[str]:
    """What is wrong with a record's tag spans: not a list of [start, end,
    label] with 0 <= start < end <= len(text), in order, not overlapping."""
    if not isinstance(spans, list):
        return f"is not a list ({type(spans).__name__})"
    last_end = 0
    for span in spans:
        if not (isinstance(span, list) and len(span) == 3 and all(type(v) is int for v in span[:2])
                and isinstance(span[2], str) and span[2]):
            return f"holds {span!r}, not [start, end, label]"
        if not last_end <= span[0] < span[1] <= len(text):
            return f"holds {span!r}: out of the text's {len(text)} characters, empty, out of order or overlapping"
        last_end = span[1]
    return None


def read_text_records(path: str | Path, integer_ids: bool = False) -> Iterator[TextRecord]:
    """Lazily, the records of a JSONL file with one `{"id", "text"}` object per
    line (other keys are ignored, blank lines skipped, a byte-order mark
    dropped). Ids are non-empty strings, or also integers (read as strings)
    with `integer_ids`, and are unique; texts are non-empty strings that UTF-8
    can encode. A bad line comes as a record with an
    `error`, so the caller decides whether to stop or skip it."""
    first_seen: Dict[str, str] = {}
    with Path(path).open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                line = decode_utf8(raw, str(path), ValueError, first_line=number)
                record = json.loads(line.lstrip("\ufeff") if number == 1 else line)
            except json.JSONDecodeError as err:
                yield TextRecord(where, error=json_error(where, err))
                continue
            except ValueError as err:
                yield TextRecord(where, error=str(err))
                continue
            yield checked_record(where, f"line {number}", record, first_seen, integer_ids)


def read_parquet_records(path: str | Path, integer_ids: bool = False, batch_rows: int = 1024) -> Iterator[TextRecord]:
    """Lazily, the rows of a Parquet file with `id` and `text` columns (other
    columns are not read), checked as `read_text_records` checks a JSONL
    line; a bad row's error names it as `<file>:row <n>` (from 1). Reads
    `batch_rows` rows at a time, so memory stays flat. A file that is not
    Parquet or lacks a column is a ValueError at once. Needs pyarrow (the
    `synthdeid[ray]` extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow: pip install 'synthdeid[ray]'") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 (pyarrow raises several kinds for a file that is not Parquet)
        raise ValueError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [column for column in ("id", "text") if column not in table.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: no {' or '.join(repr(c) for c in missing)} column; "
                         f"it has {', '.join(table.schema_arrow.names)}")

    def records() -> Iterator[TextRecord]:
        first_seen: Dict[str, str] = {}
        number = 0
        for batch in table.iter_batches(batch_size=batch_rows, columns=["id", "text"]):
            for record in batch.to_pylist():
                number += 1
                yield checked_record(f"{path}:row {number}", f"row {number}", record, first_seen, integer_ids)

    return records()  # the file is checked now, its rows read as they are asked for


def checked_record(where: str, place: str, record: Any, first_seen: Dict[str, str],
                   integer_ids: bool = False) -> TextRecord:
    """One `{"id", "text"}` record (`read_text_records`' rules) read at
    `where` (`place` within its file), as a TextRecord with the text or with
    its problem; `first_seen` (id -> place) finds repeated ids."""
    if not isinstance(record, dict):
        return TextRecord(where, error=f"{where}: expected a JSON object, got {type(record).__name__}")
    doc_id, text = record.get("id"), record.get("text")
    problem = id_problem(doc_id, integer_ids)
    if problem is None and unencodable(str(doc_id)) is not None:
        problem = f"holds a character UTF-8 cannot encode: {doc_id!r}"
    if problem:
        return TextRecord(where, error=f"{where}: 'id' {problem}")
    doc_id = str(doc_id)
    if doc_id in first_seen:
        # Outputs are keyed by id: a repeat would mix two documents.
        return TextRecord(where, doc_id, error=f"{where}: duplicate id {doc_id!r} (first on {first_seen[doc_id]})")
    first_seen[doc_id] = place
    if not isinstance(text, str):
        what = "missing" if "text" not in record else f"not a string ({type(text).__name__})"
        return TextRecord(where, doc_id, error=f"{where}: 'text' is {what}")
    if not text.strip():
        return TextRecord(where, doc_id, error=f"{where}: empty text (id {doc_id!r})")
    if (position := unencodable(text)) is not None:
        return TextRecord(where, doc_id, error=(f"{where}: 'text' holds a character UTF-8 cannot encode (a lone "
                                                f"surrogate, {text[position]!r} at character {position})"))
    if "tag_spans" in record and (problem := tag_spans_problem(record["tag_spans"], text)):
        return TextRecord(where, doc_id, error=f"{where}: 'tag_spans' {problem}")
    spans = record.get("tag_spans")
    return TextRecord(where, doc_id, text, tag_spans=None if spans is None else [tuple(s) for s in spans])


@dataclass(frozen=True)
class TextDoc:
    """A document without annotation (a generated note): its id and text,
    and the spans its inline tags marked where the generator wrote them."""

    name: str
    text: str
    tag_spans: Optional[List[Tuple[int, int, str]]] = None


def read_text_docs(path: str | Path, error: Type[Exception] = ValueError) -> List[TextDoc]:
    """The documents of an `{"id", "text"}` JSONL file (`read_text_records`),
    all or none: a missing or empty file, or the first bad line, raises
    `error` as `<file>:<line>: <problem>`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    docs: List[TextDoc] = []
    for record in read_text_records(path):
        if record.error:
            raise error(record.error)
        docs.append(TextDoc(record.doc_id, record.text, record.tag_spans))
    if not docs:
        raise error(f"{path}: no documents")
    return docs


class ResumeState:
    """The state file of a resumable step: what its output depends on
    (`fingerprint`: inputs, settings) and how far it got (`progress`). A
    state of other inputs or settings, or one this code did not write, reads
    as none, so the step starts afresh."""

    def __init__(self, path: str | Path, fingerprint: Any):
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from JSON

    def load(self) -> Optional[Dict[str, Any]]:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            return None
        progress = saved.get("progress")
        return progress if isinstance(progress, dict) else None

    def save(self, progress: Dict[str, Any]) -> None:
        write_json(self.path, {"fingerprint": self.fingerprint, "progress": progress})
