"""The ReasonRanker contract and its scoring, on tiny local models."""
import math

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from pyterrier_reasonrank import InputError, ModelNotFoundError, ReasonRanker, Student
from pyterrier_reasonrank.loading import load_causal_lm

OUTPUT = ["explanation", "label", "score", "probabilities", "forced", "tokens", "samples", "rank"]
KEPT = ["first_stage_score", "first_stage_rank"]  # the input's score and rank, kept for reports
LABEL_LOGITS = (0.5, 1.25, 2.0)  # p(2) > p(1) > p(0)
# ":" ends both "Explanation:" (the end of the prompt) and the marker "Relevance:".
EXPLAINS = {":": "Ġthe", "Ġthe": "Ċ", "Ċ": "Relevance", "Relevance": ":"}


def expected_score(logits):
    p = np.exp(np.asarray(logits, dtype=np.float64))
    p /= p.sum()
    return float(p @ np.arange(3))


def pairs(n_queries=3, docs_per_query=4):
    rows = [{"qid": f"q{q}", "query": f"query number {q} about tides", "docno": f"d{q}-{d}",
             "text": f"document {d} of query {q}: the moon pulls the ocean " * (d + 1), "score": float(-d), "rank": d}
            for q in range(n_queries) for d in range(docs_per_query)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def explaining(script_model):
    return script_model(EXPLAINS, LABEL_LOGITS)


def test_output_contract(tiny_model):
    inp = pairs().assign(extra=range(12))
    out = ReasonRanker(str(tiny_model), batch_size=5, max_new_tokens=8)(inp)
    assert list(out.columns) == ["qid", "query", "docno", "text", "extra", *KEPT, *OUTPUT]
    assert dict(zip(out.docno, out.first_stage_rank)) == dict(zip(inp.docno, inp["rank"]))
    assert len(out) == len(inp) and set(zip(out.qid, out.docno)) == set(zip(inp.qid, inp.docno))
    assert out.explanation.map(type).eq(str).all()
    assert out.label.dtype == np.int64 and out.score.dtype == np.float64 and out.forced.dtype == bool
    assert out.score.between(0, 2).all() and np.isfinite(out.score).all()
    assert out.label.isin([0, 1, 2]).all()
    # sorted by qid, then rank; ranks 0..n-1 per query, following the scores
    assert list(out.qid) == sorted(out.qid)
    for _, group in out.groupby("qid"):
        assert list(group["rank"]) == list(range(len(group)))
        assert group.score.is_monotonic_decreasing
    # the extra column travelled with its row
    merged = out.merge(inp[["docno", "extra"]], on="docno", suffixes=("", "_in"))
    assert (merged.extra == merged.extra_in).all()


def test_scores_are_the_expected_label(explaining):
    out = ReasonRanker(str(explaining), max_new_tokens=16)(pairs())
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 12, abs=1e-6)
    assert (out.label == 2).all() and not out.forced.any()
    assert (out.explanation == "the").all()


def test_ties_keep_the_input_order(explaining):
    inp = pairs().sample(frac=1.0, random_state=3)  # shuffled rows, all scores tie
    out = ReasonRanker(str(explaining))(inp)
    for qid, group in out.groupby("qid"):
        assert list(group.docno) == list(inp[inp.qid == qid].docno)


def test_direct_mode_reads_the_label_without_generating(explaining):
    out = ReasonRanker(str(explaining), mode="direct")(pairs())
    assert (out.explanation == "").all() and not out.forced.any()
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 12, abs=1e-6)


def test_explain_and_direct_differ_on_a_model_that_reads_the_document(tiny_model):
    explain = ReasonRanker(str(tiny_model), max_new_tokens=8)(pairs())
    direct = ReasonRanker(str(tiny_model), mode="direct")(pairs())
    assert not np.allclose(explain.sort_values("docno").score, direct.sort_values("docno").score)
    assert (explain.explanation != "").all()


@pytest.mark.parametrize("budget", [1, 5])
def test_label_forced_when_the_budget_runs_out(script_model, budget):
    rambler = script_model({":": "Ġthe", "Ġthe": "Ġthe"}, LABEL_LOGITS)
    out = ReasonRanker(str(rambler), max_new_tokens=budget)(pairs(1, 2))
    assert out.forced.all()
    assert (out.explanation == " ".join(["the"] * budget)).all()
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 2, abs=1e-6)


def test_label_forced_when_the_model_ends_its_turn(script_model):
    quitter = script_model({":": "Ġthe", "Ġthe": "<|im_end|>"}, (2.0, 0.0, -1.0))
    out = ReasonRanker(str(quitter))(pairs(1, 3))
    assert out.forced.all() and (out.explanation == "the").all() and (out.label == 0).all()
    assert out.score.tolist() == pytest.approx([expected_score((2.0, 0.0, -1.0))] * 3, abs=1e-6)


