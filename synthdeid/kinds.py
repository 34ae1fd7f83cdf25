"""Label schemes as data: what kind of PII each label of a corpus holds.

The redactor decides a surrogate by an entity's kind, not by its label, so a
corpus with its own label names (`First_Name`, `NAME_PATIENT`, `PATIENT`)
gets surrogates of the right kind. A label's kind comes from, in order:

1. the pipeline's own map (the redactor's `label_kinds` setting), which the
   packaged pipeline carries in its config;
2. the shipped schemes, one JSON file each in `synthdeid/schemes/`
   (MEDDOCAN, Nor-DeID, i2b2); an entry is a kind, or `{"kind": ...,
   "template": ...}` where the surrogate of an organisation needs its own
   form (`Centro de Salud {surname}`);
3. a guess from the label's name (`guess_kind`: `NAME_*`, `*_DATE`,
   `Phone_Number` ...), which `package` prints for the user to check.

A label with no kind is masked, and the redactor names it in a warning.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Tuple

from .io import read_json

KINDS = ("name", "first_name", "surname", "date", "age", "street", "city", "zip", "country", "hospital",
         "organisation", "identifier", "phone", "fax", "email", "url", "ip_address", "profession", "sex",
         "relative", "username", "other")
NAME_KINDS = frozenset({"name", "first_name", "surname"})
# Kinds whose distinctive values identify by themselves; the rest (dates,
# ages, sexes, kinship phrases, countries, professions) recur by chance.
IDENTIFYING_KINDS = frozenset({
    "name", "first_name", "surname", "street", "city", "zip", "hospital", "organisation", "identifier", "phone",
    "fax", "email", "url", "ip_address", "username",
})

SCHEMES_DIR = Path(__file__).parent / "schemes"

# Words of a label's name -> kind, tried in this order (the first found wins:
# `ID_TELEFONO` is an identifier, `FIRST_NAME` a first name before a name).
_GUESSES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("email", ("email", "mail", "correo")),
    ("url", ("url", "web", "website")),
    ("ip_address", ("ip",)),
    ("fax", ("fax",)),
    ("phone", ("phone", "telephone", "tel", "telefono", "mobile", "telefon")),
    ("identifier", ("id", "ssn", "number", "numero", "num", "record", "mrn", "account", "license", "licence",
                    "code", "nhc", "identif", "identifier", "idnum", "medicalrecord", "healthplan")),
    ("first_name", ("first", "firstname", "given", "fornavn")),
    ("surname", ("last", "lastname", "surname", "family", "etternavn", "apellido", "apellidos")),
    ("relative", ("relative", "familiares", "kin", "family_member")),
    ("name", ("name", "nombre", "patient", "doctor", "person", "persona", "navn", "staff")),
    ("date", ("date", "fecha", "fechas", "dato", "time", "datum")),
    ("age", ("age", "edad", "alder")),
    ("sex", ("sex", "sexo", "gender", "kjonn")),
    ("street", ("street", "calle", "address", "direccion", "adresse", "gate")),
    ("zip", ("zip", "postcode", "postal", "postnummer")),
    ("country", ("country", "pais", "land", "nation")),
    ("hospital", ("hospital", "clinic", "health", "care", "unit", "sykehus", "centro", "salud")),
    ("organisation", ("organization", "organisation", "institution", "institucion", "company", "department")),
    ("city", ("city", "location", "territorio", "town", "state", "place", "sted", "municipality", "region")),
    ("profession", ("profession", "profesion", "job", "occupation", "yrke")),
    ("username", ("username", "user", "login")),
)


@lru_cache(maxsize=None)
def shipped_schemes() -> Dict[str, Dict]:
    """{scheme name: its JSON} of the schemes in `synthdeid/schemes/`."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SCHEMES_DIR.glob("*.json"))}


def _entry(entry) -> Tuple[str, Optional[str]]:
    return (entry["kind"], entry.get("template")) if isinstance(entry, dict) else (entry, None)


@lru_cache(maxsize=None)
def _shipped_entries() -> Dict[str, Tuple[str, Optional[str]]]:
    entries: Dict[str, Tuple[str, Optional[str]]] = {}
    for scheme in shipped_schemes().values():
        for label, entry in scheme["kinds"].items():
            entries.setdefault(label, _entry(entry))
    return entries


def shipped_labels() -> set:
    """Every label the shipped schemes name."""
    return set(_shipped_entries())


def guess_kind(label: str) -> Optional[str]:
    """The kind a label's name suggests, or None: its words (split at `_`,
    `-`, spaces and case changes, accents kept out) against `_GUESSES`."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label)
    words = {word for word in re.split(r"[\W_]+", _fold(spaced)) if word}
    for kind, cues in _GUESSES:
        if words & set(cues):
            return kind
    return None


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


def read_label_kinds(path: str | Path) -> Dict[str, object]:
    """A label-kinds file: a JSON object from label to kind, or to `{"kind",
    "template"}`; ValueError naming the file where it is not one."""
    kinds = read_json(path, "file of label -> kind")
    if not isinstance(kinds, dict):
        raise ValueError(f"{path}: expected an object of label -> kind, e.g. {{\"ARZT\": \"name\"}}")
    try:
        LabelKinds(kinds)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None
    return kinds


def pipeline_labels(nlp) -> set:
    """The labels of every component of `nlp` that sets entities."""
    return {str(label) for name in nlp.pipe_names if "doc.ents" in nlp.get_pipe_meta(name).assigns
            for label in getattr(nlp.get_pipe(name), "labels", ())}


class LabelKinds:
    """The kind of each label: `overrides` (label -> kind, or -> {"kind",
    "template"}) first, then the shipped schemes, then `guess_kind`."""

    def __init__(self, overrides: Optional[Mapping[str, object]] = None):
        self.overrides = {label: _entry(entry) for label, entry in (overrides or {}).items()}
        for label, (kind, _) in self.overrides.items():
            if kind not in KINDS:
                raise ValueError(f"label_kinds: {label} = {kind!r} is not a kind; kinds are {', '.join(KINDS)}")

    def entry(self, label: str) -> Tuple[Optional[str], Optional[str], str]:
        """(kind or None, surrogate template or None, where it came from)."""
        if label in self.overrides:
            return (*self.overrides[label], "the label_kinds map")
        if label in _shipped_entries():
            return (*_shipped_entries()[label], "a shipped scheme")
        kind = guess_kind(label)
        return kind, None, "a guess from the label's name" if kind else "nothing"

    def kind(self, label: str) -> Optional[str]:
        return self.entry(label)[0]

    def kind_labels(self, labels: Iterable[str]) -> Dict[str, str]:
        """{kind: the first of `labels` (sorted) of that kind}: the labels
        `pii_rules` gives its spans in a language without rules of its own."""
        found: Dict[str, str] = {}
        for label in sorted(labels):
            kind = self.kind(label)
            if kind is not None:
                found.setdefault(kind, label)
        return found
