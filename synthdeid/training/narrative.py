"""Narrative training notes: PII in running prose, built from synthetic values.

MEDDOCAN's notes, and so the generator's, put most identifiers in a fixed
header; a pipeline trained on them learns the header and misses a name in
prose (docs/recall_outside_template.md). Gold data cannot fix that; synthetic
data can. `narrative_notes` writes short notes that mix sentences of the
labelled synthetic notes that hold no entity with sentences that put a PII
value into a narrative frame: names after verbs and prepositions, at the start
and end of a sentence, in lower and upper case; places, identifiers, phones,
e-mails and dates in prose.

The values come from the surrogate copies (`augment.surrogate_copy`), never
from gold text. The frames are written here and are not the behavioural test
set's frames (`behaviour.FRAMES`; a test checks that no sentence is shared),
so the behavioural set still measures sentences the pipeline has not seen.
Frames hold no PII of their own: an unlabelled age or place in a frame would
teach the pipeline to leave it.
"""

from __future__ import annotations

import random
import re
from typing import Dict, List, Mapping, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from .corpus import ID_KEY, RawDoc, to_doc

# label -> sentences with {X} where the value goes.
NARRATIVE_FRAMES: Dict[str, Tuple[str, ...]] = {
    "NOMBRE_SUJETO_ASISTENCIA": (
        "Se cita a {X} en consulta externa dentro de un mes.",
        "{X} refiere mejoría parcial del dolor tras el tratamiento.",
        "{X} presenta fiebre desde ayer por la tarde.",
        "Durante la visita, {X} se muestra colaboradora y orientada.",
        "La enfermera informa de que {X} ha pasado buena noche.",
        "Se entrega el informe de alta a {X}.",
        "Valoramos de nuevo a {X}.",
        "Se trata de {X}, que consulta por disnea de esfuerzo.",
        "Acompañamos a {X} a la sala de curas.",
        "Se informa a {X} y a su familia del resultado.",
        "En la revisión, {X} aporta la analítica solicitada.",
        "Explicamos a {X} los riesgos de la intervención.",
        "El enfermo {X} tolera bien la dieta.",
        "Comentamos con la paciente {X} las opciones de tratamiento.",
        "Nota de evolución de {X}.",
    ),
    "NOMBRE_PERSONAL_SANITARIO": (
        "Le atiende la doctora {X} en la planta de Medicina Interna.",
        "Interconsulta al doctor {X} por sospecha de endocarditis.",
        "{X}, residente de segundo año, realiza la exploración.",
        "Según el informe de {X}, no hay signos de malignidad.",
        "Revisado por {X}.",
        "El cirujano {X} realiza la intervención sin complicaciones.",
        "Comentado con el Dr. {X}, se decide alta.",
        "{X} confirma el diagnóstico en la biopsia.",
        "La endoscopia la realiza {X}.",
        "Responsable del seguimiento: {X}.",
    ),
    "TERRITORIO": (
        "Reside en {X} desde su jubilación.",
        "Procedente de {X}, acude por primera vez a la consulta.",
        "Se desplaza desde {X} para las revisiones.",
        "Trabajó durante años en {X}.",
        "Pasó el verano en {X}.",
    ),
    "PAIS": (
        "Procede de {X}, donde fue diagnosticado.",
        "Regresó de {X} hace dos semanas.",
        "Es originario de {X}.",
    ),
    "CALLE": (
        "Vive en {X}, en un tercer piso sin ascensor.",
        "Dirección actual: {X}.",
        "Se le localiza en {X} por las mañanas.",
    ),
    "HOSPITAL": (
        "Se deriva al {X} para completar el estudio.",
        "Fue intervenido en el {X} en la infancia.",
        "Procede del {X}, donde estuvo ingresado.",
    ),
    "CORREO_ELECTRONICO": (
        "Facilita su correo, {X}, para recibir las citas.",
        "Correo de contacto {X}.",
        "Enviaremos el informe a {X}.",
    ),
    "NUMERO_TELEFONO": (
        "Teléfono de contacto {X}.",
        "Se le puede localizar en el {X}.",
        "Avisar a la familia al {X} si empeora.",
    ),
    "ID_SUJETO_ASISTENCIA": (
        "Consultada la historia {X}, constan alergias.",
        "Nº de historia: {X}.",
        "Se actualiza el registro {X} con el nuevo diagnóstico.",
    ),
    "ID_ASEGURAMIENTO": (
        "Número de la Seguridad Social {X}.",
        "Con tarjeta {X}, consta como beneficiario.",
    ),
    "ID_TITULACION_PERSONAL_SANITARIO": (
        "Nº de colegiado {X}.",
        "Médico responsable, número de colegiado {X}.",
        "Firma el colegiado {X}.",
    ),
    "FECHAS": (
        "Se programa la cirugía para el {X}.",
        "Última revisión el {X}, sin cambios.",
        "Ingresó el {X} por un cuadro confusional.",
    ),
    "EDAD_SUJETO_ASISTENCIA": (
        "Mujer de {X} con antecedentes de asma.",
        "Diagnosticado a los {X} de diabetes.",
    ),
}
# Labels whose values are written in lower or upper case in some sentences:
# names and places, which a pipeline must not find by their capital letter only.
CASED_LABELS = frozenset({"NOMBRE_SUJETO_ASISTENCIA", "NOMBRE_PERSONAL_SANITARIO", "TERRITORIO", "PAIS", "CALLE"})
CASE_SHARE = 0.1  # of those sentences lower case, and as many upper case
SENTENCE = re.compile(r"[^.\n]+[.]")


