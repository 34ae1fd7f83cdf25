"""The `pii_redactor` component: replaces recognised PII in `doc._.deidentified`.

This file is shipped inside packaged pipelines (`spacy package --code`), so it
imports nothing from synthdeid; its one extra requirement, Faker (fake values
for the `surrogate` strategy), is a requirement of the packaged wheel.

Strategies, chosen per label:
- `mask`: the `template`, `[{label}]` by default.
- `surrogate`: a realistic Spanish value of the same kind (Faker's es_ES
  locale): names keep their number of parts and each part maps consistently
  (`Ana Ruiz García` and later `Ruiz` become `Lucía Soler Prieto` and
  `Soler`), identifiers and phone numbers keep their shape (digit for digit,
  letter for letter), dates move by one offset per document keeping their
  written format and the days between them, ages up to 89 stay (HIPAA Safe
  Harbor allows them) and older ages become 90.
- `hash`: `[{label}-{digest}]`, a keyed HMAC of the value, so equal values give
  equal tokens wherever the key is the same.
- `keep`: the entity is left as written.

Surrogates are consistent within a document, or across every document the
component sees with `consistency = "corpus"` (in one process). They are seeded:
the same text, seed and config give the same output.

`doc._.pii_replacements` lists every replaced entity (original offsets, label,
text, replacement and its offsets in `doc._.deidentified`): the reversible
mapping, which `reidentify` applies back. Keep it apart from the text.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import hmac
import os
import random
import re
import unicodedata
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

for _name in ("deidentified", "pii_replacements"):
    if not Doc.has_extension(_name):
        Doc.set_extension(_name, default=None)

STRATEGIES = ("mask", "surrogate", "hash", "keep")
MEDDOCAN_LABELS = (
    "CALLE", "CENTRO_SALUD", "CORREO_ELECTRONICO", "EDAD_SUJETO_ASISTENCIA", "FAMILIARES_SUJETO_ASISTENCIA",
    "FECHAS", "HOSPITAL", "ID_ASEGURAMIENTO", "ID_CONTACTO_ASISTENCIAL", "ID_EMPLEO_PERSONAL_SANITARIO",
    "ID_SUJETO_ASISTENCIA", "ID_TITULACION_PERSONAL_SANITARIO", "INSTITUCION", "NOMBRE_PERSONAL_SANITARIO",
    "NOMBRE_SUJETO_ASISTENCIA", "NUMERO_FAX", "NUMERO_TELEFONO", "OTROS_SUJETO_ASISTENCIA", "PAIS", "PROFESION",
    "SEXO_SUJETO_ASISTENCIA", "TERRITORIO", "URL_WEB", "DIRECCION_IP", "OTRO_NUMERO_IDENTIF",
)
HASH_KEY_ENV = "SYNTHDEID_HASH_KEY"


DEFAULT_CONFIG = {
    "strategy": "mask",
    "strategies": {},
    "labels": [],
    "template": "[{label}]",
    "hash_template": "[{label}-{digest}]",
    "hash_key": "",
    "seed": 0,
    "date_shift_days": [-365, 365],
    "consistency": "document",
    "known_labels": list(MEDDOCAN_LABELS),
}


def make_pii_redactor(
    nlp: Language,
    name: str,
    strategy: str,
    strategies: Dict[str, str],
    labels: List[str],
    template: str,
    hash_template: str,
    hash_key: str,
    seed: int,
    date_shift_days: List[int],
    consistency: str,
    known_labels: List[str],
) -> "PIIRedactor":
    """Set `doc._.deidentified` (the text with PII replaced) and
    `doc._.pii_replacements` (the mapping).

    strategy: mask | surrogate | hash | keep, for every label without its own.
    strategies: per-label strategy, e.g. {"SEXO_SUJETO_ASISTENCIA": "keep"}.
    labels: the labels to replace; empty means all; others are kept.
    template: the mask text; `{label}` is the label (`{text}` is refused).
    hash_template: the hash text; `{label}` and `{digest}` (12 hex digits).
    hash_key: the HMAC key of `hash`; empty reads the SYNTHDEID_HASH_KEY
        environment variable (so the key need not live in the pipeline).
    seed: seed of surrogates and date offsets.
    date_shift_days: [low, high] range of the per-document date offset (0 excluded).
    consistency: "document" (fresh surrogates per document) or "corpus"
        (one mapping for every document this component sees).
    known_labels: labels a config may name; a label outside it is an error.
    """
    return PIIRedactor(
        name=name, strategy=strategy, strategies=strategies, labels=labels, template=template,
        hash_template=hash_template, hash_key=hash_key, seed=seed, date_shift_days=date_shift_days,
        consistency=consistency, known_labels=known_labels,
    )


# This file is imported as synthdeid.redact and, inside a packaged pipeline,
# as that package's copy: whichever comes first registers the factory (spaCy
# refuses a second function under the same name).
if not Language.has_factory("pii_redactor"):
    Language.factory("pii_redactor", default_config=DEFAULT_CONFIG)(make_pii_redactor)


def _config_error(name: str, message: str) -> ValueError:
    return ValueError(f"{name}: {message}")


def _suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=2)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _ascii_fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn").casefold()


def _match_case(fake: str, original: str) -> str:
    if original.isupper() and len(original) > 1:
        return fake.upper()
    if original.islower():
        return fake.lower()
    return fake


def _reshape(text: str, rng: random.Random) -> str:
    """Same shape: a random digit for each digit, letter for each letter (case kept)."""
    out = []
    for char in text:
        if char.isdigit():
            out.append(str(rng.randrange(10)))
        elif char.isalpha() and char not in "ºª":  # ordinal signs (3º B) stay
            letter = rng.choice("ABCDEFGHJKLMNPRSTVWXYZ")
            out.append(letter if char.isupper() else letter.lower())
        else:
            out.append(char)
    return "".join(out)


MONTHS = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
          "noviembre", "diciembre")
_MONTH = "(" + "|".join(MONTHS) + "|setiembre)"
_NUMERIC_DATE = re.compile(r"^(\d{1,2})([/\-.])(\d{1,2})(?:\2(\d{4}|\d{2}))?$")
_MONTH_YEAR = re.compile(r"^(\d{1,2})([/\-.])(\d{4})$")
_ISO_DATE = re.compile(r"^(\d{4})([/\-.])(\d{1,2})\2(\d{1,2})$")
# "12 de marzo de 2018", "1º de marzo", "12 marzo 2018", "Marzo del 2019", "marzo"
_TEXT_DATE = re.compile(rf"^(?:(\d{{1,2}})(º)?\s+(de\s+)?)?{_MONTH}(?:\s+(?:(de|del)\s+)?(\d{{4}}))?$", re.IGNORECASE)
_YEAR = re.compile(r"^(1[89]\d\d|20\d\d)$")


def shift_date(text: str, days: int) -> Optional[str]:
    """`text` moved by `days`, written as before; None when it is not a date
    this function reads (day/month/year with / - or ., year-month-day,
    month/year, '12 de marzo de 2018' and its parts, a year)."""
    stripped = text.strip()
    match = _NUMERIC_DATE.match(stripped)
    if match:
        day, sep, month, year = match.groups()
        year_value = (2000 + int(year) if int(year) < 50 else 1900 + int(year)) if year and len(year) == 2 else int(year or 2000)
        try:
            moved = dt.date(year_value, int(month), int(day)) + dt.timedelta(days=days)
        except ValueError:
            return None
        parts = [f"{moved.day:0{len(day)}d}", f"{moved.month:0{len(month)}d}"]
        if year:
            parts.append(f"{moved.year % 100:02d}" if len(year) == 2 else str(moved.year))
        return text.replace(stripped, sep.join(parts))
    match = _ISO_DATE.match(stripped)
    if match:
        year, sep, month, day = match.groups()
        try:
            moved = dt.date(int(year), int(month), int(day)) + dt.timedelta(days=days)
        except ValueError:
            return None
        return text.replace(stripped, sep.join([str(moved.year), f"{moved.month:0{len(month)}d}",
                                                f"{moved.day:0{len(day)}d}"]))
    match = _MONTH_YEAR.match(stripped)
    if match:
        month, sep, year = match.groups()
        if not 1 <= int(month) <= 12:
            return None
        moved = dt.date(int(year), int(month), 15) + dt.timedelta(days=days)
        return text.replace(stripped, f"{moved.month:0{len(month)}d}{sep}{moved.year}")
    match = _TEXT_DATE.match(stripped)
    if match:
        day, ordinal, day_link, month_name, link, year = match.groups()
        month = (MONTHS.index(month_name.lower()) if month_name.lower() in MONTHS else 8) + 1
        try:
            moved = dt.date(int(year or 2000), month, int(day or 15)) + dt.timedelta(days=days)
        except ValueError:
            return None
        name = _match_case(MONTHS[moved.month - 1], month_name)
        if month_name[0].isupper() and not month_name.isupper():
            name = name.capitalize()
        day_written = f"{moved.day}{'º' if ordinal and moved.day == 1 else ''} {day_link or ''}" if day else ""
        year_written = (f" {link} {moved.year}" if link else f" {moved.year}") if year else ""
        written = day_written + name + year_written
        return text.replace(stripped, written)
    match = _YEAR.match(stripped)
    if match:
        return text.replace(stripped, str((dt.date(int(stripped), 7, 1) + dt.timedelta(days=days)).year))
    return None


_TITLES = {"sr", "sra", "srta", "dr", "dra", "don", "dona", "dna", "prof", "profa"}
_FIRST_NAMES: Optional[Tuple[set, set]] = None


def _first_names() -> Tuple[set, set]:
    """(all, female) Spanish first names of Faker's es_ES locale, accent- and case-folded."""
    global _FIRST_NAMES
    if _FIRST_NAMES is None:
        from faker.providers.person.es_ES import Provider as Person

        female = {_ascii_fold(n) for n in Person.first_names_female}
        _FIRST_NAMES = (female | {_ascii_fold(n) for n in Person.first_names_male}, female)
    return _FIRST_NAMES


