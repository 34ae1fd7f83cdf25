"""File helpers: the one DocBin reader, and atomic output (a step either
leaves a complete output or none)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Type

import spacy
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab


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


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; move it onto `target` only on success.

    Works for files and directories alike: the caller writes whatever it wants
    at the yielded path. On an exception the temporary output is removed and
    an existing `target` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written for {target}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


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
