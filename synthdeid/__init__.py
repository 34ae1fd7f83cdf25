"""synthdeid: de-identification models trained on synthetic clinical text.

`synthdeid` itself is the runtime that users install: the redactor
(`redact`), the recall safety net (`rules`), the command line
(`deidentify`) and the Presidio adapter (`presidio`). The machinery that
builds the models (corpus, annotator, generator, evaluation, privacy
report, study) is `synthdeid.training`, installed with the `train` extra.
"""

__version__ = "0.1.0"


class MissingExtra(ImportError):
    """A part of synthdeid was imported without the optional dependencies it needs."""
