"""Smoke test in two more languages, with label schemes of their own: the real
`weasel run all` on tiny corpora built here (German JSONL with made-up labels,
three of them given their kind by a map file; English brat with i2b2 labels),
then both wheels in one fresh virtual environment, offline, writing
surrogates of the right kind in their language. English has shipped frames
(behavioural set, narrative notes); German has none, as a language a user
brings would not.

The corpora are templates filled with Faker values, so nothing here needs
data from outside. With tiny settings the pipelines learn little; what is
checked is that every step runs unchanged in the corpus's language and
labels, and that the wheels carry the language and the label kinds."""

import json
import os
import random
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from faker import Faker

from synthdeid.io import read_docs

from test_workflow import copy_project, run_offline

pytestmark = pytest.mark.slow

TINY_VARS = {
    "annotator_epochs": 1,
    "train_max_steps": 100,
    "train_eval_frequency": 50,
    "labeller_max_steps": 50,
    "committee_max_steps": 50,
    "generator_epochs": 1,
    "generator_layers": 1,
    "generator_width": 32,
    "generator_heads": 2,
    "generator_vocab_size": 600,
    "generator_block_size": 128,
    "size_multiple": 0.5,
    "samples_per_prompt": 4,
    "narrative_notes": 30,
}
# German labels no shipped scheme names; three have no kind a name suggests.
GERMAN_KINDS = {"ARZT": "name", "KLINIK": "hospital", "ORT": "city"}
FILLER = {
    "de": ["Der Patient wurde in gutem Allgemeinzustand entlassen.", "Keine Allergien bekannt.",
           "Blutdruck und Puls im Normbereich.", "Wiedervorstellung in vier Wochen."],
    "en": ["The patient was discharged in good condition.", "No known drug allergies.",
           "Vital signs were within normal limits.", "Follow up in four weeks."],
}


def german_note(fake: Faker, rng: random.Random):
    """(text, [(start, end, label)]) of a German discharge letter."""
    date = f"{rng.randint(1, 28)}. {fake.month_name()} {rng.randint(2000, 2022)}"
    lines = [
        [("Entlassungsbrief\nPatient: ", None), (fake.name(), "PATIENT_NAME"), (", geboren am ", None),
         (f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1930, 2000)}", "DATUM"), (".\n", None)],
        [("Aufnahme am ", None), (date, "DATUM"), (" im ", None), (f"Klinikum {fake.last_name()}", "KLINIK"),
         (", ", None), (fake.city(), "ORT"), (".\n", None)],
        [("Behandelnder Arzt: Dr. ", None), (fake.last_name(), "ARZT"), (".\n", None)],
        [("Rückfragen unter ", None), (fake.phone_number(), "TELEFON"), (" oder ", None),
         (fake.free_email(), "EMAIL"), (".\n", None)],
    ]
    return _join(lines, rng, FILLER["de"])


