"""Test-time compute: k sampled explanations averaged, and adaptive mode spending explanations where
they matter, on models whose outputs the tests know (exact scores and exact token counts)."""
import numpy as np
import pytest

from pyterrier_reasonrank import Escalation, ReasonRanker
from pyterrier_reasonrank.adaptive import escalated, reuse_groups
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.judging import Sampling
from pyterrier_reasonrank.scoring import entropy, expected_label
from test_ranker import EXPLAINS, LABEL_LOGITS, expected_score, pairs

EXPLANATION_TOKENS = 4  # "Ġthe", "Ċ", "Relevance", ":" after the prompt's "Explanation:"


def softmax(logits):
    p = np.exp(np.asarray(logits, dtype=np.float64))
    return p / p.sum()


@pytest.fixture(scope="module")
def explaining(script_model):
    return script_model(EXPLAINS, LABEL_LOGITS)


@pytest.mark.parametrize("samples", [1, 3])
def test_what_was_spent_is_in_the_output(explaining, samples):
    out = ReasonRanker(str(explaining), samples=samples, temperature=0.7, max_new_tokens=16)(pairs())
    # The script leaves the model no choice, so every sampled explanation is the greedy one.
    assert out.tokens.tolist() == [samples * EXPLANATION_TOKENS] * 12
    assert out.samples.tolist() == [samples] * 12
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 12, abs=1e-6)
    assert out.explanation.eq("the").all()
    direct = ReasonRanker(str(explaining), mode="direct")(pairs())
    assert direct.tokens.tolist() == [0] * 12 and direct.samples.tolist() == [0] * 12


@pytest.mark.parametrize("greedy_first", [True, False])
def test_samples_average_the_label_distributions_of_the_explanations_drawn(tiny_model, greedy_first):
    inp = pairs(2, 3)
    ranker = ReasonRanker(str(tiny_model), samples=3, temperature=1.0, greedy_first=greedy_first, seed=5,
                          max_new_tokens=6)
    out = ranker(inp)
    # The same pairs drawn one explanation at a time, straight from the backend.
    encoder = ranker.encoder
    order = out.set_index("docno").loc[inp.docno]
    prompts = encoder.prompts(inp["query"].tolist(), inp["text"].tolist())
    draws = [ranker.student.engine.judge(prompts, encoder, mode="explain", max_new_tokens=6,
                                         temperature=temperature, seed=seed)
             for temperature, seed in Sampling(3, 1.0, greedy_first, 5).draws()]
    assert [temperature for temperature, _ in Sampling(3, 1.0, greedy_first, 5).draws()] == \
        ([0.0, 1.0, 1.0] if greedy_first else [1.0, 1.0, 1.0])
    average = sum(draw.probabilities for draw in draws) / 3
    assert np.stack(order.probabilities.to_numpy()) == pytest.approx(average, abs=1e-5)
    assert order.score.to_numpy() == pytest.approx(expected_label(average), abs=1e-5)
    assert order.tokens.tolist() == sum(draw.tokens for draw in draws).tolist()
    assert order.explanation.tolist() == draws[0].explanations.tolist()  # the first drawn is the one shown
    # The random model's explanations differ between draws, so the average is not any one of them.
    assert not np.allclose(draws[1].probabilities, draws[2].probabilities)


def test_a_pair_draws_the_same_explanations_in_any_batch(tiny_model):
    settings = dict(samples=2, temperature=1.0, max_new_tokens=6)
    alone = ReasonRanker(str(tiny_model), batch_size=1, **settings)(pairs(2, 3))
    together = ReasonRanker(str(tiny_model), batch_size=6, **settings)(pairs(2, 3))
    assert list(alone.explanation) == list(together.explanation)
    assert alone.score.to_numpy() == pytest.approx(together.score.to_numpy(), abs=1e-5)


