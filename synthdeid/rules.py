"""The `pii_rules` component: a recall safety net for PII that has a form.

Rules find what a statistical NER trained on a templated corpus can miss in
running prose: e-mail addresses, URLs, phone numbers, identifier-like digit
runs, written dates, and capitalised words after a title (`el Dr. Ruiz`) or
after `paciente`. Each rule has a label; `labels` chooses which run.

Merge rule: the NER's entities win. A rule span is added where it overlaps
no entity already set; a span of a written form (`EXTENDING`: e-mail, URL,
phone, identifiers, date) that contains the NER's entities and is longer
replaces them, with the NER's label where they have one (the NER found part
of a phone number); among rule spans the longest wins. With
`overwrite = true` the rule spans win instead, and the NER's entities they
overlap are dropped.
Context words of a rule (the title, `paciente`) are not part of its span.

This file is shipped inside packaged pipelines (`spacy package --code`), so
it imports nothing from synthdeid.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from spacy.language import Language
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span, Token
from spacy.util import filter_spans

_MONTHS = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "setiembre",
           "octubre", "noviembre", "diciembre"]
_TITLES = ["dr", "dr.", "dra", "dra.", "doctor", "doctora", "dres.", "drs."]
_PATIENT = ["paciente", "sr.", "sra.", "sr", "sra", "srta.", "don", "doña", "dña."]
_COUNTRY = {"TEXT": {"REGEX": r"^\+?34$"}, "OP": "?"}  # Spain's calling code, before a number
_NAME_PARTICLE = {"LOWER": {"IN": ["de", "del", "la", "las", "los", "y"]}, "OP": "?"}


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
        "NUMERO_TELEFONO": [
            (0, [_COUNTRY, {"TEXT": {"REGEX": r"^(\+?34[-.]?)?[6789]\d\d([-.]?\d\d\d?){2,3}$"}}]),
            (0, [_COUNTRY, {"TEXT": {"REGEX": r"^[6789]\d\d$"}}, {"TEXT": {"REGEX": r"^\d{6}$"}}]),
            (0, [_COUNTRY, {"TEXT": {"REGEX": r"^[6789]\d\d$"}}, {"SHAPE": "ddd"}, {"SHAPE": "ddd"}]),
            (0, [_COUNTRY, {"TEXT": {"REGEX": r"^[6789]\d\d$"}}, {"SHAPE": "dd"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}]),
            (0, [_COUNTRY, {"TEXT": {"REGEX": r"^[6789]\d$"}}, {"SHAPE": "ddd"}, {"SHAPE": "dd"}, {"SHAPE": "dd"}]),
        ],
        # Spanish social security numbers (28 73561347 15) and medical licence numbers (28 28 09867).
        "ID_ASEGURAMIENTO": [(0, [{"SHAPE": "dd"}, {"TEXT": {"REGEX": r"^\d{5,10}$"}}, {"SHAPE": "dd", "OP": "?"}]),
                             (0, [{"TEXT": {"REGEX": r"^\d{12}$"}}])],
        "ID_TITULACION_PERSONAL_SANITARIO": [
            (0, [{"SHAPE": "dd"}, {"SHAPE": "dd"}, {"TEXT": {"REGEX": r"^\d{3,5}$"}}]),
            (0, [{"TEXT": {"REGEX": r"^\d\d-\d\d-\d{3,5}$"}}]),
        ],
        # A run of 6 to 10 digits, maybe with a check letter or a suffix (NHC, DNI), that no rule above explains.
        "ID_SUJETO_ASISTENCIA": [(0, [{"TEXT": {"REGEX": r"^\d{6,10}([/-]\d{1,3})?[A-Za-z]?$"}}]),
                                 (0, [{"TEXT": {"REGEX": r"^\d{6,10}$"}}, {"ORTH": "-"}, {"TEXT": {"REGEX": r"^[A-Z]$"}}])],
        "FECHAS": [
            (0, [{"TEXT": {"REGEX": r"^\d{1,2}[/.-]\d{1,2}[/.-](\d{4}|\d{2})$"}}]),
            (0, [{"TEXT": {"REGEX": r"^\d{1,2}º?$"}}, {"LOWER": "de"}, {"LOWER": {"IN": _MONTHS}},
                 {"LOWER": {"IN": ["de", "del"]}, "OP": "?"}, {"SHAPE": "dddd", "OP": "?"}]),
            (0, [{"LOWER": {"IN": _MONTHS}}, {"LOWER": {"IN": ["de", "del"]}}, {"SHAPE": "dddd"}]),
        ],
        "NOMBRE_PERSONAL_SANITARIO": [(1, _name({"LOWER": {"IN": _TITLES}}))],
        "NOMBRE_SUJETO_ASISTENCIA": [
            (1, _name({"LOWER": {"IN": _PATIENT}})),
            # A Spanish first name and one to three capitalised words: "Juan Pérez acude".
            (0, [{"_": {"first_name": True}}, {"IS_TITLE": True}, _NAME_PARTICLE, {"IS_TITLE": True, "OP": "?"},
                 {"IS_TITLE": True, "OP": "?"}]),
        ],
    },
}

DEFAULT_CONFIG = {"labels": [], "overwrite": False}
# Rules whose span is the whole of a written form: one of them that contains
# the NER's entities replaces them. A name rule's end is a guess (capitalised
# words), so the NER's names stay.
EXTENDING = frozenset({"CORREO_ELECTRONICO", "URL_WEB", "NUMERO_TELEFONO", "ID_SUJETO_ASISTENCIA", "ID_ASEGURAMIENTO",
                       "ID_TITULACION_PERSONAL_SANITARIO", "FECHAS"})


def make_pii_rules(nlp: Language, name: str, labels: List[str], overwrite: bool) -> "PIIRules":
    """Add rule entities to `doc.ents` where the NER found none.

    labels: the rules' labels to run; empty runs every rule of the language.
    overwrite: false (default) keeps the NER's entities where they overlap a
        rule span; true lets the rule spans replace them.
    """
    return PIIRules(nlp, name, labels=labels, overwrite=overwrite)


# Imported as synthdeid.rules and, inside a packaged pipeline, as its copy:
# whichever comes first registers the factory.
if not Language.has_factory("pii_rules"):
    Language.factory("pii_rules", default_config=DEFAULT_CONFIG, assigns=["doc.ents"])(make_pii_rules)


def _is_first_name(token) -> bool:
    """A capitalised Spanish first name of Faker's es_ES locale (a requirement of the redactor)."""
    global _FIRST_NAMES
    if _FIRST_NAMES is None:
        from faker.providers.person.es_ES import Provider

        _FIRST_NAMES = {name.lower() for name in (*Provider.first_names_male, *Provider.first_names_female)
                        if " " not in name}
    return token.is_title and token.lower_ in _FIRST_NAMES


