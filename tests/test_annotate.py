"""Machine annotation of generated texts: reading the generation JSONL, the
annotator run, the seeded synthetic split and the statistics."""

import json

import pytest
import spacy
from conftest import cli, make_docs, write_docbin
from spacy.tokens import Doc, Span
from typer.testing import CliRunner

from synthdeid.training.labelling import AnnotateError, annotate_generated, relabel_docbin
from synthdeid.training.annotator import build_annotator_pipeline
from synthdeid.training.corpus import ID_KEY, corpus_stats, split_train_validation
from synthdeid.training.inline_tags import untag
from synthdeid.io import TextDoc, read_docs, read_text_docs
from synthdeid.training.metrics import doc_spans
from synthdeid.training.tokenizer import make_nlp

NOMBRE, TERRITORIO = "NOMBRE_SUJETO_ASISTENCIA", "TERRITORIO"

# The rule model (conftest) tags "Ana" as a name and "Madrid" (+ "García") as
# a territory, and nothing else: the expected entities of each text are known.
TEXTS = {
    "syn-000001": ("Ana vive en Madrid.", [("Ana", NOMBRE), ("Madrid", TERRITORIO)]),
    "syn-000002": ("Paciente sin antecedentes de interés.", []),
    "syn-000003": ("Traslado a Madrid García desde Toledo.", [("Madrid García", TERRITORIO)]),
    "syn-000004": ("Ana, de 45 años.", [("Ana", NOMBRE)]),
    "syn-000005": ("Vive en Madrid con Ana.", [("Madrid", TERRITORIO), ("Ana", NOMBRE)]),
    "syn-000006": ("Exploración física normal.", []),
    "syn-000007": ("Madrid.\n\nAna.", [("Madrid", TERRITORIO), ("Ana", NOMBRE)]),
    "syn-000008": ("Dolor abdominal.", []),
    "syn-000009": ("Ana Ana.", [("Ana", NOMBRE), ("Ana", NOMBRE)]),
    "syn-000010": ("Sin hallazgos en Madrid.", [("Madrid", TERRITORIO)]),
}


def write_generated(path, texts=TEXTS):
    with path.open("w", encoding="utf-8") as f:
        for n, (doc_id, (text, _)) in enumerate(texts.items()):
            # The generation step's other keys are carried along and ignored.
            record = {"id": doc_id, "text": text, "prompt": "Escribe una nota.", "prompt_doc": n,
                      "round": 0, "sample": n, "seed": 7, "sampling": {"temperature": 1.0}, "generator": "test"}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, rule_model_dir):
    root = tmp_path_factory.mktemp("annotator")
    make_nlp().to_disk(root / "tokenizer")
    return build_annotator_pipeline(rule_model_dir, root / "tokenizer", root / "pipeline")


@pytest.fixture(scope="module")
def gold(tmp_path_factory):
    return write_docbin(tmp_path_factory.mktemp("gold") / "train.spacy", make_docs(12, seed=5))


def read_out(path):
    return read_docs(path, spacy.blank("es").vocab)


