"""Batches of whole query groups, for ranking-aware rewards in GRPO.

trl's GRPO trainer draws prompts at random (its ``RepeatSampler``: each prompt repeated
``num_generations`` times in a row, batches of distinct prompts) and rewards each generation batch
at once. A ranking-aware reward (:mod:`.ranking_rewards`) compares the rollouts of a query's
candidates with each other, so a batch must hold every rollout of the candidates trained
together: :class:`QueryGroupSampler` yields, per batch, whole query groups, each candidate repeated
``num_generations`` times in a row as trl's advantages expect. A group is a query's candidates,
or a draw of ``group_size`` of them that holds at least one relevant (target label above 0) and
one non-relevant candidate, drawn anew each epoch.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterator, Optional, Sequence

from torch.utils.data import Sampler

from pyterrier_reasonrank.errors import InputError


def query_groups(qids: Sequence[str], targets: Sequence[int],
                 group_size: Optional[int]) -> tuple[list[list[int]], dict[str, int]]:
    """The candidates (row numbers) of each query that can make a group, and how many queries could not.

    A query can make a group when it has a relevant and a non-relevant candidate (else a ranking
    reward has nothing to order) and, with ``group_size``, at least that many candidates.

    Args:
        qids: The query of each pair.
        targets: The target label of each pair.
        group_size: Candidates per group; ``None``: every candidate of a query, which needs every
            query to have as many.

    Returns:
        The rows of each usable query, and the counts of queries left out: ``one_label`` (all
        their candidates have one target label) and ``too_few`` (fewer than ``group_size``).

    Raises:
        InputError: No query can make a group, or queries differ in size without a ``group_size``.
    """
    rows: dict[str, list[int]] = defaultdict(list)
    for row, qid in enumerate(qids):
        rows[qid].append(row)
    if group_size is None:
        sizes = sorted({len(members) for members in rows.values()})
        if len(sizes) > 1:
            raise InputError(f"queries have {sizes[0]} to {sizes[-1]} candidates: a batch holds whole query groups of "
                             "one size, so give query_group_size (a draw of that many candidates of each query)")
    groups, left_out = [], {"one_label": 0, "too_few": 0}
    for members in rows.values():
        if len({targets[row] > 0 for row in members}) < 2:
            left_out["one_label"] += 1
        elif group_size is not None and len(members) < group_size:
            left_out["too_few"] += 1
        else:
            groups.append(members)
    if not groups:
        raise InputError(f"no query can make a group for a ranking reward ({left_out['one_label']} have candidates "
                         f"of one target label only, {left_out['too_few']} fewer than query_group_size)")
    return groups, left_out


def draw_group(members: Sequence[int], targets: Sequence[int], size: int, rng: random.Random) -> list[int]:
    """``size`` of a query's candidates at random, with a relevant and a non-relevant one among them."""
    if size >= len(members):
        return rng.sample(list(members), len(members))
    relevant = [row for row in members if targets[row] > 0]
    other = [row for row in members if targets[row] <= 0]
    chosen = [rng.choice(relevant), rng.choice(other)]
    rest = [row for row in members if row not in chosen]
    drawn = chosen + rng.sample(rest, size - 2)
    rng.shuffle(drawn)
    return drawn


class QueryGroupSampler(Sampler[int]):
    """Dataset rows in batches of whole query groups, each row ``num_generations`` times in a row.

    Each batch of ``queries_per_batch`` groups is yielded ``repeat_count`` times (trl reuses a
    generation batch for ``steps_per_generation`` steps and ``num_iterations`` passes, as its own
    sampler does); queries are shuffled under ``seed``, and the groups drawn again, every epoch.
    The last queries that do not fill a batch are left for the next epoch's shuffle.
    """

    def __init__(self, groups: Sequence[Sequence[int]], targets: Sequence[int], *, group_size: Optional[int],
                 num_generations: int, queries_per_batch: int, repeat_count: int = 1, shuffle: bool = True,
                 seed: int = 0):
        """Set up the draw.

        Args:
            groups: The candidate rows of each query (see :func:`query_groups`).
            targets: The target label of each row.
            group_size: Candidates per group (``None``: all of a query's).
            num_generations: Rollouts per candidate.
            queries_per_batch: Groups in a generation batch.
            repeat_count: Times each batch is yielded.
            shuffle: Shuffle the queries each epoch.
            seed: Seeds the shuffles and draws.
        """
        if queries_per_batch > len(groups):
            raise InputError(f"a generation batch holds {queries_per_batch} query groups, but only {len(groups)} "
                             "queries can make one: give more queries, or smaller batches")
        self.groups, self.targets = [list(g) for g in groups], list(targets)
        self.group_size = group_size
        self.num_generations, self.repeat_count = num_generations, repeat_count
        self.queries_per_batch = queries_per_batch
        self.shuffle = shuffle
        self.rng = random.Random(seed)

    def __iter__(self) -> Iterator[int]:
        order = list(range(len(self.groups)))
        if self.shuffle:
            self.rng.shuffle(order)
        for start in range(0, len(order) - self.queries_per_batch + 1, self.queries_per_batch):
            batch = [row for query in order[start:start + self.queries_per_batch]
                     for row in draw_group(self.groups[query], self.targets,
                                           self.group_size or len(self.groups[query]), self.rng)]
            for _ in range(self.repeat_count):
                for row in batch:
                    yield from [row] * self.num_generations

    def __len__(self) -> int:
        size = self.group_size or len(self.groups[0])
        return (len(self.groups) // self.queries_per_batch) * self.queries_per_batch * size \
            * self.num_generations * self.repeat_count


def group_batching(per_device_batch: int, steps_per_generation: int, processes: int, group_size: int,
                   num_generations: int) -> int:
    """How many query groups a generation batch holds, after checking that each process gets whole groups.

    Raises:
        InputError: A process's generation batch is not a whole number of groups.
    """
    local = per_device_batch * steps_per_generation
    per_group = group_size * num_generations
    if local % per_group:
        raise InputError(f"with a ranking reward each batch holds whole query groups: per_device_train_batch_size x "
                         f"steps_per_generation ({per_device_batch} x {steps_per_generation} = {local}) must be a "
                         f"multiple of query_group_size x num_generations ({group_size} x {num_generations} = "
                         f"{per_group})")
    return local * processes // per_group