def test_escalation_picks_the_uncertain_and_those_near_the_cutoff_within_the_budget():
    certain, unsure, unsurer = [0.98, 0.01, 0.01], [0.25, 0.4, 0.35], [1 / 3, 1 / 3, 1 / 3]
    qids = ["a"] * 5 + ["b"] * 3
    probabilities = np.array([certain, unsure, [0.01, 0.01, 0.98], unsurer, [0.02, 0.9, 0.08],
                              unsure, certain, [0.01, 0.01, 0.98]])
    uncertain = entropy(probabilities) >= 1.0
    assert uncertain.tolist() == [False, True, False, True, False, True, False, False]
    assert escalated(qids, probabilities, Escalation(entropy=1.0), cost=10).tolist() == uncertain.tolist()
    # By expected label, query a ranks its pairs 2, 1, 4, 3, 0 and query b 7, 5, 6: ranks 1 and 2
    # (cut-off 2, margin 1) are pairs 1 and 4, and 5 and 6.
    near = escalated(qids, probabilities, Escalation(entropy=None, cutoff=2, margin=1), cost=10)
    assert near.tolist() == [False, True, False, False, True, True, True, False]
    # A budget of one explanation per query: the most uncertain pair of each.
    budget = escalated(qids, probabilities, Escalation(entropy=1.0, token_budget=19), cost=10)
    assert budget.tolist() == [False, False, False, True, False, True, False, False]
    assert not escalated(qids, probabilities, Escalation(entropy=0.0, token_budget=9), cost=10).any()


def test_adaptive_explains_only_the_pairs_escalated(tiny_model):
    inp = pairs(3, 4)
    settings = dict(max_new_tokens=8)
    direct = ReasonRanker(str(tiny_model), mode="direct", **settings)(inp).set_index("docno").loc[inp.docno]
    explain = ReasonRanker(str(tiny_model), **settings)(inp).set_index("docno").loc[inp.docno]
    uncertainty = entropy(np.stack(direct.probabilities.to_numpy()))
    threshold = float(np.median(uncertainty))
    adaptive = ReasonRanker(str(tiny_model), mode="adaptive", escalation=Escalation(entropy=threshold),
                            **settings)(inp).set_index("docno").loc[inp.docno]
    chosen = uncertainty >= threshold
    assert 0 < chosen.sum() < len(inp)
    assert (adaptive.samples.to_numpy() == chosen).all()
    assert adaptive.score[chosen].to_numpy() == pytest.approx(explain.score[chosen].to_numpy(), abs=1e-5)
    assert adaptive.score[~chosen].to_numpy() == pytest.approx(direct.score[~chosen].to_numpy(), abs=1e-9)
    assert list(adaptive.explanation[chosen]) == list(explain.explanation[chosen])
    assert (adaptive.explanation[~chosen] == "").all()
    assert adaptive.tokens.sum() == explain.tokens[chosen].sum() < explain.tokens.sum()


@pytest.mark.parametrize("samples", [1, 2])
def test_adaptive_token_budget_and_cutoff_on_a_scripted_model(explaining, samples):
    ranker = ReasonRanker(str(explaining), mode="adaptive", samples=samples, max_new_tokens=16)
    worst = samples * (16 + len(ranker.encoder.forced_marker_ids))
    # The scripted model is equally unsure of every pair, in direct mode as after an explanation.
    uncertainty = entropy(softmax(LABEL_LOGITS)[None])[0]
    ranker.escalation = Escalation(entropy=uncertainty - 1e-6)
    everything = ranker(pairs(3, 4))
    assert everything.samples.tolist() == [samples] * 12
    assert everything.tokens.tolist() == [samples * EXPLANATION_TOKENS] * 12
    ranker.escalation = Escalation(entropy=uncertainty + 1e-6)
    assert ranker(pairs(3, 4)).tokens.tolist() == [0] * 12
    ranker.escalation = Escalation(entropy=uncertainty - 1e-6, token_budget=worst - 1)  # not one pair: refused
    with pytest.raises(InputError, match=rf"Escalation\(token_budget={worst - 1}\) is less than one pair's "
                                         rf"explanations at their longest \({worst} tokens"):
        ranker(pairs(3, 4))
    ranker.escalation = Escalation(entropy=uncertainty - 1e-6, token_budget=2 * worst + 1)
    out = ranker(pairs(3, 4))
    assert out.groupby("qid").samples.apply(lambda s: (s > 0).sum()).tolist() == [2, 2, 2]
    assert out.tokens.sum() == 3 * 2 * samples * EXPLANATION_TOKENS
    ranker.escalation = Escalation(entropy=uncertainty + 1e-6, cutoff=2, margin=1)  # ties: ranks in input order
    out = ranker(pairs(3, 4))
    assert out[out.samples > 0].docno.tolist() == [f"d{q}-{d}" for q in range(3) for d in (1, 2)]
    assert out.tokens.tolist() == [samples * EXPLANATION_TOKENS if s else 0 for s in out.samples]
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 12, abs=1e-6)


def computed(student, ranker, inp):
    """The ranker's output and the tokens its student's model computed keys and values for (a fresh prompt cache)."""
    student.engine.prompt_cache.clear()
    before = student.engine.counts["computed"]
    out = ranker(inp)
    return out, student.engine.counts["computed"] - before


