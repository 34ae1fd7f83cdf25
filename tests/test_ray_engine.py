"""Past one process: keyed surrogates (the same value, the same surrogate, on
any worker, with no shared state) and the Ray engine of
`synthdeid-deidentify`, against the local engine on the same corpus."""

import datetime as dt
import json
import random

import pytest
import spacy

from synthdeid.deidentify import deidentify_files, load_redacting_pipeline

NAMES = ["Ana Ruiz García", "Luis Martín Soto", "Elena Iglesias Moreno", "Pablo Navarro López"]
TOWNS = ["Valladolid", "Alcalá de Henares", "Toledo"]


def corpus(count=24, seed=0):
    """{id: text} of notes that share patients, towns and dates."""
    rng = random.Random(seed)
    return {f"n{i:02d}": f"Paciente {rng.choice(NAMES)}, vive en {rng.choice(TOWNS)}. Ingresa el "
                         f"{rng.randint(1, 28):02d}/03/2018 y visita a {rng.choice(NAMES)}."
            for i in range(count)}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A real pipeline with an entity ruler standing in for the NER (fast, exact)."""
    nlp = spacy.blank("es")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "NOMBRE_SUJETO_ASISTENCIA", "pattern": name} for name in NAMES]
                       + [{"label": "TERRITORIO", "pattern": town} for town in TOWNS]
                       + [{"label": "FECHAS", "pattern": [{"SHAPE": "dd/dd/dddd"}]}])
    path = tmp_path_factory.mktemp("pipeline") / "nlp"
    nlp.to_disk(path)
    return path


KEYED = {"strategy": "surrogate", "consistency": "keyed"}


def surrogates(nlp, texts):
    """original -> the set of its surrogates over `texts` (names and towns)."""
    found = {}
    for doc in nlp.pipe(texts):
        for item in doc._.pii_replacements:
            if item["label"] != "FECHAS":
                found.setdefault(item["text"], set()).add(item["replacement"])
    return found


def test_keyed_surrogates_agree_across_documents_workers_and_runs(pipeline, monkeypatch):
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "a secret")
    texts = list(corpus().values())
    # Two pipelines that share nothing, each seeing half the notes in another order: two workers.
    first = surrogates(load_redacting_pipeline(str(pipeline), KEYED), texts[::2])
    second = surrogates(load_redacting_pipeline(str(pipeline), KEYED), texts[1::2][::-1])
    assert set(first) == set(second) == set(NAMES) | set(TOWNS)
    assert all(len(first[value]) == 1 and first[value] == second[value] for value in first)
    assert len({next(iter(fakes)) for fakes in first.values()}) == len(first)  # no two values share one
    assert not any(value in next(iter(fakes)) for value, fakes in first.items())
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "another secret")
    other = surrogates(load_redacting_pipeline(str(pipeline), KEYED), texts)
    assert sum(other[value] != first[value] for value in first) >= len(first) - 1


def test_keyed_dates_move_by_one_offset_per_document(pipeline, monkeypatch):
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "a secret")
    nlp = load_redacting_pipeline(str(pipeline), KEYED)
    text = "Paciente Ana Ruiz García, ingresa el 12/03/2018 y sale el 15/03/2018."
    doc, again = nlp(text), load_redacting_pipeline(str(pipeline), KEYED)(text)
    dates = [dt.datetime.strptime(r["replacement"], "%d/%m/%Y") for r in doc._.pii_replacements
             if r["label"] == "FECHAS"]
    assert doc._.deidentified == again._.deidentified and dates[0] != dt.datetime(2018, 3, 12)
    assert (dates[1] - dates[0]).days == 3
    other = nlp("Control de Ana Ruiz García el 12/03/2018.")  # another document: its own offset
    assert [r["replacement"] for r in other._.pii_replacements][0] == doc._.pii_replacements[0]["replacement"]


def test_a_keyed_surrogate_never_depends_on_the_other_entities_of_its_document(monkeypatch):
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "a secret")
    nlp = spacy.blank("es")
    nlp.add_pipe("pii_redactor", config=KEYED)

    def replaced(text, *values):
        doc = nlp.make_doc(text)
        doc.ents = [doc.char_span(text.index(v), text.index(v) + len(v), label="TERRITORIO") for v in values]
        return {r["text"]: r for r in nlp.get_pipe("pii_redactor")(doc)._.pii_replacements}

    alone = replaced("Vive en Valladolid.", "Valladolid")["Valladolid"]["replacement"]
    assert replaced("Nacido en Toledo, vive en Valladolid.", "Toledo", "Valladolid")["Valladolid"][
        "replacement"] == alone
    # Beside a real town that is its surrogate, it is masked, never redrawn to another surrogate.
    clash = replaced(f"Nacido en {alone}, vive en Valladolid.", alone, "Valladolid")["Valladolid"]
    assert (clash["strategy"], clash["replacement"]) == ("mask", "[TERRITORIO]")


def test_keyed_consistency_needs_a_key(pipeline, monkeypatch):
    monkeypatch.delenv("SYNTHDEID_HASH_KEY", raising=False)
    with pytest.raises(ValueError, match="consistency 'keyed' needs a key"):
        load_redacting_pipeline(str(pipeline), KEYED)


@pytest.fixture(scope="module")
def local_ray():
    import ray  # the ray extra, which setup.sh installs for the tests

    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def run(pipeline, source, output, engine, mapping=None, **options):
    nlp = load_redacting_pipeline(str(pipeline), KEYED)
    return deidentify_files(nlp, source, output, output_format="jsonl", mapping=mapping, model=str(pipeline),
                            engine=engine, progress=False, report=lambda message: None, **options)


@pytest.mark.slow
def test_the_ray_engine_writes_what_the_local_engine_writes(pipeline, local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "a secret")
    source = tmp_path / "notes.jsonl"
    lines = [json.dumps({"id": doc_id, "text": text}) for doc_id, text in corpus().items()]
    lines.insert(5, "{broken")  # a bad record: reported by line and skipped by both engines
    source.write_text("\n".join(lines) + "\n")
    local = run(pipeline, source, tmp_path / "local.jsonl", "local", tmp_path / "local_map.jsonl")
    on_ray = run(pipeline, source, tmp_path / "ray.jsonl", "ray", tmp_path / "ray_map.jsonl", num_workers=2,
                 batch_size=3)
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert (tmp_path / "ray_map.jsonl").read_text() == (tmp_path / "local_map.jsonl").read_text()
    assert (on_ray.documents, on_ray.skipped, on_ray.entities, on_ray.words) == (
        local.documents, local.skipped, local.entities, local.words)
    assert on_ray.documents == 24 and len(on_ray.skipped) == 1 and "notes.jsonl:6" in on_ray.skipped[0]


@pytest.mark.slow
def test_a_ray_dataset_is_deidentified_as_the_local_engine_does(pipeline, local_ray, monkeypatch):
    from synthdeid.ray_engine import deidentify_dataset

    monkeypatch.setenv("SYNTHDEID_HASH_KEY", "a secret")
    notes = corpus(count=10)
    dataset = local_ray.data.from_items([{"id": doc_id, "text": text} for doc_id, text in notes.items()])
    rows = sorted(deidentify_dataset(dataset, str(pipeline), KEYED, num_workers=2, batch_size=4).take_all(),
                  key=lambda row: row["id"])
    nlp = load_redacting_pipeline(str(pipeline), KEYED)
    expected = [(doc._.deidentified, doc._.pii_replacements) for doc in nlp.pipe(notes.values())]
    assert [(row["text"], json.loads(row["replacements"])) for row in rows] == expected


def test_corpus_consistency_is_refused_on_ray(pipeline, tmp_path):
    source = tmp_path / "notes.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "Paciente Ana Ruiz García."}) + "\n")
    nlp = load_redacting_pipeline(str(pipeline), {"strategy": "surrogate", "consistency": "corpus"})
    with pytest.raises(ValueError, match="consistency 'corpus' keeps one mapping in one process"):
        deidentify_files(nlp, source, tmp_path / "out.jsonl", output_format="jsonl", model=str(pipeline),
                         engine="ray", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Task supports sharding")
def test_generation_on_ray_actors_writes_what_the_local_engine_writes_and_resumes(local_ray, tmp_path):
    from conftest import make_docs, write_docbin
    from test_generation import CONFIG, OPTIONS, save_gpt2

    from synthdeid.training.synthesis import generate

    generator = save_gpt2(tmp_path / "generator")
    validation = write_docbin(tmp_path / "validation.spacy", make_docs(4, seed=2))
    train = write_docbin(tmp_path / "train.spacy", make_docs(10, seed=1))

    def run(name, size_multiple, **engine):
        return generate(validation, train, tmp_path / f"{name}.jsonl", config_path=CONFIG, generator=generator,
                        model_options=OPTIONS, size_multiple=size_multiple, samples_per_prompt=2,
                        stats_path=tmp_path / f"{name}.json", progress=False, **engine)

    local = run("local", 0.6)
    on_ray = run("ray", 0.6, engine="ray", num_workers=2)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    keys = ("rounds", "batches", "generated", "kept", "words_kept", "dropped", "tokens_kept")
    assert {key: on_ray[key] for key in keys} == {key: local[key] for key in keys} and local["rounds"] >= 2
    # A corpus begun on one engine grows on the other to what one run gives.
    run("grown", 0.3)
    grown = run("grown", 0.6, engine="ray", num_workers=2)
    assert grown["resumed_from"]["records"] > 0
    assert (tmp_path / "grown.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


@pytest.mark.slow
def test_annotation_on_ray_actors_writes_what_the_local_engine_writes(pipeline, local_ray, tmp_path):
    from conftest import make_docs, write_docbin

    from synthdeid.training.labelling import annotate_generated

    generated = tmp_path / "generated.jsonl"
    generated.write_text("".join(json.dumps({"id": doc_id, "text": text}) + "\n" for doc_id, text in corpus().items()))
    gold = write_docbin(tmp_path / "gold.spacy", make_docs(3, seed=0))
    local = annotate_generated(generated, pipeline, gold, tmp_path / "local", batch_size=4)
    on_ray = annotate_generated(generated, pipeline, gold, tmp_path / "ray", batch_size=4, engine="ray",
                                num_workers=2)
    for name in ("train.spacy", "validation.spacy", "stats.md"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert on_ray["splits"] == local["splits"] and local["splits"]["synthetic"]["entities"] > 24


def test_workers_asking_for_more_gpus_than_the_cluster_has_are_an_error(local_ray):
    """Ray would wait for ever to place them: the map says so instead."""
    from synthdeid.parallel import actor_map
    from synthdeid.training.labelling import Labeller

    gpus = local_ray.cluster_resources().get("GPU", 0)
    jobs = [(["Ana vive en Madrid."], None)]
    with pytest.raises(ValueError, match=f"need {gpus + 1:g} GPUs; the cluster has {gpus:g}"):
        list(actor_map(Labeller, ("/nowhere", 0, 1), jobs, num_workers=int(gpus) + 1, gpus_per_worker=1))
