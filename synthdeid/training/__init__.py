"""The training machinery: corpus conversion, the transformer annotator and
committee, the generator and its notes, machine labelling, surrogate and
narrative augmentation, evaluation, the privacy report, packaging and the
ablation study. Needs the `train` extra: `pip install 'synthdeid[train]'`."""

from importlib.util import find_spec

from .. import MissingExtra

# Import names of the `train` extra's distributions (pyproject.toml).
TRAIN_EXTRA_MODULES = ("torch", "transformers", "peft", "accelerate", "spacy_llm", "spacy_transformers",
                       "weasel", "yaml", "matplotlib")

_missing = [name for name in TRAIN_EXTRA_MODULES if find_spec(name) is None]
if _missing:
    raise MissingExtra(f"synthdeid.training needs the train extra ({', '.join(_missing)} not installed): "
                       "pip install 'synthdeid[train]'")
