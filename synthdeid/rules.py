"""The `pii_rules` component: a recall safety net for PII that has a form.

Rules find what a statistical NER trained on a templated corpus can miss in
running prose: e-mail addresses, URLs, phone numbers, identifier-like digit
runs, written dates, words after a title (`el Dr. Ruiz`) or after
`paciente`, and runs of capitalised words that hold a known name. Each rule
has a label; `labels` chooses which run.

Known names are the first names and surnames of Faker's locales for the
pipeline's language, compared without case and accents, less the language's
stop words (`Segundo`, `Grande`). A run of capitalised words (particles such
as `de la` between; upper-case words only beside other upper-case words, so
an acronym like `ANA` is no name) is a name when it holds a known name, or,
a single word, a known first name. After a title or `paciente`, lower-case
known names count too (`el paciente juan pérez`). A language without rules
of its own gets e-mails, URLs, name runs and, where `NAME_CUES` has its cue
words (`pasienten`, `herr`, `Dr.`), the names after them; where
`KIND_RULES` has its phones' and identifiers' written forms, those too.

Merge rule: the NER's entities win. A rule span is added where it overlaps
no entity already set. A span of a written form (`EXTENDING`: e-mail, URL,
phone, identifiers, date) that the NER's entities only partly cover replaces
them with one span over both (the NER found part of a phone number, or a
number and the word before it), with the NER's label where they have one;
an e-mail, a URL or another evident form (`KIND_RULES`: a Norwegian phone
number written as one, an eleven-digit fødselsnummer) takes its own label
from NER entities of another one over it, since its form says what it is;
among rule spans the longest wins.
With `overwrite = true` the rule spans win instead, and the NER's entities
they overlap are dropped.
Context words of a rule (the title, `paciente`) are not part of its span.

This file is shipped inside packaged pipelines (`spacy package --code`), so
it imports nothing from synthdeid.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span, Token
from spacy.util import filter_spans

_MONTHS = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "setiembre",
           "octubre", "noviembre", "diciembre"]
_TITLES = ["dr", "dr.", "dra", "dra.", "doctor", "doctora", "dres.", "drs."]
_PATIENT = ["paciente", "sr.", "sra.", "sr", "sra", "srta.", "don", "doña", "dña."]
_COUNTRY = {"TEXT": {"REGEX": r"^\+?34$"}}  # Spain's calling code, before a number
# Spanish phone numbers (9 digits from 6 to 9, grouped or not), after nothing,
# `34`, `+34` or `(+34)`.
_PHONE_PREFIXES = [[{**_COUNTRY, "OP": "?"}], [{"ORTH": "("}, _COUNTRY, {"ORTH": ")"}]]
_PHONE_FORMS = [
    [{"TEXT": {"REGEX": r"^(\+?34[-.]?)?[6789]\d\d([-.]?\d\d\d?){2,3}$"}}],
    [{"TEXT": {"REGEX": r"^[6789]\d\d$"}}, {"TEXT": {"REGEX": r"^\d{6}$"}}],
    [{"TEXT": {"REGEX": r"^[6789]\d\d$"}}, {"SHAPE": "ddd"}, {"SHAPE": "ddd"}],
    [{"TEXT": {"REGEX": r"^[6789]\d\d$"}}, {"SHAPE": "dd"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}],
    [{"TEXT": {"REGEX": r"^[6789]\d$"}}, {"SHAPE": "ddd"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}],
]
# Words that join the parts of a name, per language.
NAME_PARTICLES = {"es": frozenset({"de", "del", "la", "las", "los", "y"})}
_NAME_PARTICLE = {"LOWER": {"IN": sorted(NAME_PARTICLES["es"])}, "OP": "?"}


def _name(context: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The context token, then one to four capitalised words (particles between)."""
    return [context, {"IS_TITLE": True}, _NAME_PARTICLE, {"IS_TITLE": True, "OP": "?"}, _NAME_PARTICLE,
            {"IS_TITLE": True, "OP": "?"}, {"IS_TITLE": True, "OP": "?"}]


