"""How often two different values share a keyed surrogate
(`consistency = "keyed"`: drawn from a keyed HMAC of the value, with no
state shared between workers, so nothing keeps two values apart). Every
distinct person name of the corpora (folded, as the redactor compares them)
is replaced on its own; a collision is a surrogate that two or more
different names get, for whole names and for their parts. `--name-locale`
widens the pool of names the surrogates draw from."""

import os
from pathlib import Path
from typing import Dict, List, Set

import spacy
import typer
from spacy.tokens import Span

from synthdeid.io import read_docs
from synthdeid.kinds import LabelKinds
from synthdeid.redact import HASH_KEY_ENV, NAME_KINDS, _ascii_fold, faker_locale


def names_of(paths: List[Path]) -> Dict[str, str]:
    """folded name -> its first written form, over the corpora's name labels."""
    kinds = LabelKinds()
    found: Dict[str, str] = {}
    for path in paths:
        for doc in read_docs(path):
            for ent in doc.ents:
                if kinds.kind(ent.label_) in NAME_KINDS:
                    found.setdefault(" ".join(_ascii_fold(ent.text).split()), ent.text)
    return found


def collisions(surrogate_of: Dict[str, str]) -> int:
    """Originals whose surrogate another original has too."""
    holders: Dict[str, Set[str]] = {}
    for original, fake in surrogate_of.items():
        holders.setdefault(_ascii_fold(fake), set()).add(original)
    return sum(len(group) for group in holders.values() if len(group) > 1)


def main(
    corpora: List[Path] = typer.Argument(..., help="DocBins whose names are surrogated (train, test)"),
    lang: str = typer.Option("es", help="Language of the pipeline (Faker's locale for it)"),
    name_locale: List[str] = typer.Option([], help="Another Faker locale of names (repeat)"),
    key: str = typer.Option("benchmark key", help="The HMAC key (any: the figures hardly depend on it)"),
):
    names = names_of(corpora)
    os.environ[HASH_KEY_ENV] = key
    nlp = spacy.blank(lang)
    nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "consistency": "keyed",
                                         "locale": faker_locale(lang), "name_locales": list(name_locale)})
    whole: Dict[str, str] = {}
    parts: Dict[str, str] = {}
    masked = 0
    for folded, written in names.items():
        doc = nlp.make_doc(written)
        doc.ents = [Span(doc, 0, len(doc), label="NOMBRE_SUJETO_ASISTENCIA")]
        result = nlp.get_pipe("pii_redactor")(doc)
        replacement = result._.pii_replacements[0]
        if replacement["strategy"] != "surrogate":
            masked += 1
            continue
        whole[folded] = replacement["replacement"]
        for part, fake in zip(written.split(), replacement["replacement"].split()):
            if _ascii_fold(part) != _ascii_fold(fake):  # kept particles and titles are no draws
                parts.setdefault(_ascii_fold(part), fake)
    pool = ", ".join([faker_locale(lang), *name_locale])
    typer.echo(f"names from {', '.join(map(str, corpora))}; surrogates from {pool}")
    typer.echo("| value | distinct originals | sharing a surrogate | share |\n|---|---:|---:|---:|")
    for what, mapping in (("whole name", whole), ("name part", parts)):
        shared = collisions(mapping)
        typer.echo(f"| {what} | {len(mapping)} | {shared} | {shared / len(mapping):.4f} |")
    typer.echo(f"masked (no safe surrogate): {masked}")


if __name__ == "__main__":
    typer.run(main)
