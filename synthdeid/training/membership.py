"""Membership inference: can a model tell the gold notes it (or its chain)
learned from from gold notes it never saw?

The attack is the standard threshold attack: score each note, call it a
member above a threshold; its AUC over all thresholds is the chance that a
random train note scores above a random held-out note (0.5: no better than a
coin). Members are gold train notes, non-members the gold test notes (as many
train notes as test notes, drawn with a seed).

- A de-identification pipeline's score is its token-level F1 on the note
  (the loss attack's stand-in: spaCy's greedy NER gives no per-token
  probability). The gold pipeline, which trained on the members, is the
  reference that did see them.
- A generator's score is minus its mean token loss on the note (a model
  that learned a note predicts it better), and minus its mean loss on the
  tokens of the note's gold entities only: whether it learned the notes'
  real identifiers, which a generator adapted on surrogated notes never saw.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from spacy.tokens import Doc
from tqdm import tqdm

from ..io import read_docs
from .evaluation import load_evaluated, predict
from .inline_tags import entity_spans, tagged_with_values
from .metrics import OUTSIDE, token_scores, token_tags


def auc(members: Sequence[float], others: Sequence[float]) -> float:
    """P(a member scores above a non-member), ties counted half (Mann-Whitney)."""
    if not members or not others:
        raise ValueError("the attack needs at least one member and one non-member score")
    ranked = sorted([(score, 1) for score in members] + [(score, 0) for score in others])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + 1 + j) / 2
        rank_sum += mean_rank * sum(member for _, member in ranked[i:j])
        i = j
    n, m = len(members), len(others)
    return (rank_sum - n * (n + 1) / 2) / (n * m)


def pipeline_scores(nlp: Any, docs: Sequence[Doc], name: str) -> List[float]:
    """Token-level F1 of the pipeline on each note (1.0 where the note has no
    entity and the pipeline finds none)."""
    predictions, _ = predict(nlp, list(docs), 16, f"membership {name}")
    scores = []
    for reference, predicted in zip(docs, predictions):
        gold, pred = token_tags(reference, predicted)
        if all(tag == OUTSIDE for tag in gold + pred):
            scores.append(1.0)
        else:
            scores.append(token_scores([gold], [pred])["micro"]["f"])
    return scores


def generator_scores(generator: str | Path, docs: Sequence[Doc], device: str = "cpu"
                     ) -> Tuple[List[float], List[Optional[float]]]:
    """Per note: minus the generator's mean token loss on the whole note, and
    on the tokens that overlap one of its gold entities (None: no entity
    token within the generator's window). A generator adapted with inline
    tags reads the note tagged, as it learnt it; the entity tokens are those
    of the values."""
    import torch

    from .generator import generator_tag_labels, load_generator, max_positions, note_start_id

    tagged = generator_tag_labels(generator) is not None
    model, tokenizer = load_generator(generator, device)
    window = max_positions(model.config) or 1024
    start = note_start_id(tokenizer)
    whole, pii = [], []
    with torch.no_grad():
        for doc in tqdm(docs, desc="membership generator", unit="doc", disable=None):
            if tagged:
                note, spans = tagged_with_values(doc.text, entity_spans(doc))
            else:
                note, spans = doc.text, [(ent.start_char, ent.end_char) for ent in doc.ents]
            text = note.lstrip()
            shift = len(note) - len(text)
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            ids = [start, *encoded["input_ids"]][:window]
            offsets = encoded["offset_mapping"][: len(ids) - 1]
            inputs = torch.tensor([ids], device=model.device)
            logits = model(inputs, attention_mask=torch.ones_like(inputs)).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids[1:], device=model.device),
                                                       reduction="none").tolist()
            spans = [(start - shift, end - shift) for start, end in spans]
            in_entity = [loss for loss, (a, b) in zip(losses, offsets) if any(a < e and s < b for s, e in spans)]
            whole.append(-sum(losses) / len(losses) if losses else 0.0)
            pii.append(-sum(in_entity) / len(in_entity) if in_entity else None)
    return whole, pii


def _attack(members: Sequence[Optional[float]], others: Sequence[Optional[float]]) -> Dict[str, Any]:
    members = [score for score in members if score is not None]
    others = [score for score in others if score is not None]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {"auc": round(auc(members, others), 4), "members": len(members), "non_members": len(others),
            "mean_member_score": round(mean(members), 4), "mean_non_member_score": round(mean(others), 4)}


def membership_report(train_path: str | Path, test_path: str | Path, *,
                      pipelines: Optional[Mapping[str, str | Path]] = None, generator: Optional[str | Path] = None,
                      seed: int = 0, device: str = "cpu", gpu_id: int = -1) -> Dict[str, Any]:
    """The attack's AUC against each pipeline (and the generator's two):
    members, as many gold train notes as there are test notes (seeded draw),
    against the test notes. The pipelines run on GPU `gpu_id` (-1: the CPU),
    the generator on torch device `device`."""
    test = read_docs(test_path)
    train = read_docs(train_path)
    if not train or not test:
        raise ValueError(f"{train_path if not train else test_path}: no documents")
    members = random.Random(seed).sample(train, min(len(train), len(test)))
    report: Dict[str, Any] = {"train": str(train_path), "test": str(test_path), "seed": seed,
                              "members": len(members), "non_members": len(test), "pipelines": {}}
    for name, path in (pipelines or {}).items():
        nlp = load_evaluated(path, gpu_id)
        report["pipelines"][name] = {"path": str(path), **_attack(pipeline_scores(nlp, members, name),
                                                                  pipeline_scores(nlp, test, name))}
    if generator is not None:
        member_whole, member_pii = generator_scores(generator, members, device)
        other_whole, other_pii = generator_scores(generator, test, device)
        report["generator"] = {"path": str(generator), "whole_note": _attack(member_whole, other_whole),
                               "entity_tokens": _attack(member_pii, other_pii)}
    return report



def membership_markdown(report: Mapping[str, Any]) -> str:
    lines = [
        "# Membership inference",
        "",
        f"Members: {report['members']} gold train notes (seed {report['seed']}); non-members: "
        f"{report['non_members']} gold test notes. AUC of the threshold attack: 0.5 is a coin toss, 1.0 tells "
        "every member apart.",
        "",
        "| model | score | AUC | mean score, members | mean score, non-members |",
        "|---|---|---:|---:|---:|",
    ]
    rows = [(name, "token F1", attack) for name, attack in report["pipelines"].items()]
    if "generator" in report:
        rows += [("generator", "-loss, whole note", report["generator"]["whole_note"]),
                 ("generator", "-loss, entity tokens", report["generator"]["entity_tokens"])]
    for name, score, attack in rows:
        lines.append(f"| {name} | {score} | {attack['auc']:.4f} | {attack['mean_member_score']:.4f} | "
                     f"{attack['mean_non_member_score']:.4f} |")
    return "\n".join(lines) + "\n"
