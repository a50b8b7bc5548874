"""The ranking-aware rewards on hand-computed examples: a changed formula fails here."""
import numpy as np
import pytest

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.training.ranking_rewards import (
    ListReward,
    erank_rr,
    global_ranks,
    list_ndcg,
    retro_composite,
    retro_inter,
    retro_intra,
)


def test_intra_rewards_the_rollout_nearest_its_documents_mean_and_penalises_the_furthest():
    documents = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"] * 3
    scores = [0.0, 1.0, 2.0,  # mean 1.0: distances 1, 0, 1
              1.0, 1.1, 1.2,  # all within 0.1 < threshold 0.4: pruned
              0.0, 2.0,  # both at distance 1: none nearer, none preferred
              0.5, 0.5, 1.7]  # mean 0.9: distances 0.4, 0.4, 0.8 (ties share the reward)
    assert retro_intra(np.array(scores), documents, threshold=0.4).tolist() == \
        [-1, 1, -1, 0, 0, 0, 0, 0, 1, 1, -1]
    # a higher threshold prunes document a too (its furthest rollout is at distance 1)
    assert retro_intra(np.array(scores), documents, threshold=1.01).tolist() == [0] * 8 + [0, 0, 0]


def test_inter_is_the_papers_equation_with_one_positive_and_one_negative():
    # positive rollouts 1.5 and 0.5, negative rollouts 1.0 and 0.2: the share of the other side each orders rightly
    rewards = retro_inter(np.array([1.5, 0.5, 1.0, 0.2]), ["p", "p", "n", "n"], np.array([1, 1, 0, 0]))
    assert rewards.tolist() == [1.0, 0.5, 0.5, 1.0]
    # a tie orders nothing rightly
    assert retro_inter(np.array([1.0, 1.0]), ["p", "n"], np.array([2, 0])).tolist() == [0.0, 0.0]


def test_inter_compares_every_pair_of_different_labels_with_graded_labels():
    # labels 2, 1, 0 scored 1.0, 1.5, 0.5: the label-2 document is below the label-1 one
    rewards = retro_inter(np.array([1.0, 1.5, 0.5]), ["x", "y", "z"], np.array([2, 1, 0]))
    assert rewards.tolist() == [0.5, 0.5, 1.0]
    # nothing to compare with: 0
    assert retro_inter(np.array([1.0, 2.0]), ["x", "y"], np.array([1, 1])).tolist() == [0.0, 0.0]


def test_the_composite_weights_intra_by_alpha_and_inter_by_one_minus_alpha():
    scores = np.array([1.6, 1.0, 0.4, 0.2, 0.2, 0.5])
    documents, targets = ["p"] * 3 + ["n"] * 3, np.array([1] * 3 + [0] * 3)
    # p: intra -1, +1, -1 (mean 1.0), inter 1, 1, 2/3; n: intra pruned (furthest at 0.2), inter 1, 1, 2/3
    expected = [-0.75 + 0.25, 0.75 + 0.25, -0.75 + 0.25 * 2 / 3, 0.25, 0.25, 0.25 * 2 / 3]
    np.testing.assert_allclose(retro_composite(scores, documents, targets), expected)
    # threshold 0.1: n counts too (0.2, 0.2 nearest its mean 0.3, 0.5 furthest)
    np.testing.assert_allclose(retro_composite(scores, documents, targets, alpha=0.5, threshold=0.1),
                               0.5 * np.array([-1, 1, -1, 1, 1, -1]) + 0.5 * np.array([1, 1, 2 / 3, 1, 1, 2 / 3]))


def test_global_ranks_share_the_smallest_rank_on_ties():
    assert global_ranks(np.array([0.5, 2.0, 0.5, 1.0])).tolist() == [3, 1, 3, 2]


def test_rr_rewards_positives_by_reciprocal_rank_and_penalises_negatives_above_a_positive():
    # all rollouts ranked together: 1.8 (1), 1.2 (2), 1.0 (3), 0.9 (4), 0.1 (5); the lowest positive is rank 4
    scores = np.array([1.8, 0.9, 1.2, 1.0, 0.1])
    documents, targets = ["p1", "p1", "p2", "n", "n"], np.array([2, 2, 1, 0, 0])
    references = np.full(5, 0.3)  # the reference model scored document n 0.3
    rewards = erank_rr(scores, documents, targets, [True] * 5, references)
    np.testing.assert_allclose(rewards, [1.0, 0.25, 0.5, -1.0, 1 - ((0.1 - 0.3) / 2) ** 2])
    # an unformatted rollout gets -1, whatever its rank
    unformatted = erank_rr(scores, documents, targets, [True, False, True, True, True], references)
    np.testing.assert_allclose(unformatted, [1.0, -1.0, 0.5, -1.0, 0.99])
    # only label 2 positive: p2 (rank 2, above p1's rank 4) is now a negative above a positive
    strict = erank_rr(scores, documents, targets, [True] * 5, references, positive_label=2)
    np.testing.assert_allclose(strict, [1.0, 0.25, -1.0, -1.0, 0.99])
    # a negative tied with the lowest positive counts as above it
    assert erank_rr(np.array([1.0, 1.0]), ["p", "n"], np.array([1, 0]), [True, True], [0.0, 0.0]).tolist() == \
        [1.0, -1.0]


