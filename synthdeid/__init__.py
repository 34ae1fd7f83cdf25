"""synthdeid: de-identification models trained on synthetic clinical text."""

__version__ = "0.1.0"