def test_annotate_cli_end_to_end(tmp_path, pipeline, gold):
    generated = write_generated(tmp_path / "generated.jsonl")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli("annotate"),
        [str(generated), str(pipeline), str(gold), str(out), "--validation-fraction", "0.2", "--seed", "3",
         "--batch-size", "3"],
    )
    assert result.exit_code == 0, result.output
    train, validation = read_out(out / "train.spacy"), read_out(out / "validation.spacy")

    # The seeded split of the ids, every document exactly once.
    records = [TextDoc(doc_id, text) for doc_id, (text, _) in TEXTS.items()]
    want_train, want_validation = split_train_validation(records, 0.2, 3)
    assert [d.user_data[ID_KEY] for d in train] == [r.name for r in want_train]
    assert [d.user_data[ID_KEY] for d in validation] == [r.name for r in want_validation]
    assert (len(train), len(validation)) == (8, 2)

    # Texts and entities belong to their ids.
    for doc in train + validation:
        text, ents = TEXTS[doc.user_data[ID_KEY]]
        assert doc.user_data["name"] == doc.user_data[ID_KEY]
        assert doc.text == text
        assert [(e.text, e.label_) for e in doc.ents] == ents

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    splits = stats["splits"]
    for split, docs in (("train", train), ("validation", validation)):
        labels = {}
        for doc in docs:
            for ent in doc.ents:
                labels[ent.label_] = labels.get(ent.label_, 0) + 1
        assert splits[split]["labels"] == labels
        assert splits[split]["documents"] == len(docs)
        assert splits[split]["words"] == sum(not t.text.isspace() for d in docs for t in d)
    assert splits["synthetic"]["labels"] == {NOMBRE: 6, TERRITORIO: 5}
    words = splits["synthetic"]["words"]
    assert splits["synthetic"]["per_1000_words"][NOMBRE] == round(1000 * 6 / words, 4)
    # Gold: 12 notes of conftest's generator, each with 1 name, 1 date, 2 territories, 1 age.
    assert splits["gold"]["documents"] == 12
    assert splits["gold"]["labels"] == {TERRITORIO: 24, "EDAD_SUJETO_ASISTENCIA": 12, "FECHAS": 12, NOMBRE: 12}
    assert (stats["seed"], stats["validation_fraction"], stats["batch_size"]) == (3, 0.2, 3)

    table = (out / "stats.md").read_text(encoding="utf-8")
    assert table in result.output
    row = next(line for line in table.splitlines() if line.startswith(f"| {NOMBRE} |"))
    assert row.split(" | ")[1:4] == [str(splits["train"]["labels"].get(NOMBRE, 0)),
                                     str(splits["validation"]["labels"].get(NOMBRE, 0)), "12"]
    assert "| FECHAS | 0 | 0 | 12 |" in table


def test_a_spacy_ner_pipeline_labels_like_the_annotator(tmp_path, pipeline, gold):
    # The workflow's default labeller is a trained spaCy pipeline without
    # hf_ner; an entity ruler with the rule model's patterns stands in for it.
    nlp = make_nlp()
    nlp.add_pipe("entity_ruler").add_patterns([
        {"label": NOMBRE, "pattern": "Ana"},
        {"label": TERRITORIO, "pattern": [{"TEXT": "Madrid"}, {"TEXT": "García", "OP": "?"}]},
    ])
    nlp.to_disk(tmp_path / "labeller")
    generated = write_generated(tmp_path / "generated.jsonl")
    by_ruler = annotate_generated(generated, tmp_path / "labeller", gold, tmp_path / "ruler", validation_fraction=0.2)
    by_annotator = annotate_generated(generated, pipeline, gold, tmp_path / "annotator", validation_fraction=0.2)
    assert by_ruler["splits"] == by_annotator["splits"]
    for split in ("train.spacy", "validation.spacy"):
        assert doc_spans(read_out(tmp_path / "ruler" / split)) == doc_spans(read_out(tmp_path / "annotator" / split))


def test_relabel_keeps_texts_and_names_and_takes_the_pipelines_entities(tmp_path, pipeline, gold):
    stats = relabel_docbin(gold, pipeline, tmp_path / "relabelled.spacy", batch_size=5)
    hand, machine = read_out(gold), read_out(tmp_path / "relabelled.spacy")
    nlp = spacy.load(pipeline)
    assert [d.text for d in machine] == [d.text for d in hand]
    assert [d.user_data["name"] for d in machine] == [d.user_data["name"] for d in hand]
    assert doc_spans(machine) == doc_spans(nlp.pipe(d.text for d in hand))
    # The rule model finds no dates or ages: its labels cover part of the hand labels.
    assert stats["documents"] == 12
    assert stats["machine"]["labels"].keys() <= {NOMBRE, TERRITORIO}
    assert 0 < stats["agreement_with_hand_labels"]["r"] < 1
    with pytest.raises(AnnotateError, match="nowhere: not a saved spaCy pipeline"):
        relabel_docbin(gold, tmp_path / "nowhere", tmp_path / "other.spacy")
    assert not (tmp_path / "other.spacy").exists()


