"""Corpus readers, gold-span preservation, the seeded split and the converter."""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from typer.testing import CliRunner

from synthdeid.training.corpus import (
    CorpusError,
    RawDoc,
    ReadReport,
    convert_corpus,
    corpus_parts,
    read_any,
    read_brat,
    read_docbin,
    read_jsonl,
    read_label_map,
    split_train_validation,
    to_doc,
)
from synthdeid.io import read_docs
from synthdeid.training.tokenizer import make_nlp

from conftest import REPO, cli

TEXT = "Nombre: Ana Ruiz.\nCP:28029.\nSexo: H.\n"
ANN = "T1\tNOMBRE_SUJETO_ASISTENCIA 8 16\tAna Ruiz\nT2\tTERRITORIO 21 26\t28029\nT3\tSEXO_SUJETO_ASISTENCIA 34 35\tH\n"
SPANS = [(8, 16, "NOMBRE_SUJETO_ASISTENCIA"), (21, 26, "TERRITORIO"), (34, 35, "SEXO_SUJETO_ASISTENCIA")]


@pytest.fixture(scope="module")
def nlp():
    return make_nlp()


def write_pair(folder: Path, name: str, text, ann) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".txt", text), (".ann", ann)):
        if content is not None:
            path = folder / f"{name}{suffix}"
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def brat_corpus(folder: Path, n: int, prefix: str = "doc") -> Path:
    for i in range(n):
        write_pair(folder, f"{prefix}{i:02d}", TEXT, ANN)
    return folder


def error_of(reader) -> str:
    with pytest.raises(CorpusError) as info:
        list(reader)
    return str(info.value)


# ------------------------------------------------------------------ brat


def test_read_brat_valid(tmp_path):
    write_pair(tmp_path, "b", TEXT, ANN)
    write_pair(tmp_path, "a", TEXT, "")
    (tmp_path / "annotation.conf").write_text("[entities]\n")
    docs = list(read_brat(tmp_path))
    assert [d.name for d in docs] == ["a", "b"]
    assert docs[0].spans == [] and docs[1].spans == SPANS and docs[1].text == TEXT


BAD_ANN_LINES = {
    "malformed": ("T1\tNOMBRE_SUJETO_ASISTENCIA 8 16", "malformed text-bound line"),
    "missing offset": ("T1\tNOMBRE_SUJETO_ASISTENCIA 8\tAna Ruiz", "expected '<LABEL> <start> <end>"),
    "extra field": ("T1\tNOMBRE_SUJETO_ASISTENCIA 8 16 17\tAna Ruiz", "expected '<LABEL> <start> <end>"),
    "unknown type": ("X1\tNOMBRE 8 16\tAna Ruiz", "unknown annotation line"),
    "bad id": ("Tx\tNOMBRE 8 16\tAna Ruiz", "malformed annotation id"),
    "non-integer": ("T1\tNOMBRE 8 1.6\tAna Ruiz", "non-negative integers"),
    "negative": ("T1\tNOMBRE -8 16\tAna Ruiz", "non-negative integers"),
    "start after end": ("T1\tNOMBRE 16 8\tAna Ruiz", "is not before end"),
    "empty span": ("T1\tNOMBRE 8 8\t", "is not before end"),
    "past the text": ("T1\tNOMBRE 30 80\tx", "ends past the end"),
    "covered text": ("T1\tNOMBRE 8 16\tAna Ruis", "differs from"),
    "fragment covered text": ("T1\tNOMBRE 8 11;12 16\tAnaRuiz", "differs from"),
    "overlapping fragments": ("T1\tNOMBRE 8 12;11 16\tAna   Ruiz", "overlap"),
    "empty fragment": ("T1\tNOMBRE 8 11;\tAna ", "expected '<LABEL> <start> <end>"),
    "whitespace only": ("T1\tNOMBRE 7 8\t ", "only whitespace"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANN_LINES))
def test_bad_brat_line_names_file_and_line(tmp_path, case):
    line, problem = BAD_ANN_LINES[case]
    write_pair(tmp_path, "d", TEXT, f"#1\tAnnotatorNotes T2\tok\n{line}\n")
    message = error_of(read_brat(tmp_path))
    assert message.startswith(f"{tmp_path / 'd.ann'}:2: "), message
    assert problem in message


