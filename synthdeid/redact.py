"""The `pii_redactor` component: turns recognised PII into placeholders.

This file is shipped inside packaged pipelines (`spacy package --code`), so it
imports nothing from synthdeid.
"""

from __future__ import annotations

from typing import List

from spacy.language import Language
from spacy.tokens import Doc

if not Doc.has_extension("deidentified"):
    Doc.set_extension("deidentified", default=None)


@Language.factory(
    "pii_redactor",
    default_config={"template": "[{label}]", "labels": []},
)
def make_pii_redactor(nlp: Language, name: str, template: str, labels: List[str]) -> "PIIRedactor":
    """Set `doc._.deidentified` to the text with every entity replaced.

    template: replacement text; `{label}` stands for the entity label and
        `{text}` is not offered on purpose (the point is to remove it).
    labels: the labels to redact; empty means every label.
    """
    return PIIRedactor(template=template, labels=labels)


class PIIRedactor:
    def __init__(self, template: str = "[{label}]", labels: List[str] = ()):
        if "{text}" in template:
            raise ValueError("pii_redactor: the template must not reinsert the entity text")
        template.format(label="LABEL")  # fail at creation on a malformed template
        self.template = template
        self.labels = set(labels)

    def __call__(self, doc: Doc) -> Doc:
        pieces = []
        cursor = 0
        for ent in doc.ents:
            if self.labels and ent.label_ not in self.labels:
                continue
            pieces.append(doc.text[cursor : ent.start_char])
            pieces.append(self.template.format(label=ent.label_))
            cursor = ent.end_char
        pieces.append(doc.text[cursor:])
        doc._.deidentified = "".join(pieces)
        return doc