def test_a_started_marker_is_completed_not_repeated(script_model):
    # the budget ends right after "Relevance": only ":" is appended, and the explanation stays "the"
    stutter = script_model({":": "Ġthe", "Ġthe": "Relevance", "Relevance": "Ġthe"}, LABEL_LOGITS)
    out = ReasonRanker(str(stutter), max_new_tokens=2)(pairs(1, 1))
    assert out.forced.all() and (out.explanation == "the").all()


def test_batch_size_does_not_change_the_result(tiny_model):
    inp = pairs(3, 5)
    one = ReasonRanker(str(tiny_model), batch_size=1, max_new_tokens=12)(inp)
    many = ReasonRanker(str(tiny_model), batch_size=7, max_new_tokens=12)(inp)
    assert list(one.docno) == list(many.docno)
    assert one.score.to_numpy() == pytest.approx(many.score.to_numpy(), abs=1e-5)
    assert list(one.explanation) == list(many.explanation)


def test_chunks_split_across_queries_do_not_change_the_result(tiny_model, monkeypatch):
    from pyterrier_reasonrank import judging

    # interleaved queries, so that a chunk holds parts of several queries
    inp = pairs(3, 5).sample(frac=1, random_state=0).reset_index(drop=True)
    whole = ReasonRanker(str(tiny_model), batch_size=2, max_new_tokens=6)(inp)
    monkeypatch.setattr(judging, "CHUNK_PAIRS", 4)
    chunked = ReasonRanker(str(tiny_model), batch_size=1, max_new_tokens=6, verbose=True)(inp)
    assert list(chunked.docno) == list(whole.docno)
    assert chunked.score.to_numpy() == pytest.approx(whole.score.to_numpy(), abs=1e-5)
    assert list(chunked.explanation) == list(whole.explanation)


def test_out_of_memory_halves_the_batch_and_says_so_once(tiny_model):
    inp = pairs(3, 4)
    expected = ReasonRanker(str(tiny_model), batch_size=8, max_new_tokens=4)(inp)
    ranker = ReasonRanker(str(tiny_model), batch_size=8, max_new_tokens=4).load()
    backend = ranker.student.engine
    sizes = []

    def device_memory(module, args, kwargs):  # the accelerator holds at most 2 pairs at once
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = backend.model.register_forward_pre_hook(device_memory, with_kwargs=True)
    try:
        with pytest.warns(ResourceWarning) as caught:
            out = ranker(inp)
        again = ranker(inp)  # later calls start from the size that fit
    finally:
        hook.remove()
        backend.most_rows = None
    caught = [w for w in caught if w.category is ResourceWarning]
    assert len(caught) == 1 and "out of memory with 8 pairs" in str(caught[0].message) \
        and "at most 2 pairs" in str(caught[0].message)
    assert [size for size in sizes if size > 2] == [8, 4]  # two halvings, then none in the later call
    for result in (out, again):
        assert list(result.docno) == list(expected.docno)
        assert result.score.to_numpy() == pytest.approx(expected.score.to_numpy(), abs=1e-5)


def test_empty_input_gives_an_empty_frame_with_the_output_columns():
    ranker = ReasonRanker("/no/such/model")  # never loaded for an empty frame
    out = ranker(pd.DataFrame(columns=["qid", "query", "docno", "text"]))
    assert list(out.columns) == ["qid", "query", "docno", "text", *OUTPUT] and len(out) == 0


@pytest.mark.parametrize("column", ["query", "text", "docno", "qid"])
def test_missing_column_is_named(column):
    with pytest.raises(pt.validate.InputValidationError, match=column):
        ReasonRanker("/no/such/model")(pairs().drop(columns=[column]))


def test_text_field_is_configurable(tiny_model):
    inp = pairs(1, 2).rename(columns={"text": "body"})
    out = ReasonRanker(str(tiny_model), text_field="body", mode="direct")(inp)
    assert "body" in out.columns and len(out) == 2


def test_missing_document_text_is_judged_as_empty_with_a_warning(tiny_model):
    inp = pairs(1, 4)
    inp["text"] = inp["text"].astype(object)
    inp.loc[0, "text"], inp.loc[1, "text"], inp.loc[2, "text"] = None, float("nan"), "  "
    with pytest.warns(UserWarning, match="3 of 4 documents have no text"):
        out = ReasonRanker(str(tiny_model), mode="direct")(inp)
    empty = out[out.docno.isin(inp.docno[:3])].score
    assert len(out) == 4 and np.isfinite(out.score).all()
    assert empty.to_numpy() == pytest.approx([empty.iloc[0]] * 3)  # all three judged as the same empty text


