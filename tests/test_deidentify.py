"""The `synthdeid-deidentify` command line: formats, mapping, bad input,
nothing half-written; and the redactor copy shipped inside a wheel."""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from spacy.tokens import Span

from synthdeid.deidentify import InputError, deidentify_files, load_redacting_pipeline, read_inputs
from synthdeid.redact import reidentify

TEXTS = {
    "a": "Paciente Ana Ruiz, ingresa el 12/03/2018 en Valladolid.",
    "b": "Control de Ana Ruiz el 15/03/2018.",
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A real pipeline with an entity ruler standing in for the NER (fast, exact)."""
    nlp = spacy.blank("es")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([
        {"label": "NOMBRE_SUJETO_ASISTENCIA", "pattern": "Ana Ruiz"},
        {"label": "FECHAS", "pattern": [{"SHAPE": "dd/dd/dddd"}]},
        {"label": "TERRITORIO", "pattern": "Valladolid"},
    ])
    path = tmp_path_factory.mktemp("pipeline") / "nlp"
    nlp.to_disk(path)
    return path


def cli(*args, check=True):
    return subprocess.run([sys.executable, "-m", "synthdeid.deidentify", *map(str, args)],
                          capture_output=True, text=True, check=check)


def write_folder(folder, texts):
    folder.mkdir()
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def test_txt_folder_to_txt_folder_with_a_mapping_that_reverses(pipeline, tmp_path):
    source = write_folder(tmp_path / "in", TEXTS)
    result = cli(source, tmp_path / "out", "--model", pipeline, "--strategy", "surrogate",
                 "--mapping", tmp_path / "map.jsonl", "--summary", tmp_path / "summary.json")
    assert "De-identified 2 document(s) (0 skipped)" in result.stdout
    mapping = [json.loads(line) for line in (tmp_path / "map.jsonl").open()]
    for name, text in TEXTS.items():
        out = (tmp_path / "out" / f"{name}.txt").read_text()
        assert "Ana Ruiz" not in out and re.search(r"el \d\d/\d\d/\d{4}", out)
        assert reidentify(out, [m for m in mapping if m["id"] == name]) == text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["documents"] == 2 and summary["entities"] == {"NOMBRE_SUJETO_ASISTENCIA": 2, "FECHAS": 2,
                                                                   "TERRITORIO": 1}


def test_jsonl_in_jsonl_out_with_spans(pipeline, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    cli(source, tmp_path / "out.jsonl", "--model", pipeline, "--output-format", "jsonl")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").open()]
    assert [r["id"] for r in records] == ["a", "b"]
    first = records[0]
    assert first["text"] == "Paciente [NOMBRE_SUJETO_ASISTENCIA], ingresa el [FECHAS] en [TERRITORIO]."
    assert [first["text"][s["start"]:s["end"]] for s in first["spans"]] == [
        "[NOMBRE_SUJETO_ASISTENCIA]", "[FECHAS]", "[TERRITORIO]"]


def test_parquet_in_parquet_out_as_jsonl_and_bad_rows_named_by_row(pipeline, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": k, "text": v, "ward": "A"} for k, v in TEXTS.items()]
    rows += [{"id": "a", "text": "Otra nota.", "ward": "B"}, {"id": "c", "text": None, "ward": "B"},
             {"id": "d", "text": "  ", "ward": "B"}]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source, row_group_size=2)
    cli(source, tmp_path / "out.parquet", "--model", pipeline, "--output-format", "parquet")
    cli(tmp_path / "out.parquet", tmp_path / "again.jsonl", "--model", pipeline, "--output-format", "jsonl")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    cli(jsonl, tmp_path / "out.jsonl", "--model", pipeline, "--output-format", "jsonl")
    # The same records as JSONL gives, spans included; the bad rows skipped, each named by its row.
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [
        json.loads(line) for line in (tmp_path / "out.jsonl").open()]
    errors = [str(text) for _, _, text in read_inputs(source) if isinstance(text, InputError)]
    assert errors == [f"{source}:row 3: duplicate id 'a' (first on row 1)",
                      f"{source}:row 4: 'text' is not a string (NoneType)", f"{source}:row 5: empty text (id 'd')"]
    # A file without the columns, or not Parquet at all: one clear error, nothing written.
    pq.write_table(pa.Table.from_pylist([{"note": "x"}]), tmp_path / "other.parquet")
    (tmp_path / "fake.parquet").write_text("not parquet")
    for bad, message in (("other.parquet", "no 'id' or 'text' column; it has note"),
                         ("fake.parquet", "not a readable Parquet file")):
        result = cli(tmp_path / bad, tmp_path / "bad.parquet", "--model", pipeline, "--output-format", "parquet",
                     check=False)
        assert result.returncode == 1 and f"{tmp_path / bad}: {message}" in result.stderr
        assert not (tmp_path / "bad.parquet").exists()


def test_brat_in_brat_out(pipeline, tmp_path):
    source = write_folder(tmp_path / "brat", TEXTS)
    (source / "a.ann").write_text("T1\tNOMBRE_SUJETO_ASISTENCIA 9 17\tAna Ruiz\n")  # ignored on input
    cli(source, tmp_path / "out", "--model", pipeline, "--input-format", "brat", "--output-format", "brat",
        "--label-strategy", "TERRITORIO=keep")
    text = (tmp_path / "out" / "a.txt").read_text()
    ann = (tmp_path / "out" / "a.ann").read_text().splitlines()
    assert "Valladolid" in text and len(ann) == 2
    _, label_offsets, shown = ann[0].split("\t")
    label, start, end = label_offsets.split()
    assert label == "NOMBRE_SUJETO_ASISTENCIA" and text[int(start):int(end)] == shown


@pytest.mark.slow
def test_single_text_file_and_two_processes(pipeline, tmp_path):
    (tmp_path / "note.txt").write_text(TEXTS["a"])
    cli(tmp_path / "note.txt", tmp_path / "note.deid.txt", "--model", pipeline)
    assert (tmp_path / "note.deid.txt").read_text().startswith("Paciente [NOMBRE_SUJETO_ASISTENCIA]")
    source = write_folder(tmp_path / "many", {f"n{i}": TEXTS["a"] for i in range(6)})
    result = cli(source, tmp_path / "many_out", "--model", pipeline, "--n-process", 2, "--batch-size", 2)
    assert "De-identified 6 document(s)" in result.stdout
    assert len(list((tmp_path / "many_out").glob("*.txt"))) == 6


BAD = {"latin1.txt": "Ana Ruiz en Cáceres".encode("latin-1"), "binary.txt": b"\x00\x01\x02",
       "empty.txt": b"  \n"}


@pytest.mark.slow
def test_bad_files_are_skipped_by_name_or_stop_the_run(pipeline, tmp_path):
    source = write_folder(tmp_path / "in", TEXTS)
    for name, data in BAD.items():
        (source / name).write_bytes(data)
    result = cli(source, tmp_path / "out", "--model", pipeline)
    for message in ("latin1.txt:1: not valid UTF-8", "binary.txt: binary data", "empty.txt: empty document"):
        assert message in result.stderr
    assert "De-identified 2 document(s) (3 skipped)" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt"]

    result = cli(source, tmp_path / "stopped", "--model", pipeline, "--mapping", tmp_path / "m.jsonl",
                 "--on-error", "stop", check=False)
    assert result.returncode == 1 and "error:" in result.stderr and "binary.txt" in result.stderr
    assert not (tmp_path / "stopped").exists() and not (tmp_path / "m.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


@pytest.mark.slow
def test_jsonl_to_txt_folder_and_an_output_of_the_wrong_kind(pipeline, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in TEXTS.items()))
    cli(source, tmp_path / "texts", "--model", pipeline)
    assert sorted(p.name for p in (tmp_path / "texts").iterdir()) == ["a.txt", "b.txt"]
    (tmp_path / "taken.jsonl").mkdir()
    result = cli(source, tmp_path / "taken.jsonl", "--model", pipeline, "--output-format", "jsonl", check=False)
    assert result.returncode == 1 and "is a folder" in result.stderr and "needs a file" in result.stderr


def test_broken_jsonl_line_names_file_and_line(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "hola"}\n{"id": "b"}\nnot json\n{"id": 7, "text": "adiós"}\n'
                      '{"id": true, "text": "x"}\n')
    items = [(doc_id, text) for doc_id, _, text in read_inputs(source)]
    assert items[0] == ("a", "hola")
    assert items[1] == ("b", items[1][1]) and str(items[1][1]) == f"{source}:2: 'text' is missing"
    assert str(items[2][1]).startswith(f"{source}:3: invalid JSON")
    assert items[3] == ("7", "adiós")  # integer ids are read as strings
    assert str(items[4][1]) == f"{source}:5: 'id' must be a non-empty string or an integer, got True"
    assert [where for _, where, _ in read_inputs(source)] == [f"{source}:{line}" for line in range(1, 6)]
    source.write_text('{"id": "a", "text": "tab\there"}\n')  # a raw tab inside a JSON string
    [(_, _, error)] = read_inputs(source)
    assert str(error) == f"{source}:1: invalid JSON (Invalid control character at column 25)"


def test_jsonl_ids_must_be_unique_and_safe_as_file_names(pipeline, tmp_path):
    source = tmp_path / "in.jsonl"
    records = [{"id": "a", "text": TEXTS["a"]}, {"id": "a", "text": TEXTS["b"]}, {"id": None, "text": "x"},
               {"id": "x" * 300, "text": TEXTS["b"]},
               {"id": "../escape", "text": TEXTS["b"]}, {"id": "sub/b", "text": TEXTS["b"]}]
    source.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records) + b'{"id": "c", "text": "\xff"}\n')
    items = [(doc_id, text) for doc_id, _, text in read_inputs(source)]
    assert f"{source}:2: duplicate id 'a' (first on line 1)" == str(items[1][1])
    assert "'id' must be a non-empty string or an integer, got None" in str(items[2][1])
    assert str(items[6][1]).startswith(f"{source}:7: not valid UTF-8 (byte 0xff)")
    nlp = load_redacting_pipeline(str(pipeline), {})
    skipped = []
    summary = deidentify_files(nlp, source, tmp_path / "out", progress=False, report=skipped.append)
    assert summary.documents == 2 and len(skipped) == 5
    assert any(f"{source}:5: id '../escape' cannot name an output file" in m for m in skipped)
    assert any(f"'{'x' * 300}' cannot name an output file" in m for m in skipped)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.txt")) == ["out/a.txt", "out/sub/b.txt"]
    # One JSONL output file takes any id; the duplicate is still refused.
    summary = deidentify_files(nlp, source, tmp_path / "out.jsonl", output_format="jsonl", progress=False,
                               report=skipped.append)
    assert summary.documents == 4
    with pytest.raises(InputError, match="duplicate id"):
        deidentify_files(nlp, source, tmp_path / "stop", on_error="stop", progress=False)
    assert not (tmp_path / "stop").exists()


@pytest.mark.slow
def test_outputs_never_replace_inputs_or_hold_the_mapping(pipeline, tmp_path):
    source = write_folder(tmp_path / "in", TEXTS)
    (source / "a.TXT").write_text(TEXTS["b"])  # same id as a.txt
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.docx").write_text("not ours")
    cases = [
        ((source, source), "would replace the input"),
        ((source / "a.txt", source / "a.txt"), "would replace the input"),
        ((source, tmp_path), "would replace the input"),
        ((source, source / "out"), "inside the input folder"),
        ((source, tmp_path / "out", "--mapping", source / "a.txt"), "inside the input folder"),
        ((source / "a.txt", tmp_path / "out.txt", "--mapping", source / "a.txt"), "would replace the input"),
        ((source, tmp_path / "out", "--mapping", tmp_path / "out" / "map.jsonl"), "apart from the output"),
        ((source, taken), "exists; pass --overwrite"),
    ]
    for args, message in cases:
        result = cli(*args, "--model", pipeline, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    source_jsonl = tmp_path / "in.jsonl"
    source_jsonl.write_text(json.dumps({"id": "a", "text": TEXTS["a"]}) + "\n")
    result = cli(source_jsonl, tmp_path / "o.jsonl", "--model", pipeline, "--output-format", "jsonl",
                 "--mapping", tmp_path / "o.jsonl", check=False)
    assert result.returncode == 1 and "apart from the output" in result.stderr
    assert (taken / "keep.docx").exists() and sorted(p.name for p in source.iterdir()) == ["a.TXT", "a.txt", "b.txt"]
    result = cli(source, taken, "--model", pipeline, "--overwrite")
    assert "same document id 'a'" in result.stderr and "De-identified 2 document(s) (1 skipped)" in result.stdout
    assert sorted(p.name for p in taken.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.slow
def test_loud_errors_before_anything_runs(pipeline, tmp_path):
    result = cli(tmp_path, tmp_path / "out", "--model", pipeline, "--labels", "NOMBRE", check=False)
    assert result.returncode == 1 and "pii_redactor" in result.stderr and "'NOMBRE'" in result.stderr
    result = cli(tmp_path / "missing", tmp_path / "out", "--model", pipeline, check=False)
    assert result.returncode == 1 and "no such file or folder" in result.stderr
    result = cli(tmp_path, tmp_path / "out", "--model", tmp_path / "no_model", check=False)
    assert result.returncode == 1 and "cannot load the pipeline" in result.stderr
    nlp = load_redacting_pipeline(str(pipeline), {"strategy": "surrogate", "consistency": "corpus"})
    with pytest.raises(ValueError, match="n_process 1"):
        deidentify_files(nlp, tmp_path, tmp_path / "out", n_process=2)


def test_bom_surrogates_and_overlong_texts_in_jsonl(pipeline, tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"id": "a", "text": TEXTS["a"]}), '{"id": "s", "text": "Ana Ruiz \\ud800 aqu\u00ed"}',
             json.dumps({"id": "long", "text": "Ana Ruiz. " * 20}), json.dumps({"id": "b", "text": TEXTS["b"]})]
    source.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    nlp = load_redacting_pipeline(str(pipeline), {})
    nlp.max_length = 100
    skipped = []
    summary = deidentify_files(nlp, source, tmp_path / "out.jsonl", output_format="jsonl", progress=False,
                               report=skipped.append)
    assert summary.documents == 2  # the first record survives its byte-order mark
    assert [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").open()] == ["a", "b"]
    assert skipped == [
        f"skipped: {source}:2: 'text' holds a character UTF-8 cannot encode (a lone surrogate, '\\ud800' at "
        "character 9)",
        f"skipped: {source}:3: 200 characters, more than the pipeline's max_length (100); split the document "
        "or raise it (--max-length)",
    ]


def test_a_folder_is_never_replaced_by_the_mapping_file(pipeline, tmp_path):
    source = write_folder(tmp_path / "in", TEXTS)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "keys.txt").write_text("keep me")
    result = cli(source, tmp_path / "out", "--model", pipeline, "--mapping", secret, "--overwrite", check=False)
    assert result.returncode == 1 and "is a folder; the mapping is one JSONL file" in result.stderr
    assert (secret / "keys.txt").read_text() == "keep me" and not (tmp_path / "out").exists()


def test_brat_output_splits_a_replacement_that_spans_lines(pipeline, tmp_path):
    from synthdeid.deidentify import brat_entity

    text = "Paciente Eva\nSoto Gil, alta."
    assert brat_entity(text, "NOMBRE_SUJETO_ASISTENCIA", 9, 21) == "NOMBRE_SUJETO_ASISTENCIA 9 12;13 21\tEva Soto Gil"
    assert brat_entity(text, "NOMBRE_SUJETO_ASISTENCIA", 9, 12) == "NOMBRE_SUJETO_ASISTENCIA 9 12\tEva"


def test_txt_format_on_a_jsonl_file_reads_one_text_into_one_file(pipeline, tmp_path):
    source = tmp_path / "note.jsonl"  # named .jsonl, read as plain text
    source.write_text(TEXTS["a"])
    cli(source, tmp_path / "out.txt", "--model", pipeline, "--input-format", "txt")
    assert (tmp_path / "out.txt").is_file()
    assert (tmp_path / "out.txt").read_text().startswith("Paciente [NOMBRE_SUJETO_ASISTENCIA]")


def test_packaged_copy_of_the_redactor_loads_beside_synthdeid(tmp_path):
    """A wheel ships its own copy of redact.py; importing it after synthdeid.redact
    must not clash over the factory name."""
    import synthdeid.redact as redact

    spec = importlib.util.spec_from_file_location("es_deid_copy.redact", redact.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nlp = spacy.blank("es")
    redactor = nlp.add_pipe("pii_redactor")
    doc = nlp.make_doc("Paciente Ana Ruiz.")
    doc.ents = [Span(doc, 1, 3, "NOMBRE_SUJETO_ASISTENCIA")]
    assert redactor(doc)._.deidentified == "Paciente [NOMBRE_SUJETO_ASISTENCIA]."


# --- what a run leaves behind, whatever happens to it

def many_notes(path, count=20000):
    path.write_text("".join(json.dumps({"id": f"n{i}", "text": f"Paciente Ana Ruiz, visita {i}."}) + "\n"
                            for i in range(count)))
    return path


def start_cli(*args):
    # As from a terminal: a shell starts background jobs with SIGINT ignored,
    # and Python keeps it ignored, so a test run in the background would not
    # see Ctrl-C reach the command line.
    return subprocess.Popen([sys.executable, "-m", "synthdeid.deidentify", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_temporaries(folder, process, timeout=120):
    """Wait until the run has started writing (its temporary output exists)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name.startswith(".out.") and p.is_dir() for p in folder.iterdir()):
            return
        time.sleep(0.01)
    raise AssertionError(f"the run never started writing: {process.communicate()}")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signalled_run_leaves_no_output_mapping_or_temporary(pipeline, tmp_path, signum):
    source = many_notes(tmp_path / "in.jsonl")
    work = tmp_path / "work"
    work.mkdir()
    process = start_cli(source, work / "out", "--model", pipeline, "--mapping", work / "mapping.jsonl")
    wait_for_temporaries(work, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (128 + signum, 1, -signum) and process.returncode != 0, stderr
    assert process.returncode != -signum, "the signal killed the run before it could clean up"
    assert list(work.iterdir()) == [], list(work.iterdir())


@pytest.mark.slow
def test_a_rerun_removes_what_a_killed_run_left(pipeline, tmp_path):
    source = many_notes(tmp_path / "in.jsonl", 5000)
    work = tmp_path / "work"
    work.mkdir()
    process = start_cli(source, work / "out", "--model", pipeline, "--mapping", work / "mapping.jsonl")
    wait_for_temporaries(work, process)
    process.kill()  # SIGKILL: nothing can clean up
    process.communicate()
    assert any(p.name.startswith((".out.", ".mapping.jsonl.")) for p in work.iterdir())
    cli(source, work / "out", "--model", pipeline, "--mapping", work / "mapping.jsonl")
    assert sorted(p.name for p in work.iterdir()) == ["mapping.jsonl", "out"]


@pytest.mark.slow
def test_two_runs_cannot_write_one_output(pipeline, tmp_path):
    source = many_notes(tmp_path / "in.jsonl")
    work = tmp_path / "work"
    work.mkdir()
    first = start_cli(source, work / "out", "--model", pipeline)
    wait_for_temporaries(work, first)
    first.send_signal(signal.SIGSTOP)  # still writing while the second starts, however slow its start
    try:
        second = cli(source, work / "out", "--model", pipeline, "--overwrite", check=False)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and "another run is writing it now" in second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0 and len(list((work / "out").iterdir())) == 20000


def test_overwrite_keeps_the_old_output_until_the_new_one_is_in_place(pipeline, tmp_path, monkeypatch):
    """Removing the old output fails half-way (a read-only subfolder for a
    user who is not root): the new output is in place all the same."""
    import shutil

    import synthdeid.io

    source = write_folder(tmp_path / "in", TEXTS)
    old = tmp_path / "out"
    (old / "sub").mkdir(parents=True)
    for i in range(20):
        (old / "sub" / f"old{i}.txt").write_text("old")
    real_rmtree = shutil.rmtree

    def failing_rmtree(path, ignore_errors=False, **kwargs):
        doomed = sorted(Path(path).rglob("old*.txt"))
        if not doomed:
            return real_rmtree(path, ignore_errors=ignore_errors, **kwargs)
        for file in doomed[:5]:
            file.unlink()
        if not ignore_errors:
            raise PermissionError(13, "Permission denied", str(doomed[5]))

    monkeypatch.setattr(synthdeid.io.shutil, "rmtree", failing_rmtree)
    nlp = load_redacting_pipeline(str(pipeline), {})
    with pytest.warns(UserWarning, match="could not remove all of"):
        deidentify_files(nlp, source, old, overwrite=True, progress=False)
    assert sorted(p.name for p in old.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.slow
def test_the_mapping_is_private_and_links_and_pipelines_are_not_outputs(pipeline, tmp_path):
    source = write_folder(tmp_path / "in", TEXTS)
    cli(source, tmp_path / "out", "--model", pipeline, "--mapping", tmp_path / "mapping.jsonl")
    assert (tmp_path / "mapping.jsonl").stat().st_mode & 0o777 == 0o600
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    meta = (pipeline / "meta.json").read_bytes()
    (tmp_path / "notes.md").write_text("mine")
    nlp = load_redacting_pipeline(str(pipeline), {})
    for output, mapping, message in [
        (tmp_path / "link", None, "is a symbolic link"),
        (tmp_path / "o2", pipeline / "meta.json", "lie inside the pipeline"),
        (pipeline / "out", None, "lie inside the pipeline"),
        (tmp_path / "o3", tmp_path / "notes.md", "not a mapping this command wrote"),
    ]:
        with pytest.raises(InputError, match=message):
            deidentify_files(nlp, source, output, mapping=mapping, overwrite=True, model=str(pipeline),
                             progress=False)
    assert (pipeline / "meta.json").read_bytes() == meta and (tmp_path / "notes.md").read_text() == "mine"
    assert list((tmp_path / "real").iterdir()) == []
    # a mapping this command wrote is replaced
    cli(source, tmp_path / "o4", "--model", pipeline, "--mapping", tmp_path / "mapping.jsonl", "--overwrite")


def test_every_bad_record_follows_on_error(pipeline, tmp_path, monkeypatch):
    source = write_folder(tmp_path / "in", {**TEXTS, "locked": "Ana Ruiz", "dates": "Ana Ruiz, 31/12/9999 y 01/01/0001."})
    (source / os.fsdecode(b"caf\xe9.txt")).write_text("Ana Ruiz")
    real_read = Path.read_bytes

    def read_bytes(self):  # what chmod 000 does for a user who is not root
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    nlp = load_redacting_pipeline(str(pipeline), {"strategy": "surrogate"})
    skipped = []
    summary = deidentify_files(nlp, source, tmp_path / "out", progress=False, report=skipped.append)
    assert summary.documents == 3, skipped
    assert any("locked.txt: cannot be read (Permission denied)" in m for m in skipped)
    assert any("caf\\xe9.txt: the file name is not UTF-8" in m for m in skipped)
    # whichever way the offset goes, one of the two dates falls off the calendar: masked, no traceback
    assert "[FECHAS]" in (tmp_path / "out" / "dates.txt").read_text()
    with pytest.raises(InputError, match="not UTF-8"):  # the first bad file in order
        deidentify_files(nlp, source, tmp_path / "stopped", on_error="stop", progress=False)
    assert not (tmp_path / "stopped").exists()

    records = tmp_path / "ids.jsonl"
    records.write_text("".join(json.dumps({"id": i, "text": TEXTS["a"]}) + "\n" for i in ("q.txt/z", "q", "r")))
    skipped = []
    summary = deidentify_files(nlp, records, tmp_path / "by_id", progress=False, report=skipped.append)
    assert summary.documents == 2
    assert skipped == [f"skipped: {records}:2: cannot write its output file q.txt (another document's output has that name)"]


@pytest.mark.slow
def test_the_command_line_uses_the_pipelines_saved_redactor(pipeline, tmp_path):
    nlp = spacy.load(pipeline)
    nlp.add_pipe("pii_redactor", config={"strategy": "surrogate", "labels": ["NOMBRE_SUJETO_ASISTENCIA"],
                                         "seed": 42})
    nlp.to_disk(tmp_path / "saved")
    source = write_folder(tmp_path / "in", TEXTS)
    result = cli(source, tmp_path / "out", "--model", tmp_path / "saved", "--summary", tmp_path / "summary.json")
    text = (tmp_path / "out" / "a.txt").read_text()
    assert "Ana Ruiz" not in text and "[" not in text and "12/03/2018" in text  # surrogate, names only
    assert "strategy surrogate (pipeline)" in result.stdout and "seed 42 (pipeline)" in result.stdout
    assert "labels NOMBRE_SUJETO_ASISTENCIA (pipeline)" in result.stdout
    settings = json.loads((tmp_path / "summary.json").read_text())["redactor"]
    assert settings["seed"] == {"value": 42, "from": "pipeline"}
    result = cli(source, tmp_path / "out2", "--model", tmp_path / "saved", "--strategy", "mask")
    assert "[NOMBRE_SUJETO_ASISTENCIA]" in (tmp_path / "out2" / "a.txt").read_text()
    assert "strategy mask (option)" in result.stdout
    result = cli(source, tmp_path / "out3", "--model", pipeline)
    assert "strategy mask (default)" in result.stdout


@pytest.mark.slow
def test_options_checked_on_the_command_line(pipeline, tmp_path):
    source = write_folder(tmp_path / "in", TEXTS)
    result = cli(source, tmp_path / "out", "--model", pipeline, "--n-process", "0", check=False)
    assert result.returncode == 2 and "n-process" in result.stderr
    result = cli(source, tmp_path / "out", "--model", pipeline, "--labels", "NOMBRE", check=False)
    assert result.returncode == 1 and "did you mean NOMBRE_PERSONAL_SANITARIO or NOMBRE_SUJETO_ASISTENCIA" in result.stderr
    long_note = tmp_path / "long.txt"
    long_note.write_text("Paciente Ana Ruiz. " * 60000)  # 1,140,000 characters, over spaCy's default
    result = cli(long_note, tmp_path / "long_out.txt", "--model", pipeline, check=False)
    assert result.returncode == 1 and "--max-length" in result.stderr
    cli(long_note, tmp_path / "long_out.txt", "--model", pipeline, "--max-length", "2000000")
    assert (tmp_path / "long_out.txt").read_text().count("[NOMBRE_SUJETO_ASISTENCIA]") == 60000


def test_a_byte_order_mark_comes_back_and_the_mapping_restores_the_bytes(pipeline, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    original = "\ufeffPaciente Ana Ruiz, 12/03/2018.\r\nAlta.\n".encode("utf-8")
    (source / "a.txt").write_bytes(original)
    cli(source, tmp_path / "out", "--model", pipeline, "--mapping", tmp_path / "m.jsonl")
    output = (tmp_path / "out" / "a.txt").read_bytes()
    assert output.startswith("\ufeffPaciente [NOMBRE_SUJETO_ASISTENCIA]".encode("utf-8"))
    mapping = [json.loads(line) for line in (tmp_path / "m.jsonl").open(encoding="utf-8")]
    assert reidentify(output.decode("utf-8"), mapping).encode("utf-8") == original


@pytest.mark.slow
def test_the_hash_key_appears_in_no_output_and_no_message(pipeline, tmp_path):
    key = "s3cret-hosp1tal-key"
    source = write_folder(tmp_path / "in", TEXTS)
    env = {**os.environ, "SYNTHDEID_HASH_KEY": key}
    runs = [subprocess.run([sys.executable, "-m", "synthdeid.deidentify", str(source), str(tmp_path / "out"),
                            "--model", str(pipeline), "--strategy", "hash", "--mapping", str(tmp_path / "m.jsonl"),
                            "--summary", str(tmp_path / "summary.json"), "--output-format", "brat"],
                           capture_output=True, text=True, env=env, check=True)]
    runs.append(subprocess.run([sys.executable, "-m", "synthdeid.deidentify", str(source), str(tmp_path / "o2"),
                                "--model", str(pipeline), "--strategy", "hash", "--seed", "x"],
                               capture_output=True, text=True, env=env))
    assert "[NOMBRE_SUJETO_ASISTENCIA-" in (tmp_path / "out" / "a.txt").read_text()
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or key.encode() not in path.read_bytes(), path
    for run in runs:
        assert key not in run.stdout + run.stderr