@pytest.mark.parametrize(
    "second,problem",
    [
        ("T2\tNOMBRE_SUJETO_ASISTENCIA 8 16\tAna Ruiz", "duplicates the span on line 1"),
        ("T2\tNOMBRE 12 16\tRuiz", "overlaps the span on line 1"),
        ("T2\tOTRO 8 16\tAna Ruiz", "has the same offsets as the span on line 1"),
        ("T1\tTERRITORIO 21 26\t28029", "duplicate annotation id T1 (first on line 1)"),
    ],
)
def test_duplicate_and_overlapping_spans_name_both_lines(tmp_path, second, problem):
    write_pair(tmp_path, "d", TEXT, f"T1\tNOMBRE_SUJETO_ASISTENCIA 8 16\tAna Ruiz\n{second}\n")
    message = error_of(read_brat(tmp_path))
    assert message.startswith(f"{tmp_path / 'd.ann'}:2: ") and problem in message, message


def test_unpaired_files_are_errors(tmp_path):
    write_pair(tmp_path / "a", "d", TEXT, None)
    assert error_of(read_brat(tmp_path / "a")) == f"{tmp_path / 'a' / 'd.txt'}: no matching d.ann"
    write_pair(tmp_path / "b", "d", None, ANN)
    assert error_of(read_brat(tmp_path / "b")) == f"{tmp_path / 'b' / 'd.ann'}: no matching d.txt"
    (tmp_path / "c").mkdir()
    assert "no .txt/.ann files" in error_of(read_brat(tmp_path / "c"))
    assert "no such folder" in error_of(read_brat(tmp_path / "missing"))


@pytest.mark.parametrize("text", [b"", b"  \n\t\n", "\ufeff\n".encode("utf-8")])
def test_empty_text_is_an_error(tmp_path, text):
    write_pair(tmp_path, "d", text, "")
    assert error_of(read_brat(tmp_path)) == f"{tmp_path / 'd.txt'}: empty text"


@pytest.mark.parametrize(
    "which,bad,line",
    [
        ("txt", "l\xednea uno\n", 1),
        ("txt", "ok\nok\n\xff\n", 3),
        ("ann", "T1\tNOMBRE_SUJETO_ASISTENCIA 8 16\tAna Ruiz\n\nT2\tX 0 1\t\xd1\n", 3),
    ],
)
def test_non_utf8_names_file_and_line_of_first_bad_byte(tmp_path, which, bad, line):
    bad = bad.encode("latin-1")
    write_pair(tmp_path, "d", bad if which == "txt" else TEXT, bad if which == "ann" else ANN)
    message = error_of(read_brat(tmp_path))
    assert message.startswith(f"{tmp_path / ('d.' + which)}:{line}: not valid UTF-8"), message


def test_non_t_lines_are_skipped_and_counted(tmp_path):
    extra = "#1\tAnnotatorNotes T1\tnota\nA1\tNegated T1\nR1\tRel Arg1:T1 Arg2:T2\n\nN1\tReference T1 Wiki:1\tx\n"
    write_pair(tmp_path, "d", TEXT, ANN + extra)
    report = ReadReport()
    (doc,) = read_brat(tmp_path, report)
    assert doc.spans == SPANS
    assert report.skipped_lines == {"#": 1, "A": 1, "R": 1, "N": 1}
    assert report.as_dict()["skipped_annotation_lines"] == 4


def test_byte_order_mark_is_counted_by_brat_then_removed(tmp_path):
    # brat (and MEDDOCAN) count a leading BOM as one character of the text.
    shifted = "".join(
        f"T{i}\t{label} {s + 1} {e + 1}\t{TEXT[s:e]}\n" for i, (s, e, label) in enumerate(SPANS, 1)
    )
    write_pair(tmp_path, "d", "\ufeff" + TEXT, "\ufeff" + shifted.replace("\n", "\r\n"))
    report = ReadReport()
    (doc,) = read_brat(tmp_path, report)
    assert doc.text == TEXT and doc.spans == SPANS
    assert report.byte_order_marks_removed == 1
    # Offsets that ignore the BOM do not match: an error with a hint.
    write_pair(tmp_path, "d", "\ufeff" + TEXT, ANN)
    assert "byte-order mark" in error_of(read_brat(tmp_path))