class _Surrogates:
    """The fake values of one consistency scope (a document or a corpus)."""

    def __init__(self, rng: random.Random, fake: Any, date_shift_days: Sequence[int]):
        self.rng = rng
        self.fake = fake
        fake.seed_instance(rng.getrandbits(32))
        low, high = date_shift_days
        offsets = [d for d in range(low, high + 1) if d != 0]
        self.date_offset = rng.choice(offsets) if offsets else 0
        self.by_value: Dict[Tuple[str, str], str] = {}
        self.used: Dict[str, set] = {}

    def _unique(self, kind: str, original: str, draw: Callable[[], str]) -> str:
        """One fake per original value of a kind, never shared by two values
        and never the original itself."""
        key = (kind, _ascii_fold(original))
        if key in self.by_value:
            return self.by_value[key]
        used = self.used.setdefault(kind, set())
        for attempt in range(50):
            fake = draw()
            if _ascii_fold(fake) not in used and _ascii_fold(fake) != key[1]:
                break
        else:  # the kind's values ran out: add a distinguishing number
            fake = f"{draw()} {len(used) + 1}"
        used.add(_ascii_fold(fake))
        self.by_value[key] = fake
        return fake

    def name(self, text: str) -> str:
        first_names, female = _first_names()
        parts = re.split(r"(\s+|-)", text)
        # Capitalised words are the name ("su hermano Pedro", "García de la
        # Fuente"); in an all-lowercase mention every word is.
        capitalised = any(part[:1].isupper() for part in parts)
        out = []
        for part in parts:
            bare = part.strip(".,")
            folded = _ascii_fold(bare)
            if (not bare or not bare[0].isalpha() or folded in _TITLES
                    or (capitalised and not bare[0].isupper())):
                out.append(part)  # separators, titles (Sra., Dr, Doña) and lowercase words stay
                continue
            if len(bare) == 1:  # an initial: another letter, the same for the same initial
                key = ("initial", folded)
                if key not in self.by_value:  # draw only once: later draws stay as they were
                    self.by_value[key] = self.rng.choice([c for c in "ABCDEFGHIJLMNOPRSTV" if c.lower() != folded])
                out.append(part.replace(bare, _match_case(self.by_value[key], bare)))
                continue
            if folded in first_names:
                draw = self.fake.first_name_female if folded in female else self.fake.first_name_male
                fake = self._unique("first_name", bare, lambda: draw().split()[0])
            else:
                fake = self._unique("surname", bare, lambda: self.fake.last_name().split()[0])
            out.append(part.replace(bare, _match_case(fake, bare)))
        return "".join(out)

    def value(self, label: str, text: str) -> Optional[str]:
        """The surrogate of `text`; None when the label has no surrogate."""
        if label in ("NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO"):
            return self.name(text)
        if label == "FECHAS":
            return shift_date(text, self.date_offset)
        if label == "EDAD_SUJETO_ASISTENCIA":
            if not re.search(r"\d", text):
                return None  # an age in words ("noventa y cinco años") cannot be capped: mask it
            return re.sub(r"\d+", lambda m: m.group() if int(m.group()) <= 89 else "90", text)
        if label == "FAMILIARES_SUJETO_ASISTENCIA":  # "su madre" stays, "su hermano Pedro" is a name
            return self.name(text) if any(c.isupper() for c in text) else text
        if label == "SEXO_SUJETO_ASISTENCIA":
            return text  # a sex is not an identifier by itself
        if label == "CORREO_ELECTRONICO":
            return self._unique(label, text, self.fake.free_email)
        if label == "URL_WEB":
            return self._unique(label, text, self.fake.url)
        if label == "DIRECCION_IP":
            return self._unique(label, text, self.fake.ipv4)
        if label == "PAIS":
            return self._unique(label, text, self.fake.country)
        if label == "PROFESION":
            return self._unique(label, text, self.fake.job)
        if label == "TERRITORIO":
            if any(c.isdigit() for c in text):
                return self._unique(label, text, lambda: _reshape(text, self.rng))
            return _match_case(self._unique(label, text, self.fake.city), text)
        if label == "CALLE":  # "Calle Mayor, 12, 3º B": a fake street, then the number's shape
            digit = next((i for i, c in enumerate(text) if c.isdigit()), len(text))
            head, tail = text[:digit], text[digit:]
            if not head.strip(" ,"):
                return _reshape(text, self.rng)
            street = self._unique(label, head.strip(" ,"), self.fake.street_name)
            return street + head[len(head.rstrip(" ,")):] + _reshape(tail, self.rng)
        if label in ("HOSPITAL", "CENTRO_SALUD", "INSTITUCION"):
            kind = {"HOSPITAL": "Hospital", "CENTRO_SALUD": "Centro de Salud", "INSTITUCION": "Fundación"}[label]
            return self._unique(label, text, lambda: f"{kind} {self.fake.last_name().split()[0]}")
        numeric_other = label == "OTROS_SUJETO_ASISTENCIA" and any(c.isdigit() for c in text)
        if label.startswith(("ID_", "NUMERO_", "OTRO_NUMERO")) or numeric_other:
            return self._unique(label, text, lambda: _reshape(text, self.rng))
        return None