_FIRST_NAMES = None
if not Token.has_extension("first_name"):
    Token.set_extension("first_name", getter=_is_first_name)


class PIIRules:
    def __init__(self, nlp: Language, name: str = "pii_rules", labels: Sequence[str] = (), overwrite: bool = False):
        rules = RULES.get(nlp.lang)
        if rules is None:
            raise ValueError(f"{name}: no rules for language {nlp.lang!r}; rules exist for {', '.join(RULES)}")
        unknown = sorted(set(labels) - set(rules))
        if unknown:
            raise ValueError(f"{name}: no rules for labels {', '.join(unknown)}; the rules' labels are "
                             f"{', '.join(sorted(rules))}")
        self.name = name
        self.overwrite = overwrite
        self.matcher = Matcher(nlp.vocab, validate=True)
        self.skip: Dict[str, int] = {}
        for label in labels or rules:
            for number, (skip, pattern) in enumerate(rules[label]):
                key = f"{label}#{number}"
                self.skip[key] = skip
                self.matcher.add(key, [pattern], greedy="LONGEST")

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(sorted({key.split("#")[0] for key in self.skip}))

    def __call__(self, doc: Doc) -> Doc:
        spans = []
        for match_id, start, end in self.matcher(doc):
            key = doc.vocab.strings[match_id]
            start += self.skip[key]
            if start < end:
                spans.append(Span(doc, start, end, label=key.split("#")[0]))
        spans = filter_spans(spans)  # the longest of overlapping rule spans
        if self.overwrite:
            kept = [ent for ent in doc.ents if not any(s.start < ent.end and ent.start < s.end for s in spans)]
            doc.ents = sorted(kept + spans, key=lambda span: span.start)
        else:
            ents = list(doc.ents)
            for span in spans:
                overlapped = [ent for ent in ents if span.start < ent.end and ent.start < span.end]
                if not overlapped:
                    ents.append(span)
                elif span.label_ in EXTENDING and len(span) > sum(len(ent) for ent in overlapped) and all(
                        span.start <= ent.start and ent.end <= span.end for ent in overlapped):
                    # The NER found part of the form (a phone's first digits): the whole
                    # form is taken, with the NER's label where it gave one label.
                    labels = {ent.label_ for ent in overlapped}
                    label = labels.pop() if len(labels) == 1 else span.label_
                    ents = [ent for ent in ents if ent not in overlapped] + [Span(doc, span.start, span.end, label=label)]
            doc.ents = sorted(ents, key=lambda span: span.start)
        return doc