def test_a_span_that_starts_on_the_byte_order_mark_starts_after_it(tmp_path):
    write_pair(tmp_path, "d", "\ufeffAna Ruiz acude.", "T1\tNOMBRE 0 9\t\ufeffAna Ruiz\n")
    (doc,) = read_brat(tmp_path)
    assert doc.text == "Ana Ruiz acude." and doc.spans == [(0, 8, "NOMBRE")]
    write_pair(tmp_path, "d", "\ufeffAna Ruiz acude.", "T1\tNOMBRE 0 1\t\ufeff\n")
    assert error_of(read_brat(tmp_path)).startswith(f"{tmp_path / 'd.ann'}:1: span covers only the byte-order mark")


def test_discontinuous_fragments_are_joined_over_whitespace_and_split_over_text(tmp_path):
    # brat writes an entity over line breaks as fragments, covered text joined by spaces.
    text = "Hospital Universitario\nde Getafe. Dr. Ruiz y\nDr. Soto.\n"
    ann = ("T1\tHOSPITAL 0 22;23 32\tHospital Universitario de Getafe\n"
           "T2\tNOMBRE 38 42;49 53\tRuiz Soto\n")
    write_pair(tmp_path, "d", text, ann)
    report = ReadReport()
    (doc,) = read_brat(tmp_path, report)
    assert [(text[s:e], label) for s, e, label in doc.spans] == [
        ("Hospital Universitario\nde Getafe", "HOSPITAL"), ("Ruiz", "NOMBRE"), ("Soto", "NOMBRE")]
    assert (report.joined_fragments, report.split_fragments) == (1, 1)
    assert report.as_dict()["discontinuous_spans_joined"] == 1


def test_whitespace_at_span_edges_is_trimmed_and_counted(tmp_path):
    write_pair(tmp_path, "d", TEXT, "T1\tNOMBRE_SUJETO_ASISTENCIA 7 17\t Ana Ruiz.\n")
    report = ReadReport()
    (doc,) = read_brat(tmp_path, report)
    assert doc.spans == [(8, 17, "NOMBRE_SUJETO_ASISTENCIA")] and report.trimmed_spans == 1
    write_pair(tmp_path, "d", TEXT, "T1\tX 7 11\t Ana\nT2\tY 28 34\tSexo: \n")
    (doc,) = read_brat(tmp_path, report)
    assert doc.spans == [(8, 11, "X"), (28, 33, "Y")] and report.trimmed_spans == 3


# ------------------------------------------------------------------ JSONL and DocBin


def jsonl(path: Path, *records) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def record(**extra):
    spans = [{"start": s, "end": e, "label": label} for s, e, label in SPANS]
    return {"text": TEXT, "spans": spans, **extra}


def test_read_jsonl(tmp_path):
    path = jsonl(tmp_path / "c.jsonl", record(id=7), "", record(name="b"), record())
    docs = list(read_jsonl(path))
    assert [d.name for d in docs] == ["7", "b", "c-4"]
    assert all(d.spans == SPANS and d.text == TEXT for d in docs)