# label -> [(number of leading context tokens left out of the span, pattern)], per language.
RULES: Dict[str, Dict[str, List[Tuple[int, List[Dict[str, Any]]]]]] = {
    "es": {
        "CORREO_ELECTRONICO": [(0, [{"LIKE_EMAIL": True}]),
                               (0, [{"TEXT": {"REGEX": r"^[\w.+-]+@$"}}, {"TEXT": {"REGEX": r"^[\w-]+(\.[\w-]+)+$"}}])],
        "URL_WEB": [(0, [{"TEXT": {"REGEX": r"^(https?://|www\.)\S+\.\S+$"}}])],
        "NUMERO_TELEFONO": [(0, prefix + form) for form in _PHONE_FORMS for prefix in _PHONE_PREFIXES],
        # Spanish social security numbers (28 73561347 15) and medical licence numbers (28 28 09867).
        "ID_ASEGURAMIENTO": [(0, [{"SHAPE": "dd"}, {"TEXT": {"REGEX": r"^\d{5,10}$"}}, {"SHAPE": "dd", "OP": "?"}]),
                             (0, [{"TEXT": {"REGEX": r"^\d{2}([/-])\d{5,10}\1\d{2}$"}}]),
                             (0, [{"TEXT": {"REGEX": r"^\d{12}$"}}])],
        "ID_TITULACION_PERSONAL_SANITARIO": [
            (0, [{"SHAPE": "dd"}, {"SHAPE": "dd"}, {"TEXT": {"REGEX": r"^\d{3,5}$"}}]),
            (0, [{"TEXT": {"REGEX": r"^\d\d-\d\d-\d{3,5}$"}}]),
        ],
        # A run of 6 to 10 digits, maybe with a check letter or a suffix (NHC, DNI), that no rule above
        # explains; a foreigner's identity number (NIE: X1234567L).
        "ID_SUJETO_ASISTENCIA": [(0, [{"TEXT": {"REGEX": r"^\d{6,10}([/-]\d{1,3})?[A-Za-z]?$"}}]),
                                 (0, [{"TEXT": {"REGEX": r"^[XYZxyz]-?\d{7}-?[A-Za-z]$"}}]),
                                 (0, [{"TEXT": {"REGEX": r"^\d{6,10}$"}}, {"ORTH": "-"}, {"TEXT": {"REGEX": r"^[A-Z]$"}}])],
        "FECHAS": [
            # Day, month and year with one separator; a month of 0 or 13 is a dose (`10-0-10`).
            (0, [{"TEXT": {"REGEX": r"^(0?[1-9]|[12]\d|3[01])([/.-])(0?[1-9]|1[0-2])\2(\d{4}|\d{2})$"}}]),
            (0, [{"TEXT": {"REGEX": r"^\d{1,2}º?$"}}, {"LOWER": "de"}, {"LOWER": {"IN": _MONTHS}},
                 {"LOWER": {"IN": ["de", "del"]}, "OP": "?"}, {"SHAPE": "dddd", "OP": "?"}]),
            (0, [{"LOWER": {"IN": _MONTHS}}, {"LOWER": {"IN": ["de", "del"]}}, {"SHAPE": "dddd"}]),
        ],
        "NOMBRE_PERSONAL_SANITARIO": [(1, _name({"LOWER": {"IN": _TITLES}}))],
        "NOMBRE_SUJETO_ASISTENCIA": [(1, _name({"LOWER": {"IN": _PATIENT}}))],
    },
}
# Words after which a name may be written in lower case, by the label it gets.
LOWER_NAME_CUES = {"es": {"NOMBRE_PERSONAL_SANITARIO": frozenset(_TITLES),
                          "NOMBRE_SUJETO_ASISTENCIA": frozenset(_PATIENT)}}
# The label of a run of capitalised words that holds a known name, per language.
NAME_RUN_LABEL = {"es": "NOMBRE_SUJETO_ASISTENCIA"}
# The NER's labels of persons' names: one inside a name run grows by the run's known names.
NAME_LABELS = {"es": frozenset({"NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO",
                                "FAMILIARES_SUJETO_ASISTENCIA"})}
