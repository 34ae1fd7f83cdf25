"""What synthdeid's entry points name (pyproject.toml): the training
components' spaCy factories and the spacy-llm model, so that a pipeline
folder holding them loads with a bare `spacy.load`.

spaCy imports every `spacy_factories` entry point whenever it makes a
Language, so this module must import without the `train` extra: there it
names nothing, and a folder that needs these factories fails in spaCy
("can't find factory") instead of every pipeline failing."""

from . import MissingExtra

try:
    from .training.committee import make_ner_committee
    from .training.hf_ner import make_hf_ner
    from .training.spacy_llm_model import hf_causal_lm
except MissingExtra:
    make_hf_ner = make_ner_committee = hf_causal_lm = None