@pytest.mark.parametrize(
    "bad,problem",
    [
        ('{"text": "a", "spans": [}', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"spans": []}, "missing key 'text'"),
        ({"text": "Ana"}, "missing key 'spans'"),
        ({"text": " \n", "spans": []}, "empty text"),
        ({"text": 5, "spans": []}, "'text' must be a string"),
        ({"text": "Ana", "spans": [], "meta": 1}, "unknown keys ['meta']"),
        ({"text": "Ana", "spans": [{"start": 0, "end": 3}]}, "missing keys ['label']"),
        ({"text": "Ana", "spans": [{"start": 0, "end": 3, "label": "X", "lbl": 1}]}, "unknown keys ['lbl']"),
        ({"text": "Ana", "spans": [{"start": "0", "end": 3, "label": "X"}]}, "must be integers"),
        ({"text": "Ana", "spans": [{"start": True, "end": 3, "label": "X"}]}, "must be integers"),
        ({"text": "Ana", "spans": [{"start": 2, "end": 1, "label": "X"}]}, "is not before end"),
        ({"text": "Ana", "spans": [{"start": 0, "end": 9, "label": "X"}]}, "ends past the end"),
        ({"text": "Ana", "spans": [{"start": 0, "end": 3, "label": ""}]}, "'label' must be"),
        ({"text": "Ana", "spans": [{"start": 0, "end": 3, "label": "X", "text": "Ann"}]}, "differs from"),
        ({"text": "Ana", "spans": [{"start": 0, "end": 3, "label": "X"}, {"start": 1, "end": 2, "label": "X"}]},
         "span 2: span 1-2 X overlaps the span on span 1"),
        (record(id=1), "duplicate document name '1' (first on line 1)"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, bad, problem):
    path = jsonl(tmp_path / "c.jsonl", record(id=1), bad)
    message = error_of(read_jsonl(path))
    assert message.startswith(f"{path}:2: ") and problem in message, message


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(record()).encode() + b"\n" + b'{"text": "\xe1"}\n')
    assert error_of(read_jsonl(path)).startswith(f"{path}:2: not valid UTF-8")


def test_read_docbin_and_read_any(tmp_path, nlp):
    docbin = DocBin(store_user_data=True)
    for name in ("x", "y"):
        docbin.add(to_doc(nlp, RawDoc(name, TEXT, SPANS))[0])
    docbin.to_disk(tmp_path / "c.spacy")
    docs = list(read_docbin(tmp_path / "c.spacy", nlp))
    assert [(d.name, d.text, d.spans) for d in docs] == [("x", TEXT, SPANS), ("y", TEXT, SPANS)]
    write_pair(tmp_path / "brat", "z", TEXT, ANN)
    jsonl(tmp_path / "c.jsonl", record(name="w"))
    for path, names in (("c.spacy", ["x", "y"]), ("brat", ["z"]), ("c.jsonl", ["w"])):
        assert [d.name for d in read_any(tmp_path / path, nlp)] == names
    (tmp_path / "c.csv").write_text("hola")
    with pytest.raises(CorpusError, match="unsupported input"):
        read_any(tmp_path / "c.csv", nlp)
    (tmp_path / "broken.spacy").write_bytes(b"not a docbin")
    assert error_of(read_docbin(tmp_path / "broken.spacy", nlp)).startswith(f"{tmp_path / 'broken.spacy'}: not a readable")


# ------------------------------------------------------------------ to_doc


def test_to_doc_sets_exact_ents(nlp):
    doc, misaligned = to_doc(nlp, RawDoc("d", TEXT, SPANS))
    assert misaligned == []
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == SPANS
    assert doc.user_data == {"name": "d"}


def test_misaligned_spans_split_tokens_and_are_kept_exactly(nlp):
    text = "Varón de 52 añosingresó por ABCDEF ayer."
    spans = [(9, 16, "EDAD"), (28, 30, "X"), (31, 34, "Y")]  # "52 años", "AB", "DEF"
    doc, misaligned = to_doc(nlp, RawDoc("d", text, spans))
    assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == spans
    assert [e.text for e in doc.ents] == ["52 años", "AB", "DEF"]
    assert [t.text for t in doc] == ["Varón", "de", "52", "años", "ingresó", "por", "AB", "C", "DEF", "ayer", "."]
    assert doc.text == text
    assert [(m.start, m.end, m.text, m.tokens) for m in misaligned] == [
        (9, 16, "52 años", ["añosingresó"]),
        (28, 30, "AB", ["ABCDEF"]),
        (31, 34, "DEF", ["ABCDEF"]),
    ]
    # A span inside one token splits it on both sides.
    doc, misaligned = to_doc(nlp, RawDoc("d", "xxABCyy z", [(2, 5, "X")]))
    assert [t.text for t in doc] == ["xx", "ABC", "yy", "z"] and doc.ents[0].text == "ABC"


@pytest.mark.parametrize(
    "spans,problem",
    [([(0, 5, "X"), (3, 10, "Y")], "overlaps"), ([(6, 12, "X")], "whitespace"), ([(0, 99, "X")], "past the end")],
)
def test_to_doc_rejects_bad_spans(nlp, spans, problem):
    with pytest.raises(CorpusError, match=problem):
        to_doc(nlp, RawDoc("d", "Nombre: Ana Ruiz.", spans))


