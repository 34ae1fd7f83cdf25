"""Privacy report: tokenisation, n-gram recall, longest copied passages and
gold PII reuse, on corpora small enough to count by hand."""

import json
import random

import pytest
import spacy
from conftest import cli, write_docbin
from typer.testing import CliRunner

from synthdeid.io import TextDoc
from synthdeid.training.corpus import RawDoc
from synthdeid.training.privacy import (
    GoldValueScreen,
    SuffixAutomaton,
    longest_copies,
    ngram_recall,
    privacy_measures,
    tokenize,
)


def raw(name, text, *ents):
    """A gold doc whose entities are given as (substring, label), each taken at
    its first occurrence in `text`."""
    spans = []
    for surface, label in ents:
        start = text.index(surface)
        spans.append((start, start + len(surface), label))
    return RawDoc(name, text, sorted(spans))


def test_tokenisation():
    assert tokenize("Ana  Ruiz, 12/03/2018.\nC/ Mayor nº3") == [
        "Ana", "Ruiz", ",", "12", "/", "03", "/", "2018", ".", "C", "/", "Mayor", "nº3",
    ]
    assert tokenize("Jose\u0301") == tokenize("José") == ["José"]  # NFC: composed and decomposed accents match
    assert tokenize("ana") != tokenize("Ana")  # case-sensitive


def test_ngram_recall_by_hand():
    gold = [[1, 2, 3, 4], [2, 3, 5]]
    synthetic = [[2, 3, 4, 9], [5, 1, 2], [4, 2]]
    # Unique gold bigrams: 12 23 34 35 (23 twice). Synthetic bigrams: 23 34 49
    # 51 12 42; 42 spans the two gold docs, so it is not a gold bigram.
    two = ngram_recall(gold, synthetic, 2)
    assert (two["gold_unique"], two["gold_unique_in_synthetic"], two["recall"]) == (4, 3, 0.75)
    assert (two["synthetic_positions"], two["synthetic_positions_in_gold"]) == (6, 3)
    assert two["synthetic_share_in_gold"] == 0.5
    # Gold trigrams 123 234 235; synthetic 234 349 512: one found.
    three = ngram_recall(gold, synthetic, 3)
    assert (three["gold_unique"], three["gold_unique_in_synthetic"], three["recall"]) == (3, 1, round(1 / 3, 6))
    assert ngram_recall(gold, gold, 3)["recall"] == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        ngram_recall(gold, synthetic, 0)


def test_ngram_recall_on_text_uses_the_tokenisation():
    gold = [raw("g", "El paciente, de 45 años, vive en Soria.")]
    synthetic = [TextDoc("s", "El  paciente , de 45 AÑOS vive en Soria")]
    # Gold tokens: El paciente , de 45 años , vive en Soria . (11) -> 9 trigrams.
    # Synthetic trigrams found in gold: "El paciente ,", "paciente , de", ", de 45",
    # "vive en Soria" (extra spaces do not matter; "AÑOS" is not "años").
    report = privacy_measures(gold, synthetic, [3])
    assert report["ngram_recall"]["3"]["gold_unique"] == 9
    assert report["ngram_recall"]["3"]["gold_unique_in_synthetic"] == 4
    assert report["synthetic"]["tokens_unknown_in_gold"] == 1  # AÑOS


def test_longest_copies_known_answer():
    gold_texts = ["x a b c d y", "a b c d e f q"]
    synthetic_texts = ["z a b c d e f w a b", "nada aquí", "b c d y", "y a b c d e f"]
    gold = [raw(f"g{i}", t) for i, t in enumerate(gold_texts)]
    synthetic = [TextDoc(f"s{i}", t) for i, t in enumerate(synthetic_texts)]
    report = privacy_measures(gold, synthetic, [2, 7], top=3)
    passages = report["copied_passages"]["longest"]
    # s3's "y a b c d e f" would be 7 tokens only across the two gold docs.
    assert [(p["tokens"], p["synthetic_id"], p["gold_document"], p["text"]) for p in passages] == [
        (6, "s0", "g1", "a b c d e f"),  # ties: the first synthetic doc first
        (6, "s3", "g1", "a b c d e f"),
        (4, "s2", "g0", "b c d y"),
    ]
    assert passages[0]["synthetic_chars"] == [2, 13]
    assert passages[0]["gold_chars"] == [0, 11]
    assert passages[2]["gold_chars"] == [4, 11]
    assert report["copied_passages"]["documents_with_passage_at_least"] == {"2": 3, "7": 0}


