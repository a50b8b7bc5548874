"""PyTerrier's contracts, for every public transformer of the package: rebuilt from its parameters
(loaded or not) it judges as one built directly; it says its output columns without a model; it
prints as its constructor call; pt.GridSearch tunes it; the judgement store is a PyTerrier artifact
that packages, travels and loads again; and a pipeline run in several processes (joblib, Ray) gives
the serial run's frame, its judgements in one store."""
import configparser
import functools
import http.server
import importlib
import inspect
import json
import os
import pkgutil
import sqlite3
import threading
import time
import warnings
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pandas as pd
import pyterrier as pt
import pytest
from test_ranker import pairs
from test_store_faults import BAD_STORES, filled_store

import pyterrier_reasonrank
from pyterrier_reasonrank import Escalation, InputError, JudgementStore, QueryGenerator, ReasonRanker, StoreError, Student
from pyterrier_reasonrank.contracts import StudentTransformer
from pyterrier_reasonrank.evaluation import DropExcluded
from pyterrier_reasonrank.fusion import FirstStageFusion
from pyterrier_reasonrank.parallel import RayParallel
from pyterrier_reasonrank.store import DATABASE
from pyterrier_reasonrank.testing import counting_judgements

ROOT = Path(__file__).resolve().parents[1]
RANKING = {"max_new_tokens": 4, "device": "cpu", "dtype": "float32"}  # alike in every process
QUERIES = {"max_new_tokens": 6}
QRELS = pd.DataFrame({"qid": ["q0", "q0", "q1"], "docno": ["d0-0", "d0-1", "d1-2"], "label": [2, -100, -100]})


def ranker_alternatives(tmp_path: Path, model: Path) -> dict[str, dict]:
    """For each parameter of ReasonRanker, a valid change of it (with what it needs)."""
    return {
        "model": {"model": f"{model}/."}, "adapter": {"adapter": "/no/such/adapter"}, "mode": {"mode": "direct"},
        "samples": {"samples": 2}, "temperature": {"temperature": 0.5}, "greedy_first": {"greedy_first": False},
        "seed": {"seed": 3}, "escalation": {"mode": "adaptive", "escalation": Escalation(entropy=0.1)},
        "store": {"store": JudgementStore(tmp_path / "judgements")}, "label_temperature": {"label_temperature": 2.0},
        "batch_size": {"batch_size": 2}, "max_new_tokens": {"max_new_tokens": 6},
        "max_query_tokens": {"max_query_tokens": 8}, "max_doc_tokens": {"max_doc_tokens": 16},
        "text_field": {"text_field": "body"}, "max_batch_tokens": {"max_batch_tokens": None},
        "prefix_reuse": {"prefix_reuse": False}, "device": {"device": "meta"}, "dtype": {"dtype": "bfloat16"},
        "backend": {"backend": "openai"}, "engine_options": {"backend": "vllm", "engine_options": {"enforce_eager": True}},
        "base_url": {"base_url": "http://127.0.0.1:9/v1"}, "tokenizer": {"tokenizer": str(model)},
        "concurrency": {"concurrency": 4}, "verbose": {"verbose": True}, "trust_remote_code": {"trust_remote_code": True},
    }


def generator_alternatives(tmp_path: Path, model: Path) -> dict[str, dict]:
    """For each parameter of QueryGenerator, a valid change of it."""
    return {
        "model": {"model": f"{model}/."}, "adapter": {"adapter": "/no/such/adapter"}, "combine": {"combine": "question+join"},
        "max_new_tokens": {"max_new_tokens": 8}, "max_question_tokens": {"max_question_tokens": 8},
        "batch_size": {"batch_size": 1}, "device": {"device": "meta"}, "dtype": {"dtype": "bfloat16"},
        "backend": {"backend": "vllm"}, "engine_options": {"backend": "vllm", "engine_options": {"enforce_eager": True}},
        "verbose": {"verbose": True}, "trust_remote_code": {"trust_remote_code": True},
    }