# Head words of places and organisations: a run with one is no person's name
# (`Unidad Funcional de Cabeza y Cuello`, `Residencia Cristal`).
NOT_NAME_WORDS = {"es": frozenset({
    "area", "asociacion", "avenida", "barrio", "calle", "carretera", "centro", "clinica", "colegio", "consulta",
    "departamento", "escuela", "facultad", "fundacion", "hospital", "instituto", "laboratorio", "organizacion", "paseo",
    "planta", "plaza", "residencia", "sala", "seccion", "servicio", "sociedad", "unidad", "universidad"})}

# Rules that hold in any language, by kind: a language without rules of its
# own (`RULES`) runs these, labelled with the pipeline's label of each kind
# (`kind_labels`) or, where it has none, with the kind in capitals (`EMAIL`:
# an e-mail is caught even where the corpus never labelled one, and the
# redactor knows the kind from the name), and name runs labelled with its
# label of names.
GENERIC_RULES: Dict[str, List[Tuple[int, List[Dict[str, Any]]]]] = {
    "email": RULES["es"]["CORREO_ELECTRONICO"],
    "url": RULES["es"]["URL_WEB"],
}
_NO_COUNTRY = {"TEXT": {"REGEX": r"^(\+|00)47$"}}  # Norway's calling code, before a number
_NO_PHONE_CUES = {"LOWER": {"IN": ["telefon", "telefonnummer", "telefonnummeret", "telefonnr", "telefonnr.", "tlf",
                                   "tlf.", "tlf.nr", "tlf.nr.", "mobil", "mobilnummer", "mobilnummeret", "mobilnr",
                                   "mobilnr."]}}
_NO_PHONE_FORMS = [
    [{"TEXT": {"REGEX": r"^(\+|00)47\d{8}$"}}],
    [_NO_COUNTRY, {"TEXT": {"REGEX": r"^\d{8}$"}}],
    [{**_NO_COUNTRY, "OP": "?"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}],
    [{**_NO_COUNTRY, "OP": "?"}, {"SHAPE": "ddd"}, {"SHAPE": "dd"}, {"SHAPE": "ddd"}],
]
_BARE_PHONE = {"TEXT": {"REGEX": r"^\d{8}$"}}
# Written forms of a language without rules of its own, by kind: (context
# tokens left out of the span, pattern, evident). An evident form says what it
# is, as an e-mail does: the NER's entities over it under another label give
# way (the Norwegian NER reads `77 62 60 00` as a date). A bare run of eight
# digits is a Norwegian phone number only where the NER found nothing there,
# or after a cue word (`telefon`, `tlf.`).
KIND_RULES: Dict[str, Dict[str, List[Tuple[int, List[Dict[str, Any]], bool]]]] = {
    "nb": {
        "phone": [(0, form, True) for form in _NO_PHONE_FORMS] + [
            (0, [_BARE_PHONE], False),
            (1, [_NO_PHONE_CUES, _BARE_PHONE], True),
            (2, [_NO_PHONE_CUES, {"LOWER": {"IN": ["er", ":", "nr", "nr."]}}, _BARE_PHONE], True)],
        # A fødselsnummer: eleven digits, the last five maybe apart (`090706 37024`).
        "identifier": [(0, [{"TEXT": {"REGEX": r"^\d{11}$"}}], True),
                       (0, [{"TEXT": {"REGEX": r"^\d{6}$"}}, {"TEXT": {"REGEX": r"^\d{5}$"}}], True),
                       (0, [{"TEXT": {"REGEX": r"^\d{6}-\d{5}$"}}], True)],
    },
}
KIND_RULES["nn"] = KIND_RULES["nb"]
# Words before a person's name, for a language without rules of its own:
# after one, capitalised words are a name even when no list knows them
# (`Pasienten Kenan`), and known names count in lower case too.
NAME_CUES = {
    "nb": frozenset({"pasient", "pasienten", "pasientens", "fru", "herr", "frk", "dr", "dr.", "doktor", "lege",
                     "overlege", "sykepleier"}),
    "en": frozenset({"patient", "mr", "mrs", "ms", "miss", "mr.", "mrs.", "ms.", "dr", "dr.", "doctor", "nurse"}),
    "de": frozenset({"patient", "patientin", "herr", "herrn", "frau", "dr", "dr.", "doktor"}),
    "sv": frozenset({"patient", "patienten", "patientens", "fru", "herr", "dr", "dr.", "doktor", "läkare"}),
    "da": frozenset({"patient", "patienten", "patientens", "fru", "hr", "hr.", "dr", "dr.", "doktor", "læge"}),
}
NAME_CUES["nn"] = NAME_CUES["nb"]
# Faker's language code where it is not spaCy's (Norwegian Bokmål: `no_NO`).
FAKER_LANGUAGE = {"nb": "no", "nn": "no"}

