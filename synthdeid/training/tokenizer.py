"""A tokenizer whose token boundaries fit clinical PHI spans, for any language.

`make_nlp(lang)` returns `spacy.blank(lang)` with a few extra prefix, suffix
and infix patterns and special cases: the rules below hold for any language,
`LANGUAGE_RULES` adds those of one language. They are plain tokenizer settings: saved by
`nlp.to_disk` and restored by `spacy.load` (or `spacy.copy_from_base_model.v1`
in a training config) with no synthdeid code, so packaged pipelines that copy
this tokenizer tokenise exactly like the gold DocBins.

The rules come from the spans spaCy's default Spanish tokenizer cuts in
MEDDOCAN (about 9% of them; the Spanish ones are marked): record-form fields written without spaces
(`NHC:915943`, `CP:28029`, `nhc-150679`, `E-28935`, `08005-Barcelona`), one-
letter codes before a period (`Sexo: H.`, `..., 3, B.`, `2A.`) and a year
glued to the next sentence (`2014.El`). Each rule is narrow: decimals
(`3,5`, `2.5`), times (`10:30`), dates (`12/03/2018`), abbreviations (`Dr.`,
`Avda.`, `EE.UU.`) and ordinary hyphenated words keep their default tokens.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import spacy
from spacy.attrs import ORTH
from spacy.lang.char_classes import ALPHA, ALPHA_LOWER, ALPHA_UPPER
from spacy.language import Language
from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex

# `ALPHA` / `ALPHA_UPPER` are character-class bodies (no brackets).
_A = ALPHA
_AU = ALPHA_UPPER

# An e-mail address: `[^\s@]+@[^\s@]+\.[^\s@]+` (lookahead only).
_EMAIL = r"[^\s@]+@[^\s@]+\.[^\s@]+"

EXTRA_PREFIXES: List[str] = [
    # A field label glued to an e-mail address (`E-mail:ana@x.es`,
    # `Email:ana@x.es`, `E-mail.ana@x.es`): without this the URL matcher
    # swallows the label into one token with the address.
    rf"(?:[Ee]-?[Mm]ail|E-?MAIL)(?=[:.\-]{_EMAIL})",
    # ...and the `.` or `-` left between them (`:` is a default prefix).
    # (Addresses practically never start with them.)
    rf"[.\-](?={_EMAIL})",
]

EXTRA_SUFFIXES: List[str] = [
    # A period after a lone uppercase letter: one-letter codes and initials
    # (`Sexo: H.`, `3, B.`, `2A.`, `3ºD.`). Gold spans stop before the period
    # (`H`, `3, B`); the default only splits after two capitals (`UCI.`).
    # Not after a letter or a period, so words and dotted acronyms (`C.P.`,
    # `T.A.C.`, `EE.UU.`) keep their default tokens.
    rf"(?<=[{_AU}])(?<![{_A}.][{_AU}])\.",
    # A period after an ordinal (`28, 1º.`, `3,3º.`): spans stop at `1º`.
    r"(?<=[0-9][ºª])\.",
    # A period after a number (`mars 2017.`, `over 70.`): languages that write
    # ordinals with a period (Norwegian `10. mars`) keep it on the number,
    # where a span ends before it.
    r"(?<=[0-9])\.",
]

EXTRA_INFIXES: List[str] = [
    # A field name glued to its value by a colon: `NHC:915943`, `CP:28029`,
    # `Edad:62`, `nacimiento:15/03/1945`. Letters before, a digit after, so
    # times and ratios (`10:30`, `1:100`) are untouched; a colon between
    # letters is already split by the defaults.
    rf"(?<=[{_A}º]):(?=[0-9])",
    # Letters glued to a number of 5+ digits (an identifier or postcode) by
    # `/` or `-`: `nhc/976421`, `nhc-150679`, `E-28935`, `Zaragoza-50009`,
    # and a 5-digit postcode glued to its town: `08005-Barcelona`. Shorter
    # numbers keep units, genes and levels whole (`mg/24h`, `IL-6`,
    # `COVID-19`, `S-100`, `L4-L5`); letter-letter hyphens (`Epstein-Barr`,
    # `anti-inflamatorio`) and number ranges (`2-3`) are untouched too.
    rf"(?<=[{_A}])[/\-](?=[0-9]{{5}})",
    rf"(?<=[0-9]{{5}})-(?=[{_A}])",
    # A sentence period glued between a number and a capital: `2014.El`.
    # Decimals (`2.5`) have a digit after the period and are untouched.
    rf"(?<=[0-9])\.(?=[{_AU}])",
]

def _spanish_special_cases() -> Dict[str, List[str]]:
    cases = {
        # `s/n` (sin número) in addresses is one token, so a sentence period after
        # it splits off (`Choupana s/n.`); otherwise the default `n.` special case
        # re-merges `n` with the period and the span `... s/n` ends inside a token.
        "s/n": ["s/n"],
        "S/N": ["S/N"],
    }
    # Address side abbreviations written with a doubled period (`4 Izq..`,
    # `5 Der..`, a form template's habit) become three tokens: the default makes
    # `Izq` + `..` (an ellipsis), and the gold spans end either after `Izq` or
    # after `Izq.` (both occur), so both periods must be separate tokens.
    for abbreviation in ("Izq", "izq", "Izda", "izda", "Der", "der", "Dcha", "dcha", "Dcho", "dcho"):
        cases[abbreviation + ".."] = [abbreviation, ".", "."]
    return cases


# lang -> (extra infixes, special cases: strings tokenised as the token texts given) of one language.
LANGUAGE_RULES: Dict[str, Tuple[List[str], Dict[str, List[str]]]] = {
    "es": (
        # Record-form field labels glued to the preceding name (`MartínezNºCol:`,
        # `DominguezCorreo electrónico`): an empty infix splits before the label.
        # Never occurs in ordinary text (a lowercase letter right before them).
        [rf"(?<=[{ALPHA_LOWER}])(?=NºCol|Correo)"],
        _spanish_special_cases(),
    ),
}


def make_nlp(lang: str = "es") -> Language:
    """A blank pipeline of `lang` with the customised, serialisable tokenizer."""
    nlp = spacy.blank(lang)
    customise_tokenizer(nlp)
    return nlp


def customise_tokenizer(nlp: Language) -> Language:
    """Add the extra rules, and those of `nlp.lang`, to `nlp.tokenizer` in place."""
    defaults = nlp.Defaults
    tokenizer = nlp.tokenizer
    infixes, special_cases = LANGUAGE_RULES.get(nlp.lang, ([], {}))
    tokenizer.prefix_search = compile_prefix_regex(_extend(defaults.prefixes, EXTRA_PREFIXES)).search
    tokenizer.suffix_search = compile_suffix_regex(_extend(defaults.suffixes, EXTRA_SUFFIXES)).search
    tokenizer.infix_finditer = compile_infix_regex(_extend(defaults.infixes, EXTRA_INFIXES + infixes)).finditer
    for text, pieces in special_cases.items():
        assert "".join(pieces) == text, text
        tokenizer.add_special_case(text, [{ORTH: piece} for piece in pieces])
    return nlp


def _extend(defaults: Iterable[str] | None, extra: List[str]) -> List[str]:
    # The extra patterns go first: for suffixes and prefixes the regex is an
    # alternation, so order only matters between patterns matching at the same
    # place, where ours are the more specific.
    return list(extra) + list(defaults or [])