# What each public transformer is, built plainly: (build it, its parameters' changes, the input it
# judges, the parameters whose change it judges by — compared with one built directly).
PUBLIC = {
    "ReasonRanker": (lambda model: ReasonRanker(str(model), **RANKING), ranker_alternatives, lambda: pairs(2, 3),
                     ["model", "mode", "samples", "greedy_first", "seed", "escalation", "store", "label_temperature",
                      "batch_size", "max_new_tokens", "max_query_tokens", "max_doc_tokens", "max_batch_tokens",
                      "prefix_reuse"]),
    "QueryGenerator": (lambda model: QueryGenerator(str(model), **QUERIES), generator_alternatives,
                       lambda: pd.DataFrame({"qid": ["a", "b"], "query": ["why do tides happen", "autumn leaves"]}),
                       ["model", "combine", "max_new_tokens", "max_question_tokens", "batch_size"]),
    "DropExcluded": (lambda model: DropExcluded(QRELS), lambda tmp_path, model: {"qrels": {"qrels": QRELS.head(2)}},
                     lambda: pairs(2, 3), ["qrels"]),
    "FirstStageFusion": (lambda model: FirstStageFusion(0.3), lambda tmp_path, model: {"weight": {"weight": 0.8}},
                         lambda: pairs(2, 3).assign(first_stage_score=[3.0, 2.0, 1.0, 1.0, 5.0, 0.0]), ["weight"]),
    "RayParallel": (lambda model: RayParallel(ReasonRanker(str(model), **RANKING)),
                    lambda tmp_path, model: {"pipeline": {"pipeline": ReasonRanker(str(model), mode="direct")},
                                             "workers": {"workers": 3}, "gpus_per_worker": {"gpus_per_worker": 1.0},
                                             "cpus_per_worker": {"cpus_per_worker": 2.0},
                                             "per_worker_stores": {"per_worker_stores": True}},
                    None, []),  # (run on Ray below)
}


def test_every_public_transformer_is_covered():
    found = set()
    for module in pkgutil.iter_modules(pyterrier_reasonrank.__path__):
        if not module.ispkg:
            loaded = importlib.import_module(f"pyterrier_reasonrank.{module.name}")
            found |= {name for name, value in vars(loaded).items() if inspect.isclass(value) and not name.startswith("_")
                      and issubclass(value, pt.Transformer) and value.__module__ == loaded.__name__}
    assert found == {*PUBLIC, "StudentTransformer"}  # (the base class of the student's transformers)


def same_frames(first: pd.DataFrame, second: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(first.reset_index(drop=True), second.reset_index(drop=True))


def alike(first: object, second: object) -> bool:
    """The same value (a frame: the same object)."""
    return first is second or (not isinstance(first, pd.DataFrame) and type(first) is type(second)
                               and first == second)


def judged(transformer: pt.Transformer, inp: pd.DataFrame) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the tiny model writes no search query)
        return transformer(inp.rename(columns={"text": getattr(transformer, "text_field", "text")}))


@pytest.mark.parametrize("loaded", [False, True], ids=["not loaded", "loaded"])
@pytest.mark.parametrize("kind", PUBLIC)
def test_apply_attributes_round_trips_every_parameter(tiny_model, tmp_path, kind, loaded):
    build, alternatives, inputs, scored = PUBLIC[kind]
    transformer = build(tiny_model)
    if loaded and isinstance(transformer, StudentTransformer):
        transformer.load()
    attributes = {a.name: a.value for a in pt.inspect.transformer_attributes(transformer)}
    assert list(attributes) == list(inspect.signature(type(transformer).__init__).parameters)[1:]
    same = pt.inspect.transformer_apply_attributes(transformer)
    assert type(same) is type(transformer) and same is not transformer and repr(same) == repr(transformer)
    changes = alternatives(tmp_path, tiny_model)
    assert set(changes) == set(attributes)  # every parameter
    for name, change in changes.items():
        copy = pt.inspect.transformer_apply_attributes(transformer, **change)
        assert all(alike(getattr(copy, n), v) for n, v in change.items()), name
        assert all(alike(getattr(copy, n), v) for n, v in attributes.items() if n not in change), name
        if name != "verbose":  # (it changes no output; left out as pyterrier-alpha's transformer_repr does)
            assert repr(copy) != repr(transformer), name
        if isinstance(transformer, StudentTransformer):
            shares = not {"model", *inspect.signature(Student.__init__).parameters} & set(change)
            assert (copy.student is transformer.student) == shares, name  # the loaded weights, shared
        if name in scored:
            direct = type(transformer)(**{**attributes, **change})
            same_frames(judged(copy, inputs()), judged(direct, inputs()))


