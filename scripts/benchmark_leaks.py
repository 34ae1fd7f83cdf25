"""Count redactor leaks on seeded random notes: entities of every label with
random words (any script and case, combining accents, digits), separators
and punctuation at their edges, between context words. A note leaks when a
word of an entity that the strategy does not keep on purpose
(`synthdeid.redact.identifying_words`) appears in the output outside the
replacements of dates and ages, or when `reidentify` does not give the note
back. `--redactor` runs another copy of redact.py (an older version, say)
against the same notes and the same definition of a leak."""

import random
import re
import string
from pathlib import Path
from typing import List, Optional, Tuple

import spacy
import typer
from spacy.tokens import Doc

LABELS = (
    "NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO", "FAMILIARES_SUJETO_ASISTENCIA", "ID_SUJETO_ASISTENCIA",
    "NUMERO_TELEFONO", "CALLE", "TERRITORIO", "HOSPITAL", "INSTITUCION", "CORREO_ELECTRONICO", "PAIS", "FECHAS",
    "EDAD_SUJETO_ASISTENCIA",
)
CONTEXT = ("paciente", "acude", "control", "refiere", "dolor", "consulta", "fiebre", "tratamiento")
EDGES = ("", "", "", '"', "«", "»", "(", ")", "¿", "?", "'", "_", "*", ",", ".", ":", "-")
LETTERS = string.ascii_letters + "áéíóúñÁÉÍÓÚÑçßøαβγдежЖ" + "e\u0301"


def random_entity(rng: random.Random) -> Tuple[str, str]:
    label = rng.choice(LABELS)
    if label == "FECHAS":
        core = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1, 9999):04d}"
    elif label == "EDAD_SUJETO_ASISTENCIA":
        core = f"{rng.randint(0, 130)} años"
    else:
        words = []
        for _ in range(rng.randint(1, 4)):
            word = "".join(rng.choice(LETTERS + string.digits * (label.startswith(("ID_", "NUMERO_")) * 3))
                           for _ in range(rng.randint(1, 8)))
            words.append(rng.choice([word, word.lower(), word.upper(), word.capitalize()]))
        separators = [rng.choice([" ", "-", ". ", ", ", "\n", "/", "@", "."]) for _ in words[1:]]
        core = words[0] + "".join(s + w for s, w in zip(separators, words[1:]))
    return label, rng.choice(EDGES) + core + rng.choice(EDGES)


def random_note(rng: random.Random) -> Tuple[str, List[Tuple[int, int, str]]]:
    text, spans = "", []
    for _ in range(rng.randint(1, 6)):
        text += " ".join(rng.choice(CONTEXT) for _ in range(rng.randint(0, 3))) + rng.choice(["", " ", "\n", ", "])
        label, entity = random_entity(rng)
        spans.append((len(text), len(text) + len(entity), label))
        text += entity + rng.choice(["", " ", ". ", "\n"])
    return text, spans


def make_doc(nlp, text: str, spans) -> Doc:
    edges = sorted({0, len(text)} | {i for start, end, _ in spans for i in (start, end)})
    pieces = [p for start, end in zip(edges, edges[1:]) for p in re.findall(r"\w+|\s+|[^\w\s]", text[start:end])]
    doc = Doc(nlp.vocab, words=pieces, spaces=[False] * len(pieces))
    doc.ents = [doc.char_span(start, end, label=label) for start, end, label in spans]
    return doc


def main(
    notes: int = typer.Option(2000, help="Random notes per strategy"),
    seed: int = typer.Option(0, help="Seed of the notes"),
    redactor: Optional[Path] = typer.Option(None, help="Another redact.py to measure (default: synthdeid's)"),
):
    if redactor is not None:  # registers its pii_redactor first; synthdeid.redact then leaves it
        spacy.util.import_file("other_redact", redactor)
    from synthdeid.kinds import LabelKinds
    from synthdeid.redact import identifying_words, reidentify, words

    kind = LabelKinds().kind

    vocabulary = words(" ".join(CONTEXT + LABELS))
    for strategy in ("mask", "hash", "surrogate"):
        nlp = spacy.blank("es")
        nlp.add_pipe("pii_redactor", config={"strategy": strategy})  # the hash key: SYNTHDEID_HASH_KEY
        rng = random.Random(seed)
        leaked = not_restored = measured = 0
        for _ in range(notes):
            text, spans = random_note(rng)
            identifying = set().union(*(identifying_words(kind(label), text[s:e], lang="es") for s, e, label in spans))
            if identifying & vocabulary:
                continue  # a random word that the context or a mask also holds: no verdict possible
            measured += 1
            doc = nlp(make_doc(nlp, text, spans))
            out = list(doc._.deidentified)
            for item in doc._.pii_replacements:
                if item["label"] in ("FECHAS", "EDAD_SUJETO_ASISTENCIA"):
                    out[item["replacement_start"] : item["replacement_end"]] = " " * len(item["replacement"])
            shown = words("".join(out))
            leaked += any(identifying_words(kind(label), text[s:e], lang="es") & shown for s, e, label in spans)
            not_restored += reidentify(doc._.deidentified, doc._.pii_replacements) != text
        typer.echo(f"{strategy:9s} {measured} notes: {leaked} leak ({leaked / measured:.1%}), "
                   f"{not_restored} not restored by reidentify")


if __name__ == "__main__":
    import os

    os.environ.setdefault("SYNTHDEID_HASH_KEY", "benchmark")
    typer.run(main)