def test_missing_query_is_an_error_naming_the_qid(tiny_model):
    inp = pairs(2, 2)
    inp.loc[inp.qid == "q1", "query"] = None
    with pytest.raises(ValueError, match=r"qid\(s\) \['q1'\]"):
        ReasonRanker(str(tiny_model))(inp)


def test_long_document_is_truncated_by_tokens(tiny_model):
    ranker = ReasonRanker(str(tiny_model), max_doc_tokens=32, max_new_tokens=4).load()
    encoder = ranker.encoder
    short = encoder.encode("tides", "x")
    long = encoder.encode("tides", "the moon pulls the ocean " * 5000)
    assert len(long) == len(short) - len(encoder.encode_text("x", 32)) + 32
    assert ranker.student.engine.tokenizer.decode(long).endswith("<|im_end|>\n<|im_start|>assistant\nExplanation:")
    out = ranker(pd.DataFrame([{"qid": "1", "query": "tides", "docno": "long",
                                "text": "the moon pulls the ocean " * 5000}]))
    assert len(out) == 1 and math.isfinite(out.score.iloc[0])


def test_lora_adapter_scores_like_the_merged_model(tiny_model, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(1)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "merged")

    inp = pairs(2, 3)
    with_adapter = ReasonRanker(adapter=str(tmp_path / "adapter"), max_new_tokens=8)(inp)
    with_merged = ReasonRanker(str(tmp_path / "merged"), max_new_tokens=8)(inp)
    without = ReasonRanker(str(tiny_model), max_new_tokens=8)(inp)
    assert with_adapter.score.to_numpy() == pytest.approx(with_merged.score.to_numpy(), abs=1e-5)
    assert list(with_adapter.explanation) == list(with_merged.explanation)
    assert not np.allclose(with_adapter.sort_values("docno").score, without.sort_values("docno").score)


def test_missing_model_is_one_clear_sentence():
    with pytest.raises(ModelNotFoundError, match=r"^Could not load the model: there is no directory '/no/such/model'"):
        ReasonRanker("/no/such/model")(pairs(1, 1))
    with pytest.raises(ModelNotFoundError, match="Could not load the adapter"):
        ReasonRanker(adapter="/no/such/adapter")(pairs(1, 1))


def test_nothing_is_loaded_by_construction_repr_or_inspection():
    ranker = ReasonRanker("/no/such/model", mode="direct")
    assert repr(ranker) == "ReasonRanker('/no/such/model', mode='direct')"
    assert pt.inspect.transformer_inputs(ranker) == [["qid", "docno", "query", "text"]]
    assert pt.inspect.transformer_outputs(ranker, ["qid", "query", "docno", "text", "score", "rank"]) == \
        ["qid", "query", "docno", "text", *KEPT, *OUTPUT]
    assert pt.schematic.transformer_schematic(ranker)["label"] == "ReasonRank direct"
    assert not ranker.student.loaded


def test_constructor_arguments_are_attributes():
    ranker = ReasonRanker("m", adapter="a", mode="direct", batch_size=3, max_new_tokens=7, max_query_tokens=9,
                          max_doc_tokens=11, text_field="body", device="cpu", dtype="float32", verbose=True)
    assert (ranker.model, ranker.adapter, ranker.mode, ranker.batch_size, ranker.max_new_tokens) == \
        ("m", "a", "direct", 3, 7)
    assert (ranker.max_query_tokens, ranker.max_doc_tokens, ranker.text_field, ranker.device, ranker.dtype,
            ranker.verbose, ranker.trust_remote_code) == (9, 11, "body", "cpu", "float32", True, False)
    attributes = {a.name: a.value for a in pt.inspect.transformer_attributes(ranker)}
    assert attributes["mode"] == "direct" and attributes["max_doc_tokens"] == 11


@pytest.mark.parametrize("kwargs, message", [({"mode": "listwise"}, "mode must be one of"),
                                             ({"batch_size": 0}, "batch_size must be a positive integer")])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReasonRanker("m", **kwargs)


def test_one_students_transformers_share_its_weights_and_two_students_load_twice(tiny_model, monkeypatch):
    from pyterrier_reasonrank.backends import hf

    loads = []
    monkeypatch.setattr(hf, "load_causal_lm", lambda *args, **kwargs: loads.append(args) or load_causal_lm(*args,
                                                                                                          **kwargs))
    student = Student(str(tiny_model))
    direct, explain = student.ranker(mode="direct"), ReasonRanker(student, max_new_tokens=4)
    generator = student.query_generator(max_new_tokens=4)
    assert not student.loaded and loads == []  # nothing loaded by construction
    inp = pairs(2, 3)
    (direct % 2 >> explain)(inp)
    generator(pd.DataFrame({"qid": ["1"], "query": ["tides"]}))
    assert len(loads) == 1 and direct.student is explain.student is generator.student is student
    assert direct.student.engine is explain.student.engine
    # Two students (or two one-line rankers) of the same model: two copies, nothing shared behind their back.
    ReasonRanker(str(tiny_model), mode="direct").load()
    Student(str(tiny_model)).load()
    assert len(loads) == 3


