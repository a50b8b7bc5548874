"""Test-time compute where it matters: which pairs a direct-mode judgement is escalated to explanations for.

In adaptive mode, ``ReasonRanker`` judges every pair in direct mode first (one forward pass), then
explains (and samples) only the pairs where it matters: those whose direct-mode label distribution
is uncertain, and those that sit near a rank cut-off where their order changes the ranking's
quality — within a per-query budget of explanation tokens. It does so a group of whole queries at a
time (:func:`reuse_groups`), so that an escalated pair's explanation continues from its prompt while
the backend still keeps it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .errors import InputError
from .numeric import NumericOption, positive_int
from .prompts import LABELS
from .scoring import entropy, expected_label

MAX_ENTROPY = math.log(len(LABELS))
"""The entropy of a uniform distribution over the labels (ln 3 nats): no pair is more uncertain."""
_ENTROPY = NumericOption(f"a number from 0 to ln {len(LABELS)} = {MAX_ENTROPY:.4f} (nats)", integral=False, low=0.0,
                         high=MAX_ENTROPY)


@dataclass(frozen=True)
class Escalation:
    """Which pairs adaptive mode explains.

    Attributes:
        entropy: A pair whose direct-mode label distribution has at least this entropy (nats, from 0
            to ln 3 = 1.10, the entropy of a uniform distribution over the three labels) is explained.
            ``None``: uncertainty alone explains no pair.
        cutoff: A rank cut-off whose order matters (e.g. 10 for nDCG@10): the pairs ranked within
            ``margin`` of it in direct mode are explained too. ``None``: none.
        margin: How many ranks either side of ``cutoff`` (1 or more).
        token_budget: The explanation tokens a query may spend, reserved at the worst case
            (``samples x (max_new_tokens + the marker)`` per pair), so a query never spends more; the
            most uncertain pairs go first. ``None``: no limit. A ranker refuses a budget below one pair's
            worst case (no pair could be explained).

    Raises:
        InputError: A value out of its range (a criterion is switched off with ``None``, not an
            out-of-range number), or both criteria off.
    """

    entropy: Optional[float] = 0.5
    cutoff: Optional[int] = None
    margin: int = 2
    token_budget: Optional[int] = None

    def __post_init__(self):
        # Frozen: the checked (int / float) values are set through object.__setattr__.
        checked = {"entropy": _ENTROPY("Escalation: entropy", self.entropy, optional=True),
                   "cutoff": positive_int("Escalation: cutoff", self.cutoff, optional=True),
                   "margin": positive_int("Escalation: margin", self.margin),
                   "token_budget": positive_int("Escalation: token_budget", self.token_budget, optional=True)}
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.entropy is None and self.cutoff is None:
            raise InputError("Escalation: entropy and cutoff are both None, so no pair would be explained; "
                             "give one of them (or use mode='direct')")


def escalated(qids: Sequence, probabilities: np.ndarray, escalation: Escalation, cost: int) -> np.ndarray:
    """Which pairs to explain, from their direct-mode label distributions.

    Args:
        qids: The query of each pair.
        probabilities: The direct-mode label distribution of each pair.
        escalation: The policy.
        cost: The tokens reserved for explaining one pair (its worst case).

    Returns:
        A boolean mask over the pairs.
    """
    uncertainty = entropy(probabilities)
    scores = expected_label(probabilities)
    chosen = np.zeros(len(qids), dtype=bool)
    for rows in _queries(qids):
        ranks = np.empty(len(rows), dtype=np.int64)
        ranks[np.argsort(-scores[rows], kind="stable")] = np.arange(len(rows))
        wanted = uncertainty[rows] >= escalation.entropy if escalation.entropy is not None \
            else np.zeros(len(rows), dtype=bool)
        if escalation.cutoff is not None:
            wanted |= np.abs(ranks - escalation.cutoff + 0.5) < escalation.margin  # ranks cutoff-margin .. +margin-1
        candidates = rows[wanted][np.lexsort((ranks[wanted], -uncertainty[rows][wanted]))]
        if escalation.token_budget is not None:
            candidates = candidates[:escalation.token_budget // max(cost, 1)]
        chosen[candidates] = True
    return chosen


def reuse_groups(qids: Sequence, prompt_tokens: Sequence[int], capacity: Optional[int]) -> list[np.ndarray]:
    """Groups of whole queries, in order of first appearance, whose prompts the backend can keep together.

    Adaptive mode judges a group in direct mode, then explains its escalated pairs, before the next
    group: an explanation continues from its prompt only while the backend keeps that prompt (its
    prompt or prefix cache, least recently used dropped first). Groups as large as the cache allows
    let the escalated pairs of many queries decode together, in fuller batches.

    Args:
        qids: The query of each pair.
        prompt_tokens: The tokens of each pair's prompt.
        capacity: The most prompt tokens the backend keeps; 0 or ``None`` (none kept, or not known):
            one group of all pairs.

    Returns:
        The positions of each group's pairs; a query whose prompts alone exceed ``capacity`` is a group
        of its own.
    """
    if not capacity:
        return [np.arange(len(qids))] if len(qids) else []
    tokens = np.asarray(prompt_tokens, dtype=np.int64)
    groups: list[list[np.ndarray]] = []
    held = 0
    for rows in _queries(qids):
        size = int(tokens[rows].sum())
        if not groups or held + size > capacity:
            groups.append([])
            held = 0
        groups[-1].append(rows)
        held += size
    return [np.concatenate(group) for group in groups]


def _queries(qids: Sequence) -> list[np.ndarray]:
    """The positions of each query's pairs, queries in order of first appearance."""
    return [rows.to_numpy() for _, rows in pd.Series(range(len(qids))).groupby(
        pd.Series(qids).astype(str).to_numpy(), sort=False)]