DEFAULT_CONFIG = {"labels": [], "overwrite": False, "kind_labels": {}}
# Rules whose span is the whole of a written form: one of them that the NER's
# entities only partly cover takes them in. A name rule's end is a guess
# (capitalised words), so the NER's names grow only by known names.
EXTENDING = frozenset({"CORREO_ELECTRONICO", "URL_WEB", "NUMERO_TELEFONO", "ID_SUJETO_ASISTENCIA", "ID_ASEGURAMIENTO",
                       "ID_TITULACION_PERSONAL_SANITARIO", "FECHAS"})
# Kinds whose written form says what they are: an e-mail address or a URL is
# nothing else, so the NER's entities over one under another label give way
# (an e-mail taken for a place would get a town as its surrogate).
SELF_EVIDENT_KINDS = ("email", "url")
SELF_EVIDENT = {"es": frozenset({"CORREO_ELECTRONICO", "URL_WEB"})}


def make_pii_rules(nlp: Language, name: str, labels: List[str], overwrite: bool,
                   kind_labels: Dict[str, str]) -> "PIIRules":
    """Add rule entities to `doc.ents` where the NER found none.

    labels: the rules' labels to run; empty runs every rule of the language.
    overwrite: false (default) keeps the NER's entities where they overlap a
        rule span; true lets the rule spans replace them.
    kind_labels: kind -> the pipeline's label of it (`email`, `url`, `name`,
        `first_name`), for a language without rules of its own (`RULES`).
    """
    return PIIRules(nlp, name, labels=labels, overwrite=overwrite, kind_labels=kind_labels)


# Imported as synthdeid.rules and, inside a packaged pipeline, as its copy:
# whichever comes first registers the factory.
if not Language.has_factory("pii_rules"):
    Language.factory("pii_rules", default_config=DEFAULT_CONFIG, assigns=["doc.ents"])(make_pii_rules)


def _fold(word: str) -> str:
    """Lower case without accents: `Pérez` and `PEREZ` are the same name."""
    return "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")


@lru_cache(maxsize=None)
def known_names(lang: str) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """(first names, first names and surnames) of Faker's locales for `lang`,
    folded, one word each, without the language's stop words and words of
    fewer than three letters."""
    import importlib

    from faker.config import AVAILABLE_LOCALES
    from spacy.util import get_lang_class

    stop_words = {_fold(word) for word in get_lang_class(lang).Defaults.stop_words}
    first: set = set()
    every: set = set()
    for locale in AVAILABLE_LOCALES:
        if locale.split("_")[0] != FAKER_LANGUAGE.get(lang, lang):
            continue
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ImportError:  # a locale with no person provider of its own
            continue
        for attribute in ("first_names", "first_names_male", "first_names_female", "last_names"):
            # Class attributes only: some locales define these as properties.
            names = next((vars(cls)[attribute] for cls in provider.__mro__ if attribute in vars(cls)
                          and not isinstance(vars(cls)[attribute], property)), ())
            # Surnames are split (`de la Fuente`); a first name of two words is not
            # (`Alta Gracia` makes no name of `alta`).
            words = {_fold(word) for name in names if attribute == "last_names" or " " not in name.strip()
                     for word in re.split(r"[\s-]+", name)}
            words = {word for word in words if len(word) >= 3 and word not in stop_words}
            every |= words
            if attribute != "last_names":
                first |= words
    return frozenset(first), frozenset(every)


