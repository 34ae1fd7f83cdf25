"""`ner_committee`: the entities that most of several NER pipelines agree on.

The chain's labels are only as good as its annotator, and no single model
trained on the gold data is best: the transformer annotator (`hf_ner`) and
the spaCy pipeline of the gold config make different errors. A committee of
them keeps a span (start, end, label) that at least `min_votes` members
predict exactly; where kept spans overlap, the one with more votes wins, then
the one that starts first. On MEDDOCAN `dev` the annotator, the gold pipeline
and a second gold-config pipeline vote their way above each of them
(docs/committee.md).

    nlp = spacy.load("corpus/tokenizer")
    nlp.add_pipe("ner_committee", config={"members": ["training/annotator/pipeline", "training/gold/model-best"]})
    nlp.initialize()

As `hf_ner` does with its weights, the factory only records where the members
are; `initialize()` loads them, and `to_disk()` stores each one inside the
committee's own folder, so a saved committee loads without its sources.
Members read the doc's text with their own tokenizers; their entities are
mapped to the doc's tokens by character offsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import srsly
from spacy.errors import Errors
from spacy.language import Language
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.util import minibatch

from ..io import folder_from_bytes, folder_to_bytes, load_ner_pipeline, load_pipeline, save_pipeline, start_component_folder

CFG_FILE = "cfg.json"
MEMBERS_DIR = "members"

Vote = Tuple[int, int, str]  # (start token, end token, label)


@Language.factory(
    "ner_committee",
    default_config={"members": [], "min_votes": 0, "batch_size": 16, "gpu_id": -1},
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_ner_committee(
    nlp: Language,
    name: str,
    members: List[str] = [],  # noqa: B006 (spaCy passes the config's value)
    min_votes: int = 0,
    batch_size: int = 16,
    gpu_id: int = -1,
) -> "NERCommittee":
    """Create the `ner_committee` component.

    members (List[str]): folders of saved spaCy pipelines whose components
        assign `doc.ents` (the annotator's, trained ones). Read by
        `initialize()` only; a committee loaded from disk uses its own copies.
    min_votes (int): members that must predict a span exactly for it to be
        kept; 0 means a majority (2 of 3, 3 of 4).
    batch_size (int): docs per batch when the members run over a stream.
    gpu_id (int): GPU the members are loaded on (-1: the CPU); see
        `synthdeid.io.load_pipeline`, which sets it from its own `gpu_id`.
    """
    return NERCommittee(name, vocab=nlp.vocab, members=members, min_votes=min_votes, batch_size=batch_size,
                        gpu_id=gpu_id)


class NERCommittee:
    """Entities by majority vote of several NER pipelines."""

    def __init__(
        self,
        name: str = "ner_committee",
        *,
        vocab: Any = None,
        members: Sequence[str] = (),
        min_votes: int = 0,
        batch_size: int = 16,
        gpu_id: int = -1,
    ) -> None:
        if min_votes < 0 or batch_size < 1:
            raise ValueError(f"ner_committee: min_votes must be at least 0 and batch_size at least 1, not {min_votes}, {batch_size}")
        self.name = name
        self.vocab = vocab
        self.cfg: Dict[str, Any] = {"members": [str(m) for m in members], "min_votes": min_votes,
                                    "batch_size": batch_size, "gpu_id": gpu_id}
        self.pipelines: List[Language] = []

    @property
    def is_initialized(self) -> bool:
        return bool(self.pipelines)

    @property
    def labels(self) -> Tuple[str, ...]:
        """The labels any member can assign."""
        labels = set()
        for member in self.pipelines:
            for pipe_name in member.pipe_names:
                labels.update(getattr(member.get_pipe(pipe_name), "labels", ()) or ())
        return tuple(sorted(labels))

    @property
    def required_votes(self) -> int:
        return self.cfg["min_votes"] or len(self.pipelines) // 2 + 1

    def initialize(
        self,
        get_examples: Optional[Callable[[], Iterable[Example]]] = None,
        *,
        nlp: Optional[Language] = None,
        members: Optional[List[str]] = None,
    ) -> None:
        """Load the member pipelines named in the config (or `members`)."""
        sources = [str(m) for m in (members or self.cfg["members"])]
        if not sources:
            raise ValueError(
                f"ner_committee component '{self.name}': no members; set [components.{self.name}] members "
                "to the folders of saved NER pipelines"
            )
        self.set_members([load_ner_pipeline(source, gpu_id=self.cfg["gpu_id"]) for source in sources])
        self.cfg["members"] = sources

    def set_members(self, pipelines: Sequence[Language]) -> None:
        if self.cfg["min_votes"] > len(pipelines):
            raise ValueError(
                f"ner_committee component '{self.name}': min_votes {self.cfg['min_votes']} exceeds the "
                f"{len(pipelines)} members"
            )
        self.pipelines = list(pipelines)

    # -------------------------------------------------------------- inference

    def __call__(self, doc: Doc) -> Doc:
        return next(self.pipe([doc]))

    def pipe(self, stream: Iterable[Doc], *, batch_size: Optional[int] = None) -> Iterator[Doc]:
        for batch in minibatch(stream, size=batch_size or self.cfg["batch_size"]):
            docs = list(batch)
            for doc, votes in zip(docs, self.member_votes(docs)):
                doc.set_ents(
                    [Span(doc, start, end, label=label) for start, end, label in elect(votes, self.required_votes)],
                    default="outside",
                )
            yield from docs

    def member_votes(self, docs: Sequence[Doc]) -> List[List[List[Vote]]]:
        """Per doc, per member, the member's entities on the doc's tokens."""
        if not self.is_initialized:
            raise ValueError(Errors.E109.format(name=self.name))
        votes: List[List[List[Vote]]] = [[] for _ in docs]
        texts = [doc.text for doc in docs]
        for member in self.pipelines:
            for d, predicted in enumerate(member.pipe(texts, batch_size=self.cfg["batch_size"])):
                doc, spans = docs[d], []
                for ent in predicted.ents:
                    span = doc.char_span(ent.start_char, ent.end_char, label=ent.label_, alignment_mode="expand")
                    if span is not None:
                        spans.append((span.start, span.end, ent.label_))
                votes[d].append(spans)
        return votes

    def score(self, examples: Iterable[Example], **kwargs: Any) -> Dict[str, Any]:
        return get_ner_prf(examples, **kwargs)

    # ---------------------------------------------------------- serialisation

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> None:
        """Write `cfg.json` and `members/0`, `members/1`, ... (each a saved
        pipeline); "cfg" or "members" in `exclude` leaves one out."""
        if not self.is_initialized:
            raise ValueError(Errors.E109.format(name=self.name))
        path = start_component_folder(path, self.cfg, CFG_FILE, exclude)
        if "members" not in exclude:
            (path / MEMBERS_DIR).mkdir(exist_ok=True)
            for i, member in enumerate(self.pipelines):
                member.to_disk(path / MEMBERS_DIR / str(i))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = tuple()) -> "NERCommittee":
        path = Path(path)
        if "cfg" not in exclude and (path / CFG_FILE).exists():
            # Settings come from the pipeline config; only the members' sources are restored.
            self.cfg["members"] = srsly.read_json(path / CFG_FILE).get("members", self.cfg["members"])
        if "members" in exclude:
            return self
        folders = sorted((p for p in (path / MEMBERS_DIR).glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
        if not folders:
            raise FileNotFoundError(
                f"{path}: not a saved ner_committee component (no {MEMBERS_DIR}/0); "
                "save the pipeline with nlp.to_disk() after initialize()"
            )
        self.set_members([load_ner_pipeline(folder, gpu_id=self.cfg["gpu_id"]) for folder in folders])
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        return folder_to_bytes(lambda folder: self.to_disk(folder, exclude=exclude))

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "NERCommittee":
        return folder_from_bytes(bytes_data, lambda folder: self.from_disk(folder, exclude=exclude))


def elect(member_spans: Sequence[Sequence[Vote]], min_votes: int) -> List[Vote]:
    """The spans at least `min_votes` members predict (a member's vote counts
    once per span), without overlaps: more votes first, then the earlier
    start, then the longer span, then the earlier member. Sorted by start."""
    counts: Dict[Vote, int] = {}
    for spans in member_spans:
        for span in set(spans):
            counts[span] = counts.get(span, 0) + 1
    candidates = sorted(
        (span for span, n in counts.items() if n >= min_votes),
        key=lambda span: (-counts[span], span[0], span[0] - span[1]),
    )
    taken: set = set()
    elected = []
    for start, end, label in candidates:
        if taken.isdisjoint(range(start, end)):
            taken.update(range(start, end))
            elected.append((start, end, label))
    return sorted(elected)


def build_committee_pipeline(
    members: Sequence[str | Path],
    tokenizer_dir: str | Path,
    output_dir: str | Path,
    *,
    min_votes: int = 0,
    name: str = "deid_meddocan_committee",
) -> Path:
    """Save (atomically) a pipeline: the tokenizer of `tokenizer_dir` followed
    by `ner_committee` over `members`, each stored inside the saved folder."""
    nlp = load_pipeline(tokenizer_dir)
    component = nlp.add_pipe("ner_committee", config={"members": [str(m) for m in members], "min_votes": min_votes})
    component.initialize(nlp=nlp)
    nlp.meta["name"] = name
    nlp.meta["description"] = (
        f"De-identification committee: entities that {component.required_votes} of {len(members)} "
        f"NER pipelines predict ({', '.join(str(m) for m in members)})"
    )
    nlp.meta["labels"] = {"ner_committee": list(component.labels)}
    return save_pipeline(nlp, output_dir)
