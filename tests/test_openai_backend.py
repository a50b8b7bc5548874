"""ReasonRanker's OpenAI-compatible backend against a loopback server running the same tiny model:
the scores, explanations and forced labels agree with the local backend."""
import pandas as pd
import pytest

from pyterrier_reasonrank import ReasonRanker
from test_ranker import EXPLAINS, LABEL_LOGITS, expected_score, pairs
from vllm_server import CompletionsServer


def remote(path, server, **options):
    return ReasonRanker("served-name", backend="openai", base_url=server.base_url, tokenizer=str(path),
                        concurrency=4, **options)


@pytest.mark.parametrize("mode", ["explain", "direct"])
def test_remote_scores_match_local_scores(tiny_model, mode):
    inp = pairs(2, 4)
    local = ReasonRanker(str(tiny_model), mode=mode, max_new_tokens=8)(inp)
    with CompletionsServer(str(tiny_model), fail_first=2) as server:
        ranker = remote(tiny_model, server, mode=mode, max_new_tokens=8)
        served = ranker(inp)
    assert list(served.docno) == list(local.docno)
    assert served.score.to_numpy() == pytest.approx(local.score.to_numpy(), abs=1e-4)
    assert list(served.label) == list(local.label) and list(served.forced) == list(local.forced)
    assert list(served.explanation) == list(local.explanation)
    assert all(r["model"] == "served-name" for r in server.requests)
    # 2 retried after a 503; in explain mode, one asking whether the server writes labels (it does not), then
    # two per pair: the explanation, then its label
    assert len(server.requests) == 2 + (1 + 16 if mode == "explain" else 8)
    assert ranker.student.engine.label_in_request is (False if mode == "explain" else None)
    # the work as the server's replies report it; this server says nothing of a cache: all computed
    engine = ranker.student.engine
    answered = server.requests[2:]
    assert list(engine.requests) and all(cached is None for _, cached in engine.requests)
    assert sorted(prompt for prompt, _ in engine.requests) == sorted(len(r["prompt"]) for r in answered)
    assert engine.counts == {"computed": sum(len(r["prompt"]) for r in answered), "cached": 0,
                             "decoded": server.written}
    assert server.written >= len(inp)  # a label per pair at least


def test_a_server_that_refuses_the_steering_arguments_is_asked_for_labels_separately(tiny_model):
    """A server that refuses the question whether it steers (its ``vllm_xargs``: a label reader of another
    version, a proxy that filters fields) with a 400 is asked for labels separately, and the user is told why."""
    inp = pairs(1, 3)
    local = ReasonRanker(str(tiny_model), max_new_tokens=8)(inp)
    with CompletionsServer(str(tiny_model), refused_fields=frozenset({"vllm_xargs"})) as server:
        ranker = remote(tiny_model, server, max_new_tokens=8)
        with pytest.warns(RuntimeWarning, match="refused the label reader's arguments.*second request.*"
                                                "Unrecognized request argument supplied: vllm_xargs"):
            served = ranker(inp)
    assert ranker.student.engine.label_in_request is False
    assert len(server.requests) == 1 + 2 * len(inp) and "vllm_xargs" in server.requests[0]
    assert served.score.to_numpy() == pytest.approx(local.score.to_numpy(), abs=1e-4)
    assert list(served.explanation) == list(local.explanation)


def test_every_request_states_neutral_sampling(tiny_model):
    """vLLM fills what a request leaves out from the model's generation config (a repetition penalty, top-k...)."""
    with CompletionsServer(str(tiny_model)) as server:
        ranker = remote(tiny_model, server, max_new_tokens=4)
        ranker(pairs(1, 2))
        ranker.student.engine.sample([[5, 6, 7]], num_samples=2, temperature=0.0, max_new_tokens=2)
    assert len(server.requests) == 1 + 2 * 2 + 1
    for request in server.requests:
        assert (request["top_p"], request["top_k"], request["min_p"], request["repetition_penalty"],
                request["frequency_penalty"], request["presence_penalty"]) == (1.0, 0, 0.0, 1.0, 0.0, 0.0)
        assert request["return_tokens_as_token_ids"] is True  # beside the request's own extra fields


def test_a_marker_the_model_writes_is_not_forced(script_model):
    path = script_model(EXPLAINS, LABEL_LOGITS)
    with CompletionsServer(str(path)) as server:
        out = remote(path, server, max_new_tokens=16)(pairs(1, 3))
    assert not out.forced.any() and (out.explanation == "the").all()
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 3, abs=1e-6)


def test_empty_input_needs_no_server():
    ranker = ReasonRanker("m", backend="openai", base_url="http://127.0.0.1:9/v1")
    assert len(ranker(pd.DataFrame(columns=["qid", "query", "docno", "text"]))) == 0
    assert repr(ranker) == "ReasonRanker('m', backend='openai', base_url='http://127.0.0.1:9/v1')"


@pytest.mark.parametrize("backend", ["transformers", "openai"])
def test_a_loaded_ranker_pickles_and_loads_again_where_it_lands(tiny_model, backend):
    """Process-parallel tools pickle transformers; a loaded ranker (an endpoint's client holds locks)
    travels without its model or client and makes them again on first use."""
    import pickle

    inp = pairs(2, 3)
    with CompletionsServer(str(tiny_model)) as server:
        ranker = remote(tiny_model, server, mode="direct") if backend == "openai" \
            else ReasonRanker(str(tiny_model), mode="direct")
        first = ranker(inp)
        copy = pickle.loads(pickle.dumps(ranker))
        assert not copy.student.loaded and repr(copy) == repr(ranker)
        again = copy(inp)
    assert list(again.docno) == list(first.docno) and again.score.tolist() == pytest.approx(first.score.tolist())
