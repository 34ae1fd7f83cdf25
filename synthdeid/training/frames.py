"""Frames as data: sentences with a slot `{X}` where a PII value goes.

The behavioural test set (`behaviour.py`) and the narrative training notes
(`narrative.py`) put PII values into sentences of running prose. Those
sentences are language and, in part, scheme: they live in one JSON file per
language, `synthdeid/frames/<lang>.json` (shipped: es, keyed by MEDDOCAN's
labels; nb and en, keyed by kinds), or in a file of the user's
(`--frames`, the project's `frames` var), of the form

    {"behaviour": {KEY: [[frame id, sentence], ...]},
     "narrative": {KEY: [sentence, ...]},
     "cased": [KEY, ...]}

A KEY is a label of the corpus, or a kind (`synthdeid.kinds.KINDS`): a label
takes its own frames, and a label with none takes its kind's. A frame id
ending in ":lower" or ":upper" writes the value in that case; "cased" names
the keys whose narrative values are also written in lower and upper case
(names and places, which a pipeline must not find by their capital letter
only). The behavioural and the narrative frames of a file must not share a
sentence, so that the behavioural set measures sentences the pipeline has
not been trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from ..io import read_json
from ..kinds import KINDS

FRAMES_DIR = Path(__file__).parents[1] / "frames"


@dataclass(frozen=True)
class Frames:
    behaviour: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)
    narrative: Dict[str, List[str]] = field(default_factory=dict)
    cased: FrozenSet[str] = frozenset()
    source: str = "no frames"

    def by_label(self, section: str, labels: Iterable[str], kind_of: Callable[[str], Optional[str]]) -> Dict:
        """{label: its frames of `section` ("behaviour" or "narrative")} for
        each of `labels` that has some: its own, else its kind's. In the
        file's order of keys; labels of one kind in sorted order."""
        frames = getattr(self, section)
        labels = sorted(set(labels))
        found: Dict[str, object] = {}
        for key, texts in frames.items():
            if key in labels:
                found[key] = texts
            elif key in KINDS:
                for label in labels:
                    if label not in frames and kind_of(label) == key:
                        found[label] = texts
        return found

    def is_cased(self, label: str, kind: Optional[str]) -> bool:
        return label in self.cased or (kind in self.cased and label not in self.narrative)


def shipped_frames(lang: str) -> Optional[Path]:
    path = FRAMES_DIR / f"{lang}.json"
    return path if path.is_file() else None


def load_frames(lang: str, path: str | Path | None = None) -> Frames:
    """The frames of `path`, else those shipped for `lang`, else none."""
    path = Path(path) if path else shipped_frames(lang)
    if path is None:
        return Frames(source=f"no frames for language {lang!r} (synthdeid/frames/ has "
                             f"{', '.join(sorted(p.stem for p in FRAMES_DIR.glob('*.json')))})")
    data = read_json(path, "frames file")
    problem = _problem(data)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return Frames(
        behaviour={key: [(frame_id, text) for frame_id, text in frames] for key, frames in data["behaviour"].items()},
        narrative={key: list(texts) for key, texts in data.get("narrative", {}).items()},
        cased=frozenset(data.get("cased", ())),
        source=str(path),
    )


def _problem(data) -> Optional[str]:
    """What is wrong with a frames file's JSON, or None."""
    if not isinstance(data, dict) or not isinstance(data.get("behaviour"), dict):
        return 'expected an object with "behaviour" (and maybe "narrative" and "cased")'
    tested: Dict[str, str] = {}  # sentence -> where
    for key, frames in data["behaviour"].items():
        if not isinstance(frames, list) or not all(isinstance(f, list) and len(f) == 2 for f in frames):
            return f"behaviour.{key}: expected a list of [frame id, sentence] pairs"
        tested.update({text: f"behaviour.{key}" for _, text in frames})
    narrative = data.get("narrative", {})
    if not isinstance(narrative, dict) or not all(isinstance(v, list) for v in narrative.values()):
        return "narrative: expected an object of key -> list of sentences"
    trained = {text: f"narrative.{key}" for key, texts in narrative.items() for text in texts}
    for text, where in trained.items():
        if text in tested:
            return f"{where}: {text!r} is also a behavioural frame ({tested[text]})"
    for text, where in {**tested, **trained}.items():
        if not isinstance(text, str) or text.count("{X}") != 1:
            return f"{where}: {text!r} must hold one {{X}}"
    if not isinstance(data.get("cased", []), list):
        return "cased: expected a list of keys"
    return None