# ------------------------------------------------------------------ split


def test_seeded_split_is_reproducible_and_order_independent():
    docs = [RawDoc(f"doc{i:03d}", "x", []) for i in range(100)]
    train, validation = split_train_validation(docs, 0.1, seed=0)
    assert len(validation) == 10 and len(train) == 90
    assert {d.name for d in train} | {d.name for d in validation} == {d.name for d in docs}
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    again = split_train_validation(shuffled, 0.1, seed=0)
    assert [d.name for d in again[1]] == [d.name for d in validation]
    assert [d.name for d in again[0]] == [d.name for d in train]
    assert [d.name for d in split_train_validation(docs, 0.1, seed=1)[1]] != [d.name for d in validation]
    assert len(split_train_validation(docs[:3], 0.1, seed=0)[1]) == 1
    with pytest.raises(ValueError, match="unique"):
        split_train_validation(docs + docs[:1], 0.1, seed=0)


# ------------------------------------------------------------------ convert_corpus


def test_convert_corpus_round_trip(tmp_path, nlp):
    train = brat_corpus(tmp_path / "train", 12)
    write_pair(train, "doc99", "Edad:62 años Sexo: M.\nCIPA: nhc-150679. añosingresó\n",
               "T1\tEDAD 5 12\t62 años\nT2\tSEXO 19 20\tM\nT3\tID 32 38\t150679\nT4\tX 40 44\taños\nA1\tNeg T1\n")
    test = brat_corpus(tmp_path / "test", 3, prefix="test")
    out = tmp_path / "corpus"
    stats = convert_corpus(train, test, out, validation_fraction=0.25, seed=3)
    assert {p.name for p in out.iterdir()} == {"train.spacy", "validation.spacy", "test.spacy", "tokenizer", "stats.json"}
    assert json.loads((out / "stats.json").read_text()) == stats
    splits = stats["splits"]
    assert [splits[s]["documents"] for s in ("train", "validation", "test")] == [10, 3, 3]
    assert stats["inputs"]["train"]["skipped_annotation_lines"] == 1
    assert sum(s["realigned_by_splitting"] for s in splits.values()) == 1
    assert sum(s["aligned_by_tokenizer"] for s in splits.values()) == (12 + 3) * 3 + 3
    # brat -> DocBin -> read back: the very same texts and spans.
    gold = {d.name: d for d in list(read_brat(train)) + list(read_brat(test))}
    back = [d for split in ("train", "validation", "test") for d in read_docbin(out / f"{split}.spacy", nlp)]
    assert sorted(d.name for d in back) == sorted(gold)
    for doc in back:
        assert (doc.text, doc.spans) == (gold[doc.name].text, gold[doc.name].spans)
    # --limit reads the first N documents of each input.
    small = convert_corpus(train, test, tmp_path / "small", validation_fraction=0.5, limit=2)
    assert small["inputs"]["train"]["documents"] == 2 and small["splits"]["test"]["documents"] == 2


def test_convert_corpus_writes_nothing_on_bad_input(tmp_path):
    train = brat_corpus(tmp_path / "train", 4)
    test = write_pair(tmp_path / "test", "bad", TEXT, "T1\tX 0 3\tNOPE\n")
    with pytest.raises(CorpusError, match=r"bad\.ann:1: "):
        convert_corpus(train, test, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli(tmp_path):
    corpus = tmp_path / "corpus"
    brat_corpus(corpus / "train", 4), brat_corpus(corpus / "dev", 2, prefix="test")
    script = REPO / "scripts/convert_corpus.py"
    ok = subprocess.run(
        [sys.executable, str(script), str(corpus), str(tmp_path / "out"),
         "--validation-fraction", "0.25", "--seed", "1", "--limit", "0", "--label-map", ""],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "out/stats.json").read_text())["splits"]["validation"]["documents"] == 1
    # A corpus error is one line on stderr and exit status 1 (in-process: faster).
    app = cli("convert_corpus")
    result = CliRunner().invoke(app, [str(tmp_path / "nope"), str(tmp_path / "out2")])
    assert result.exit_code == 1 and "no such folder" in result.output, result.output
    result = CliRunner().invoke(app, [str(corpus), str(tmp_path / "out2"), "--label-map", str(tmp_path / "x.json")])
    assert result.exit_code == 1 and "no such label map" in result.output, result.output