def english_note(fake: Faker, rng: random.Random):
    """(text, [(start, end, label)]) of an English discharge summary."""
    lines = [
        [("Discharge summary\nPatient: ", None), (fake.name(), "PATIENT"), (", MRN ", None),
         (str(rng.randint(1000000, 9999999)), "MEDICALRECORD"), (", age ", None), (str(rng.randint(20, 89)), "AGE"),
         (".\n", None)],
        [("Admitted to ", None), (f"{fake.last_name()} Memorial Hospital", "HOSPITAL"), (" in ", None),
         (fake.city(), "CITY"), (" on ", None),
         (f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(2000, 2022)}", "DATE"), (".\n", None)],
        [("Attending: Dr. ", None), (fake.last_name(), "DOCTOR"), (".\n", None)],
        [("Call ", None), (f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}", "PHONE"),
         (" with questions.\n", None)],
    ]
    return _join(lines, rng, FILLER["en"])


def _join(lines, rng: random.Random, filler):
    head, body = lines[0], lines[1:]
    rng.shuffle(body)
    parts = head + [piece for line in body for piece in line]
    parts += [(" ".join(rng.sample(filler, 2)) + "\n", None)]
    text, spans = "", []
    for piece, label in parts:
        if label:
            spans.append((len(text), len(text) + len(piece), label))
        text += piece
    return text, spans


def write_corpora(root: Path) -> dict:
    """{lang: corpus folder}: German as JSONL files, English as brat folders."""
    folders = {}
    for lang, locale, make in (("de", "de_DE", german_note), ("en", "en_US", english_note)):
        fake, rng = Faker(locale), random.Random(lang)
        fake.seed_instance(0)
        splits = {"train": [make(fake, rng) for _ in range(40)], "test": [make(fake, rng) for _ in range(12)]}
        folder = root / lang
        if lang == "de":
            folder.mkdir(parents=True)
            for split, notes in splits.items():
                with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as out:
                    for text, spans in notes:
                        record = {"text": text, "spans": [{"start": s, "end": e, "label": l} for s, e, l in spans]}
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            for split, notes in (("train", splits["train"]), ("dev", splits["test"])):
                (folder / split).mkdir(parents=True)
                for k, (text, spans) in enumerate(notes):
                    (folder / split / f"note{k}.txt").write_text(text, encoding="utf-8")
                    (folder / split / f"note{k}.ann").write_text(
                        "".join(f"T{i + 1}\t{l} {s} {e}\t{text[s:e]}\n" for i, (s, e, l) in enumerate(spans)),
                        encoding="utf-8")
        folders[lang] = folder
    return folders


@pytest.fixture(scope="module")
def german_kinds(tmp_path_factory):
    path = tmp_path_factory.mktemp("kinds") / "german_kinds.json"
    path.write_text(json.dumps(GERMAN_KINDS))
    return path


@pytest.fixture(scope="module")
def projects(tmp_path_factory, german_kinds):
    """{lang: (project folder, weasel's output)} of `weasel run all` on each tiny corpus."""
    corpora = write_corpora(tmp_path_factory.mktemp("corpora"))
    done = {}
    for lang, corpus in corpora.items():
        root = copy_project(tmp_path_factory.mktemp(f"project-{lang}"))
        variables = {**TINY_VARS, "corpus_dir": corpus, "lang": lang, "package_name": "deid_tiny",
                     "corpus_name": f"tiny {lang} corpus", "corpus_license": "CC0-1.0"}
        if lang == "de":
            variables["label_kinds"] = german_kinds
        result = subprocess.run(
            [sys.executable, "-m", "weasel", "run", "all", str(root), *(f"--vars.{k}={v}" for k, v in variables.items())],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        done[lang] = (root, result.stdout)
    return done


@pytest.mark.parametrize("lang, labels", [
    ("de", {"PATIENT_NAME", "DATUM", "KLINIK", "ORT", "ARZT", "TELEFON", "EMAIL"}),
    ("en", {"PATIENT", "MEDICALRECORD", "AGE", "HOSPITAL", "CITY", "DATE", "DOCTOR", "PHONE"}),
])
def test_the_workflow_runs_in_the_corpus_language_and_labels(projects, lang, labels):
    root, output = projects[lang]
    stats = json.loads((root / "corpus/stats.json").read_text())
    assert stats["lang"] == lang
    assert all(split["alignment_rate"] == 1.0 for split in stats["splits"].values())
    test = read_docs(root / "corpus/test.spacy")
    assert len(test) == 12 and {ent.label_ for doc in test for ent in doc.ents} == labels
    evaluation = json.loads((root / "training/evaluation/evaluation.json").read_text())
    assert set(evaluation["pipelines"]) == {"synthetic", "gold", "annotator", "committee", "labeller"}
    for scores in evaluation["pipelines"].values():
        micro = scores["entity"]["micro"]
        assert micro["tp"] + micro["fn"] == evaluation["gold_entities"] == sum(len(doc.ents) for doc in test)
    # English has frames (synthdeid/frames/en.json) for the behavioural set and
    # the narrative notes; German has none: both steps say so and go on.
    augmented = read_docs(root / "corpus/synthetic/train_augmented.spacy")
    narrative = [doc for doc in augmented if doc.user_data["name"].startswith("narrative")]
    behaviour = read_docs(root / "corpus/behaviour.spacy")
    assert evaluation["behaviour_set"]["sentences"] == len(behaviour)
    if lang == "de":
        assert not behaviour and not narrative
    else:
        assert len(narrative) == TINY_VARS["narrative_notes"] and all(doc.ents for doc in narrative)
        assert {doc.user_data["label"] for doc in behaviour} >= {"PATIENT", "DOCTOR", "DATE", "PHONE"}
    assert (root / f"packages/{lang}_deid_tiny-0.1.0/dist/{lang}_deid_tiny-0.1.0-py3-none-any.whl").exists()
    # Conversion's label table shows each label's kind and where it came from.
    kinds = stats["label_kinds"]
    expected = {"de": {"ARZT": ("name", "the label_kinds map"), "DATUM": ("date", "a guess from the label's name"),
                       "EMAIL": ("email", "a shipped scheme")},
                "en": {"DOCTOR": ("name", "a shipped scheme"), "MEDICALRECORD": ("identifier", "a shipped scheme")}}
    for label, (kind, source) in expected[lang].items():
        assert kinds[label] == {"kind": kind, "source": source}
        assert re.search(rf"{label} .* {kind} \({source}\)", output), output


@pytest.fixture(scope="module")
def gold_wheels(projects, german_kinds, tmp_path_factory):
    """{lang: (wheel, output)}: the gold pipeline (every label of the corpus)
    packaged by the workflow's script, for the surrogate tests."""
    wheels = {}
    for lang, (root, _) in projects.items():
        out = tmp_path_factory.mktemp(f"gold-wheel-{lang}")
        result = subprocess.run(
            [sys.executable, "scripts/package.py", "training/gold/model-best", str(out), "--name", "deid_tiny_gold",
             "--version", "0.1.0", "--trained-on", "gold (test only)", "--rules", "--corpus-license", "CC0-1.0",
             "--label-kinds", str(german_kinds) if lang == "de" else ""],
            cwd=root, capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        wheels[lang] = (out / f"{lang}_deid_tiny_gold-0.1.0/dist/{lang}_deid_tiny_gold-0.1.0-py3-none-any.whl",
                        result.stdout)
    return wheels


def test_package_shows_every_label_s_kind_and_where_it_came_from(gold_wheels):
    output = gold_wheels["de"][1]
    for line in ("label ARZT: name (the label_kinds map)", "label KLINIK: hospital (the label_kinds map)",
                 "label DATUM: date (a guess from the label's name)", "label EMAIL: email (a shipped scheme)",
                 "label PATIENT_NAME: name (a guess from the label's name)"):
        assert line in output, output
    assert "label MEDICALRECORD: identifier (a shipped scheme)" in gold_wheels["en"][1]


@pytest.fixture(scope="module")
def wheels_env(projects, gold_wheels, tmp_path_factory):
    """One fresh virtual environment with both languages' wheels: the
    workflow's (synthetic) and the gold ones."""
    env_dir = tmp_path_factory.mktemp("venv-languages")
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    wheels = [root / f"packages/{lang}_deid_tiny-0.1.0/dist/{lang}_deid_tiny-0.1.0-py3-none-any.whl"
              for lang, (root, _) in projects.items()] + [wheel for wheel, _ in gold_wheels.values()]
    subprocess.run([python, "-m", "pip", "install", "-q", *map(str, wheels)], check=True)
    return python


def redact_offline(python: Path, package: str, text: str, spans: list, cwd: Path) -> dict:
    """The wheel's redactor, with surrogates, over `text` with `spans` as its
    entities (the tiny pipelines find too little to test surrogates on)."""
    script = (
        "import json, sys, spacy\n"
        f"nlp = spacy.load({package!r}, config={{'components.pii_redactor.strategy': 'surrogate'}})\n"
        "doc = nlp.make_doc(sys.stdin.read())\n"
        f"doc.ents = [doc.char_span(s, e, label=l) for s, e, l in {spans!r}]\n"
        "doc = nlp.get_pipe('pii_redactor')(doc)\n"
        "kinds = {label: kind for label, (kind, _) in nlp.get_pipe('pii_redactor').label_kinds.items()}\n"
        "print(json.dumps({'text': doc._.deidentified, 'lang': nlp.lang, 'kinds': kinds}))\n"
    )
    clean_env = {"PATH": os.environ["PATH"], "HF_HUB_OFFLINE": "1", "HOME": str(cwd)}
    result = subprocess.run([python, "-c", script], input=text, capture_output=True, text=True, env=clean_env,
                            cwd=cwd, check=True)
    return json.loads(result.stdout)


def faker_names(python: Path, locale: str, cwd: Path) -> dict:
    """Faker's first names and surnames of `locale`, as the wheel's environment has them."""
    script = (
        "import json, importlib\n"
        f"p = importlib.import_module('faker.providers.person.{locale}').Provider\n"
        "print(json.dumps({'first': sorted(set(p.first_names)), 'last': sorted(set(p.last_names))}))\n"
    )
    return json.loads(subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=cwd,
                                     check=True).stdout)


def spans_of(text: str, values: dict) -> list:
    """[(start, end, label)] of each value in `text`, each found after the one before."""
    spans = []
    for value, label in values.items():
        start = text.index(value, spans[-1][1] if spans else 0)
        spans.append((start, start + len(value), label))
    return spans


def test_the_german_wheel_writes_german_surrogates(wheels_env, tmp_path):
    text = "Aufnahme am 3. März 2019 im Klinikum Weber, Hamburg. Arzt: Dr. Schneider, Tel. 040 1234567."
    spans = spans_of(text, {"3. März 2019": "DATUM", "Klinikum Weber": "KLINIK", "Hamburg": "ORT",
                            "Schneider": "ARZT", "040 1234567": "TELEFON"})
    out = redact_offline(wheels_env, "de_deid_tiny_gold", text, spans, tmp_path)
    assert out["lang"] == "de" and out["kinds"]["ARZT"] == "name" and out["kinds"]["KLINIK"] == "hospital"
    months = "Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember"
    found = re.fullmatch(rf"Aufnahme am (\d{{1,2}}\. (?:{months}) \d{{4}}) im (.+), (.+)\. Arzt: Dr\. (\w+), "
                         r"Tel\. (\d{3} \d{7})\.", out["text"])
    assert found, out["text"]
    date, hospital, city, surname, phone = found.groups()
    assert date != "3. März 2019" and city != "Hamburg" and phone != "040 1234567"
    assert "Weber" not in hospital
    assert surname != "Schneider" and surname in faker_names(wheels_env, "de_DE", tmp_path)["last"]


def test_the_english_wheel_writes_english_surrogates(wheels_env, tmp_path):
    text = "Seen by Dr. Brown on 3 Jan. 2019; John Miller, MRN 4829311, age 93."
    spans = spans_of(text, {"Brown": "DOCTOR", "3 Jan. 2019": "DATE", "John Miller": "PATIENT",
                            "4829311": "MEDICALRECORD", "93": "AGE"})
    out = redact_offline(wheels_env, "en_deid_tiny_gold", text, spans, tmp_path)
    assert out["lang"] == "en"
    found = re.fullmatch(r"Seen by Dr\. (\w+) on (\d{1,2} [A-Z][a-z]{2,3}\.? \d{4}); (\w+) (\w+), MRN (\d{7}), age 90\.",
                         out["text"])
    assert found, out["text"]
    doctor, date, first, last, record = found.groups()
    names = faker_names(wheels_env, "en_US", tmp_path)
    assert doctor != "Brown" and doctor in names["last"] and last in names["last"] and first in names["first"]
    assert date != "3 Jan. 2019" and record != "4829311" and "Miller" not in out["text"]


@pytest.mark.parametrize("lang, text, pii", [
    ("de", "Kontakt: anna.schmidt@beispiel.de, bitte Befund senden.", "anna.schmidt@beispiel.de"),
    ("en", "Contact: mary.jones@example.com for results.", "mary.jones@example.com"),
])
def test_the_shipped_rules_catch_an_email_in_any_language(wheels_env, tmp_path, lang, text, pii):
    out = run_offline(wheels_env, f"{lang}_deid_tiny", text, tmp_path)
    assert out["pipeline"][-2:] == ["pii_rules", "pii_redactor"]
    assert out["meta"]["lang"] == lang and out["meta"]["sources"][0]["license"] == "CC0-1.0"
    assert pii not in out["deidentified"], out["deidentified"]