class PIIRedactor:
    def __init__(
        self,
        name: str = "pii_redactor",
        strategy: str = "mask",
        strategies: Optional[Mapping[str, str]] = None,
        labels: Sequence[str] = (),
        template: str = "[{label}]",
        hash_template: str = "[{label}-{digest}]",
        hash_key: str = "",
        seed: int = 0,
        date_shift_days: Sequence[int] = (-365, 365),
        consistency: str = "document",
        known_labels: Sequence[str] = MEDDOCAN_LABELS,
    ):
        strategies = dict(strategies or {})
        self.name = name
        known = set(known_labels)
        for where, value in [("strategy", strategy)] + [(f"strategies.{k}", v) for k, v in strategies.items()]:
            if value not in STRATEGIES:
                raise _config_error(name, f"{where} = {value!r} is not a strategy; use one of "
                                          f"{', '.join(STRATEGIES)}{_suggest(str(value), STRATEGIES)}")
        for where, label in [("labels", label) for label in labels] + [("strategies", k) for k in strategies]:
            if label not in known:
                raise _config_error(name, f"{where} names unknown label {label!r}{_suggest(label, known)}; "
                                          "known labels are set by known_labels")
        for where, text, fields in (("template", template, {"label": "L"}),
                                    ("hash_template", hash_template, {"label": "L", "digest": "0"})):
            if "{text}" in text:
                raise _config_error(name, f"the {where} must not reinsert the entity text: {text!r}")
            try:
                text.format(**fields)
            except (KeyError, IndexError, ValueError, AttributeError, TypeError) as err:
                raise _config_error(name, f"malformed {where} {text!r} ({err!r}); it may use "
                                          f"{', '.join('{' + f + '}' for f in fields)}") from None
        if "{digest}" not in hash_template:
            raise _config_error(name, f"hash_template {hash_template!r} has no {{digest}}: every value would "
                                      "get the same token")
        if consistency not in ("document", "corpus"):
            raise _config_error(name, f"consistency = {consistency!r}: use 'document' or 'corpus'")
        if len(date_shift_days) != 2 or date_shift_days[0] > date_shift_days[1]:
            raise _config_error(name, f"date_shift_days = {list(date_shift_days)!r}: expected [low, high], low <= high")
        if list(date_shift_days) == [0, 0]:
            raise _config_error(name, "date_shift_days = [0, 0] leaves every date as written; give a range "
                                      "with a non-zero offset")
        self.strategy = strategy
        self.strategies = strategies
        self.labels = set(labels)
        self.template = template
        self.hash_template = hash_template
        uses_hash = strategy == "hash" or "hash" in strategies.values()
        self.hash_key = (hash_key or os.environ.get(HASH_KEY_ENV, "")).encode("utf-8")
        if uses_hash and not self.hash_key:
            raise _config_error(name, f"strategy 'hash' needs a key: set hash_key or the {HASH_KEY_ENV} "
                                      "environment variable")
        self.seed = seed
        self.date_shift_days = tuple(date_shift_days)
        self.consistency = consistency
        self._corpus_scope: Optional[_Surrogates] = None
        self._fake: Any = None

    def strategy_for(self, label: str) -> str:
        if self.labels and label not in self.labels:
            return "keep"
        return self.strategies.get(label, self.strategy)

    def _scope(self, text: str) -> _Surrogates:
        if self._fake is None:  # Faker loads its locale once, on first use
            from faker import Faker

            self._fake = Faker("es_ES")
        if self.consistency == "corpus":
            if self._corpus_scope is None:
                self._corpus_scope = _Surrogates(random.Random(self.seed), self._fake, self.date_shift_days)
            return self._corpus_scope
        # Seeded by the text too: a document's surrogates do not depend on the documents before it.
        digest = hashlib.sha256(f"{self.seed}\0{text}".encode("utf-8")).digest()
        return _Surrogates(random.Random(int.from_bytes(digest[:8], "big")), self._fake, self.date_shift_days)

    def _digest(self, label: str, text: str) -> str:
        message = f"{label}\0{' '.join(text.split())}".encode("utf-8")
        return hmac.new(self.hash_key, message, hashlib.sha256).hexdigest()[:12]

    def __call__(self, doc: Doc) -> Doc:
        text = doc.text  # Doc.text rebuilds the string: read it once
        pieces: List[str] = []
        replacements: List[Dict[str, Any]] = []
        cursor = written = 0
        scope: Optional[_Surrogates] = None
        for ent in doc.ents:
            strategy = self.strategy_for(ent.label_)
            if strategy == "keep":
                continue
            original = text[ent.start_char : ent.end_char]
            replacement = None
            if strategy == "surrogate":
                scope = scope or self._scope(text)
                replacement = scope.value(ent.label_, original)
            elif strategy == "hash":
                replacement = self.hash_template.format(label=ent.label_, digest=self._digest(ent.label_, original))
            if replacement is None:  # mask, and labels or values without a surrogate
                replacement = self.template.format(label=ent.label_)
            before = text[cursor : ent.start_char]
            pieces += [before, replacement]
            written += len(before)
            replacements.append({
                "start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": original,
                "replacement": replacement, "replacement_start": written,
                "replacement_end": written + len(replacement),
            })
            written += len(replacement)
            cursor = ent.end_char
        pieces.append(text[cursor:])
        doc._.deidentified = "".join(pieces)
        doc._.pii_replacements = replacements
        return doc


def reidentify(deidentified: str, replacements: Iterable[Mapping[str, Any]]) -> str:
    """Put the original values back into a de-identified text (the inverse of
    the redactor, from its `pii_replacements` mapping)."""
    pieces, cursor = [], 0
    for item in sorted(replacements, key=lambda r: r["replacement_start"]):
        start, end = item["replacement_start"], item["replacement_end"]
        if deidentified[start:end] != item["replacement"]:
            raise ValueError(f"the mapping does not fit this text at {start}: expected {item['replacement']!r}, "
                             f"found {deidentified[start:end]!r}")
        pieces += [deidentified[cursor:start], item["text"]]
        cursor = end
    pieces.append(deidentified[cursor:])
    return "".join(pieces)
