"""The `pii_redactor` component: replaces recognised PII in `doc._.deidentified`.

This file is shipped inside packaged pipelines (`spacy package --code`), so it
imports nothing from synthdeid at load; its one extra requirement, Faker (fake
values for the `surrogate` strategy), is a requirement of the packaged wheel.

A surrogate depends on the entity's kind (name, date, street ...), not on its
label: `label_kinds` maps labels to kinds (a packaged pipeline carries the
whole map); a label it does not name gets its kind from synthdeid's shipped
schemes or a guess from its name (`synthdeid.kinds`), where synthdeid is
installed. A label with no kind is masked, and named in a warning.

Strategies, chosen per label:
- `mask`: the `template`, `[{label}]` by default.
- `surrogate`: a realistic value of the same kind in the pipeline's language
  (Faker's locale for it, `es_ES` for Spanish, or `locale`): names keep their number of parts and each part maps consistently
  (`Ana Ruiz García` and later `Ruiz` become `Lucía Soler Prieto` and
  `Soler`), identifiers and phone numbers keep their shape (digit for digit,
  letter for letter), dates move by one offset per document keeping their
  written format and the days between them, ages up to 89 stay (HIPAA Safe
  Harbor allows them) and older ages become 90; streets, towns, e-mail
  addresses and (in languages with their generic words) hospitals keep
  their form, only the words that identify replaced.
- `hash`: `[{label}-{digest}]`, a keyed HMAC of the value, so equal values give
  equal tokens wherever the key is the same.
- `keep`: the entity is left as written.

Surrogates are consistent within a document, across every document the
component sees with `consistency = "corpus"` (in one process), or across
every document, process, machine and run with `consistency = "keyed"`: each
surrogate is drawn from a keyed HMAC of its value (the `hash` key), with no
state shared, and each document's date offset from one of its text. They are
seeded: the same text, seed, key and config give the same output.

`doc._.pii_replacements` lists every replaced entity (original offsets, label,
text, the strategy applied: `mask` where a surrogate would not be safe,
replacement and its offsets in `doc._.deidentified`): the reversible
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
import warnings
from functools import lru_cache
from typing import (Any, Callable, Container, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

from spacy.language import Language
from spacy.tokens import Doc

for _name in ("deidentified", "pii_replacements"):
    if not Doc.has_extension(_name):
        Doc.set_extension(_name, default=None)

STRATEGIES = ("mask", "surrogate", "hash", "keep")
HASH_KEY_ENV = "SYNTHDEID_HASH_KEY"


DEFAULT_CONFIG = {
    "strategy": "mask",
    "strategies": {},
    "labels": [],
    "template": "[{label}]",
    "hash_template": "[{label}-{digest}]",
    "hash_key": "",
    "hash_key_file": "",
    "seed": 0,
    "date_shift_days": [-365, 365],
    "consistency": "document",
    "known_labels": [],
    "label_kinds": {},
    "locale": "",
    "name_locales": [],
}
CONSISTENCIES = ("document", "corpus", "keyed")
# No clinical note needs its dates moved by more than a century; a larger
# range would only move dates off the calendar (they are then masked).
MAX_SHIFT_DAYS = 36525


# The settings are typed Any on purpose: spaCy would validate the types itself
# and print every setting of the component in its error, while PIIRedactor
# checks each one with a message that never repeats a secret.
def make_pii_redactor(
    nlp: Language,
    name: str,
    strategy: Any,
    strategies: Any,
    labels: Any,
    template: Any,
    hash_template: Any,
    hash_key: Any,
    hash_key_file: Any,
    seed: Any,
    date_shift_days: Any,
    consistency: Any,
    known_labels: Any,
    label_kinds: Any,
    locale: Any,
    name_locales: Any,
) -> "PIIRedactor":
    """Set `doc._.deidentified` (the text with PII replaced) and
    `doc._.pii_replacements` (the mapping).

    strategy: mask | surrogate | hash | keep, for every label without its own.
    strategies: per-label strategy, e.g. {"SEXO_SUJETO_ASISTENCIA": "keep"}.
    labels: the labels to replace; empty means all; others are kept.
    template: the mask text; `{label}` is the label (`{text}` is refused).
    hash_template: the hash text; `{label}` and `{digest}` (12 hex digits).
    hash_key: must stay empty: a key in the config would be saved in the
        pipeline's config.cfg. The HMAC key of `hash` is read from
        `hash_key_file` or else the SYNTHDEID_HASH_KEY environment variable.
    hash_key_file: a file whose content (less a final newline) is the key.
    seed: seed of surrogates and date offsets (an integer).
    date_shift_days: [low, high] range of the per-document date offset (0
        excluded), within ±36525 days.
    consistency: "document" (fresh surrogates per document), "corpus" (one
        mapping for every document this component sees, in one process) or
        "keyed" (the surrogate of a value drawn from a keyed HMAC of it, the
        `hash` key: the same everywhere the key is, with no shared state; a
        document's date offset from its text).
    known_labels: labels `labels` and `strategies` may name, besides those of
        `label_kinds` and of synthdeid's shipped schemes; another is an error.
    label_kinds: label -> kind (or {"kind": ..., "template": ...}) of the
        surrogate; labels it leaves out take synthdeid's schemes or a guess.
    locale: Faker's locale of the surrogates; empty: the one for the
        pipeline's language (`faker_locale`).
    name_locales: more Faker locales whose first names and surnames a
        surrogate name may take (a wider pool than one country's lists).
    """
    return PIIRedactor(
        name=name, strategy=strategy, strategies=strategies, labels=labels, template=template,
        hash_template=hash_template, hash_key=hash_key, hash_key_file=hash_key_file, seed=seed,
        date_shift_days=date_shift_days, consistency=consistency, known_labels=known_labels,
        label_kinds=label_kinds, locale=locale or faker_locale(nlp.lang), name_locales=name_locales,
    )


# Faker's locale for a language where it is not `<lang>_<LANG>` (es_ES, fr_FR).
LOCALE_OF_LANGUAGE = {"en": "en_US", "nb": "no_NO", "nn": "no_NO", "no": "no_NO", "sv": "sv_SE", "da": "da_DK",
                      "el": "el_GR", "ja": "ja_JP", "ko": "ko_KR", "zh": "zh_CN", "cs": "cs_CZ", "et": "et_EE",
                      "uk": "uk_UA", "fa": "fa_IR", "he": "he_IL", "hi": "hi_IN", "ca": "es_CA"}


def faker_locale(lang: str) -> str:
    """Faker's locale for a spaCy language code: `LOCALE_OF_LANGUAGE`, else
    `<lang>_<LANG>` or the first `<lang>_*` Faker has, else `en_US`."""
    from faker.config import AVAILABLE_LOCALES

    if lang in LOCALE_OF_LANGUAGE:
        return LOCALE_OF_LANGUAGE[lang]
    same = f"{lang}_{lang.upper()}"
    if same in AVAILABLE_LOCALES:
        return same
    return next((locale for locale in sorted(AVAILABLE_LOCALES) if locale.split("_")[0] == lang), "en_US")


# This file is imported as synthdeid.redact and, inside a packaged pipeline,
# as that package's copy: whichever comes first registers the factory (spaCy
# refuses a second function under the same name).
if not Language.has_factory("pii_redactor"):
    Language.factory("pii_redactor", default_config=DEFAULT_CONFIG)(make_pii_redactor)


def _config_error(name: str, message: str) -> ValueError:
    return ValueError(f"{name}: {message}")


def _suggest(value: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=2)
    # "NOMBRE" is too short for difflib's ratio against "NOMBRE_SUJETO_ASISTENCIA": also offer labels it begins
    close += [c for c in choices if value and c.upper().startswith(value.upper()) and c not in close][:2]
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


def shift_date(text: str, days: int, lang: str = "es") -> Optional[str]:
    """`text` moved by `days`, written as before; None when it is not a date
    this function reads (day/month/year with / - or ., year-month-day,
    month/year, a year, and a day, month name and year in the language's
    written form: '12 de marzo de 2018' and its parts in Spanish, in other
    languages its month names of CLDR (Babel): '10. mars 2017', '3 Jan 2019')
    or when the moved date falls outside the calendar (years 1 to 9999)."""
    try:
        return _shift_date(text, days) if lang == "es" else _shift_date(text, days, _month_names(lang))
    except (ValueError, OverflowError):
        return None


_MONTH_NAMES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], "re.Pattern[str]"]] = {}


def _month_names(lang: str) -> Tuple[Tuple[str, ...], Tuple[str, ...], "re.Pattern[str]"]:
    """(wide, abbreviated) month names of `lang` from CLDR, lower case, and
    a pattern of a written date with them: day (maybe with a period, as
    Norwegian and German write it), month, year; each part but the month optional."""
    if lang not in _MONTH_NAMES:
        from babel.dates import get_month_names

        wide = tuple(get_month_names("wide", locale=lang)[m].lower() for m in range(1, 13))
        short = tuple(get_month_names("abbreviated", locale=lang)[m].lower().rstrip(".") for m in range(1, 13))
        names = "|".join(re.escape(name) for name in sorted(set(wide + short), key=len, reverse=True))
        pattern = re.compile(rf"^(?:(\d{{1,2}})(\s?\.)?\s+)?({names})(\.)?(?:,?\s+(\d{{4}}))?$", re.IGNORECASE)
        _MONTH_NAMES[lang] = (wide, short, pattern)
    return _MONTH_NAMES[lang]


def _shift_date(text: str, days: int, months: Optional[Tuple[Tuple[str, ...], Tuple[str, ...], Any]] = None
                ) -> Optional[str]:
    stripped = text.strip()
    match = _NUMERIC_DATE.match(stripped)
    if match:
        day, sep, month, year = match.groups()
        year_value = (2000 + int(year) if int(year) < 50 else 1900 + int(year)) if year and len(year) == 2 else int(year or 2000)
        moved = dt.date(year_value, int(month), int(day)) + dt.timedelta(days=days)
        parts = [f"{moved.day:0{len(day)}d}", f"{moved.month:0{len(month)}d}"]
        if year:
            parts.append(f"{moved.year % 100:02d}" if len(year) == 2 else f"{moved.year:04d}")
        return text.replace(stripped, sep.join(parts))
    match = _ISO_DATE.match(stripped)
    if match:
        year, sep, month, day = match.groups()
        moved = dt.date(int(year), int(month), int(day)) + dt.timedelta(days=days)
        return text.replace(stripped, sep.join([f"{moved.year:04d}", f"{moved.month:0{len(month)}d}",
                                                f"{moved.day:0{len(day)}d}"]))
    match = _MONTH_YEAR.match(stripped)
    if match:
        month, sep, year = match.groups()
        if not 1 <= int(month) <= 12:
            return None
        moved = dt.date(int(year), int(month), 15) + dt.timedelta(days=days)
        return text.replace(stripped, f"{moved.month:0{len(month)}d}{sep}{moved.year:04d}")
    if months is not None:
        match = months[2].match(stripped)
        if match:
            return text.replace(stripped, _shift_named_date(match, days, months[0], months[1]))
    match = None if months is not None else _TEXT_DATE.match(stripped)
    if match:
        day, ordinal, day_link, month_name, link, year = match.groups()
        month = (MONTHS.index(month_name.lower()) if month_name.lower() in MONTHS else 8) + 1
        moved = dt.date(int(year or 2000), month, int(day or 15)) + dt.timedelta(days=days)
        name = _match_case(MONTHS[moved.month - 1], month_name)
        if month_name[0].isupper() and not month_name.isupper():
            name = name.capitalize()
        day_written = f"{moved.day}{'º' if ordinal and moved.day == 1 else ''} {day_link or ''}" if day else ""
        year_written = (f" {link} {moved.year:04d}" if link else f" {moved.year:04d}") if year else ""
        written = day_written + name + year_written
        return text.replace(stripped, written)
    match = _YEAR.match(stripped)
    if match:
        return text.replace(stripped, str((dt.date(int(stripped), 7, 1) + dt.timedelta(days=days)).year))
    return None


def _shift_named_date(match: "re.Match[str]", days: int, wide: Sequence[str], short: Sequence[str]) -> str:
    """A date with a month name moved, written in the same form: the day's
    period, the name wide or abbreviated and in the same case, the year."""
    day, day_period, month_name, name_period, year = match.groups()
    folded = month_name.lower()
    names = wide if folded in wide else short
    moved = dt.date(int(year or 2000), names.index(folded) + 1, int(day or 15)) + dt.timedelta(days=days)
    name = _match_case(names[moved.month - 1], month_name)
    if month_name[0].isupper() and not month_name.isupper():
        name = name.capitalize()
    written = f"{moved.day}{day_period or ''} " if day else ""
    # "Jan." moves to "May", not "May.": a month whose short name is its whole name.
    written += name + ((name_period or "") if short[moved.month - 1] != wide[moved.month - 1] else "")
    if year:  # the year after what was written between it and the month (" ", ", ")
        written += match.string[match.end(4 if name_period else 3):match.start(5)] + f"{moved.year:04d}"
    return written


# Words a replacement keeps on purpose (accent- and case-folded): they say what
# kind of thing an entity is, not who or where. Every other word of an entity
# is replaced, and a replacement that repeats a word of any entity of its
# document is masked instead (PIIRedactor.__call__). Per Faker language.
TITLES_OF_LANGUAGE = {
    "es": ("sr", "sra", "srta", "dr", "dra", "don", "dona", "dna", "dª", "prof", "profa"),
    "en": ("mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir"),
    "no": ("herr", "fru", "frk", "dr", "prof"),
}
KINSHIP_OF_LANGUAGE = {
    "es": ("su", "sus", "mi", "mis", "un", "una", "unos", "unas", "madre", "padre", "padres", "hijo", "hija",
           "hijos", "hijas", "hermano", "hermana", "hermanos", "hermanas", "esposo", "esposa", "marido", "mujer",
           "pareja", "novio", "novia", "abuelo", "abuela", "abuelos", "nieto", "nieta", "nietos", "tio", "tia",
           "tios", "primo", "prima", "primos", "sobrino", "sobrina", "cunado", "cunada", "suegro", "suegra", "yerno",
           "nuera", "familiar", "familiares", "conyuge", "gemelo", "gemela", "padrastro", "madrastra", "mayor",
           "menor", "materno", "materna", "paterno", "paterna", "tutor", "tutora"),
    "en": ("his", "her", "their", "my", "a", "an", "mother", "father", "parents", "son", "daughter", "sons",
           "daughters", "brother", "sister", "brothers", "sisters", "husband", "wife", "partner", "spouse",
           "grandmother", "grandfather", "grandson", "granddaughter", "uncle", "aunt", "cousin", "nephew", "niece",
           "guardian", "twin", "stepfather", "stepmother", "older", "younger"),
    # Not `hans` (his) or `mann` (husband): also a first name and a surname.
    "no": ("hennes", "deres", "min", "mitt", "mine", "sin", "sitt", "en", "ei", "et", "mor", "far",
           "foreldre", "sønn", "sønnen", "datter", "datteren", "barn", "bror", "broren", "søster", "søsteren",
           "søsken", "ektemann", "kone", "kona", "mannen", "ektefelle", "samboer", "bestemor", "bestefar", "mormor",
           "morfar", "farmor", "farfar", "barnebarn", "onkel", "tante", "fetter", "kusine", "nevø", "niese", "verge",
           "tvilling", "eldre", "yngre", "moren", "faren"),
}
STREET_WORDS_OF_LANGUAGE = {
    "es": ("calle", "c", "cl", "avenida", "avda", "av", "plaza", "pza", "pl", "paseo", "pº", "camino", "carretera",
           "ctra", "ronda", "travesia", "urbanizacion", "urb", "barrio", "poligono", "glorieta", "via", "cuesta",
           "callejon", "pasaje", "rambla", "alameda", "piso", "puerta", "bajo", "izq", "izquierda", "dcha", "derecha",
           "escalera", "esc", "portal", "bloque", "numero", "num", "n", "no", "nº", "km", "s", "sn",
           # Spain's other languages write their streets in Spanish notes too
           "carrer", "avinguda", "passeig", "placa", "travessera", "rua", "kalea", "etorbidea"),
    "en": ("street", "st", "road", "rd", "avenue", "ave", "lane", "ln", "drive", "dr", "boulevard", "blvd", "court",
           "ct", "place", "pl", "way", "square", "sq", "terrace", "apt", "apartment", "suite", "unit", "floor",
           "no", "po", "box"),
    "no": ("gate", "gata", "gaten", "gt", "vei", "veien", "veg", "vegen", "allé", "alle", "plass", "plassen",
           "torg", "torget", "vn", "leilighet", "etasje", "postboks"),
}


# The words of a town's name that say what kind of place it is, not which
# ("San Sebastián de los Reyes", "A Coruña", "Ciudad de México"): a town's
# surrogate keeps them and the particles, and replaces each other word.
TOWN_WORDS_OF_LANGUAGE = {
    "es": ("san", "santa", "santo", "sant", "sao", "ciudad", "villa", "isla", "islas", "puerto", "nuevo", "nueva",
           "gran", "a", "o", "as", "os", "distrito", "federal", "capital", "provincia", "region", "comunidad",
           "df"),
    "en": ("saint", "st", "new", "city", "fort", "port", "upon", "on", "county", "north", "south", "east", "west"),
    "no": ("i", "på"),
}


PARTICLES = frozenset({"de", "del", "la", "las", "los", "el", "y", "e", "i", "da", "das", "do", "dos", "di", "du",
                       "van", "von", "der", "den", "le", "al"})


def _words_of(words_of_language: Mapping[str, Iterable[str]], lang: Optional[str]) -> frozenset:
    """The folded words of `lang` (a Faker language: "no" for Norwegian), or
    of every language where it has none (or `lang` is None): one language's
    word is another's name ("Ave María")."""
    chosen = [words_of_language[lang]] if lang in words_of_language else words_of_language.values()
    return frozenset(_ascii_fold(word) for words in chosen for word in words)


INSTITUTION_WORDS = frozenset({
    "hospital", "centro", "salud", "clinica", "universitario", "universitaria", "general", "fundacion", "servicio",
    "servicios", "unidad", "complejo", "hospitalario", "sanatorio", "instituto", "consultorio", "ambulatorio",
    "area", "sanitaria", "sanitario", "atencion", "primaria", "especialidades", "residencia", "policlinica",
})
WEB_WORDS = frozenset({"http", "https", "www", "com", "es", "org", "net", "eu", "info", "html", "htm", "php"})
NAME_KINDS = frozenset({"name", "first_name", "surname"})
ORGANISATION_KINDS = frozenset({"hospital", "organisation"})
# An organisation's surrogate, per language of the Faker locale and kind; `{surname}` is a fake surname.
ORGANISATION_TEMPLATES = {
    "es": {"organisation": "Fundación {surname}"},  # hospitals: in the original's form (below)
    "en": {"hospital": "{surname} Hospital", "organisation": "{surname} Foundation"},
    "de": {"hospital": "Klinikum {surname}", "organisation": "{surname}-Stiftung"},
    "sv": {"hospital": "{surname} sjukhus", "organisation": "{surname} stiftelse"},
}


# Where a language writes its organisations in too many forms for one
# template, a surrogate keeps the original's form: these generic words (whole,
# or ending a capitalised compound: "Nordlandssykehuset"), with every other
# word, lower-case ones too ("sykehuset i tromsø"), replaced by a fake town.
INSTITUTION_WORDS_OF_LANGUAGE = {
    # "Hospital Universitario Central de Asturias", "Complejo Hospitalario de Navarra": one template would teach
    # a model trained on surrogates one form of the many real notes write.
    "es": frozenset(_ascii_fold(word) for word in (
        "hospital", "hospitalario", "hospitalari", "complejo", "universitario", "universitaria", "universitari",
        "general", "clínico", "clínica", "provincial", "comarcal", "regional", "central", "materno", "infantil",
        "militar", "centro", "salud", "sanitario", "sanitaria", "área", "atención", "primaria", "especialidades",
        "fundación", "fundació", "instituto", "consorcio", "policlínica", "sanatorio", "residencia",
        "ambulatorio", "consultorio", "unidad", "servicio", "servicios", "alta", "resolución", "geriátrico",
        "psiquiátrico", "mutua", "san", "santa", "virgen", "nuestra", "señora", "doctor", "dr", "infanta",
        "de", "del", "la", "las", "los", "el", "y", "i",
    )),
    "no": frozenset(_ascii_fold(word) for word in (
        "sykehus", "sykehuset", "sjukehus", "sjukehuset", "universitetssykehus", "universitetssykehuset",
        "sentralsykehus", "sentralsykehuset", "lokalsykehus", "lokalsykehuset", "helse", "helseforetak", "hf",
        "dps", "bup", "vop", "klinikk", "klinikken", "poliklinikk", "poliklinikken", "poliklinikker",
        "avdeling", "avdelingen", "avd", "seksjon", "enhet", "post", "sengepost", "team", "legesenter",
        "legesenteret", "legekontor", "legevakt", "legevakten", "helsesenter", "helsesenteret", "helsestasjon",
        "sykehjem", "sykehjemmet", "senter", "senteret", "rehabiliteringssenter", "rehabilitering",
        "habilitering", "kollektiv", "kollektivet", "psykiatri", "psykiatrisk", "voksenpsykiatri",
        "voksenpsykiatrisk", "alderspsykiatri", "alderspsykiatrisk", "barnepsykiatri", "psykisk", "helsevern",
        "rus", "rusbehandling", "tverrfaglig", "spesialisert", "behandling", "døgnbehandling", "dagbehandling",
        "døgn", "voksne", "barn", "ungdom", "barne", "ungdomspsykiatri", "ungdomspsykiatrisk", "røntgen",
        "laboratorium", "laboratorie", "medisinsk", "medisin", "kirurgisk", "kirurgi", "ortopedi", "ortopedisk",
        "nevrologisk", "kardiologisk", "indremedisinsk", "geriatrisk", "pediatrisk", "gynekologisk", "onkologisk",
        "lungemedisinsk", "akutt", "akuttmottak", "skade", "skadelegevakt", "distriktspsykiatrisk", "stiftelse",
        "stiftelsen", "kommune", "i", "på", "og", "for", "ved", "av",
    )),
}


def organisation_form(kind: Optional[str], template: Optional[str], locale: str) -> Optional[str]:
    """The form of an organisation's surrogate: the label's template, else the language's (None: a company)."""
    if kind not in ORGANISATION_KINDS:
        return None
    return template or ORGANISATION_TEMPLATES.get(locale.split("_")[0], {}).get(kind)


def form_words(form: Optional[str]) -> frozenset:
    """The words an organisation form writes in every surrogate ("Klinikum
    {surname}"): they say what it is, not which one, so the original may share them."""
    return frozenset(words(form.replace("{surname}", " "))) if form else frozenset()


def institution_words(kind: Optional[str], template: Optional[str], locale: str) -> Optional[frozenset]:
    """The generic words of an organisation whose surrogate keeps the
    original's form (a language of `INSTITUTION_WORDS_OF_LANGUAGE`, no
    template); None when it is written in a form or is no organisation."""
    if kind not in ORGANISATION_KINDS or organisation_form(kind, template, locale) is not None:
        return None
    return INSTITUTION_WORDS_OF_LANGUAGE.get(locale.split("_")[0])


def shareable_words(kind: Optional[str], template: Optional[str], locale: str, text: str) -> frozenset:
    """The folded words of an entity `text` that its surrogate may repeat:
    its organisation form's words, or, where the surrogate keeps the
    original's form, its generic words."""
    if kind == "email":
        return frozenset(words(kept_domain(text)))
    generic = institution_words(kind, template, locale)
    if generic is None:
        return form_words(organisation_form(kind, template, locale))
    return frozenset(folded for word in _WORD.findall(text) if (folded := _ascii_fold(word)) in generic)


def _generic_part(word: str, generic: frozenset) -> Optional[str]:
    """The generic part of an organisation's word: the whole word (a generic
    word), the generic ending of a capitalised compound ("Nordlands|sykehuset"),
    or None."""
    folded = _ascii_fold(word)
    if folded in generic:
        return word
    if word.islower():
        return None
    ending = max((g for g in generic if len(g) >= 5 and folded.endswith(g) and len(folded) > len(g)), key=len,
                 default=None)
    return word[len(word) - len(ending):] if ending else None


_MARKS = "\u0300-\u036f"  # combining accents: part of the letter before them
_WORD = re.compile(rf"(?:[^\W_][{_MARKS}]*)+")  # a run of letters and digits
_NAME_PART = re.compile(rf"(?:[^\W\d_][{_MARKS}]*)+|\d+")  # a run of letters, or of digits
_INITIALS = "ABCDEFGHIJLMNOPRSTV"


@lru_cache(maxsize=None)
def kept_words(kind: Optional[str], lang: Optional[str] = None) -> frozenset:
    """The folded words a surrogate of an entity of `kind` keeps as written,
    in `lang` (a Faker language; None: those of every language)."""
    titles = _words_of(TITLES_OF_LANGUAGE, lang)
    if kind in NAME_KINDS:
        return PARTICLES | titles
    if kind == "relative":
        return PARTICLES | titles | _words_of(KINSHIP_OF_LANGUAGE, lang)
    if kind == "street":
        return PARTICLES | _words_of(STREET_WORDS_OF_LANGUAGE, lang)
    if kind in ORGANISATION_KINDS:
        return PARTICLES | INSTITUTION_WORDS | _words_of(INSTITUTION_WORDS_OF_LANGUAGE, lang)
    if kind in ("email", "url", "ip_address"):
        return WEB_WORDS
    if kind == "city":
        return PARTICLES | _words_of(TOWN_WORDS_OF_LANGUAGE, lang)
    return PARTICLES


def is_kept(kind: Optional[str], word: str, lang: Optional[str] = None) -> bool:
    """Whether a surrogate of `kind` keeps `word` as written: a word of
    `kept_words`, but in a name a capital single letter is an initial ("Ana
    Y. Ruiz"), not the particle "y", and in a town's name any single letter
    is an abbreviation ("México D.F."), naming no town alone."""
    if (kind in NAME_KINDS or kind == "relative") and len(word) == 1 and not word.islower():
        return False
    if kind == "city" and len(word) == 1 and not word.isdigit():
        return True
    return _ascii_fold(word) in kept_words(kind, lang)


def words(text: str) -> set:
    """The folded letter-and-digit runs of `text`."""
    return {_ascii_fold(word) for word in _WORD.findall(text)}


def word_sequence(text: str) -> Tuple[str, ...]:
    """The folded letter-and-digit runs of `text`, in order."""
    return tuple(_ascii_fold(word) for word in _WORD.findall(text))


def holds_any(text: str, values: Container[Tuple[str, ...]], longest: int = 12) -> bool:
    """Whether `text` holds one of `values` (`word_sequence`s of up to
    `longest` words) as a run of whole words."""
    if not values:
        return False
    sequence = word_sequence(text)
    return any(sequence[i:j] in values for i in range(len(sequence))
               for j in range(i + 1, min(len(sequence), i + longest) + 1))


def identifying_words(kind: Optional[str], text: str, kept: frozenset = frozenset(),
                      lang: Optional[str] = None) -> set:
    """The words of an entity of `kind` that no replacement may repeat: all
    but those its surrogate keeps on purpose in `lang` (`kept_words`) and the
    `kept` (folded) words of its organisation form. A date is moved as a whole
    (its year or day may repeat by chance), a sex is kept, and an age keeps
    numbers up to 89."""
    if kind in ("date", "sex"):
        return set()
    found = {folded for word in _WORD.findall(text) if not is_kept(kind, word, lang)
             and (folded := _ascii_fold(word)) not in kept}
    if kind == "age":
        return {word for word in found if word.isdigit() and int(word) > 89}
    return found


def entity_core(text: str, start: int, end: int) -> Tuple[int, int]:
    """The span without the punctuation, symbols and spaces at its edges (the
    NER may take `"Ana Ruiz"` with its quotes): those stay outside the
    replacement, as written. A span of nothing else stays whole."""
    def edge(char: str) -> bool:
        return unicodedata.category(char)[0] in "PSZC"

    core_start, core_end = start, end
    while core_start < core_end and edge(text[core_start]):
        core_start += 1
    while core_end > core_start and edge(text[core_end - 1]):
        core_end -= 1
    return (core_start, core_end) if core_start < core_end else (start, end)


class NamePool(NamedTuple):
    """The one-word first names (female, male) and surnames of several Faker
    locales, sorted (draws are seeded), with the folded first names."""
    female: Tuple[str, ...]
    male: Tuple[str, ...]
    surnames: Tuple[str, ...]
    first_folded: frozenset
    female_folded: frozenset


@lru_cache(maxsize=None)
def locale_names(locales: Tuple[str, ...]) -> NamePool:
    """The names of `locales` (class attributes of their person providers;
    a weighted table gives its names)."""
    import importlib

    found: Dict[str, set] = {"first_names_female": set(), "first_names_male": set(), "last_names": set()}
    for locale in locales:
        try:
            person = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ImportError:
            raise ValueError(f"name_locales: {locale!r} is no Faker locale with names") from None
        for attribute, names in found.items():
            value = next((vars(cls)[attribute] for cls in person.__mro__ if attribute in vars(cls)), ())
            if not isinstance(value, property):
                names |= {name for name in value if len(name.split()) == 1}
    female, male, surnames = (tuple(sorted(found[a])) for a in found)
    return NamePool(female, male, surnames, frozenset(_ascii_fold(n) for n in female + male),
                    frozenset(_ascii_fold(n) for n in female))


def _own_names(locale: str) -> NamePool:
    """`locale`'s names; none for a locale without names of its own."""
    try:
        return locale_names((locale,))
    except ValueError:
        return NamePool((), (), (), frozenset(), frozenset())


@lru_cache(maxsize=None)
def _town_formats(locale: str) -> Optional[Tuple[str, ...]]:
    """The town formats of `locale`'s address provider less a bare surname
    (`{{last_name}}`); None where it has none to leave out."""
    import importlib

    try:
        address = importlib.import_module(f"faker.providers.address.{locale}").Provider
    except ImportError:
        return None
    formats = getattr(address, "city_formats", ())
    towns = tuple(f for f in formats if f.strip() != "{{last_name}}")
    return towns if towns and len(towns) < len(formats) else None


def _one_word(draw: Callable[[], str]) -> Callable[[], str]:
    """A draw of Faker's that gives one word: its first that is no particle ("de la Fuente")."""
    def one() -> str:
        value = draw().split()
        return next((word for word in value if _ascii_fold(word) not in PARTICLES), value[-1])
    return one


def keyed_seed(key: bytes, *parts: str) -> int:
    """A 64-bit seed from a keyed HMAC of `parts`: the same on every machine."""
    return int.from_bytes(hmac.new(key, "\0".join(parts).encode("utf-8"), hashlib.sha256).digest()[:8], "big")


class _Surrogates:
    """The fake values of one consistency scope (a document or a corpus)."""

    def __init__(self, rng: random.Random, fake: Any, date_shift_days: Sequence[int], locale: str,
                 names: Optional[NamePool] = None, key: Optional[bytes] = None):
        self.rng = rng
        self.key = key  # keyed consistency: each value's draws seeded by an HMAC of it
        self.fake = fake
        self.locale = locale
        self.language = locale.split("_")[0]
        self.names = names
        fake.seed_instance(rng.getrandbits(32))
        low, high = date_shift_days
        if low <= 0 <= high:  # 0 is excluded: draw from a range one shorter and step over it
            offset = rng.randint(low, high - 1)
            self.date_offset = offset + 1 if offset >= 0 else offset
        else:
            self.date_offset = rng.randint(low, high)
        self.by_value: Dict[Tuple[str, str], str] = {}
        self.used: Dict[str, set] = {}
        # The identifying words of the scope's real entities: no fake may use one
        # (a surrogate must never be another patient's real name).
        self.forbidden: set = set()
        self.forbidden_values: FrozenSet[Tuple[str, ...]] = frozenset()  # PIIRedactor.forbidden_values

    def _unique(self, namespace: str, kind: Optional[str], original: str, draw: Callable[[], str],
                kept: frozenset = frozenset()) -> Optional[str]:
        """One fake per original value of a namespace (a label, or a part of
        a name), never shared by two values and sharing no identifying word
        with a real entity (`kept`: words of the original that are not);
        None when no draw gives one (the caller then masks). Keyed, the
        fake depends on the value alone: two values may share one (measured
        in docs/scale.md), and a fake that holds a word of another entity of
        the scope is not redrawn, which would make it depend on the
        document, but None."""
        key = (namespace, _ascii_fold(original))
        if key in self.by_value:
            return self.by_value[key]
        keyed = self.key is not None
        used = set() if keyed else self.used.setdefault(namespace, set())
        if keyed:
            seed = keyed_seed(self.key, namespace, " ".join(key[1].split()))
            self.rng.seed(seed)
            self.fake.seed_instance(seed)
        own = identifying_words(kind, original, kept, self.language)
        taboo = own if keyed else self.forbidden | own
        for _ in range(50):
            fake = draw()
            folded = _ascii_fold(fake)
            if (folded not in used and folded != key[1] and not words(fake) & taboo
                    and not holds_any(fake, self.forbidden_values)):
                break
        else:
            return None
        if keyed and words(fake) & self.forbidden:
            return None
        used.add(folded)
        self.by_value[key] = fake
        return fake

    def name(self, kind: str, text: str) -> Optional[str]:
        """Each part of a name replaced on its own (the same part, the same
        fake), except the titles, particles and, for a relative, kinship
        words that `is_kept` keeps; digits are reshaped. A part is a first
        name where `kind` says so or the locale knows it as one."""
        names = self.names or _own_names(self.locale)
        first_names, female = names.first_folded, names.female_folded
        out, cursor = [], 0
        for match in _NAME_PART.finditer(text):
            part = match.group()
            out.append(text[cursor : match.start()])
            cursor = match.end()
            folded = _ascii_fold(part)
            if is_kept(kind, part, self.language):
                out.append(part)
                continue
            if part.isdigit():
                fake = self._unique("number", kind, part, lambda: _reshape(part, self.rng))
            elif len(part) == 1:  # an initial: another letter, the same for the same initial
                fake = self._unique("initial", kind, part, lambda: self.rng.choice(_INITIALS))
            elif kind == "first_name" or (kind != "surname" and folded in first_names):
                draw = self.first_name_draw(folded in female)
                fake = self._unique("first_name", kind, part, _one_word(draw))
            else:
                fake = self._unique("surname", kind, part, self.surname_draw())
            if fake is None:
                return None
            out.append(_match_case(fake, part))
        out.append(text[cursor:])
        return "".join(out)

    def first_name_draw(self, female: bool) -> Callable[[], str]:
        if self.names:
            return lambda: self.fake.random.choice(self.names.female if female else self.names.male)
        return self.fake.first_name_female if female else self.fake.first_name_male

    def surname_draw(self) -> Callable[[], str]:
        if self.names:
            return lambda: self.fake.random.choice(self.names.surnames)
        return _one_word(self.fake.last_name)

    def town(self) -> str:
        """Faker's town, never a bare surname: some locales (no_NO, fr_FR,
        pt_BR) write half their towns as one, and a town that reads as a
        surname teaches a model trained on the surrogates the wrong label."""
        towns = _town_formats(self.locale)
        return self.fake.parse(self.fake.random_element(towns)) if towns else self.fake.city()

    def town_word(self) -> str:
        """One word of a Faker town that names it ("Cruz" of "Santa Cruz de
        Tenerife"): its first word that a town's surrogate does not keep,
        redrawn where it has none (es_ES lists "Ciudad" as a province)."""
        for _ in range(10):
            value = self.town().split()
            word = next((word for word in value if not is_kept("city", word, self.language)), None)
            if word:
                return word
        return value[-1]

    def town_in_form(self, label: str, kind: str, name: str) -> Optional[str]:
        """A fake town in the form of `name`: its particles and place words
        kept ("San", "de los", "A"), each other word replaced by a word of a
        Faker town ("San Sebastián de los Reyes" -> "San Toledo de los
        Navarra"); Faker's town where every word is kept. Faker's Spanish
        towns are one-word provinces: a model trained on them alone misses
        most towns of several words."""
        return self._in_form(label, kind, name, self.town_word, lambda: _match_case(self.town(), name))

    def _in_form(self, label: str, kind: str, name: str, word: Callable[[], str],
                 whole: Callable[[], str]) -> Optional[str]:
        """`name` with the words a surrogate of `kind` keeps as written and
        each other word replaced by a draw of `word` (in its case); a draw
        of `whole` where every word is kept."""
        found = list(_WORD.finditer(name))
        replaced = [match for match in found if not is_kept(kind, match.group(), self.language)]
        if not replaced:
            return self._unique(label, kind, name, whole)
        kept = frozenset(_ascii_fold(match.group()) for match in found if match not in replaced)

        def draw() -> str:
            out, cursor = [], 0
            for match in replaced:
                out += [name[cursor : match.start()], _match_case(word(), match.group())]
                cursor = match.end()
            return "".join(out + [name[cursor:]])

        return self._unique(label, kind, name, draw, kept=kept)

    def organisation_in_form(self, label: str, kind: str, text: str, generic: frozenset) -> Optional[str]:
        """`text` with its generic words and endings kept (`_generic_part`)
        and each other word replaced by a fake town: "Helse Førde, Florø,
        psykiatrisk poliklinikk" keeps its form. None (mask) when no word is
        left to replace."""
        parts = [(match, _generic_part(match.group(), generic)) for match in _WORD.finditer(text)]
        if all(part == match.group() for match, part in parts):
            return None
        kept = frozenset(_ascii_fold(match.group()) for match, part in parts if part == match.group())

        def draw() -> str:
            out, cursor = [], 0
            for match, part in parts:
                word = match.group()
                out.append(text[cursor : match.start()])
                cursor = match.end()
                stem = word[: len(word) - len(part or "")]
                out.append(_match_case(_one_word(self.town)(), stem) + (part or "") if stem else word)
            return "".join(out + [text[cursor:]])

        return self._unique(label, kind, text, draw, kept=kept)

    def email_in_form(self, label: str, kind: str, address: str) -> Optional[str]:
        """A fake address in the form of `address`: a fake user at the same
        free-mail provider, or else at fake domain words under the same
        top-level domain (`x@hmdc.sacyl.es`: two fake words, then `.es`);
        Faker's free-mail address where the domain has no dot."""
        kept = kept_domain(address)
        domain = address.rsplit("@", 1)[1]
        if not kept:
            host = self.fake.free_email_domain
        elif kept == domain:
            host = lambda: kept  # noqa: E731
        else:
            host = lambda: ".".join([*(self.fake.domain_word() for _ in domain.split(".")[:-1]), kept])  # noqa: E731
        return self._unique(label, kind, address, lambda: f"{self.fake.user_name()}@{host()}",
                            kept=frozenset(words(kept)))

    def reshaped_number(self, kind: str, tail: str) -> str:
        """A street's number part in its shape (`_reshape`), its street words
        ("piso", "izq.", "s/n") kept as written."""
        out, cursor = [], 0
        for match in _WORD.finditer(tail):
            word = match.group()
            kept = is_kept(kind, word, self.language)
            out += [tail[cursor : match.start()], word if kept else _reshape(word, self.rng)]
            cursor = match.end()
        return "".join(out + [tail[cursor:]])

    def street_in_form(self, label: str, kind: str, name: str) -> Optional[str]:
        """A fake street name in the form of `name`: its street words and
        particles kept as written ("C/", "Avda.", "Paseo de la"), each other
        word replaced by a fake surname; Faker's street name where every word
        is kept. A model trained on the surrogates then meets the forms real
        notes write, not Faker's alone ("Pasadizo de ...")."""
        return self._in_form(label, kind, name, self.surname_draw(), self.fake.street_name)

    def value(self, label: str, kind: Optional[str], template: Optional[str], text: str) -> Optional[str]:
        """The surrogate of `text`, an entity of `label` and `kind`; None when
        the kind has no surrogate. `template`: an organisation's form."""
        if kind in NAME_KINDS or kind == "relative":  # "su madre" stays
            return self.name(kind, text)
        if kind == "date":
            return shift_date(text, self.date_offset, self.language)
        if kind == "age":
            if not re.search(r"\d", text):
                return None  # an age in words ("noventa y cinco años") cannot be capped: mask it
            return re.sub(r"\d+", lambda m: m.group() if int(m.group()) <= 89 else "90", text)
        if kind == "sex":
            return text  # a sex is not an identifier by itself
        if kind == "email" and "@" in text.strip("@"):
            return self.email_in_form(label, kind, text)
        draws = {"email": self.fake.free_email, "url": self.fake.url, "ip_address": self.fake.ipv4,
                 "country": self.fake.country, "profession": self.fake.job, "username": self.fake.user_name}
        if kind in draws:
            return self._unique(label, kind, text, draws[kind])
        if kind == "city":
            if any(c.isdigit() for c in text):  # a postcode written where a town goes
                return self._unique(label, kind, text, lambda: _reshape(text, self.rng))
            return self.town_in_form(label, kind, text)
        if kind == "street":  # "Calle Mayor, 12, 3º B": a fake street, then the number's shape
            digit = next((i for i, c in enumerate(text) if c.isdigit()), len(text))
            head, tail = text[:digit], text[digit:]
            if not head.strip(" ,"):
                return self._unique("street_number", kind, text, lambda: _reshape(text, self.rng))
            street = self.street_in_form(label, kind, head.strip(" ,"))
            number = self._unique("street_number", kind, tail, lambda: self.reshaped_number(kind, tail)) if tail else ""
            if street is None or number is None:
                return None
            return street + head[len(head.rstrip(" ,")):] + number
        if kind in ORGANISATION_KINDS:
            form = organisation_form(kind, template, self.locale)
            generic = institution_words(kind, template, self.locale)
            if generic is not None:
                return self.organisation_in_form(label, kind, text, generic)
            if form is None:
                return self._unique(label, kind, text, self.fake.company)
            surname = self.surname_draw()
            return self._unique(label, kind, text, lambda: form.format(surname=surname()), kept=form_words(form))
        if kind in ("identifier", "phone", "fax", "zip") or (kind == "other" and any(c.isdigit() for c in text)):
            return self._unique(label, kind, text, lambda: _reshape(text, self.rng))
        return None


def kept_domain(address: str) -> str:
    """What a surrogate of an e-mail `address` keeps of its domain: a
    free-mail provider's domain whole (`hotmail.com` names no one), else its
    top-level domain (`es` of `hmdc.sacyl.es`); nothing without a dot."""
    domain = address.rsplit("@", 1)[-1] if "@" in address else ""
    if "." not in domain.strip("."):
        return ""
    return domain if domain.lower() in free_mail_domains() else domain.rsplit(".", 1)[1]


@lru_cache(maxsize=None)
def free_mail_domains() -> frozenset:
    """The free-mail providers' domains Faker knows, in every locale."""
    import importlib

    from faker.config import AVAILABLE_LOCALES
    from faker.providers.internet import Provider as Internet

    found = set(Internet.free_email_domains)
    for locale in AVAILABLE_LOCALES:
        try:
            module = importlib.import_module(f"faker.providers.internet.{locale}")
        except ImportError:
            continue
        found.update(getattr(module.Provider, "free_email_domains", ()))
    return frozenset(domain.lower() for domain in found)


def _shipped_labels() -> set:
    """The labels of synthdeid's shipped schemes, where synthdeid is installed
    (a packaged pipeline names its labels in `label_kinds`)."""
    try:
        from synthdeid.kinds import shipped_labels
    except ImportError:
        return set()
    return shipped_labels()


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
        hash_key_file: str = "",
        seed: int = 0,
        date_shift_days: Sequence[int] = (-365, 365),
        consistency: str = "document",
        known_labels: Sequence[str] = (),
        label_kinds: Optional[Mapping[str, Any]] = None,
        locale: str = "es_ES",
        name_locales: Sequence[str] = (),
    ):
        self.name = name
        if hash_key:  # never repeat it: the message may reach a log
            raise _config_error(name, "hash_key is set in the config, which spaCy saves with the pipeline "
                                      f"(config.cfg); set the {HASH_KEY_ENV} environment variable or "
                                      "hash_key_file (a file holding the key) instead")

        def expect(where: str, value: Any, ok: bool, what: str) -> None:
            if not ok:
                raise _config_error(name, f"{where} = {value!r}: expected {what}")

        strings = lambda value: isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)  # noqa: E731
        expect("strategies", strategies, strategies is None or (isinstance(strategies, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in strategies.items())), "a table LABEL = strategy")
        expect("labels", labels, strings(labels), "a list of labels")
        expect("known_labels", known_labels, strings(known_labels), "a list of labels")
        expect("label_kinds", label_kinds, label_kinds is None or (isinstance(label_kinds, Mapping) and all(
            isinstance(k, str) and (isinstance(v, str) or (isinstance(v, Mapping) and isinstance(v.get("kind"), str)))
            for k, v in label_kinds.items())), 'a table LABEL = kind (or {"kind": ..., "template": ...})')
        expect("locale", locale, isinstance(locale, str) and bool(locale), "a Faker locale such as es_ES")
        expect("name_locales", name_locales, strings(name_locales), "a list of Faker locales")
        for where, value in (("strategy", strategy), ("template", template), ("hash_template", hash_template),
                             ("hash_key_file", hash_key_file), ("consistency", consistency)):
            expect(where, value, isinstance(value, str), "a string")
        expect("seed", seed, isinstance(seed, int) and not isinstance(seed, bool), "an integer")
        expect("date_shift_days", date_shift_days, isinstance(date_shift_days, (list, tuple))
               and len(date_shift_days) == 2 and all(isinstance(d, int) and not isinstance(d, bool)
                                                     for d in date_shift_days)
               and date_shift_days[0] <= date_shift_days[1], "[low, high], two integers, low <= high")
        if max(abs(d) for d in date_shift_days) > MAX_SHIFT_DAYS:
            raise _config_error(name, f"date_shift_days = {list(date_shift_days)!r}: a shift is at most "
                                      f"{MAX_SHIFT_DAYS} days (a century) either way")
        if list(date_shift_days) == [0, 0]:
            raise _config_error(name, "date_shift_days = [0, 0] leaves every date as written; give a range "
                                      "with a non-zero offset")
        strategies = dict(strategies or {})
        label_kinds = dict(label_kinds or {})
        known = set(known_labels) | set(label_kinds) | _shipped_labels()
        for where, value in [("strategy", strategy)] + [(f"strategies.{k}", v) for k, v in strategies.items()]:
            if value not in STRATEGIES:
                raise _config_error(name, f"{where} = {value!r} is not a strategy; use one of "
                                          f"{', '.join(STRATEGIES)}{_suggest(str(value), STRATEGIES)}")
        for where, label in [("labels", label) for label in labels] + [("strategies", k) for k in strategies]:
            if label not in known:
                raise _config_error(name, f"{where} names unknown label {label!r}{_suggest(label, known)}; "
                                          "known labels are those of label_kinds, known_labels and the shipped "
                                          "schemes")
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
        if consistency not in CONSISTENCIES:
            raise _config_error(name, f"consistency = {consistency!r}: use one of {', '.join(CONSISTENCIES)}"
                                      f"{_suggest(consistency, CONSISTENCIES)}")
        self.strategy = strategy
        self.strategies = strategies
        self.labels = set(labels)
        self.template = template
        self.hash_template = hash_template
        self.hash_key = self._read_key(hash_key_file)
        uses_hash = strategy == "hash" or "hash" in strategies.values()
        if uses_hash and not self.hash_key:
            raise _config_error(name, f"strategy 'hash' needs a key: set hash_key_file or the {HASH_KEY_ENV} "
                                      "environment variable")
        if consistency == "keyed" and not self.hash_key:
            raise _config_error(name, f"consistency 'keyed' needs a key: set hash_key_file or the {HASH_KEY_ENV} "
                                      "environment variable")
        self.seed = seed
        self.date_shift_days = tuple(date_shift_days)
        self.consistency = consistency
        self.locale = locale
        self.language = locale.split("_")[0]  # Faker's: the kept words' language
        try:
            self.names = locale_names(tuple(dict.fromkeys([locale, *name_locales]))) if name_locales else None
        except ValueError as err:
            raise _config_error(name, str(err)) from None
        self.label_kinds = {label: (entry, None) if isinstance(entry, str) else (entry["kind"], entry.get("template"))
                            for label, entry in label_kinds.items()}
        self._corpus_scope: Optional[_Surrogates] = None
        self._fake: Any = None
        # Values (`word_sequence`s) no surrogate may hold, beyond the words of
        # the document's entities: a caller that knows a whole corpus's
        # entities (the generator's surrogated notes) sets them, so that no
        # surrogate repeats another note's real value.
        self.forbidden_values: FrozenSet[Tuple[str, ...]] = frozenset()

    def kind_of(self, label: str) -> Tuple[Optional[str], Optional[str]]:
        """(kind, organisation template) of a label: `label_kinds`, else
        synthdeid's schemes or a guess (`synthdeid.kinds`, where installed);
        (None, None) when nothing gives one: the label is masked, and named
        in a warning the first time."""
        if label not in self.label_kinds:
            try:
                from synthdeid.kinds import LabelKinds
            except ImportError:  # a packaged pipeline carries its whole map in label_kinds
                kind, template = None, None
            else:
                kind, template, _ = LabelKinds().entry(label)
            if kind is None:
                warnings.warn(f"{self.name}: label {label!r} has no kind in label_kinds, the shipped schemes or "
                              "a guess from its name: its entities are masked", stacklevel=2)
            self.label_kinds[label] = (kind, template)
        return self.label_kinds[label]

    def _read_key(self, key_file: str) -> bytes:
        """The HMAC key: the content of `key_file` (less a final newline), or the environment's."""
        if not key_file:
            return os.environ.get(HASH_KEY_ENV, "").encode("utf-8")
        try:
            with open(key_file, "rb") as data:
                key = data.read().rstrip(b"\r\n")
        except OSError as err:
            raise _config_error(self.name, f"hash_key_file {key_file}: cannot be read ({err.strerror})") from None
        if not key:
            raise _config_error(self.name, f"hash_key_file {key_file}: is empty")
        return key

    def strategy_for(self, label: str) -> str:
        if self.labels and label not in self.labels:
            return "keep"
        return self.strategies.get(label, self.strategy)

    def _scope(self, text: str) -> _Surrogates:
        if self._fake is None:  # Faker loads its locale once, on first use
            from faker import Faker

            self._fake = Faker(self.locale)
        if self.consistency == "corpus":
            if self._corpus_scope is None:
                self._corpus_scope = _Surrogates(random.Random(self.seed), self._fake, self.date_shift_days,
                                                 self.locale, self.names)
            return self._corpus_scope
        if self.consistency == "keyed":  # the date offset from the text, every other draw from its value
            return _Surrogates(random.Random(keyed_seed(self.hash_key, str(self.seed), "document", text)),
                               self._fake, self.date_shift_days, self.locale, self.names,
                               key=self.hash_key + f"\0{self.seed}".encode("utf-8"))
        # Seeded by the text too: a document's surrogates do not depend on the documents before it.
        digest = hashlib.sha256(f"{self.seed}\0{text}".encode("utf-8")).digest()
        return _Surrogates(random.Random(int.from_bytes(digest[:8], "big")), self._fake, self.date_shift_days,
                           self.locale, self.names)

    def _digest(self, label: str, text: str) -> str:
        message = f"{label}\0{' '.join(text.split())}".encode("utf-8")
        return hmac.new(self.hash_key, message, hashlib.sha256).hexdigest()[:12]

    def _surrogate(self, scope: _Surrogates, label: str, original: str, taboo: set) -> Optional[str]:
        """The surrogate, or None (mask it) when there is none, when a date
        would stay as written, or when it would repeat an identifying word
        of its entity or (but for dates, ages and sexes) of any entity of the
        document."""
        kind, template = self.kind_of(label)
        kept = shareable_words(kind, template, self.locale, original)
        try:
            replacement = scope.value(label, kind, template, original)
        except Exception:  # noqa: BLE001  a value no surrogate rule foresaw: the mask is always safe
            return None
        if replacement is None or (kind == "date" and _ascii_fold(replacement) == _ascii_fold(original)):
            return None
        # Dates, ages and sexes keep numbers and words on purpose: a day that
        # another entity also holds is no leak.
        calendar = kind in ("date", "age", "sex")
        own = identifying_words(kind, original, kept, self.language)
        if words(replacement) & ((set() if calendar else taboo) | own):
            return None
        return replacement

    def __call__(self, doc: Doc) -> Doc:
        text = doc.text  # Doc.text rebuilds the string: read it once
        entities = []
        for ent in doc.ents:
            strategy = self.strategy_for(ent.label_)
            if strategy != "keep":
                entities.append((*entity_core(text, ent.start_char, ent.end_char), ent.label_, strategy))
        taboo: set = set()
        for start, end, label, strategy in entities:
            kind, template = self.kind_of(label)
            taboo |= identifying_words(kind, text[start:end],
                                       shareable_words(kind, template, self.locale, text[start:end]),
                                       self.language)
        pieces: List[str] = []
        replacements: List[Dict[str, Any]] = []
        cursor = written = 0
        scope: Optional[_Surrogates] = None
        for start, end, label, strategy in entities:
            original = text[start:end]
            replacement = None
            if strategy == "surrogate":
                if scope is None:
                    scope = self._scope(text)
                    scope.forbidden |= taboo
                    scope.forbidden_values = self.forbidden_values
                replacement = self._surrogate(scope, label, original, taboo)
            elif strategy == "hash":
                replacement = self.hash_template.format(label=label, digest=self._digest(label, original))
            applied = strategy
            if replacement is None:  # mask, and labels or values without a safe surrogate
                replacement, applied = self.template.format(label=label), "mask"
            before = text[cursor:start]
            pieces += [before, replacement]
            written += len(before)
            replacements.append({
                "start": start, "end": end, "label": label, "text": original, "strategy": applied,
                "replacement": replacement, "replacement_start": written,
                "replacement_end": written + len(replacement),
            })
            written += len(replacement)
            cursor = end
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