@pytest.mark.parametrize("policy", [
    dict(mode="adaptive", escalation=Escalation(entropy=None, cutoff=2, margin=1)),  # explains ranks 1 and 2
    dict(samples=4, temperature=1.0),
    "cascade",
])
def test_a_pairs_prompt_is_read_once_for_every_judgement_of_it(tiny_model, policy):
    """Format 2 shares a pair's prompt across modes, so the escalated explanation, the samples and a cascade's
    next ranker continue from the prompt's cache: the prompt is read once, and the scores are those without it."""
    from pyterrier_reasonrank import Student

    inp = pairs(3, 4)
    inp["text"] = inp["text"] + " and the sun pulls too, less" * 6  # long prompts, as documents are
    reusing, reading = Student(str(tiny_model)), Student(str(tiny_model), prompt_cache_tokens=0)

    def ranker(student):
        if policy == "cascade":
            return student.ranker(mode="direct") % 2 >> student.ranker(max_new_tokens=6)
        return student.ranker(max_new_tokens=6, **policy)

    _, one_pass = computed(reading, reading.ranker(mode="direct"), inp)  # every prompt read once
    reused, spent = computed(reusing, ranker(reusing), inp)
    read, spent_without = computed(reading, ranker(reading), inp)
    assert spent <= 1.1 * one_pass < spent_without
    assert list(reused.docno) == list(read.docno) and list(reused.explanation) == list(read.explanation)
    assert reused.score.to_numpy() == pytest.approx(read.score.to_numpy(), abs=1e-4)
    assert reusing.engine.counts["cached"] > 0 and reading.engine.counts["cached"] == 0


def test_adaptive_groups_whole_queries_whose_prompts_the_backend_keeps():
    qids = ["a", "b", "a", "c", "d", "d"]
    tokens = [30, 50, 30, 70, 40, 40]  # a: 60, b: 50, c: 70, d: 80
    groups = [group.tolist() for group in reuse_groups(qids, tokens, capacity=110)]
    assert groups == [[0, 2, 1], [3], [4, 5]]  # a + b fit; c + d do not; a query is never split
    assert [group.tolist() for group in reuse_groups(qids, tokens, capacity=75)] == [[0, 2], [1], [3], [4, 5]]
    for unknown in (None, 0):  # the backend keeps nothing, or does not say: every escalation decodes together
        assert [group.tolist() for group in reuse_groups(qids, tokens, unknown)] == [list(range(6))]
    assert reuse_groups([], [], 100) == [] and reuse_groups([], [], None) == []


def test_an_escalated_pairs_prompt_is_still_kept_when_the_frame_outgrows_the_prompt_cache(tiny_model):
    """Adaptive mode escalates a group of queries at a time, those whose prompts the prompt cache holds, so
    every escalated explanation continues from its prompt however many queries the frame has (an experiment
    passes all topics at once); the scores are those without any reuse."""
    from pyterrier_reasonrank import Student

    inp = pairs(6, 4)
    inp["text"] = inp["text"] + " and the sun pulls too, less" * 6
    policy = dict(mode="adaptive", escalation=Escalation(entropy=None, cutoff=2, margin=1), max_new_tokens=6)
    reading = Student(str(tiny_model), prompt_cache_tokens=0)
    encoder = reading.ranker(**policy).encoder
    start = len(encoder.response_start_ids)
    shared = {docno: len(prefix) + len(suffix) - start
              for docno, (prefix, suffix) in zip(inp.docno, encoder.prompts(inp["query"].tolist(), inp["text"].tolist()))}
    per_query = inp.assign(tokens=inp.docno.map(shared)).groupby("qid").tokens.sum()
    assert per_query.sum() > 2 * per_query.max() * 2  # the cache below holds two queries, not the frame
    reusing = Student(str(tiny_model), prompt_cache_tokens=int(2 * per_query.max()))
    out = reusing.ranker(**policy)(inp)
    escalated_docnos = out.docno[out.samples > 0]
    assert len(escalated_docnos) == 12  # ranks 1 and 2 of each of the 6 queries
    assert reusing.engine.counts["cached"] == sum(shared[docno] for docno in escalated_docnos)
    reference = reading.ranker(**policy)(inp)
    assert list(out.docno) == list(reference.docno) and list(out.explanation) == list(reference.explanation)
    assert out.score.to_numpy() == pytest.approx(reference.score.to_numpy(), abs=1e-4)