def test_list_ndcg_puts_each_rollout_in_its_documents_place():
    # documents a (label 2) rollouts 2.0 and 0.0, b (label 1) 1.0, c (label 0) 0.5; means a 1.0, b 1.0, c 0.5
    scores = np.array([2.0, 0.0, 1.0, 0.5])
    documents, targets = ["a", "a", "b", "c"], np.array([2, 2, 1, 0])
    ideal = 2 + 1 / np.log2(3)
    expected = [1.0,  # a, b, c
                (1 + 0 + 2 / np.log2(4)) / ideal,  # b, c, a
                (1 + 2 / np.log2(3)) / ideal,  # a and b tie at 1.0: the lower label first
                (1 + 2 / np.log2(3)) / ideal]
    np.testing.assert_allclose(list_ndcg(scores, documents, targets), expected)
    np.testing.assert_allclose(list_ndcg(scores, documents, targets, cutoff=1), [1.0, 0.5, 0.5, 0.5])
    assert list_ndcg(scores, documents, np.zeros(4)).tolist() == [0.0] * 4  # nothing relevant


def _scorer(prompts, completions):
    return np.array([ids[0] / 10 for ids in completions], dtype=float)


def test_a_list_reward_groups_a_batch_by_query_and_document():
    reward = ListReward("composite", _scorer, threshold=0.1)
    # query q1: a positive and a negative, two rollouts each; query q2 interleaved; one pair without a target
    batch = dict(completions=["Explanation: x\nRelevance: 1"] * 7,
                 completion_ids=[[15], [5], [10], [2], [9], [9], [3]],
                 prompt_token_ids=[[1]] * 7, qid=["q1", "q1", "q1", "q1", "q2", "q2", "q2"],
                 docno=["p", "p", "n", "n", "a", "b", "c"], target_label=[1, 1, 0, 0, 2, 0, None])
    rewards = reward(**batch)
    # q1 alone: the same as its own pool
    q1 = retro_composite(np.array([1.5, 0.5, 1.0, 0.2]), ["p", "p", "n", "n"], np.array([1, 1, 0, 0]), threshold=0.1)
    np.testing.assert_allclose(rewards[:4], q1)
    # q2: a and b tie (0.9 each): neither is ordered rightly; c has no target: None
    assert rewards[4:6] == [0.0, 0.0] and rewards[6] is None
    assert reward.__name__ == "composite"


def test_the_rr_reward_needs_reference_scores():
    batch = dict(completions=["Explanation: x\nRelevance: 1", "no label"], completion_ids=[[15], [5]],
                 prompt_token_ids=[[1], [1]], qid=["q", "q"], docno=["p", "n"], target_label=[1, 0])
    with pytest.raises(InputError, match="reference_score"):
        ListReward("rr", _scorer)(**batch)
    # the second rollout is not in the format: -1
    assert ListReward("rr", _scorer)(**batch, reference_score=[1.0, 0.0]) == [1.0, -1.0]
    with pytest.raises(InputError, match="unknown ranking reward 'listwise'"):
        ListReward("listwise", _scorer)


def test_a_rollout_is_scored_by_its_expected_label_at_the_marker(script_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pyterrier_reasonrank.prompts import PromptEncoder
    from pyterrier_reasonrank.training.rollouts import RolloutScorer

    path = script_model({}, label_logits=(0.0, 1.0, 3.0))  # the label distribution after the marker
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    model.train()
    encoder = PromptEncoder(tokenizer)
    probabilities = np.exp([0.0, 1.0, 3.0]) / np.exp([0.0, 1.0, 3.0]).sum()
    expected = probabilities[1] + 2 * probabilities[2]
    written = encoder.encode_response("because", 0)  # marker and a label written: the label token is not read
    cut = tokenizer.encode("because", add_special_tokens=False)  # no marker: appended, as the ranker forces it
    scores = RolloutScorer(model, tokenizer, encoder, batch_size=2)([encoder.encode("q", "d")] * 3,
                                                                    [written, cut, []])
    np.testing.assert_allclose(scores, [expected] * 3, rtol=1e-5)
    assert model.training  # given back as it was