def filler_sentences(docs: Sequence[Doc], min_words: int = 5, max_words: int = 40) -> List[str]:
    """Sentences of `docs` that overlap no entity, as running prose for the
    narrative notes (a sentence is a run of text up to a full stop, within a line)."""
    found: Dict[str, None] = {}
    for doc in docs:
        taken = [(ent.start_char, ent.end_char) for ent in doc.ents]
        for match in SENTENCE.finditer(doc.text):
            start, end = match.span()
            text = match.group().strip()
            if min_words <= len(text.split()) <= max_words and not any(s < end and start < e for s, e in taken):
                found[text] = None
    return list(found)


def usable_values(values: Mapping[str, Sequence[str]]) -> Dict[str, List[str]]:
    """The values of the labels that have narrative frames, of a form that
    fits them: an age frame reads "a los {X} de ...", so ages in words
    ("Adolescente") are left out."""
    return {label: [v for v in values.get(label, ()) if label != "EDAD_SUJETO_ASISTENCIA" or any(c.isdigit() for c in v)]
            for label in NARRATIVE_FRAMES}


def _cased(value: str, label: str, rng: random.Random) -> str:
    if label in CASED_LABELS:
        draw = rng.random()
        if draw < CASE_SHARE:
            return value.lower()
        if draw < 2 * CASE_SHARE:
            return value.upper()
    return value


def narrative_notes(
    values: Mapping[str, Sequence[str]],
    fillers: Sequence[str],
    nlp: Language,
    *,
    notes: int,
    seed: int = 0,
    pii_sentences: int = 3,
    filler_sentences_per_note: int = 3,
) -> List[Doc]:
    """`notes` Docs, each `pii_sentences` narrative frames filled with values
    of their label (labels without values are skipped) and
    `filler_sentences_per_note` entity-free sentences, shuffled (seeded)."""
    values = usable_values(values)
    frames = [(label, frame) for label, texts in NARRATIVE_FRAMES.items() if values.get(label) for frame in texts]
    if notes and not frames:
        raise ValueError(f"no values for any narrative label ({', '.join(NARRATIVE_FRAMES)})")
    rng = random.Random(f"{seed}\0narrative")
    docs = []
    for k in range(notes):
        sentences: List[Tuple[str, str | None, str | None]] = []
        for label, frame in rng.sample(frames, min(pii_sentences, len(frames))):
            sentences.append((frame, label, _cased(rng.choice(values[label]), label, rng)))
        if fillers:
            sentences += [(text, None, None) for text in rng.sample(fillers, min(filler_sentences_per_note, len(fillers)))]
        rng.shuffle(sentences)
        text, spans = "", []
        for frame, label, value in sentences:
            text += " " if text else ""
            if label is None:
                text += frame
                continue
            before, after = frame.split("{X}")
            spans.append((len(text) + len(before), len(text) + len(before) + len(value), label))
            text += before + value + after
        name = f"narrative{k + 1}"
        doc, _ = to_doc(nlp, RawDoc(name=name, text=text, spans=spans))
        doc.user_data[ID_KEY] = name
        docs.append(doc)
    return docs