def brute_force_longest(gold, query):
    best = 0
    for doc in gold:
        for i in range(len(query)):
            for j in range(len(doc)):
                k = 0
                while i + k < len(query) and j + k < len(doc) and query[i + k] == doc[j + k]:
                    k += 1
                best = max(best, k)
    return best


def test_suffix_automaton_matches_brute_force():
    rng = random.Random(0)
    for _ in range(150):
        gold = [[rng.randrange(3) for _ in range(rng.randrange(0, 15))] for _ in range(rng.randrange(1, 4))]
        query = [rng.randrange(-1, 3) for _ in range(rng.randrange(0, 15))]
        automaton = SuffixAutomaton(gold)
        n, end, gold_end = automaton.longest_match(query)
        assert n == brute_force_longest(gold, query)
        if n:
            k, token = automaton.locate(gold_end)
            assert query[end - n + 1 : end + 1] == gold[k][token - n + 1 : token + 1]
    assert longest_copies([[1, 2]], [[3, 4], [2, 1, 2]]) == [(0, 0, -1, -1, -1), (2, 1, 1, 0, 0)]


def test_pii_reuse_whole_words_and_distinctive_strings():
    gold = [
        raw("g1", "Ana Ruiz García, de 45 años, vive en Valladolid. Nació en España.",
            ("Ana Ruiz García", "NOMBRE"), ("45", "EDAD"), ("Valladolid", "TERRITORIO"), ("España", "PAIS")),
        raw("g2", "Ana, de 45 años, vive en España y luego en Valdepeñas.",
            ("Ana", "NOMBRE"), ("45", "EDAD"), ("Valdepeñas", "TERRITORIO")),
        raw("g3", "Vive en Valladolid.", ("Valladolid", "TERRITORIO")),  # a repeated string counts once
    ]
    synthetic = [
        TextDoc("s1", "Anabel Ruiz, de 145 años, vive en Valladolid (España)."),
        TextDoc("s2", "Paciente: Ana  Ruiz  García; natural de Españas."),
        TextDoc("s3", "Traslado a Valladolid."),
    ]
    reuse = privacy_measures(gold, synthetic, [5])["pii_reuse"]
    labels = reuse["labels"]
    # NOMBRE: "Ana Ruiz García" (extra spaces still match) and "Ana" (found in
    # s2 inside "Ana Ruiz García", never in "Anabel"). Distinctive: only the
    # full name ("Ana" is short).
    assert {k: labels["NOMBRE"][k] for k in ("unique", "reappearing", "distinctive", "distinctive_reappearing")} == {
        "unique": 2, "reappearing": 2, "distinctive": 1, "distinctive_reappearing": 1,
    }
    assert [e["text"] for e in labels["NOMBRE"]["examples"]] == ["Ana Ruiz García", "Ana"]
    # "45" occurs in "145" only inside a word: not reused.
    assert (labels["EDAD"]["unique"], labels["EDAD"]["reappearing"]) == (1, 0)
    # Valladolid (in two gold docs: not distinctive) in s1 and s3; Valdepeñas
    # (one gold doc, 10 characters: distinctive) nowhere.
    assert labels["TERRITORIO"]["unique"] == 2
    assert labels["TERRITORIO"]["reappearing"] == 1
    assert (labels["TERRITORIO"]["distinctive"], labels["TERRITORIO"]["distinctive_reappearing"]) == (1, 0)
    assert labels["TERRITORIO"]["examples"] == [
        {"text": "Valladolid", "tokens": 1, "gold_documents": 2, "synthetic_documents": 2, "distinctive": False}
    ]
    # "España": 6 characters, but in two gold docs (g2 has it outside an entity).
    assert labels["PAIS"] == {
        "unique": 1, "reappearing": 1, "share": 1.0, "distinctive": 0, "distinctive_reappearing": 0,
        "distinctive_share": 0.0,
        "examples": [
            {"text": "España", "tokens": 1, "gold_documents": 2, "synthetic_documents": 1, "distinctive": False}
        ],
    }
    assert reuse["total"] == {
        "unique": 6, "reappearing": 4, "distinctive": 2, "distinctive_reappearing": 1,
        "share": round(4 / 6, 6), "distinctive_share": 0.5,
    }


