"""The judgement store: a second run reads what the first judged; any change of provenance is a miss;
partial hits judge only the rest; a killed run keeps what it committed; two writers lose nothing;
and the store is data: a DataFrame, Parquet, merges."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from pyterrier_reasonrank import JudgementStore, ReasonRanker
from pyterrier_reasonrank.identity import provenance_id
from pyterrier_reasonrank.store import DATABASE
from pyterrier_reasonrank.testing import counting_judgements
from pyterrier_reasonrank.versions import judging_versions
from test_ranker import pairs

JUDGED = ["explanation", "label", "score", "forced", "tokens", "samples"]


def judged_with_count(ranker: ReasonRanker, inp: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The ranker's output, and how many prompts its model judged (explanations drawn count each)."""
    with counting_judgements(ranker) as counted:
        return ranker(inp), sum(counted)


@pytest.fixture()
def store(tmp_path):
    return JudgementStore(tmp_path / "judgements")


def test_a_second_run_reads_what_the_first_judged(tiny_model, store):
    inp = pairs(2, 3)
    first, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, max_new_tokens=6), inp)
    assert judged == 6 and len(store) == 6
    again, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, max_new_tokens=6), inp)
    assert judged == 0
    pd.testing.assert_frame_equal(again[JUDGED + ["docno"]], first[JUDGED + ["docno"]])


def perturbed_copy(model: Path, folder: Path) -> Path:
    """The model with one weight changed a little: other weights, the same name and config."""
    shutil.copytree(model, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(n for n in weights if n.endswith("lm_head.weight"))
    weights[name] = weights[name] + 1e-3 * torch.randn_like(weights[name])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def lora_adapter(model: Path, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=4, target_modules=["q_proj"]))
    peft_model.save_pretrained(folder)
    return folder


def test_every_change_of_provenance_is_a_miss(tiny_model, store, tmp_path):
    inp = pairs(2, 3)
    base = dict(store=store, max_new_tokens=6)
    judged_with_count(ReasonRanker(str(tiny_model), **base), inp)
    changed = {
        "mode": (ReasonRanker(str(tiny_model), mode="direct", **base), 6),
        "truncation": (ReasonRanker(str(tiny_model), max_doc_tokens=8, **base), 6),
        "budget": (ReasonRanker(str(tiny_model), store=store, max_new_tokens=5), 6),
        "samples": (ReasonRanker(str(tiny_model), samples=2, **base), 12),  # two explanations per pair
        "temperature": (ReasonRanker(str(tiny_model), samples=2, temperature=1.5, **base), 12),
        "seed": (ReasonRanker(str(tiny_model), samples=2, seed=7, **base), 12),
        "dtype": (ReasonRanker(str(tiny_model), dtype="bfloat16", **base), 6),
        "weights": (ReasonRanker(str(perturbed_copy(tiny_model, tmp_path / "other")), **base), 6),
        "adapter": (ReasonRanker(str(tiny_model), adapter=str(lora_adapter(tiny_model, tmp_path / "lora")), **base),
                    6),
    }
    for name, (ranker, expected) in changed.items():
        assert judged_with_count(ranker, inp)[1] == expected, name
        assert judged_with_count(ranker, inp)[1] == 0, name  # and each is then stored under its own provenance
    # the text itself: one query's words, one document's words
    other_query = inp.assign(query=np.where(inp.qid == "q0", "another query about tides", inp["query"]))
    assert judged_with_count(ReasonRanker(str(tiny_model), **base), other_query)[1] == 3
    other_document = inp.assign(text=np.where(inp.docno == "d1-2", "another document", inp.text))
    assert judged_with_count(ReasonRanker(str(tiny_model), **base), other_document)[1] == 1
    # what is applied after judging is not part of the key: a calibration reads the stored judgements
    tempered, judged = judged_with_count(ReasonRanker(str(tiny_model), label_temperature=2.0, **base), inp)
    assert judged == 0
    # nor the seed of a greedy explanation, which draws nothing
    assert judged_with_count(ReasonRanker(str(tiny_model), seed=7, **base), inp)[1] == 0
    kept = store.provenances()
    assert len(kept) == 1 + len(changed)
    # the backend is in the key of sampled and half-precision judgements only
    sampled = kept["samples"].fillna(1) > 1
    assert (kept["backend"].notna() == (sampled | (kept["dtype"] != "torch.float32"))).tolist() == [True] * len(kept)
    assert sampled.sum() == 3 and (kept["dtype"] == "torch.bfloat16").sum() == 1