def test_a_student_owns_its_options(tiny_model):
    student = Student(str(tiny_model), dtype="float32")
    with pytest.raises(InputError, match=r"ReasonRanker: device, dtype are the student's options: give them to "
                                         r"Student\(\.\.\.\)"):
        ReasonRanker(student, dtype="bfloat16", device="cpu")
    ReasonRanker(student, dtype="float32")  # the student's own value is no conflict (pt.inspect rebuilds so)
    with pytest.raises(InputError, match=r"^device 'gpu' is not a torch device such as 'cpu', 'cuda' or 'cuda:1'$"):
        Student(str(tiny_model), device="gpu")  # at once, not when the model loads
    with pytest.raises(InputError, match=r"ReasonRanker: adapter is given a Student; give it as the model "
                                         r"\(ReasonRanker\(student, \.\.\.\), or student\.ranker\(\.\.\.\)\)"):
        ReasonRanker(adapter=student)
    with pytest.raises(InputError, match="backend must be one of"):
        Student(str(tiny_model), backend="onnx")
    with pytest.raises(InputError, match="engine_options are options of the vllm backend"):
        Student(str(tiny_model), engine_options={"enforce_eager": True})
    rebuilt = pt.inspect.transformer_apply_attributes(student.ranker(mode="direct"), mode="explain")
    assert rebuilt.student is student and rebuilt.mode == "explain"


TestInspection = pt.testing.transformer_test_class(lambda: ReasonRanker("/no/such/model"))


def test_cascade_of_direct_then_explain(tiny_model):
    inp = pairs(2, 6)
    cascade = ReasonRanker(str(tiny_model), mode="direct") % 3 >> ReasonRanker(str(tiny_model), max_new_tokens=4)
    out = cascade(inp)
    direct = ReasonRanker(str(tiny_model), mode="direct")(inp)
    assert list(out.columns) == ["qid", "query", "docno", "text", *KEPT, *OUTPUT]
    assert len(out) == 6 and (out.explanation != "").all()
    assert set(out.docno) == set(direct[direct["rank"] < 3].docno)  # the explain stage saw the direct top 3


@pytest.mark.parametrize("mode", ["explain", "direct"])
def test_prefix_reuse_gives_the_same_scores_with_less_prefill(tiny_model, mode):
    inp = pairs(3, 5)
    inp["query"] = inp["query"] + " and why the moon matters so much for the sea level at the coast"
    # No prompt cache: it would serve the second run's prompts whole (see test_test_time_compute.py).
    shared = Student(str(tiny_model), prompt_cache_tokens=0).ranker(mode=mode, batch_size=8, max_new_tokens=6).load()
    computed = []
    hook = shared.student.engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: computed.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        with_reuse = shared(inp)
        prefill_with = computed[0] + computed[1]  # the first batch: its prefixes, then its suffixes
        computed.clear()
        without = shared.student.ranker(mode=mode, batch_size=8, max_new_tokens=6, prefix_reuse=False)(inp)
        prefill_without = computed[0]
    finally:
        hook.remove()
    assert list(with_reuse.docno) == list(without.docno)
    assert with_reuse.score.to_numpy() == pytest.approx(without.score.to_numpy(), abs=1e-5)
    assert list(with_reuse.explanation) == list(without.explanation)
    assert prefill_with < 0.7 * prefill_without


def test_batches_keep_a_query_together_and_respect_the_token_budget():
    from pyterrier_reasonrank.backends.hf import batches

    prompts = [((1, 2, 3), (9,) * 5), ((4, 5), (9,) * 2), ((1, 2, 3), (9,) * 7), ((4, 5), (9,) * 9),
               ((1, 2, 3), (9,) * 1)]
    assert batches(prompts, batch_size=8, max_batch_tokens=None, budget=0) == [[2, 0, 4, 3, 1]]
    assert batches(prompts, batch_size=2, max_batch_tokens=None, budget=0) == [[2, 0], [4, 3], [1]]
    # rows x (longest prompt + budget) <= 30: the longest (3 + 7 + 4 = 14) goes in pairs
    assert batches(prompts, batch_size=8, max_batch_tokens=30, budget=4) == [[2, 0], [4, 3], [1]]