def test_a_transformer_built_from_a_student_rebuilds_with_it_and_refuses_other_student_options(tiny_model):
    student = Student(str(tiny_model), device="cpu", dtype="float32")
    ranker = student.ranker(max_new_tokens=4).load()
    copy = pt.inspect.transformer_apply_attributes(ranker, samples=2)
    assert copy.student is student and copy.model is student and repr(copy) == repr(ranker.student.ranker(
        max_new_tokens=4, samples=2))
    same_frames(copy(pairs(2, 2)), ReasonRanker(str(tiny_model), samples=2, **RANKING)(pairs(2, 2)))
    with pytest.raises(InputError, match="^ReasonRanker: adapter are the student's options: give them to Student"):
        pt.inspect.transformer_apply_attributes(ranker, adapter="/no/such/adapter")
    with pytest.raises(InputError, match="^ReasonRanker has no parameter 'sample'; its parameters are model, "):
        pt.inspect.transformer_apply_attributes(ranker, sample=2)
    moved = pt.inspect.transformer_apply_attributes(ranker, model=str(tiny_model))  # a new student
    assert moved.student is not student and not moved.student.loaded


@pytest.mark.parametrize("kind, columns", [
    ("ReasonRanker", ["qid", "query", "docno", "text"]),
    ("ReasonRanker", ["qid", "query", "docno", "text", "score", "rank"]),
    ("QueryGenerator", ["qid", "query"]),
    ("DropExcluded", ["qid", "query", "docno", "text", "score", "rank"]),
    ("FirstStageFusion", ["qid", "query", "docno", "text", "score", "rank", "first_stage_score"]),
])
def test_transform_outputs_answers_without_a_model_and_as_transform_does(tiny_model, kind, columns):
    build, _, inputs, _ = PUBLIC[kind]
    transformer = build(tiny_model)
    said = pt.inspect.transformer_outputs(transformer, columns)
    assert not getattr(transformer, "student", Student()).loaded
    assert said == list(judged(transformer, inputs()[columns]).columns)
    if kind != "DropExcluded":
        with pytest.raises(pt.validate.InputValidationError):
            pt.inspect.transformer_outputs(transformer, ["qid", "docno"])
    parallel = RayParallel(transformer)
    assert pt.inspect.transformer_outputs(parallel, columns) == said and parallel._actors is None