def test_any_text_is_stored_and_read_back(tiny_model, store):
    # A lone surrogate (which SQLite cannot store as UTF-8) and NULs, in queries and documents.
    inp = pd.DataFrame({"qid": ["q0", "q0", "q1", "q1"], "docno": ["d0", "d1", "d2", "d3"],
                        "query": ["tides \udc80 moon", "tides \udc80 moon", "a\x00b", "a\x00b"],
                        "text": ["doc \ud800", "plain", "b", "\x00b"]}, dtype=object)  # pandas' strings refuse them
    first, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, max_new_tokens=4), inp)
    assert judged == 4 and len(store) == 4  # ("a\0b", "b") and ("a", "\0b") run together no more
    again, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, max_new_tokens=4), inp)
    assert judged == 0 and list(again.score) == list(first.score)
    assert set(store.frame()["query"]) == {"tides \ufffd moon", "a\x00b"}  # the readable copy; keys hash the text


@pytest.mark.parametrize("samples", [1, 3])
def test_partial_hits_judge_only_the_rest_and_change_nothing(tiny_model, store, samples):
    # With sampled explanations too: a pair draws the same ones whatever it is batched with.
    inp = pairs(3, 4)
    settings = dict(max_new_tokens=6, samples=samples, temperature=1.0)
    without = ReasonRanker(str(tiny_model), **settings)(inp)
    judged_with_count(ReasonRanker(str(tiny_model), store=store, **settings), inp[inp.qid != "q1"])
    out, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, **settings), inp)
    assert judged == 4 * samples  # q1's documents only
    assert list(out.docno) == list(without.docno) and list(out.explanation) == list(without.explanation)
    assert out.score.to_numpy() == pytest.approx(without.score.to_numpy(), abs=1e-5)
    assert list(out.label) == list(without.label) and list(out.tokens) == list(without.tokens)


RUN = """
import sys
import pandas as pd
from pyterrier_reasonrank import ReasonRanker, judging
judging.CHUNK_PAIRS = 4
inp = pd.read_json(sys.argv[3], lines=True, dtype={{"qid": str, "docno": str}})
ranker = ReasonRanker(sys.argv[1], store=sys.argv[2], batch_size=1, max_new_tokens={tokens})
ranker(inp)
"""


def run_script(tmp_path: Path, model: Path, store: Path, inp: pd.DataFrame, name: str, tokens: int) -> subprocess.Popen:
    (tmp_path / f"{name}.jsonl").write_text(inp.to_json(orient="records", lines=True))
    (tmp_path / "run.py").write_text(textwrap.dedent(RUN.format(tokens=tokens)))
    return subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(model), str(store),
                             str(tmp_path / f"{name}.jsonl")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # two writers: a core each, not two


def stored(path: Path) -> int:
    """The judgements in the store (directory) at ``path``, read as another tool would."""
    try:
        with sqlite3.connect(f"{(path / DATABASE).as_uri()}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_run_killed_mid_way_keeps_what_it_committed(tiny_model, tmp_path):
    inp = pairs(10, 4)
    path = tmp_path / "judgements"
    process = run_script(tmp_path, tiny_model, path, inp, "all", tokens=48)
    deadline = time.monotonic() + 240
    while stored(path) < 8:  # two chunks of four committed
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = stored(path)
    assert 8 <= kept < 40
    with sqlite3.connect(path / DATABASE) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = JudgementStore(path)
    _, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, batch_size=1, max_new_tokens=48), inp)
    assert judged == 40 - kept and len(store) == 40


def test_two_writers_at_once_lose_nothing(tiny_model, tmp_path):
    inp = pairs(8, 3)
    path = tmp_path / "judgements"
    # Neither finds the store: they create it at once.
    halves = [inp[inp.qid.isin([f"q{q}" for q in range(0, 5)])], inp[inp.qid.isin([f"q{q}" for q in range(3, 8)])]]
    writers = [run_script(tmp_path, tiny_model, path, half, f"half{k}", tokens=16) for k, half in enumerate(halves)]
    for writer in writers:
        assert writer.wait(300) == 0, writer.stderr.read().decode()[-2000:]
    assert stored(path) == 24  # the union: the queries both judged are stored once
    _, judged = judged_with_count(ReasonRanker(str(tiny_model), store=JudgementStore(path), max_new_tokens=16), inp)
    assert judged == 0