def test_corpus_parts_by_name_or_by_manifest(tmp_path):
    folder = tmp_path / "c"
    brat_corpus(folder / "train", 2)
    brat_corpus(folder / "test", 1, prefix="test")
    assert corpus_parts(folder) == {"train": folder / "train", "test": folder / "test"}
    brat_corpus(folder / "dev", 1, prefix="dev")
    with pytest.raises(CorpusError, match="dev, test could each be the test set: name it in corpus.json"):
        corpus_parts(folder)
    (folder / "corpus.json").write_text('{"train": "train", "test": "dev", "validation": "test"}')
    assert corpus_parts(folder) == {"train": folder / "train", "test": folder / "dev", "validation": folder / "test"}
    for manifest, problem in (('{"train": "train"}', "missing parts test"), ('{"train": "train", "test": "x"}',
                              "test: " + str(folder / "x") + " does not exist"), ("[1", "corpus.json:1: not JSON"),
                              ('{"train": "train", "test": "dev", "tests": "x"}', "unknown parts tests")):
        (folder / "corpus.json").write_text(manifest)
        with pytest.raises(CorpusError, match=re.escape(problem)):
            corpus_parts(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no train and no test set"):
        corpus_parts(tmp_path / "empty")


def test_a_label_map_renames_merges_and_drops_and_a_corpus_may_bring_its_validation_set(tmp_path, nlp):
    folder = tmp_path / "c"
    for part, count in (("train", 3), ("validation", 1), ("test", 1)):
        brat_corpus(folder / part, count, prefix=part)
    mapping = tmp_path / "map.json"
    mapping.write_text('{"NOMBRE_SUJETO_ASISTENCIA": "PERSON", "TERRITORIO": null}')
    parts = corpus_parts(folder)
    stats = convert_corpus(parts["train"], parts["test"], tmp_path / "out", validation_path=parts["validation"],
                           label_map=read_label_map(mapping))
    assert [stats["splits"][s]["documents"] for s in ("train", "validation", "test")] == [3, 1, 1]
    assert stats["validation_fraction"] is None
    assert stats["inputs"]["train"]["label_map"] == {"dropped TERRITORIO": 3, "renamed NOMBRE_SUJETO_ASISTENCIA": 3}
    labels = {e.label_ for d in read_docs(tmp_path / "out/train.spacy") for e in d.ents}
    assert labels == {"PERSON", "SEXO_SUJETO_ASISTENCIA"}
    for text, problem in (('{"A": 1}', "expected an object from labels"), ('{"A": " B"}', "expected an object"),
                          ("{", "map.json:1: not JSON")):
        mapping.write_text(text)
        with pytest.raises(CorpusError, match=re.escape(problem)):
            read_label_map(mapping)


def test_a_docbin_span_group_is_read_instead_of_its_entities(tmp_path, nlp):
    doc = nlp.make_doc("Ana Ruiz vive en Oslo.")
    doc.ents = [doc.char_span(0, 8, label="NAME")]
    doc.spans["phi"] = [doc.char_span(0, 3, label="First_Name"), doc.char_span(4, 8, label="Last_Name"),
                        doc.char_span(17, 21, label="Location")]
    DocBin(docs=[doc]).to_disk(tmp_path / "d.spacy")
    [raw] = read_docbin(tmp_path / "d.spacy", nlp, spans_key="phi")
    assert raw.spans == [(0, 3, "First_Name"), (4, 8, "Last_Name"), (17, 21, "Location")]
    assert [r.spans for r in read_docbin(tmp_path / "d.spacy", nlp)] == [[(0, 8, "NAME")]]
    with pytest.raises(CorpusError, match=r"document 1: no span group 'sc' \(span groups: phi\)"):
        list(read_docbin(tmp_path / "d.spacy", nlp, spans_key="sc"))


def test_the_tokenizer_and_the_docbins_take_the_corpus_language(tmp_path):
    folder = tmp_path / "c"
    write_pair(folder / "train", "a", "Pasienten Kari Nordmann ble innlagt 10. mars 2017.\n",
               "T1\tFirst_Name 10 14\tKari\nT2\tLast_Name 15 23\tNordmann\nT3\tDate 36 49\t10. mars 2017\n")
    write_pair(folder / "train", "b", "Ola Hansen ringte, han er over 70.\n",
               "T1\tFirst_Name 0 3\tOla\nT2\tAge 31 33\t70\n")
    write_pair(folder / "test", "c", "Hun bor i Tromsø.\n", "T1\tLocation 10 16\tTromsø\n")
    parts = corpus_parts(folder)
    stats = convert_corpus(parts["train"], parts["test"], tmp_path / "out", lang="nb", validation_fraction=0.5)
    assert stats["lang"] == "nb" and spacy.load(tmp_path / "out/tokenizer").lang == "nb"
    assert all(split["alignment_rate"] == 1.0 for split in stats["splits"].values())


def test_conversion_shows_each_label_s_kind_and_where_it_came_from(tmp_path):
    folder = tmp_path / "c"
    write_pair(folder / "train", "a", "Patient Anna Weber, Tel. 040 123456, Klinikum Nord.\n",
               "T1\tPATIENT_NAME 8 18\tAnna Weber\nT2\tTELEFON 25 35\t040 123456\nT3\tKLINIK 37 50\tKlinikum Nord\n")
    write_pair(folder / "train", "b", "Dr. Weber.\n", "T1\tARZT 4 9\tWeber\n")
    write_pair(folder / "test", "c", "Anna.\n", "T1\tPATIENT_NAME 0 4\tAnna\n")
    kinds = tmp_path / "kinds.json"
    kinds.write_text('{"ARZT": "name"}')
    result = CliRunner().invoke(cli("convert_corpus"), [str(folder), str(tmp_path / "out"), "--lang", "de",
                                                        "--label-kinds", str(kinds), "--validation-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert stats["label_kinds"] == {
        "ARZT": {"kind": "name", "source": "the label_kinds map"},
        "KLINIK": {"kind": None, "source": "nothing"},
        "PATIENT_NAME": {"kind": "name", "source": "a guess from the label's name"},
        "TELEFON": {"kind": "phone", "source": "a guess from the label's name"},
    }
    assert "none: masked (nothing)" in result.output and "Labels with no kind: KLINIK" in result.output
    kinds.write_text('{"ARZT": "doctor"}')
    result = CliRunner().invoke(cli("convert_corpus"), [str(folder), str(tmp_path / "out2"), "--label-kinds",
                                                        str(kinds)])
    assert result.exit_code == 1 and f"{kinds}: label_kinds: ARZT = 'doctor' is not a kind" in result.output
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------ the real corpus


@pytest.mark.parametrize("split", ["dev", "train"])
def test_meddocan_alignment(nlp, split, meddocan):
    total = aligned = 0
    for raw in read_brat(meddocan / split):
        doc = nlp.make_doc(raw.text)
        total += len(raw.spans)
        aligned += sum(doc.char_span(s, e) is not None for s, e, _ in raw.spans)
    assert total > 5000
    assert aligned / total >= 0.995, f"{split}: {aligned}/{total} spans on token boundaries"


def test_uppercase_suffixes_are_read(tmp_path):
    folder = tmp_path / "brat"
    folder.mkdir()
    (folder / "a.TXT").write_text(TEXT)
    (folder / "a.ann").write_text("T1\tNOMBRE 8 11\tAna\n")
    (folder / "b.txt").write_text(TEXT)
    (folder / "b.ANN").write_text("")
    assert [(d.name, d.spans) for d in read_brat(folder)] == [("a", [(8, 11, "NOMBRE")]), ("b", [])]
    (folder / "a.txt").write_text(TEXT)
    assert "differ in case" in error_of(read_brat(folder))


def test_crlf_text_with_lf_offsets_says_so(tmp_path):
    text = "Paciente:\r\nAna Ruiz.\n"  # offsets below count "\r\n" as one character
    path = write_pair(tmp_path, "crlf", text, "T1\tNOMBRE 10 18\tAna Ruiz\n")
    message = error_of(read_brat(path))
    assert "crlf.ann:1:" in message and "LF line endings but it has CRLF" in message


@pytest.mark.parametrize("case", ["same_folder", "output_is_file", "one_document"])
def test_convert_corpus_one_line_errors(tmp_path, case):
    train = brat_corpus(tmp_path / "train", 1 if case == "one_document" else 4)
    test = train if case == "same_folder" else brat_corpus(tmp_path / "test", 2, prefix="test")
    out = tmp_path / "out"
    if case == "output_is_file":
        out.write_text("not a folder")
    expected = {"same_folder": "given as both train and test", "output_is_file": "is a file",
                "one_document": "a validation split needs at least 2"}[case]
    with pytest.raises(CorpusError, match=expected):
        convert_corpus(train, test, out)


def test_a_failed_rerun_leaves_no_finished_marker(tmp_path, monkeypatch):
    train, test = brat_corpus(tmp_path / "train", 4), brat_corpus(tmp_path / "test", 2, prefix="test")
    out = tmp_path / "out"
    convert_corpus(train, test, out)
    assert (out / "stats.json").exists()

    def disk_full(self, path, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(DocBin, "to_disk", disk_full)  # fails after tokenizer/ was replaced
    with pytest.raises(OSError):
        convert_corpus(train, test, out, seed=5)
    assert not (out / "stats.json").exists()


def test_an_english_brat_export_with_its_own_labels_converts(tmp_path):
    # i2b2-style labels, an entity broken over a line (fragments), a BOM.
    folder = tmp_path / "c"
    text = "\ufeffMary Jones was seen at Boston General\nHospital on 03/14/2019.\n"
    write_pair(folder / "train", "a", text, "T1\tPATIENT 1 11\tMary Jones\n"
                                            "T2\tHOSPITAL 24 38;39 47\tBoston General Hospital\n"
                                            "T3\tDATE 51 61\t03/14/2019\n")
    write_pair(folder / "train", "b", "Dr Brown called.\n", "T1\tDOCTOR 3 8\tBrown\n")
    write_pair(folder / "dev", "c", "Seen by Dr Smith.\n", "T1\tDOCTOR 11 16\tSmith\n")
    parts = corpus_parts(folder)
    stats = convert_corpus(parts["train"], parts["test"], tmp_path / "out", lang="en", validation_fraction=0.5)
    assert stats["inputs"]["train"]["discontinuous_spans_joined"] == 1
    assert stats["inputs"]["train"]["byte_order_marks_removed"] == 1
    docs = read_docs(tmp_path / "out/train.spacy") + read_docs(tmp_path / "out/validation.spacy")
    ents = sorted((e.text, e.label_) for d in docs for e in d.ents)
    assert ents == [("03/14/2019", "DATE"), ("Boston General\nHospital", "HOSPITAL"), ("Brown", "DOCTOR"),
                    ("Mary Jones", "PATIENT")]
    assert all(split["alignment_rate"] == 1.0 for split in stats["splits"].values())


def test_text_with_inline_tags_is_read_one_document_a_line(tmp_path):
    path = tmp_path / "tagged.txt"
    path.write_text("\ufeffFar <First_Name>Ulrik</First_Name> <Last_Name>Borch</Last_Name> døde <Age>46 år</Age>.\n"
                    "\r\nIngen tagger her.\n", encoding="utf-8")
    docs = list(read_any(path, make_nlp("nb")))
    assert [(d.name, d.text) for d in docs] == [("tagged-1", "Far Ulrik Borch døde 46 år."),
                                                 ("tagged-3", "Ingen tagger her.")]
    assert [(docs[0].text[s:e], label) for s, e, label in docs[0].spans] == [
        ("Ulrik", "First_Name"), ("Borch", "Last_Name"), ("46 år", "Age")]
    for line, problem in (("a <Age>4</Age", "<Age> at column 3 is not closed"), ("a </Age> b", "</Age> at column 3 where an "
                          "opening tag was due"), ("<A>x <B>y</B></A>", "<B> at column 6 where </A> was due")):
        path.write_text(line + "\n", encoding="utf-8")
        with pytest.raises(CorpusError, match=re.escape(f"{path}:1: {problem}")):
            list(read_any(path, make_nlp("nb")))
