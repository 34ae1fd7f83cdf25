import pytest
import spacy
from spacy.tokens import Doc, Span
from spacy.vocab import Vocab

from synthdeid.training.evaluation import markdown_report, synthetic_gold_ratio
from synthdeid.training.metrics import entity_scores, merge_spans, meddocan_scores, prf, score_docs, token_scores


def test_prf_hand_computed():
    s = prf(tp=3, fp=1, fn=2)
    assert s["p"] == pytest.approx(0.75)
    assert s["r"] == pytest.approx(0.6)
    assert s["f"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert prf(0, 0, 0)["f"] == 0.0


def test_entity_scores_are_strict_on_offsets_and_label():
    gold = [(0, 0, 5, "NAME"), (0, 10, 20, "DATE"), (1, 3, 8, "NAME")]
    pred = [
        (0, 0, 5, "NAME"),  # exact: TP
        (0, 10, 19, "DATE"),  # boundary off by one: FP and FN
        (1, 3, 8, "DATE"),  # wrong label: FP (DATE) and FN (NAME)
    ]
    scores = entity_scores(gold, pred)
    assert (scores["micro"]["tp"], scores["micro"]["fp"], scores["micro"]["fn"]) == (1, 2, 2)
    assert scores["per_label"]["NAME"]["p"] == pytest.approx(1.0)
    assert scores["per_label"]["NAME"]["r"] == pytest.approx(0.5)
    assert scores["per_label"]["DATE"]["f"] == 0.0


def test_token_scores_count_tokens_not_entities():
    gold = [["NAME", "NAME", "O", "DATE"]]
    pred = [["NAME", "O", "DATE", "DATE"]]
    scores = token_scores(gold, pred)
    # TP: tokens 0 and 3; FP: token 2 (DATE); FN: token 1 (NAME)
    assert (scores["micro"]["tp"], scores["micro"]["fp"], scores["micro"]["fn"]) == (2, 1, 1)
    assert scores["per_label"]["DATE"]["p"] == pytest.approx(0.5)
    assert scores["per_label"]["NAME"]["r"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        token_scores([["O"]], [["O", "O"]])


def test_merge_spans_joins_across_punctuation_only():
    text = "Juan Pérez, García  y Ana"
    spans = [(0, 0, 10, ), (0, 12, 18), (0, 22, 25)]
    assert merge_spans(spans, [text]) == {(0, 0, 18), (0, 22, 25)}


def test_meddocan_measures():
    texts = ["Calle Mayor, 5 en Madrid"]
    gold = [(0, 0, 11, "CALLE"), (0, 13, 14, "CALLE"), (0, 18, 24, "TERRITORIO")]
    pred = [(0, 0, 14, "CALLE"), (0, 18, 24, "PAIS")]
    scores = meddocan_scores(gold, pred, texts)
    assert scores["subtrack1"]["tp"] == 0
    # offsets only: Madrid matches, the street does not
    assert scores["subtrack2_strict"]["tp"] == 1
    assert scores["subtrack2_strict"]["fn"] == 2
    # merged: "Calle Mayor" + "5" become one span equal to the prediction, a TP
    # that contains (and so forgives) the strict FN and FP of the street
    merged = scores["subtrack2_merged"]
    assert (merged["tp"], merged["fp"], merged["fn"]) == (2, 0, 0)
    assert merged["f"] == pytest.approx(1.0)


def test_meddocan_merged_follows_the_official_script():
    texts = ["Ana Ruiz, Madrid y Luis", "Calle Mayor, 5"]
    gold = [(0, 0, 8, "N"), (0, 10, 16, "T"), (0, 19, 23, "N"), (1, 0, 11, "C"), (1, 13, 14, "C")]
    pred = [(0, 0, 8, "N"), (0, 19, 23, "N"), (1, 0, 14, "C")]
    scores = meddocan_scores(gold, pred, texts)
    strict, merged = scores["subtrack2_strict"], scores["subtrack2_merged"]
    assert (strict["tp"], strict["fp"], strict["fn"]) == (2, 1, 3)
    # TP: "Ana Ruiz" and "Luis" (strict), "Calle Mayor, 5" (merged); the strict
    # misses inside "Calle Mayor, 5" are forgiven; "Madrid" stays a FN. Comparing
    # sets of merged spans instead would give TP 2, FP 1 ("Ana Ruiz"), FN 1
    # ("Ana Ruiz, Madrid"), and F1 0.5 instead of 0.8 on the first document alone.
    assert (merged["tp"], merged["fp"], merged["fn"]) == (3, 0, 1)
    assert merged["p"] == pytest.approx(1.0)
    assert merged["r"] == pytest.approx(0.75)
    assert merged["f"] >= strict["f"]


def test_score_docs_projects_predictions_onto_reference_tokens():
    nlp = spacy.blank("es")
    text = "Paciente Juan Pérez ingresó el 3 de mayo."
    ref = nlp(text)
    ref.ents = [Span(ref, 1, 3, "NOMBRE"), Span(ref, 5, 8, "FECHAS")]
    pred = nlp(text)
    pred.ents = [Span(pred, 1, 2, "NOMBRE"), Span(pred, 5, 8, "FECHAS")]
    scores = score_docs([ref], [pred])
    assert scores["entity"]["micro"]["tp"] == 1
    assert scores["entity"]["micro"]["fp"] == 1
    assert scores["token"]["micro"]["tp"] == 4  # Juan, 3, de, mayo
    assert scores["token"]["micro"]["fn"] == 1  # Pérez
    with pytest.raises(ValueError):
        score_docs([ref], [nlp("otro texto")])


@pytest.mark.parametrize("vocab", [Vocab(), spacy.blank("es").vocab], ids=["bare", "blank-es"])
def test_whitespace_tokens_are_not_counted(vocab):
    # "Juan\nPérez vive": the entity covers a newline token on both sides
    words, spaces = ["Juan", "\n", "Pérez", "vive"], [False, False, True, False]
    ref, pred = Doc(vocab, words=words, spaces=spaces), Doc(vocab, words=words, spaces=spaces)
    ref.ents = [Span(ref, 0, 3, "NOMBRE")]
    pred.ents = [Span(pred, 0, 3, "NOMBRE")]
    token = score_docs([ref], [pred])["token"]["micro"]
    assert (token["tp"], token["fp"], token["fn"]) == (2, 0, 0)
    assert token["p"] == token["r"] == token["f"] == pytest.approx(1.0)


def test_synthetic_gold_ratio_and_report():
    def scores(entity_f, token_f):
        return {
            "entity": {"micro": {"p": entity_f, "r": entity_f, "f": entity_f}, "per_label": {}},
            "token": {"micro": {"p": token_f, "r": token_f, "f": token_f}},
            "meddocan": {"subtrack2_strict": {"f": 0.5}, "subtrack2_merged": {"f": 0.5}},
            "speed": {"words_per_second": 100.0},
        }

    pipelines = {"synthetic": scores(0.8, 0.9), "gold": scores(0.96, 0.96)}
    ratio = synthetic_gold_ratio(pipelines)
    assert ratio["entity"] == pytest.approx(0.8 / 0.96)
    assert ratio["token"] == pytest.approx(0.9 / 0.96)
    report = markdown_report(
        {"test_set": "t", "documents": 1, "gold_entities": 1, "pipelines": pipelines, "synthetic_gold_ratio": ratio}
    )
    assert "Synthetic/gold F1 ratio: entity 0.8333, token 0.9375." in report