def test_the_store_is_data_to_read_export_and_merge(tiny_model, tmp_path):
    inp = pairs(2, 3)
    first, second = JudgementStore(tmp_path / "a"), JudgementStore(tmp_path / "b")
    out = ReasonRanker(str(tiny_model), store=first, max_new_tokens=6)(inp[inp.qid == "q0"])
    ReasonRanker(str(tiny_model), store=second, max_new_tokens=6)(inp[inp.qid == "q1"])
    frame = first.frame()
    assert len(frame) == 3 and {"explanation", "p0", "p1", "p2", "forced", "tokens", "samples", "qid", "docno",
                                "query", "mode", "model", "provenance"} <= set(frame.columns)
    by_docno = frame.set_index("docno").loc[out.docno]
    assert list(by_docno.explanation) == list(out.explanation) and (by_docno["mode"] == "explain").all()
    assert by_docno[["p0", "p1", "p2"]].to_numpy() == pytest.approx(np.stack(out.probabilities.to_numpy()))
    # export, import, merge
    first.to_parquet(tmp_path / "a.parquet")
    copy = JudgementStore(tmp_path / "copy")
    assert copy.import_parquet(tmp_path / "a.parquet") == 3 and copy.import_parquet(tmp_path / "a.parquet") == 0
    pd.testing.assert_frame_equal(copy.frame(), frame)
    assert copy.merge(second) == 3 and len(copy) == 6
    with pytest.raises(FileNotFoundError, match="no judgement store at"):
        copy.merge(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    _, judged = judged_with_count(ReasonRanker(str(tiny_model), store=copy, max_new_tokens=6), inp)
    assert judged == 0  # judged on two "machines", read as one


def test_each_judgement_records_the_library_versions_that_made_it(tiny_model, store):
    inp = pairs(2, 3)
    ReasonRanker(str(tiny_model), store=store, max_new_tokens=6)(inp)
    versions = judging_versions("transformers")
    assert set(versions) == {"pyterrier_reasonrank", "torch", "transformers", "peft"}
    assert store.frame()["library_versions"].tolist() == [versions] * 6
    # read back under the same versions: no warning
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        _, judged = judged_with_count(ReasonRanker(str(tiny_model), store=store, max_new_tokens=6), inp)
    assert judged == 0 and not [w for w in warned if "judgement store" in str(w.message)]


def test_judgements_read_under_other_versions_are_served_with_one_warning(tiny_model, store, tmp_path):
    inp = pairs(2, 3)
    first = ReasonRanker(str(tiny_model), store=store, max_new_tokens=6)(inp)
    older = {**judging_versions("transformers"), "transformers": "4.56.0", "vllm": "0.11.0"}
    exported = store.to_parquet(tmp_path / "judgements.parquet")
    frame = pd.read_parquet(exported)  # as if judged with an older transformers (and vLLM installed)
    frame = frame.assign(versions=provenance_id(older), versions_json=json.dumps(older, sort_keys=True))
    frame.to_parquet(exported, index=False)
    shared = JudgementStore(tmp_path / "shared")
    assert shared.import_parquet(exported) == 6
    ranker = ReasonRanker(str(tiny_model), store=shared, max_new_tokens=6)
    with pytest.warns(UserWarning) as warned:
        again, judged = judged_with_count(ranker, inp)
        judged_with_count(ranker, inp)  # once per store and set of versions
    assert judged == 0  # versions are not part of the key: served as stored
    pd.testing.assert_frame_equal(again[JUDGED + ["docno"]], first[JUDGED + ["docno"]])
    now = judging_versions("transformers")["transformers"]
    messages = [str(w.message) for w in warned if "library versions" in str(w.message)]
    assert messages == [  # vLLM did not make them and does not now: not compared
        f"judgement store {shared.file}: library versions differ from those recorded: transformers 4.56.0 (now "
        f"{now}), for judgements it serves; they are served as stored (versions are not part of a judgement's key: "
        f"judge again into a new store to compare)"]


def test_vllm_options_that_change_the_numbers_are_part_of_the_key():
    from pyterrier_reasonrank.identity import numeric_engine_options

    options = {"enable_prefix_caching": False, "gpu_memory_utilization": 0.5, "quantization": "fp8",
               "kv_cache_dtype": "fp8", "enforce_eager": True}
    assert numeric_engine_options(options) == {"kv_cache_dtype": "fp8", "quantization": "fp8"}
    assert numeric_engine_options(None) == {}