def test_the_gold_value_screen_finds_what_the_report_counts_as_identifying(tmp_path):
    gold = [
        raw("g1", "Ana Ruiz García, de 45 años, vive en Valdepeñas, calle Mayor 5. Nació el 12/03/1950.",
            ("Ana Ruiz García", "NOMBRE_SUJETO_ASISTENCIA"), ("45", "EDAD_SUJETO_ASISTENCIA"),
            ("Valdepeñas", "TERRITORIO"), ("calle Mayor 5", "CALLE"), ("12/03/1950", "FECHAS")),
        raw("g2", "Ana vive en Valladolid.", ("Ana", "NOMBRE_SUJETO_ASISTENCIA"), ("Valladolid", "TERRITORIO")),
        raw("g3", "Traslado a Valladolid.", ("Valladolid", "TERRITORIO")),
    ]
    kinds = {"NOMBRE_SUJETO_ASISTENCIA": "name", "TERRITORIO": "city", "CALLE": "street"}
    screen = GoldValueScreen(gold, lambda label: label in kinds)
    # Distinctive and identifying: the full name, Valdepeñas, the street. Not
    # "Ana" (short), Valladolid (two notes), the age and the date (no identifying label).
    assert screen.values == {("Ana", "Ruiz", "García"): "NOMBRE_SUJETO_ASISTENCIA", ("Valdepeñas",): "TERRITORIO",
                             ("calle", "Mayor", "5"): "CALLE"}
    notes = {
        "Paciente: Ana  Ruiz  García, natural de Toledo.": "NOMBRE_SUJETO_ASISTENCIA",  # spacing does not matter
        "Vive en la calle Mayor 5 de Soria.": "CALLE",
        "Ana Ruiz, de Valladolid, nacida el 12/03/1950.": None,
        "Vive en Valdepeñasa.": None,  # a word run is never split
        "De Valdepeñas.": "TERRITORIO",
    }
    assert {text: screen.find(text) for text in notes} == notes
    # The same as the report: a note the screen passes adds no distinctive identifying value to its count.
    reuse = privacy_measures(gold, [TextDoc(str(i), text) for i, text in enumerate(notes)], [5])["pii_reuse"]
    assert sum(reuse["labels"][label]["distinctive_reappearing"] for label in kinds) == 3
    passed = [TextDoc(str(i), text) for i, text in enumerate(notes) if not screen.find(text)]
    reuse = privacy_measures(gold, passed, [5])["pii_reuse"]
    assert sum(reuse["labels"][label]["distinctive_reappearing"] for label in kinds) == 0
    # From a DocBin, with the shipped scheme's kinds; another label map changes what identifies.
    nlp = spacy.blank("es")
    docs = []
    for raw_doc in gold:
        doc = nlp.make_doc(raw_doc.text)
        doc.ents = [doc.char_span(start, end, label=label) for start, end, label in raw_doc.spans]
        docs.append(doc)
    path = write_docbin(tmp_path / "gold.spacy", docs)
    assert GoldValueScreen.from_path(path).values == screen.values
    other = GoldValueScreen.from_path(path, {"CALLE": "date"})
    assert ("calle", "Mayor", "5") not in other.values and other.digest() != screen.digest()