def test_same_seed_same_split_other_seed_other_split(tmp_path, pipeline, gold):
    generated = write_generated(tmp_path / "generated.jsonl")
    ids = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        annotate_generated(generated, pipeline, gold, tmp_path / run, validation_fraction=0.3, seed=seed)
        ids[run] = [d.user_data[ID_KEY] for d in read_out(tmp_path / run / "validation.spacy")]
    assert ids["a"] == ids["b"]
    assert ids["a"] != ids["c"]
    assert len(ids["a"]) == len(ids["c"]) == 3


@pytest.mark.parametrize(
    "line, problem",
    [
        ("not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"text": "Hola."}', "'id' must be a non-empty string"),
        ('{"id": 3, "text": "Hola."}', "'id' must be a non-empty string"),
        ('{"id": "syn-9"}', "'text' is missing"),
        ('{"id": "syn-9", "text": null}', "'text' is not a string"),
        ('{"id": "syn-9", "text": "  \\n"}', "empty text"),
        ('{"id": "syn-1", "text": "Otra."}', "duplicate id 'syn-1' \\(first on line 1\\)"),
    ],
)
def test_bad_generated_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "generated.jsonl"
    path.write_text('{"id": "syn-1", "text": "Hola."}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(AnnotateError, match=f"generated.jsonl:3: {problem}"):
        read_text_docs(path, AnnotateError)


def test_generated_file_errors(tmp_path):
    with pytest.raises(AnnotateError, match="missing.jsonl: no such file"):
        read_text_docs(tmp_path / "missing.jsonl", AnnotateError)
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(AnnotateError, match="blank.jsonl: no documents"):
        read_text_docs(tmp_path / "blank.jsonl", AnnotateError)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "a", "text": "x"}\n{"id": "b", "text": "Espa\xf1a"}\n')
    with pytest.raises(AnnotateError, match="latin1.jsonl:2: not valid UTF-8"):
        read_text_docs(tmp_path / "latin1.jsonl", AnnotateError)


def test_bad_inputs_write_nothing(tmp_path, pipeline, gold):
    generated = write_generated(tmp_path / "generated.jsonl")
    out = tmp_path / "out"
    make_nlp().to_disk(tmp_path / "tokenizer-only")
    with pytest.raises(AnnotateError, match="tokenizer-only: no component .* assigns entities"):
        annotate_generated(generated, tmp_path / "tokenizer-only", gold, out)
    with pytest.raises(AnnotateError, match="nowhere: not a saved spaCy pipeline"):
        annotate_generated(generated, tmp_path / "nowhere", gold, out)
    with pytest.raises(AnnotateError, match="no-gold.spacy: no such DocBin"):
        annotate_generated(generated, pipeline, tmp_path / "no-gold.spacy", out)
    (tmp_path / "junk.spacy").write_bytes(b"junk")
    with pytest.raises(AnnotateError, match="junk.spacy: not a readable spaCy DocBin"):
        annotate_generated(generated, pipeline, tmp_path / "junk.spacy", out)
    with pytest.raises(AnnotateError, match="validation_fraction"):
        annotate_generated(generated, pipeline, gold, out, validation_fraction=0)
    single = write_generated(tmp_path / "single.jsonl", {"syn-1": TEXTS["syn-000001"]})
    with pytest.raises(AnnotateError, match="single.jsonl: a validation split needs at least 2"):
        annotate_generated(single, pipeline, gold, out)
    assert not out.exists()

    result = CliRunner().invoke(cli("annotate"), [str(tmp_path / "absent.jsonl"), str(pipeline), str(gold), str(out)])
    assert result.exit_code == 1
    assert "absent.jsonl: no such file" in result.output
    assert not out.exists()


def test_a_gpu_that_cannot_be_used_is_an_error_line_and_nothing_is_written(tmp_path, pipeline, gold):
    """GPU 99 is on no machine: the steps say so before they write anything."""
    generated = write_generated(tmp_path / "generated.jsonl")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli("annotate"), [str(generated), str(pipeline), str(gold), str(out), "--gpu-id", "99"])
    assert result.exit_code == 1 and "error: gpu_id 99: torch sees" in result.output, result.output
    result = CliRunner().invoke(cli("relabel"), [str(gold), str(pipeline), str(out / "relabelled.spacy"),
                                                 "--gpu-id", "99"])
    assert result.exit_code == 1 and "error: gpu_id 99: torch sees" in result.output, result.output
    assert not out.exists()