def _is_known_name(token: Token) -> bool:
    parts = [part for part in token.text.split("-") if part]
    names = known_names(token.lang_)[1]
    return bool(parts) and all(_fold(part) in names for part in parts)


if not Token.has_extension("known_name"):
    Token.set_extension("known_name", getter=_is_known_name)
_INITIAL = re.compile(r"^[^\W\d_]\.$")
_SENTENCE_ENDS = frozenset({".", "!", "?", ":", ";", "\n", "\n\n"})


def _capitalised(token: Token) -> bool:
    """A word that can be part of a name: capitalised, or an initial (`A.`), or
    in upper case beside another upper-case word (a heading, not an acronym)."""
    text = token.text.replace("-", "")
    if _INITIAL.match(token.text):
        return True
    if not text.isalpha() or not text[0].isupper():
        return False
    if not text.isupper() or len(text) == 1:
        return True
    neighbours = [token.nbor(step) for step in (-1, 1) if 0 <= token.i + step < len(token.doc)]
    return any(n.is_upper and n.is_alpha and len(n) > 1 for n in neighbours)


class PIIRules:
    def __init__(self, nlp: Language, name: str = "pii_rules", labels: Sequence[str] = (), overwrite: bool = False,
                 kind_labels: Optional[Dict[str, str]] = None):
        kind_labels = dict(kind_labels or {})
        rules: Dict[str, List[Tuple[int, List[Dict[str, Any]], bool]]]  # label -> (skip, pattern, evident)
        run_label = NAME_RUN_LABEL.get(nlp.lang)
        extending = EXTENDING
        generic = nlp.lang not in RULES
        if generic:  # the rules of any language, and the language's forms, under the pipeline's labels
            rules = {}
            for kind, patterns in GENERIC_RULES.items():
                rules[kind_labels.get(kind, kind.upper())] = [
                    (skip, pattern, kind in SELF_EVIDENT_KINDS) for skip, pattern in patterns]
            for kind, patterns in KIND_RULES.get(nlp.lang, {}).items():
                rules.setdefault(kind_labels.get(kind, kind.upper()), []).extend(patterns)
            extending = frozenset(rules)  # all written forms
            run_label = kind_labels.get("name") or kind_labels.get("first_name")
        else:
            evident = SELF_EVIDENT.get(nlp.lang, frozenset())
            rules = {label: [(skip, pattern, label in evident) for skip, pattern in patterns]
                     for label, patterns in RULES[nlp.lang].items()}
        # A scheme with first names and surnames and no whole names (Nor-DeID's
        # First_Name, Last_Name) gets a run split: its leading first names, the rest.
        surname_label = kind_labels.get("surname") if generic and "name" not in kind_labels else None
        known = set(rules) | ({run_label} if run_label else set()) | ({surname_label} if surname_label else set())
        unknown = sorted(set(labels) - known)
        if unknown:
            raise ValueError(f"{name}: no rules for labels {', '.join(unknown)}; the rules' labels are "
                             f"{', '.join(sorted(known))}")
        self.name = name
        self.overwrite = overwrite
        self.extending = extending
        self.matcher = Matcher(nlp.vocab, validate=True)
        self.skip: Dict[str, int] = {}
        self.evident_keys: set = set()
        for label in [label for label in labels or rules if label in rules]:  # not the name runs' label
            for number, (skip, pattern, evident) in enumerate(rules[label]):
                key = f"{label}#{number}"
                self.skip[key] = skip
                if evident:
                    self.evident_keys.add(key)
                self.matcher.add(key, [pattern], greedy="LONGEST")
        self.name_run_label = run_label if run_label and (not labels or run_label in labels) else None
        self.surname_label = surname_label if surname_label and (not labels or surname_label in labels) else None
        self.particles = NAME_PARTICLES.get(nlp.lang, frozenset())
        self.stop_words = frozenset(_fold(word) for word in nlp.Defaults.stop_words)
        self.not_name_words = NOT_NAME_WORDS.get(nlp.lang, frozenset())
        self.name_labels = NAME_LABELS.get(nlp.lang) or frozenset(
            label for kind, label in kind_labels.items() if kind in ("name", "first_name", "surname", "relative"))
        self.lower_name_cues: Dict[str, Optional[str]] = {
            cue: label for label, cues in LOWER_NAME_CUES.get(nlp.lang, {}).items()
            if not labels or label in labels for cue in cues}
        if generic and (self.name_run_label or self.surname_label):  # labelled as a name run (`_label_run`)
            self.lower_name_cues.update(dict.fromkeys(NAME_CUES.get(nlp.lang, ()), None))

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(sorted({key.split("#")[0] for key in self.skip}))

    def name_runs(self, doc: Doc) -> List[Span]:
        """Runs of capitalised words (particles between) that hold a known
        name; a run of one word must be a known first name. A run starts
        after its leading stop words (`Hoy Juan Pérez`) or a sentence's
        first word before a first name (`Paciente Juan Pérez`), and one in upper
        case after the last particle before its first known name, or at
        that name (`INFORME DE ALTA DE MOLINERO GUERRA`)."""
        first_names = known_names(doc.lang_)[0]
        spans = []
        i = 0
        while i < len(doc):
            if not _capitalised(doc[i]):
                i += 1
                continue
            end = i + 1
            while True:
                after = end
                while after < len(doc) and doc[after].lower_ in self.particles:  # `de la`
                    after += 1
                if after < len(doc) and _capitalised(doc[after]):
                    end = after + 1
                else:
                    break
            start = i
            i = end
            known = [token.i for token in doc[start:end] if token._.known_name]
            if known and all(token.is_upper for token in doc[start:end]):
                # A heading: the name starts after the last particle before its
                # first known name (`ALTA DE MOLINERO GUERRA`), or at that name.
                particles = [token.i for token in doc[start:known[0]] if token.lower_ in self.particles]
                start = particles[-1] + 1 if particles else known[0]
            while start < end and not doc[start]._.known_name and (
                    _fold(doc[start].text) in self.stop_words or doc[start].lower_ in self.particles):
                start += 1
            # A sentence's capitalised first word before a first name and more
            # (`Paciente Juan Pérez`, `Ring Anna Andersson`) is no part of it;
            # before a first name alone it may be a surname (`Rianxo Paz`).
            if (end - start > 2 and not doc[start]._.known_name and _fold(doc[start + 1].text) in first_names
                    and (start == 0 or doc[start - 1].text in _SENTENCE_ENDS)):
                start += 1
            words = [token for token in doc[start:end] if token.lower_ not in self.particles]
            if any(_fold(token.text) in self.not_name_words for token in words):
                continue
            if (len(words) > 1 and any(token._.known_name for token in words)) or (
                    len(words) == 1 and _fold(words[0].text) in first_names):
                spans += self._label_run(doc, start, end, first_names)
        return spans

    def _label_run(self, doc: Doc, start: int, end: int, first_names: FrozenSet[str]) -> List[Span]:
        """The name run `start:end` as one span, or, with a surname label, as
        its leading first names and the rest (`Kari` + `Nordmann`)."""
        first_end = start
        while first_end < end and _fold(doc[first_end].text) in first_names:
            first_end += 1
        if self.surname_label is None or first_end == end:
            return [Span(doc, start, end, label=self.name_run_label)] if self.name_run_label else []
        parts = [Span(doc, first_end, end, label=self.surname_label)]
        if first_end > start and self.name_run_label:
            parts.insert(0, Span(doc, start, first_end, label=self.name_run_label))
        return parts

    def lower_names(self, doc: Doc) -> List[Span]:
        """Names in lower case after a cue (`el paciente juan pérez`): up to four
        lower-case words that are no stop words (particles between), the first
        a known name and at most one of them unknown (`valezka martínez`). A
        cue of `NAME_CUES` (a language without rules of its own) takes up to
        four capitalised words after it too, known or not (`Pasienten Kenan`),
        and labels what it takes as a name run."""
        spans = []
        first_names = known_names(doc.lang_)[0]
        for cue in doc:
            if cue.lower_ not in self.lower_name_cues:
                continue
            label = self.lower_name_cues[cue.lower_]
            words: List[Token] = []
            end = cue.i + 1
            if end < len(doc) and doc[end].text == "." and not cue.whitespace_:  # `sr.` split in two
                end += 1
            first = end
            if label is None:
                while end < len(doc) and end - first < 4 and _capitalised(doc[end]) and not doc[end].is_stop:
                    end += 1
                if end > first:
                    spans += self._label_run(doc, first, end, first_names)
                    continue
            while len(words) < 4:
                step = end
                while words and step < len(doc) and doc[step].lower_ in self.particles:
                    step += 1
                if step < len(doc) and doc[step].is_lower and doc[step].is_alpha and not doc[step].is_stop:
                    words.append(doc[step])
                    end = step + 1
                else:
                    break
            if words and words[0]._.known_name and sum(not word._.known_name for word in words) <= 1:
                spans += [Span(doc, first, end, label=label)] if label else self._label_run(doc, first, end,
                                                                                            first_names)
        return spans

    def __call__(self, doc: Doc) -> Doc:
        spans = []
        evident = set()  # (start, end, label) of spans whose form says what they are
        for match_id, start, end in self.matcher(doc) if len(self.matcher) else ():
            key = doc.vocab.strings[match_id]
            label = key.split("#")[0]
            start += self.skip[key]
            if label in self.name_labels:
                while end > start and doc[end - 1].lower_ in self.particles:  # `aitana de`
                    end -= 1
            if start < end:
                spans.append(Span(doc, start, end, label=label))
                if key in self.evident_keys:
                    evident.add((start, end, label))
        name_runs = self.name_runs(doc) if self.name_run_label or self.surname_label else []
        spans += name_runs + self.lower_names(doc)
        spans = filter_spans(spans)  # the longest of overlapping rule spans; the first of equal ones
        if self.overwrite:
            kept = [ent for ent in doc.ents if not any(s.start < ent.end and ent.start < s.end for s in spans)]
            doc.ents = sorted(kept + spans, key=lambda span: span.start)
            return doc
        ents = list(doc.ents)
        for span in spans:
            overlapped = [ent for ent in ents if span.start < ent.end and ent.start < span.end]
            covered = {i for ent in overlapped for i in range(ent.start, ent.end)}
            is_evident = (span.start, span.end, span.label_) in evident
            if not overlapped:
                ents.append(span)
            elif span.label_ in self.extending and (
                    not covered.issuperset(range(span.start, span.end))
                    or (is_evident and any(ent.label_ != span.label_ for ent in overlapped))):
                # The NER found part of a written form (a phone's first digits, or
                # a number and the word before it), or took an e-mail for something
                # else: one span takes both, with the NER's label where it gave
                # one label, but an evident form's own.
                labels = {ent.label_ for ent in overlapped}
                label = labels.pop() if len(labels) == 1 and not is_evident else span.label_
                start = min(span.start, *(ent.start for ent in overlapped))
                end = max(span.end, *(ent.end for ent in overlapped))
                ents = [ent for ent in ents if ent not in overlapped] + [Span(doc, start, end, label=label)]
            elif span in name_runs and len(overlapped) == 1 and overlapped[0].label_ in self.name_labels:
                # The NER found part of a name (`Manuel Ruiz` of `Juan Manuel Ruiz`):
                # it takes the run's known names and initials beside it.
                ents[ents.index(overlapped[0])] = self.grow_name(overlapped[0], span)
        doc.ents = sorted(ents, key=lambda span: span.start)
        return doc

    def grow_name(self, ent: Span, run: Span) -> Span:
        """`ent` with the known names and initials of `run` next to it (particles between)."""
        doc = ent.doc

        def name_part(token: Token) -> bool:
            return token._.known_name or bool(_INITIAL.match(token.text))

        start, end = ent.start, ent.end
        while True:
            step = start - 1
            while step > run.start and doc[step].lower_ in self.particles:
                step -= 1
            if step < run.start or not name_part(doc[step]):
                break
            start = step
        while True:
            step = end
            while step < run.end - 1 and doc[step].lower_ in self.particles:
                step += 1
            if step >= run.end or not name_part(doc[step]):
                break
            end = step + 1
        return Span(doc, start, end, label=ent.label_)