def test_cli_writes_reports_for_jsonl_and_docbin(tmp_path):
    nlp = spacy.blank("es")
    gold_text = "Nombre: Ana Ruiz. Vive en Soria con su madre desde 2010."
    gold_doc = nlp(gold_text)
    gold_doc.ents = [gold_doc.char_span(8, 16, label="NOMBRE"), gold_doc.char_span(26, 31, label="TERRITORIO")]
    gold_doc.user_data["name"] = "gold-1"
    gold_path = write_docbin(tmp_path / "train.spacy", [gold_doc])
    texts = {"syn-1": "Nombre: Ana Ruiz. Vive en Soria con su padre.", "syn-2": "Sin datos."}
    jsonl = tmp_path / "generated.jsonl"
    jsonl.write_text("".join(json.dumps({"id": k, "text": v, "round": 0}) + "\n" for k, v in texts.items()))
    docs = []
    for doc_id, text in texts.items():
        doc = nlp(text)
        doc.user_data["name"] = doc_id
        docs.append(doc)
    docbin = write_docbin(tmp_path / "synthetic.spacy", docs)

    reports = {}
    for synthetic in (jsonl, docbin):
        out = tmp_path / f"out-{synthetic.suffix[1:]}"
        result = CliRunner().invoke(
            cli("privacy_report"), [str(gold_path), str(synthetic), str(out), "--ngram", "3", "--ngram", "5"]
        )
        assert result.exit_code == 0, result.output
        markdown = (out / "privacy.md").read_text(encoding="utf-8")
        assert markdown in result.output
        reports[synthetic.suffix] = json.loads((out / "privacy.json").read_text(encoding="utf-8"))
    report = reports[".jsonl"]
    # Gold: Nombre : Ana Ruiz . Vive en Soria con su madre desde 2010 . (14 tokens, 10 unique 5-grams);
    # "Nombre : Ana Ruiz . Vive en Soria con su" is copied (10 tokens: 6 of the 5-grams).
    assert report["ngram_recall"]["5"]["gold_unique"] == 10
    assert report["ngram_recall"]["5"]["gold_unique_in_synthetic"] == 6
    assert report["copied_passages"]["longest"][0]["tokens"] == 10
    assert report["copied_passages"]["longest"][0]["text"] == "Nombre: Ana Ruiz. Vive en Soria con su"
    assert report["copied_passages"]["longest"][0]["gold_document"] == "gold-1"
    assert report["pii_reuse"]["total"]["reappearing"] == 2
    assert "| 5 | 10 | 6 | 0.6000 |" in markdown
    for key in ("ngram_recall", "copied_passages", "pii_reuse", "gold", "synthetic"):
        assert reports[".spacy"][key] == report[key]


def test_bad_inputs_are_clear_errors_and_write_nothing(tmp_path):
    nlp = spacy.blank("es")
    doc = nlp("Vive en Soria.")
    gold_path = write_docbin(tmp_path / "train.spacy", [doc])
    out = tmp_path / "out"
    bad = tmp_path / "generated.jsonl"
    bad.write_text('{"id": "syn-1", "text": "Hola."}\n{"id": "syn-2"}\n', encoding="utf-8")
    (tmp_path / "notes.txt").write_text("Hola.", encoding="utf-8")
    good = tmp_path / "ok.jsonl"
    good.write_text('{"id": "syn-1", "text": "Hola."}\n', encoding="utf-8")
    cases = [
        ([str(gold_path), str(bad), str(out)], "generated.jsonl:2: 'text' is missing"),
        ([str(gold_path), str(tmp_path / "notes.txt"), str(out)], "notes.txt: unsupported synthetic corpus"),
        ([str(tmp_path / "missing.spacy"), str(good), str(out)], "missing.spacy: no such file"),
        ([str(gold_path), str(good), str(out), "--ngram", "0"], "n-gram sizes must be at least 1"),
    ]
    for args, problem in cases:
        result = CliRunner().invoke(cli("privacy_report"), args)
        assert result.exit_code == 1, result.output
        assert problem in result.output
    assert not out.exists()