def test_corpus_stats_counts_words_without_whitespace():
    vocab = spacy.blank("es").vocab
    words = ["Ana", "\n\n", "vive", "en", "Madrid", "."]
    doc = Doc(vocab, words=words, spaces=[False, False, True, True, False, False])
    doc.ents = [Span(doc, 0, 1, label=NOMBRE), Span(doc, 4, 5, label=TERRITORIO)]
    empty = Doc(vocab, words=["Nada", "."])
    stats = corpus_stats([doc, empty])
    assert stats["documents"] == 2
    assert stats["words"] == 7  # 5 + 2; the "\n\n" token is not a word
    assert stats["entities"] == 2
    assert stats["labels"] == {NOMBRE: 1, TERRITORIO: 1}
    assert stats["per_1000_words"] == {NOMBRE: round(1000 / 7, 4), TERRITORIO: round(1000 / 7, 4)}
    assert stats["entities_per_1000_words"] == round(2000 / 7, 4)


def test_interrupted_annotation_resumes_and_equals_an_uninterrupted_run(tmp_path, pipeline, gold, monkeypatch):
    from synthdeid.training import labelling

    texts = {f"syn-{i:02d}": (f"Ana vive en Madrid {i}. García y Valladolid.", []) for i in range(11)}
    generated = write_generated(tmp_path / "generated.jsonl", texts)
    annotate_generated(generated, pipeline, gold, tmp_path / "whole", validation_fraction=0.3)
    monkeypatch.setattr(labelling.AnnotationCheckpoints, "CHUNK", 3)
    flush, chunks = labelling.AnnotationCheckpoints.flush, []

    def interrupted(self):
        flush(self)
        chunks.append(self.chunks)
        if self.chunks == 2:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    out.mkdir()
    (out / "stats.json").write_text("{}")  # an earlier run's finished marker
    monkeypatch.setattr(labelling.AnnotationCheckpoints, "flush", interrupted)
    with pytest.raises(KeyboardInterrupt):
        annotate_generated(generated, pipeline, gold, out, validation_fraction=0.3)
    monkeypatch.setattr(labelling.AnnotationCheckpoints, "flush", flush)
    assert (out / ".annotate_partial" / "chunk-00001.spacy").is_file()
    stats = annotate_generated(generated, pipeline, gold, out, validation_fraction=0.3)
    assert stats["resumed_after"] == 6 and not (out / ".annotate_partial").exists()
    for split in ("train", "validation"):
        ours, reference = read_out(out / f"{split}.spacy"), read_out(tmp_path / "whole" / f"{split}.spacy")
        assert [(d.text, [(e.start_char, e.end_char, e.label_) for e in d.ents], d.user_data[ID_KEY]) for d in ours] == [
            (d.text, [(e.start_char, e.end_char, e.label_) for e in d.ents], d.user_data[ID_KEY]) for d in reference]
    # other settings: the chunks are not reused
    stats = annotate_generated(generated, pipeline, gold, tmp_path / "other", validation_fraction=0.3, seed=4)
    assert "resumed_after" not in stats


