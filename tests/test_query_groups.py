"""Batches of whole query groups for ranking rewards in GRPO, on queries with different numbers of candidates."""
from collections import Counter

import pytest

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.training.query_groups import QueryGroupSampler, group_batching, query_groups

# five queries: 3, 5, 8 and 4 candidates with both kinds of label, one with 6 candidates all relevant, one with 2
LABELS = {"a": [2, 0, 0], "b": [1, 0, 0, 2, 0], "c": [0, 0, 0, 0, 1, 0, 0, 2], "d": [0, 1, 1, 0],
          "e": [1, 1, 2, 1, 2, 1], "f": [1, 0]}
QIDS = [qid for qid, labels in LABELS.items() for _ in labels]
TARGETS = [label for labels in LABELS.values() for label in labels]


def batches(sampler, size):
    rows = list(sampler)
    assert len(rows) == len(sampler) and len(rows) % size == 0
    return [rows[k:k + size] for k in range(0, len(rows), size)]


def test_groups_leave_out_queries_with_one_label_or_too_few_candidates():
    groups, left_out = query_groups(QIDS, TARGETS, group_size=3)
    assert [QIDS[g[0]] for g in groups] == ["a", "b", "c", "d"] and left_out == {"one_label": 1, "too_few": 1}
    with pytest.raises(InputError, match="queries have 2 to 8 candidates.*give query_group_size"):
        query_groups(QIDS, TARGETS, group_size=None)
    with pytest.raises(InputError, match="no query can make a group"):
        query_groups(["q", "q"], [1, 2], group_size=None)


@pytest.mark.parametrize("repeat", [1, 2])
def test_each_batch_holds_whole_groups_of_a_relevant_and_a_non_relevant_candidate(repeat):
    groups, _ = query_groups(QIDS, TARGETS, group_size=3)
    sampler = QueryGroupSampler(groups, TARGETS, group_size=3, num_generations=2, queries_per_batch=2,
                                repeat_count=repeat, seed=1)
    seen = Counter()
    for epoch in range(3):
        generation_batches = batches(sampler, 2 * 3 * 2)
        assert len(generation_batches) == 2 * repeat  # 4 queries in batches of 2, each batch yielded `repeat` times
        for k, batch in enumerate(generation_batches):
            # each candidate num_generations times in a row, as trl's advantages expect
            assert all(batch[i] == batch[i + 1] for i in range(0, len(batch), 2))
            rows = batch[::2]
            by_query = Counter(QIDS[row] for row in rows)
            assert len(by_query) == 2 and set(by_query.values()) == {3}  # two whole groups of three
            for qid in by_query:
                labels = [TARGETS[row] for row in rows if QIDS[row] == qid]
                assert any(label > 0 for label in labels) and 0 in labels
            assert len(set(rows)) == 6
            if k % repeat:
                assert batch == generation_batches[k - 1]  # the repeat of a batch is the same batch
            seen.update(rows)
    # over the epochs the draws reach beyond the first three candidates of the larger queries
    assert {QIDS[row] for row in seen} == {"a", "b", "c", "d"} and sum(QIDS[r] == "c" for r in seen) > 3


def test_the_batch_size_must_hold_whole_groups():
    assert group_batching(12, 1, 1, 3, 4) == 1 and group_batching(12, 2, 2, 3, 4) == 4
    with pytest.raises(InputError, match=r"\(8 x 1 = 8\) must be a multiple of query_group_size x num_generations "
                                         r"\(3 x 2 = 6\)"):
        group_batching(8, 1, 1, 3, 2)
    groups, _ = query_groups(QIDS, TARGETS, group_size=3)
    with pytest.raises(InputError, match="holds 5 query groups, but only 4 queries can make one"):
        QueryGroupSampler(groups, TARGETS, group_size=3, num_generations=2, queries_per_batch=5)