def test_gold_only_pii_tokens_and_the_ones_a_pipeline_ships(tmp_path):
    from synthdeid.training.privacy import pii_only_tokens, shipped_pii

    gold = [
        RawDoc("a", "Paciente Ana Ruiz de Toledo.", [(9, 17, "NOMBRE_SUJETO_ASISTENCIA"), (21, 27, "TERRITORIO")]),
        RawDoc("b", "Vive en Toledo, 12.", [(8, 14, "TERRITORIO")]),
        RawDoc("c", "Ana acude sola.", []),  # "Ana" also outside a span: not PII-only
    ]
    assert pii_only_tokens(gold) == {"Ruiz", "Toledo"}
    # Decomposed accents (not NFC): the spans still cover the same words.
    decomposed = "Jose\u0301 vio a Ana Ruiz en Cuenca."
    assert pii_only_tokens([RawDoc("d", decomposed, [(12, 20, "NOMBRE_SUJETO_ASISTENCIA")])]) == {"Ana", "Ruiz"}
    pipeline = tmp_path / "pipeline"
    (pipeline / "vocab").mkdir(parents=True)
    (pipeline / "vocab" / "strings.json").write_text(json.dumps(["Ruiz", "Ana", "de", "NOMBRE_SUJETO_ASISTENCIA"]))
    assert shipped_pii(gold, pipeline) == {"pipeline": str(pipeline), "strings": 4, "gold_pii_only_tokens": 2,
                                           "shipped": 1, "shipped_alphabetic": 1}


def test_a_surrogated_baseline_counts_what_chance_alone_repeats(tmp_path):
    gold = [raw("g1", "Ana Ruiz García ingresó el 12/03/2018 con su madre.",
                ("Ana Ruiz García", "NOMBRE"), ("12/03/2018", "FECHAS"), ("madre", "FAMILIAR"))]
    synthetic = [TextDoc("s1", "Ana Ruiz García ingresó el 12/03/2018.")]
    # The gold note surrogated: another name and date, the kinship word as written.
    baseline = [TextDoc("b1", "Eva Soto Gil ingresó el 03/07/2016 con su madre.")]
    reuse = privacy_measures(gold, synthetic, [5], baseline_docs=baseline)["pii_reuse"]
    assert (reuse["total"]["reappearing"], reuse["total"]["distinctive_reappearing"]) == (2, 2)
    assert (reuse["baseline"]["documents"], reuse["baseline"]["tokens"]) == (1, 14)
    assert reuse["baseline"]["labels"]["FAMILIAR"]["reappearing"] == 1
    assert (reuse["baseline"]["total"]["reappearing"], reuse["baseline"]["total"]["distinctive_reappearing"]) == (1, 0)

    nlp = spacy.blank("es")
    paths = {}
    for name, docs in (("train", gold), ("synthetic", synthetic), ("surrogated", baseline)):
        made = []
        for d in docs:
            doc = nlp(d.text)
            doc.ents = [doc.char_span(s, e, label=label) for s, e, label in getattr(d, "spans", [])]
            doc.user_data["name"] = d.name
            made.append(doc)
        paths[name] = write_docbin(tmp_path / f"{name}.spacy", made)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli("privacy_report"), [str(paths["train"]), str(paths["synthetic"]), str(out),
                                                        "--baseline", str(paths["surrogated"])])
    assert result.exit_code == 0, result.output
    markdown = (out / "privacy.md").read_text(encoding="utf-8")
    assert "| by chance: reappearing | by chance: distinctive |" in markdown
    assert "| FAMILIAR | 1 | 0 | 0.0000 | 0 | 0 | 0.0000 | 1 | 0 |" in markdown


