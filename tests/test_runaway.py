"""Runaway entities: the NER of configs/deid_cpu.cfg cannot run an entity past
a line break or a sentence end.

spaCy's BILUO NER can close an open entity only with L (O is invalid while an
entity is open), and its oracle costs nothing for I or L once a predicted
entity has passed the gold one, so the model never learns to stop there: after
one missed L the entity runs on until the model happens to pick L (the issue: a
235-token SEXO_SUJETO_ASISTENCIA entity over a whole paragraph). L is valid on
whitespace tokens, and docs read with the pipeline vocab have `is_space` set:
the whitespace hypotheses do not explain it. The config's `ner_boundaries`
component marks sentence starts, which make I invalid on the token before them,
so an entity ends by the next boundary however the model scores I and L.
"""

import numpy
import pytest
import spacy
from conftest import LABELS, REPO, make_docs
from spacy.training import Example
from spacy.util import load_config, load_model_from_config

CONFIG = REPO / "configs" / "deid_cpu.cfg"
LABEL = LABELS[0]

# A header line, a paragraph (one line) of two sentences, a line with blank
# lines and an indented line; abbreviations and an address whose periods are
# not sentence ends.
TEXT = (
    "Nombre: Ana Ruiz.\nSexo: H.\n"
    "Recién nacido de tres días de vida, ingresado por ictericia. Sin antecedentes de interés.\n\n"
    "Médico: Dr. Luis Soto, C/ Mayor 3. A, Madrid.\n      Firma: Dra. Elena López."
)


@pytest.fixture(scope="module")
def nlp():
    config = load_config(CONFIG, overrides={"paths.train": None, "paths.dev": None}, interpolate=False)
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in make_docs(8, seed=3)]
    nlp.initialize(lambda: examples)
    return nlp


def boundaries(doc):
    return [token.text for token in doc if token.is_sent_start and token.i > 0]


def test_boundaries_are_line_breaks_and_sentence_ends(nlp):
    doc = nlp(TEXT)
    assert nlp.pipe_names.index("ner_boundaries") < nlp.pipe_names.index("ner")
    assert boundaries(doc) == [
        "\n", "Sexo",  # every line-break token and the token after it
        "\n", "Recién",
        "Sin",  # "ictericia. Sin": a sentence end
        "\n\n", "Médico",  # "interés.\n\n": the line break only
        "\n      ", "Firma",  # not "Dr. Luis", "3. A" or "Dra. Elena"
    ]
    # SENT_START is a token attribute: the shared lexemes keep their flags
    newline = doc[[t.text for t in doc].index("\n")]
    assert newline.is_space and newline.lex.is_space


def test_boundaries_survive_saving_without_synthdeid_code(nlp, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert boundaries(loaded(TEXT)) == boundaries(nlp(TEXT))


@pytest.fixture(scope="module")
def runaway_nlp(nlp, tmp_path_factory):
    """A copy of `nlp` whose NER scores by action alone: B-LABEL over O and I
    over L everywhere, a model that opens an entity wherever it may and never
    wants to close one (the runaway taken to its limit)."""
    path = tmp_path_factory.mktemp("runaway") / "pipeline"
    nlp.to_disk(path)
    runaway = spacy.load(path)
    ner = runaway.get_pipe("ner")
    upper = ner.model.get_ref("upper")
    upper.set_param("W", numpy.zeros_like(upper.get_param("W")))
    bias = numpy.zeros_like(upper.get_param("b"))
    for i, name in enumerate(ner.move_names):
        bias[i] = {f"B-{LABEL}": 10.0, f"I-{LABEL}": 20.0}.get(name, 0.0)
    upper.set_param("b", bias)
    return runaway


def test_an_entity_never_crosses_a_boundary_even_if_the_model_never_closes(runaway_nlp):
    doc = runaway_nlp(TEXT)
    assert doc.ents, "the always-continue NER should open entities"
    starts = {token.i for token in doc if token.is_sent_start}
    for ent in doc.ents:
        assert "\n" not in ent.text, ent.text
        assert not any(i in starts for i in range(ent.start + 1, ent.end)), ent.text
    # each entity runs to the token before the next boundary, no further
    assert "Recién nacido de tres días de vida, ingresado por ictericia." in [e.text for e in doc.ents]


def test_without_the_boundaries_the_same_ner_runs_to_the_end_of_the_note(runaway_nlp):
    # what the guard prevents (and what this file fails on if it goes): one
    # entity from the first token to the last, over every line
    with runaway_nlp.select_pipes(disable=["ner_boundaries"]):
        doc = runaway_nlp(TEXT)
    assert [(ent.start, ent.end) for ent in doc.ents] == [(0, len(doc))]


def test_training_on_an_entity_across_a_line_break_does_not_fail(nlp):
    # The boundaries apply when predicting, not to the training docs: were
    # `ner_boundaries` an annotating component, a corpus entity across a line
    # break (the annotator can write one) in a doc longer than the NER's
    # oracle cut would stop training with E024.
    annotates = nlp.config["training"]["annotating_components"]
    assert "ner_boundaries" not in annotates
    ref = nlp.make_doc("Nombre: Ana\nRuiz García.\nSexo: H. " + "Sin antecedentes de interés. " * 60)
    ref.ents = [ref.char_span(8, 24, label=LABELS[2])]
    examples = [Example(nlp.make_doc(ref.text), ref)]
    optimizer = nlp.resume_training()
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, annotates=annotates)


@pytest.mark.parametrize("split", ["train", "dev"])
def test_no_gold_entity_crosses_a_boundary(nlp, split):
    """The boundaries are hard constraints: no MEDDOCAN gold entity may cross
    one, or the NER could never predict it."""
    from synthdeid.training.corpus import read_brat

    folder = REPO.parent / "shared" / "meddocan" / split
    assert folder.is_dir(), f"{folder} is missing: this test needs the shared corpus"
    ruler = nlp.get_pipe("ner_boundaries")
    crossing, entities = [], 0
    for raw in read_brat(folder):
        doc = ruler(nlp.make_doc(raw.text))
        starts = {token.i for token in doc if token.is_sent_start}
        for start, end, *_ in raw.spans:
            span = doc.char_span(start, end, alignment_mode="expand")
            entities += 1
            if any(i in starts for i in range(span.start + 1, span.end)):
                crossing.append(span.text)
    assert entities > 1000 and crossing == []