def test_chunks_of_an_annotator_retrained_in_place_are_not_reused(tmp_path, pipeline, gold, monkeypatch):
    import shutil

    from synthdeid.training import labelling

    texts = {f"syn-{i:02d}": (f"Ana vive en Madrid {i}.", []) for i in range(8)}
    generated = write_generated(tmp_path / "generated.jsonl", texts)
    model = tmp_path / "annotator"
    shutil.copytree(pipeline, model)
    monkeypatch.setattr(labelling.AnnotationCheckpoints, "CHUNK", 3)
    flush = labelling.AnnotationCheckpoints.flush

    def interrupted(self):
        flush(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(labelling.AnnotationCheckpoints, "flush", interrupted)
    with pytest.raises(KeyboardInterrupt):
        annotate_generated(generated, model, gold, tmp_path / "out", validation_fraction=0.3)
    monkeypatch.setattr(labelling.AnnotationCheckpoints, "flush", flush)
    meta = model / "meta.json"
    meta.write_text(meta.read_text(encoding="utf-8").replace("{", '{"retrained": true, ', 1), encoding="utf-8")
    stats = annotate_generated(generated, model, gold, tmp_path / "out", validation_fraction=0.3)
    assert "resumed_after" not in stats


def test_a_failed_write_leaves_no_finished_marker(tmp_path, pipeline, gold, monkeypatch):
    from spacy.tokens import DocBin

    generated = write_generated(tmp_path / "generated.jsonl")
    annotate_generated(generated, pipeline, gold, tmp_path / "out", validation_fraction=0.3)

    to_disk = DocBin.to_disk

    def disk_full(self, path, *args, **kwargs):  # checkpoints are written, the outputs are not
        if ".annotate_partial" in str(path):
            return to_disk(self, path, *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(DocBin, "to_disk", disk_full)
    with pytest.raises(OSError):
        annotate_generated(generated, pipeline, gold, tmp_path / "out", validation_fraction=0.3, seed=2)
    assert not (tmp_path / "out" / "stats.json").exists() and not (tmp_path / "out" / "stats.md").exists()


EDAD = "EDAD_SUJETO_ASISTENCIA"
# Inline tags a tagging generator wrote with four of the notes: one agrees
# with the rule model, two add a territory and an age it misses, and one
# calls its territory a name.
TAGGED = {
    "syn-000001": f"<{NOMBRE}>Ana</{NOMBRE}> vive en <{TERRITORIO}>Madrid</{TERRITORIO}>.",
    "syn-000003": f"Traslado a Madrid García desde <{TERRITORIO}>Toledo</{TERRITORIO}>.",
    "syn-000004": f"<{NOMBRE}>Ana</{NOMBRE}>, de <{EDAD}>45 años</{EDAD}>.",
    "syn-000010": f"Sin hallazgos en <{NOMBRE}>Madrid</{NOMBRE}>.",
}


def write_tagged(path, tagged=TAGGED):
    """The generated notes as the generation step writes a tagging generator's."""
    with path.open("w", encoding="utf-8") as f:
        for doc_id, (text, _) in TEXTS.items():
            untagged = untag(tagged.get(doc_id, text), [NOMBRE, TERRITORIO, EDAD])
            assert untagged.text == text
            record = {"id": doc_id, "text": text, "tagged": tagged.get(doc_id, text),
                      "tag_spans": [list(span) for span in untagged.spans], "tag_problems": []}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


@pytest.mark.parametrize("policy, expected", [
    ("annotator", {"syn-000003": [("Madrid García", TERRITORIO)], "syn-000004": [("Ana", NOMBRE)],
                   "syn-000010": [("Madrid", TERRITORIO)]}),
    ("union", {"syn-000003": [("Madrid García", TERRITORIO), ("Toledo", TERRITORIO)],
               "syn-000004": [("Ana", NOMBRE), ("45 años", EDAD)], "syn-000010": [("Madrid", TERRITORIO)]}),
    ("tags", {"syn-000003": [("Madrid García", TERRITORIO), ("Toledo", TERRITORIO)],
              "syn-000004": [("Ana", NOMBRE), ("45 años", EDAD)], "syn-000010": [("Madrid", NOMBRE)]}),
])
def test_inline_tags_are_compared_and_merged_by_the_policy(tmp_path, pipeline, gold, policy, expected):
    out = tmp_path / "out"
    stats = annotate_generated(write_tagged(tmp_path / "generated.jsonl"), pipeline, gold, out, seed=3,
                               tag_policy=policy)
    docs = {doc.user_data[ID_KEY]: doc for doc in read_out(out / "train.spacy") + read_out(out / "validation.spacy")}
    for doc_id, (text, ents) in TEXTS.items():
        assert [(e.text, e.label_) for e in docs[doc_id].ents] == expected.get(doc_id, ents), doc_id
    # The same comparison whatever the policy: by the tag's label, and the model's spans no tag overlaps.
    assert stats["inline_tags"] == {"policy": policy, "notes": 10, "agreement": {
        EDAD: {"tag_only": 1},
        NOMBRE: {"agree": 2, "other_label": 1, "labeller_only": 4},
        TERRITORIO: {"agree": 1, "tag_only": 1, "labeller_only": 3},
    }}
    assert f"| {TERRITORIO} | 1 | 0 | 0 | 1 | 3 | 0 | 0.500 |" in (out / "stats.md").read_text(encoding="utf-8")


def test_two_tags_in_one_token_keep_one_span_and_count_the_other(tmp_path, pipeline, gold):
    text = "Vive en AnaToledo."
    path = tmp_path / "generated.jsonl"
    records = [{"id": "syn-1", "text": text, "tag_spans": [[8, 11, NOMBRE], [11, 17, TERRITORIO]]},
               {"id": "syn-2", "text": "Sin hallazgos.", "tag_spans": []}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    stats = annotate_generated(path, pipeline, gold, tmp_path / "out", tag_policy="tags")
    docs = read_out(tmp_path / "out" / "train.spacy") + read_out(tmp_path / "out" / "validation.spacy")
    assert [(e.text, e.label_) for doc in docs for e in doc.ents] == [("AnaToledo", NOMBRE)]
    assert stats["inline_tags"]["agreement"][TERRITORIO] == {"other_boundary": 1, "unaligned": 1}


def test_a_tag_policy_needs_tagged_notes(tmp_path, pipeline, gold):
    with pytest.raises(AnnotateError, match="needs inline tags, but 10 of 10 notes carry none"):
        annotate_generated(write_generated(tmp_path / "plain.jsonl"), pipeline, gold, tmp_path / "a", tag_policy="union")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("spans, problem", [
    ({"a": 1}, "'tag_spans' is not a list (dict)"),
    ([[0, 3]], "'tag_spans' holds [0, 3], not [start, end, label]"),
    ([[0, 99, "X"]], "'tag_spans' holds [0, 99, 'X']: out of the text's 17 characters"),
    ([[4, 8, "X"], [0, 3, "X"]], "'tag_spans' holds [0, 3, 'X']: out of the text's 17 characters, empty, out of order"),
])
def test_bad_tag_spans_name_the_file_and_line(tmp_path, spans, problem):
    path = tmp_path / "generated.jsonl"
    path.write_text(json.dumps({"id": "syn-1", "text": "Ana vive en Soria", "tag_spans": spans}) + "\n")
    with pytest.raises(AnnotateError) as error:
        read_text_docs(path, AnnotateError)
    assert str(error.value).startswith(f"{path}:1: {problem}")