def test_quasi_identifiers_a_unique_combination_and_a_passage_with_its_date():
    kinds = {"EDAD": "age", "SEXO": "sex", "TERRITORIO": "city", "FECHAS": "date"}
    history = "refiere un cuadro de dolor abdominal de tres semanas de evolución tras la caída"
    gold = [
        raw("g1", f"Varón de 67 años de Soria. Ingresó el 12/03/2018, {history}.",
            ("67", "EDAD"), ("Varón", "SEXO"), ("Soria", "TERRITORIO"), ("12/03/2018", "FECHAS")),
        raw("g2", "Mujer de 45 años de Lugo.", ("45", "EDAD"), ("Mujer", "SEXO"), ("Lugo", "TERRITORIO")),
        raw("g3", "Mujer de 45 años de Lugo.", ("45", "EDAD"), ("Mujer", "SEXO"), ("Lugo", "TERRITORIO")),
    ]
    synthetic = [
        TextDoc("s1", "Soria, Varón, 67."),  # g1's combination, which no other note has
        TextDoc("s2", "Mujer de 45 años de Lugo."),  # a combination two gold notes share: no one is singled out
        TextDoc("s3", f"El 12/03/2018 {history}."),  # g1's history with g1's date
        TextDoc("s4", f"El 01/01/2019 {history}."),  # the history with another date
    ]
    quasi = privacy_measures(gold, synthetic, [5], kind_of=kinds.get)["quasi_identifiers"]
    assert (quasi["gold_notes_with_combination"], quasi["unique_combinations"]) == (3, 1)
    assert quasi["unique_reappearing"] == 1
    assert quasi["unique_examples"][0]["values"] == ["67", "Varón", "Soria"]
    assert quasi["passages_with_date"] == 1
    assert quasi["passage_examples"][0]["synthetic_id"] == "s3"
    assert quasi["passage_examples"][0]["dates"] == ["12 / 03 / 2018"]


def test_the_summary_judges_each_check_against_its_threshold(tmp_path):
    from synthdeid.training.privacy_summary import chance_scale, summary_checks, write_summary

    kinds = {"NOMBRE": "name", "FECHAS": "date"}.get
    gold = [raw("g1", "Ana Ruiz García ingresó el 12/03/2018.", ("Ana Ruiz García", "NOMBRE"),
                ("12/03/2018", "FECHAS")),
            raw("g2", "Luis Soto Gil ingresó el 01/02/2017.", ("Luis Soto Gil", "NOMBRE"), ("01/02/2017", "FECHAS"))]
    baseline = [TextDoc("b1", "Eva Pérez Sanz ingresó el 01/02/2017."), TextDoc("b2", "Eva Pérez Sanz ingresó.")]
    copied = privacy_measures(gold, [TextDoc("s1", "Ana Ruiz García, 12/03/2018.")], [5], baseline_docs=baseline,
                              kind_of=kinds)
    clean = privacy_measures(gold, [TextDoc("s1", "Eva Pérez Sanz, 01/02/2017.")], [5], baseline_docs=baseline,
                             kind_of=kinds)
    membership = {"pipelines": {"synthetic": {"auc": 0.53}, "gold": {"auc": 0.7}}}
    # A copied name fails, a date no more often than chance passes, an AUC 0.03 off a coin toss fails.
    assert [row["passed"] for row in summary_checks(copied, membership, kinds)] == [False, True, True, True, False]
    rows = summary_checks(clean, {"pipelines": {"synthetic": {"auc": 0.49}}}, kinds)
    assert [row["passed"] for row in rows] == [True, True, True, True, True]
    # One date, against one by chance in the chance copy, which holds more text: values scale by tokens.
    ratio = clean["synthetic"]["tokens"] / clean["pii_reuse"]["baseline"]["tokens"]
    assert ratio < 1 and [(row["found"], row["chance"]) for row in rows[:2]] == [(0, 0), (1, round(ratio, 1))]
    four = privacy_measures(gold, [TextDoc(f"s{i}", "Eva Pérez Sanz, 01/02/2017.") for i in range(4)], [5],
                            baseline_docs=baseline, kind_of=kinds)
    assert summary_checks(four, None, kinds)[1]["chance"] == round(4 * ratio, 1)
    assert chance_scale(four, "documents") == 2  # combinations, once per note: four notes against two
    markdown = write_summary(clean, {"pipelines": {"synthetic": {"auc": 0.49}}}, kinds, tmp_path / "privacy.md")
    assert "5 of 5 checks passed" in markdown and "![" in markdown
    assert (tmp_path / "privacy.png").read_bytes().startswith(b"\x89PNG")