def test_repr_is_the_constructor_call_of_the_settings_that_are_not_the_defaults(tiny_model, tmp_path):
    assert repr(ReasonRanker("m")) == "ReasonRanker('m')"
    assert repr(ReasonRanker(mode="direct", max_new_tokens=2)) == "ReasonRanker(mode='direct', max_new_tokens=2)"
    with pytest.warns(UserWarning, match=r"ReasonRanker: samples=2, seed=3 have no effect in direct mode, only on how "
                                         r"the ranker prints"):
        unused = ReasonRanker(mode="direct", samples=2, seed=3)
    assert repr(unused) == "ReasonRanker(mode='direct', samples=2, seed=3)"  # as given: it rebuilds so
    with pytest.warns(UserWarning, match=r"escalation=Escalation\(.*\) has no effect in explain mode"):
        ReasonRanker(escalation=Escalation(cutoff=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ReasonRanker(mode="adaptive", escalation=Escalation(cutoff=3), samples=2)  # every option used
    store = JudgementStore(tmp_path / "j")
    assert repr(ReasonRanker("m", max_doc_tokens=512, label_temperature=0.5, store=store, backend="vllm")) == (
        f"ReasonRanker('m', store=JudgementStore({str(tmp_path / 'j')!r}), label_temperature=0.5, "
        f"max_doc_tokens=512, backend='vllm')")  # signature order
    # a student's settings print as if given here: the same judge either way
    served = Student("m", backend="openai", base_url="http://127.0.0.1:9/v1", concurrency=4)
    assert repr(ReasonRanker(served, samples=2)) == repr(ReasonRanker("m", backend="openai", samples=2,
                                                                      base_url="http://127.0.0.1:9/v1", concurrency=4))
    assert repr(served.ranker(samples=2)) == ("ReasonRanker('m', samples=2, backend='openai', "
                                              "base_url='http://127.0.0.1:9/v1', concurrency=4)")
    # ...unless the transformer does not take them: then the student shows them
    assert repr(QueryGenerator(served)) == ("QueryGenerator(Student('m', backend='openai', "
                                            "base_url='http://127.0.0.1:9/v1', concurrency=4))")
    assert repr(QueryGenerator(Student("m", backend="vllm"), combine="question+join")) == \
        "QueryGenerator('m', combine='question+join', backend='vllm')"
    # pt.Experiment names a system by str() when not given names: rankers that judge apart are named apart
    first = pt.Transformer.from_df(pairs(1, 1))
    assert str(first >> ReasonRanker("m", label_temperature=0.5)) != str(first >> ReasonRanker("m"))
    # the short name for a results table: mode, depth, student
    assert ReasonRanker(str(tiny_model), samples=4).display_name(10) == f"ReasonRank explain, top 10 ({tiny_model.name})"
    assert ReasonRanker(adapter="org/student", mode="direct").display_name() == "ReasonRank direct (org/student)"


def test_grid_search_tunes_samples_and_label_temperature_on_one_loaded_model(tiny_model):
    inp = pairs(3, 3)
    topics = inp[["qid", "query"]].drop_duplicates()
    qrels = pd.DataFrame({"qid": ["q0", "q1", "q2"], "docno": ["d0-2", "d1-0", "d2-1"], "label": [2, 2, 1]})
    ranker = ReasonRanker(str(tiny_model), **RANKING)
    student = ranker.student
    pipeline = pt.Transformer.from_df(inp) >> ranker
    grid = {ranker: {"samples": [1, 2], "label_temperature": [0.5, 2.0]}}
    scan = pt.GridScan(pipeline, grid, topics, qrels, ["ndcg"], verbose=False)
    assert len(scan) == 4 and scan["ndcg"].notna().all()
    tuned, best, setting = pt.GridSearch(pipeline, grid, topics, qrels, "ndcg", return_type="both")
    chosen = {name: value for _, name, value in setting}
    assert best == scan["ndcg"].max() and (ranker.samples, ranker.label_temperature) == (chosen["samples"],
                                                                                           chosen["label_temperature"])
    assert ranker.student is student and student.loaded  # one model, loaded once, for every setting
    same_frames(tuned(topics), (pt.Transformer.from_df(inp) >> ReasonRanker(str(tiny_model), **RANKING, **chosen))(
        topics))
    with pytest.raises(InputError, match="^samples must be a positive integer, got 0"):
        pt.GridSearch(pipeline, {ranker: {"samples": [0]}}, topics, qrels, "ndcg")


def test_a_setting_changed_on_a_loaded_ranker_takes_effect(tiny_model):
    inp = pairs(2, 3)
    ranker = ReasonRanker(str(tiny_model), mode="direct", **RANKING)
    before = ranker(inp)
    ranker.set_parameter("label_temperature", 3.0)  # read when the model was loaded: read again
    after = ranker(inp)
    same_frames(after, ReasonRanker(str(tiny_model), mode="direct", label_temperature=3.0, **RANKING)(inp))
    assert not after.score.equals(before.score)


# --- the judgement store is a PyTerrier artifact ---


def declared_entry_points() -> list[EntryPoint]:
    """The pyterrier.artifact entry points setup.cfg declares (what installing the package registers)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line for line in config["options.entry_points"]["pyterrier.artifact"].splitlines() if line.strip()]
    return [EntryPoint(*map(str.strip, line.split("=", 1)), group="pyterrier.artifact") for line in lines]


@pytest.fixture()
def registered(monkeypatch):
    """PyTerrier's artifact machinery sees the entry points setup.cfg declares, whether or not this checkout
    is the one installed (an editable install registers those of the checkout it was made from)."""
    declared = {point.name: point for point in declared_entry_points()}
    original = pt.utils.entry_points

    def with_declared(group):
        found = [point for point in original(group) if group != "pyterrier.artifact" or point.name not in declared]
        return tuple(found + (list(declared.values()) if group == "pyterrier.artifact" else []))

    monkeypatch.setattr(pt.utils, "entry_points", with_declared)
    return declared


def test_the_store_is_registered_as_a_pyterrier_artifact():
    [point] = declared_entry_points()
    assert point.name == f"{JudgementStore.ARTIFACT_TYPE}.{JudgementStore.ARTIFACT_FORMAT}" == "judgement_store.sqlite3"
    assert point.load() is JudgementStore
    installed = [p for p in entry_points(group="pyterrier.artifact") if p.value.startswith("pyterrier_reasonrank")]
    assert installed in ([], [point])  # an install made before the store was an artifact has none


@pytest.fixture()
def filled(tiny_model, tmp_path) -> JudgementStore:
    store = JudgementStore(tmp_path / "judgements")
    ReasonRanker(str(tiny_model), store=store, **RANKING)(pairs(2, 3))
    return store


def test_pt_artifact_load_opens_a_store(filled, registered):
    assert filled.file == filled.path / DATABASE and json.loads((filled.path / "pt_meta.json").read_text()) == {
            "type": "judgement_store", "format": "sqlite3", "package_hint": "pyterrier-reasonrank"}
    assert pt.inspect.artifact_type_format(filled) == ("judgement_store", "sqlite3")
    loaded = pt.Artifact.load(str(filled.path))
    assert isinstance(loaded, JudgementStore) and loaded.file == filled.file
    pd.testing.assert_frame_equal(loaded.frame(), filled.frame())
    assert JudgementStore.load(str(filled.path), read_only=True).read_only


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """A folder served over HTTP on loopback, standing in for the Hugging Face Hub; PyTerrier's artifact
    cache in tmp_path."""
    monkeypatch.setenv("PYTERRIER_HOME", str(tmp_path / "pyterrier"))
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_store_packages_travels_and_loads_again(tiny_model, filled, served, registered, capsys):
    folder, url = served
    writer = sqlite3.connect(filled.file)  # another process's write, not yet in the file itself
    writer.execute("UPDATE judgements SET explanation = 'revised' WHERE rowid = 1")
    writer.commit()
    package = filled.build_package(str(folder / "artifact.tar.lz4"))  # what to_hf uploads
    assert sorted(os.listdir(folder)) == ["artifact.tar.lz4", "artifact.tar.lz4.json"]
    assert "adding judgements.sqlite" in capsys.readouterr().out
    fetched = JudgementStore.from_url(f"{url}/artifact.tar.lz4")  # what from_hf does, from the Hub's URL
    assert isinstance(fetched, JudgementStore) and Path(package).is_file()
    pd.testing.assert_frame_equal(fetched.frame(), filled.frame())
    assert "revised" in fetched.frame().explanation.tolist()  # a consistent snapshot, the log's writes too
    again = pt.Artifact.from_url(f"{url}/artifact.tar.lz4")  # from the cache, through the entry point
    assert isinstance(again, JudgementStore) and again.path == fetched.path
    ranker = ReasonRanker(str(tiny_model), store=fetched, **RANKING)
    with counting_judgements(ranker) as calls:
        ranker(pairs(2, 3))
    assert sum(calls) == 0  # judged on one machine, served on another


def test_a_store_of_the_earlier_layout_opens_and_is_merged_into_a_directory_to_share(tmp_path):
    old = filled_store(tmp_path / "judgements.sqlite", 10)  # the SQLite file alone
    store = JudgementStore(old)
    assert len(store) == 10 and store.file == store.path == old
    with pytest.raises(StoreError) as raised:
        store.build_package()
    assert str(raised.value) == (f"judgement store {old} is one SQLite file (the earlier layout), not a store "
                                 f"directory: to share it, merge it into one: JudgementStore(<new directory>)"
                                 f".merge({str(old)!r})")
    converted = JudgementStore(tmp_path / "judgements")
    assert converted.merge(old) == 10 and converted.build_package().endswith("judgements.tar.lz4")


@pytest.mark.parametrize("kind", [kind for kind, (_, _, found) in BAD_STORES.items() if kind != "directory"
                                  and found == "open"])
def test_a_store_directory_checks_its_sqlite_file_as_a_single_file_is_checked(tmp_path, kind):
    make, message, _ = BAD_STORES[kind]
    folder = tmp_path / "judgements"
    JudgementStore(folder)._close()
    (folder / DATABASE).unlink()
    path = make(folder / DATABASE)
    with pytest.raises(StoreError) as raised:
        JudgementStore(folder)
    assert str(raised.value) == message.format(path=path)


@pytest.mark.parametrize("content, message", [
    ({"type": "sparse_index", "format": "pisa"},
     "{path} is not a judgement store: its pt_meta.json says it is a sparse_index.pisa artifact, not a "
     "judgement_store.sqlite3"),
    ("{not json", "{path}/pt_meta.json is not a judgement store's metadata: Expecting property name"),
    (None, "{path} is a directory, not a judgement store: it has no pt_meta.json, and other files (a.txt, b.txt, "
           "c.txt, ...)"),
])
def test_a_directory_that_is_no_store_is_refused_by_name(tmp_path, content, message):
    path = tmp_path / "index"
    path.mkdir()
    if content is None:
        for name in "abcd":
            (path / f"{name}.txt").write_text(name)
    else:
        (path / "pt_meta.json").write_text(content if isinstance(content, str) else json.dumps(content))
    before = sorted(os.listdir(path))
    with pytest.raises(StoreError) as raised:
        JudgementStore(path)
    assert str(raised.value).startswith(message.format(path=path)) and sorted(os.listdir(path)) == before


# --- across processes and machines ---


def topics_and_pipeline(n_queries: int, ranker: ReasonRanker) -> tuple[pd.DataFrame, pt.Transformer]:
    """Topics, and a pipeline that retrieves their made-up documents (``pairs``) and re-ranks them."""
    inp = pairs(n_queries, 3)
    return inp[["qid", "query"]].drop_duplicates(), pt.Transformer.from_df(inp) >> ranker


def test_joblib_parallel_gives_the_serial_frame_and_one_store(tiny_model, tmp_path):
    store = JudgementStore(tmp_path / "judgements")
    topics, serial = topics_and_pipeline(4, ReasonRanker(str(tiny_model), **RANKING))
    ranker = ReasonRanker(str(tiny_model), store=store, **RANKING)
    _, pipeline = topics_and_pipeline(4, ranker)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".parallel.. is experimental")
        out = pipeline.parallel(2)(topics)
    same_frames(out, serial(topics))  # (PyTerrier's pool keeps each part's index)
    assert len(store) == 12  # two processes, one store
    with counting_judgements(ranker) as calls:
        pipeline(topics)
    assert sum(calls) == 0


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of several processes (not local_mode), with two GPUs as far as Ray knows:
    it sets each worker's CUDA_VISIBLE_DEVICES (this machine has no GPU, so the workers judge on
    their CPU core). Started once for the module: it takes seconds."""
    import ray

    started = time.monotonic()
    # "local": a cluster of its own, not one that `ray start` left running on this machine
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    print(f"Ray started in {time.monotonic() - started:.1f} s")
    yield ray
    ray.shutdown()


def test_ray_workers_with_a_gpu_each_give_the_serial_frame_and_merge_their_stores(ray_cluster, tiny_model, tmp_path):
    store = JudgementStore(tmp_path / "judgements")
    topics, serial = topics_and_pipeline(6, ReasonRanker(str(tiny_model), **RANKING))
    expected = serial(topics)
    # Two queries judged before, their stored explanations marked: the workers serve them from their copies.
    ReasonRanker(str(tiny_model), store=store, **RANKING)(pairs(6, 3).head(6))
    with sqlite3.connect(store.file) as connection:
        connection.execute("UPDATE judgements SET explanation = 'from the store'")
    connection.close()
    _, pipeline = topics_and_pipeline(6, ReasonRanker(str(tiny_model), store=store, **RANKING))
    parallel = RayParallel(pipeline, workers=2, gpus_per_worker=1, per_worker_stores=True)
    assert repr(parallel) == f"RayParallel({pipeline!r}, gpus_per_worker=1.0, per_worker_stores=True)"
    try:
        workers = parallel.worker_info()
        assert len({w["pid"] for w in workers} | {os.getpid()}) == 3  # two processes besides this one
        assert sorted(w["gpus"] for w in workers) == [[0], [1]] and [w["threads"] for w in workers] == [1, 1]
        out = parallel(topics)
    finally:
        parallel.close()
    served = out.qid.isin(["q0", "q1"])
    assert (out.explanation[served] == "from the store").all() and len(store) == 18  # merged from the workers
    pd.testing.assert_frame_equal(out.drop(columns="explanation"), expected.drop(columns="explanation"))
    assert out.explanation[~served].tolist() == expected.explanation[~served].tolist()
    ranker = ReasonRanker(str(tiny_model), store=store, **RANKING)
    with counting_judgements(ranker) as calls:
        again = (pt.Transformer.from_df(pairs(6, 3)) >> ranker)(topics)
    assert sum(calls) == 0
    pd.testing.assert_frame_equal(again, out)


def test_pyterriers_ray_pool_gives_the_serial_frame_and_one_store(ray_cluster, tiny_model, tmp_path):
    store = JudgementStore(tmp_path / "judgements")
    topics, serial = topics_and_pipeline(4, ReasonRanker(str(tiny_model), **RANKING))
    _, pipeline = topics_and_pipeline(4, ReasonRanker(str(tiny_model), store=store, **RANKING))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".parallel.. is experimental")
        out = pipeline.parallel(2, backend="ray")(topics)
    same_frames(out, serial(topics))
    assert len(store) == 12
