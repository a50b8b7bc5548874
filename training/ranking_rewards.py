"""Ranking-aware rewards: each rollout is rewarded for how it ranks among a query's other rollouts.

The pointwise rewards (:mod:`.rewards`) reward a response for its own label. These need a query's
documents together: every rollout of every candidate of a query is scored (its expected label at
the marker, as the ranker scores a pair; see :mod:`.rollouts`), and the rewards compare the
scores across the pool, against the candidates' target labels:

- ``composite``: Retro*'s composite of an intra-document reward (a rollout near its document's
  mean score is preferred) and an inter-document reward (rollouts that order documents of
  different labels correctly), weighted by ``alpha`` (Lan et al. 2025, arXiv 2509.24869);
- ``rr``: ERank's listwise ``r_RR`` (reciprocal rank of positives in the pooled ranking,
  penalties for negatives above a positive; Cai et al. 2025, arXiv 2509.00520);
- ``ndcg``: the list's nDCG when the rollout stands for its document.

The formulas are plain functions of one query's pool (:func:`retro_intra`, :func:`retro_inter`,
:func:`retro_composite`, :func:`erank_rr`, :func:`list_ndcg`); :class:`ListReward` applies one to
a batch in trl's reward convention, grouping the rollouts by ``qid`` and ``docno``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.prompts import LABELS

from .rewards import RANKING_REWARDS, well_formed

TOP_LABEL = float(max(LABELS))

Scorer = Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]]], np.ndarray]
"""Maps prompts and completions (token ids) to each rollout's score (see :class:`.rollouts.RolloutScorer`)."""


def retro_intra(scores: np.ndarray, documents: np.ndarray, threshold: float) -> np.ndarray:
    """Retro*'s intra-document reward (arXiv 2509.24869, Eq. 1), for each rollout.

    For each document, the integrated score is the mean of its rollouts' scores,
    ``s_bar = (1/N) sum_i s_i`` (the paper's score integration with uniform weights). Then::

        R_intra(y, s) = +1  if s is closest to s_bar,  and max_i |s_i - s_bar| >= threshold
                        -1  if s is furthest from s_bar, and max_i |s_i - s_bar| >= threshold
                         0  otherwise

    The threshold (the paper's tau: 20 on its 0-100 scale, a fifth of the range) prunes documents
    whose rollouts already agree. Ties: every rollout at the closest distance gets +1, every one at
    the furthest -1; when the closest and furthest distances are equal (scores {0, 2}), none is
    preferred and all get 0.

    Args:
        scores: Each rollout's score.
        documents: Each rollout's document (any hashable ids, one per rollout).
        threshold: The least distance of the furthest rollout for the document to count.
    """
    scores, rewards = np.asarray(scores, dtype=float), np.zeros(len(scores))
    for rows in _rows_by(documents).values():
        distance = np.abs(scores[rows] - scores[rows].mean())
        near, far = distance.min(), distance.max()
        if far < threshold or np.isclose(near, far):
            continue
        rewards[rows] = np.where(np.isclose(distance, near), 1.0, np.where(np.isclose(distance, far), -1.0, 0.0))
    return rewards


def retro_inter(scores: np.ndarray, documents: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Retro*'s inter-document reward (arXiv 2509.24869, Eq. 2), generalised to graded labels, for each rollout.

    In the paper a query has one positive ``d+`` and one negative ``d-``, each with ``N`` rollouts::

        R_inter(y+_i, s+_i) = (1/N) sum_j I(s+_i > s-_j)
        R_inter(y-_j, s-_j) = (1/N) sum_i I(s-_j < s+_i)

    Here a query has any number of candidates with graded target labels: a rollout's reward is the
    share of the rollouts of documents with another target label that it orders rightly (a strictly
    higher score than those of lower label, strictly lower than those of higher label). With one
    positive and one negative document this is the paper's formula. A rollout with nothing to be
    compared with (every candidate has its label) gets 0.

    Args:
        scores: Each rollout's score.
        documents: Each rollout's document (only its target label is used).
        targets: Each rollout's document's target label.
    """
    scores, targets = np.asarray(scores, dtype=float), np.asarray(targets, dtype=float)
    higher = targets[:, None] > targets[None, :]  # [k, l]: rollout k's document should outrank l's
    lower = targets[:, None] < targets[None, :]
    right = (higher & (scores[:, None] > scores[None, :])) | (lower & (scores[:, None] < scores[None, :]))
    compared = (higher | lower).sum(axis=1)
    return np.where(compared > 0, right.sum(axis=1) / np.maximum(compared, 1), 0.0)


def retro_composite(scores: np.ndarray, documents: np.ndarray, targets: np.ndarray, *, alpha: float = 0.75,
                    threshold: float = 0.4) -> np.ndarray:
    """Retro*'s composite reward (arXiv 2509.24869, Section 3.2.2; the paper gives it no equation number).

    ``R(y, s) = alpha * R_intra(y, s) + (1 - alpha) * R_inter(y, s)`` with :func:`retro_intra` and
    :func:`retro_inter`. The paper's values are ``alpha = 0.75`` and ``tau = 20`` on a 0-100 scale;
    on this package's 0-2 scale the same fifth of the range is 0.4.
    """
    return alpha * retro_intra(scores, documents, threshold) + (1 - alpha) * retro_inter(scores, documents, targets)


def global_ranks(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among all of them, 1 the highest, ties sharing the smallest rank."""
    scores = np.asarray(scores, dtype=float)
    return 1 + (scores[None, :] > scores[:, None]).sum(axis=1)


def erank_rr(scores: np.ndarray, documents: np.ndarray, targets: np.ndarray, formatted: np.ndarray,
             references: np.ndarray, *, positive_label: int = 1) -> np.ndarray:
    """ERank's listwise reward ``r_RR`` (arXiv 2509.00520, Section 3.3), for each rollout.

    All rollouts of all candidates of a query are ranked together by score; ``phi`` is a rollout's
    global rank (ties share the smallest rank) and ``Phi_max`` the largest rank of a positive
    rollout. Then::

        r_RR = -1                           if the rollout is not formatted
               1 / phi                      if its document is positive
               -1                           if its document is negative and phi <= Phi_max
               1 - ((s - t) / 2) ** 2       if its document is negative and phi > Phi_max

    where ``s`` is the rollout's score and ``t`` the reference model's score of its document.

    The paper's display equation for ``r_RR`` could not be retrieved (no copy we could read
    decoded it) and it has no equation number in the text we have: the four cases above follow
    the paper's description of them (positives rewarded by reciprocal rank, a negative ranked
    above any positive penalised, a negative below all positives rewarded smoothly by its squared
    error against the reference score, an unformatted output penalised). The constants are ours:
    the penalties are -1, the squared error is scaled by the label range (2) so that the smooth
    reward lies in [0, 1], and a negative tied with the lowest positive counts as above it.
    Positives are the documents whose target label is at least ``positive_label`` (ERank's
    labels are binary).

    Args:
        scores: Each rollout's score.
        documents: Each rollout's document.
        targets: Each rollout's document's target label.
        formatted: Whether each rollout is in the response format.
        references: The reference model's score of each rollout's document.
        positive_label: The least target label of a positive document.
    """
    scores, targets = np.asarray(scores, dtype=float), np.asarray(targets, dtype=float)
    ranks = global_ranks(scores)
    positive = targets >= positive_label
    lowest_positive = ranks[positive].max() if positive.any() else 0
    smooth = 1.0 - ((scores - np.asarray(references, dtype=float)) / TOP_LABEL) ** 2
    rewards = np.where(positive, 1.0 / ranks, np.where(ranks <= lowest_positive, -1.0, smooth))
    return np.where(np.asarray(formatted, dtype=bool), rewards, -1.0)


def list_ndcg(scores: np.ndarray, documents: np.ndarray, targets: np.ndarray, *, cutoff: int = 10) -> np.ndarray:
    """The nDCG@cutoff of the query's list when a rollout stands for its document, for each rollout.

    Each document is scored by the mean of its rollouts' scores, except the rollout's own document,
    which gets the rollout's score; the list is ranked by score and::

        nDCG@k = DCG@k / IDCG@k,   DCG@k = sum_{r <= k} gain_r / log2(r + 1)

    with the target label as the gain (as trec_eval's ``ndcg_cut``, the measure the benchmarks
    report), and 0 when no document has a positive label. Ties are ranked pessimistically (the
    lower label first), so that scores that collapse together earn nothing. No paper's formula:
    this is the ranking measure itself, made per rollout in the same pool. (ERank's appendix I
    defines a different ``r_nDCG``, each positive rollout's share of the pooled nDCG with
    ``r_RR``'s penalties; its display equation could not be retrieved either.)
    """
    scores, targets = np.asarray(scores, dtype=float), np.asarray(targets, dtype=float)
    rows = _rows_by(documents)
    keys = list(rows)
    means = np.array([scores[rows[key]].mean() for key in keys])
    gains = np.array([targets[rows[key][0]] for key in keys])
    discounts = 1.0 / np.log2(np.arange(2, len(keys) + 2))[:cutoff]
    ideal = (np.sort(gains)[::-1][:cutoff] * discounts[:len(gains)]).sum()
    rewards = np.zeros(len(scores))
    if ideal == 0:
        return rewards
    position = {key: k for k, key in enumerate(keys)}
    for i, document in enumerate(documents):
        listed = means.copy()
        listed[position[document]] = scores[i]
        order = np.lexsort((gains, -listed))  # by score, highest first; ties: the lower gain first
        rewards[i] = (gains[order][:cutoff] * discounts[:min(cutoff, len(order))]).sum() / ideal
    return rewards


def _rows_by(keys: Sequence) -> dict:
    """The row numbers of each distinct key, in order of first appearance."""
    rows: dict = defaultdict(list)
    for row, key in enumerate(keys):
        rows[key].append(row)
    return {key: np.array(value) for key, value in rows.items()}


class ListReward:
    """A ranking-aware reward in trl's reward convention: one reward per rollout of a batch.

    The batch must hold whole query groups (every rollout of the candidates trained together):
    rollouts are grouped by ``qid`` and, within a query, by ``docno``. Each rollout is scored by
    the scorer (its expected label at the marker), then the named formula rewards it against the
    group. A rollout whose pair has no target label gets ``None`` (and is left out of its group).
    """

    def __init__(self, name: str, scorer: Scorer, *, alpha: float = 0.75, threshold: float = 0.4,
                 positive_label: int = 1, cutoff: int = 10):
        """Choose the formula and its options.

        Args:
            name: ``"composite"``, ``"rr"`` or ``"ndcg"``.
            scorer: Scores each rollout from its prompt's and completion's token ids.
            alpha: The composite's weight of the intra-document reward.
            threshold: The composite's intra-document threshold (tau) on the 0-2 scale.
            positive_label: ``rr``'s least label of a positive document.
            cutoff: ``ndcg``'s rank cutoff.
        """
        if name not in RANKING_REWARDS:
            raise InputError(f"unknown ranking reward {name!r}: one of {RANKING_REWARDS}")
        self.__name__ = name
        self.scorer = scorer
        self.alpha, self.threshold, self.positive_label, self.cutoff = alpha, threshold, positive_label, cutoff

    def __call__(self, completions: Sequence[str], completion_ids: Sequence[Sequence[int]],
                 prompt_token_ids: Sequence[Sequence[int]], qid: Sequence[str], docno: Sequence[str],
                 target_label: Sequence[Optional[int]], reference_score: Optional[Sequence[float]] = None,
                 **kwargs) -> list[Optional[float]]:
        """The reward of each rollout.

        Args:
            completions: The rollouts' texts.
            completion_ids: Their token ids.
            prompt_token_ids: The token ids of each rollout's prompt.
            qid: Each rollout's query.
            docno: Each rollout's document.
            target_label: Each rollout's document's target label.
            reference_score: ``rr`` only: the reference model's score of each rollout's document.
            **kwargs: The batch's other columns: ignored.

        Raises:
            InputError: ``rr`` without ``reference_score``.
        """
        if self.__name__ == "rr" and reference_score is None:
            raise InputError("the rr reward needs each pair's reference_score (the starting model's score)")
        scores = self.scorer(prompt_token_ids, completion_ids)
        rewards: list[Optional[float]] = [None] * len(completions)
        labelled = [k for k, target in enumerate(target_label) if target is not None]
        for rows in _rows_by([qid[k] for k in labelled]).values():
            rows = np.array(labelled)[rows]
            for k, value in zip(rows, self._group(rows, scores, completions, docno, target_label, reference_score)):
                rewards[k] = float(value)
        return rewards

    def _group(self, rows: np.ndarray, scores: np.ndarray, completions: Sequence[str], docno: Sequence[str],
               target_label: Sequence[int], reference_score: Optional[Sequence[float]]) -> np.ndarray:
        documents = np.array([docno[k] for k in rows], dtype=object)
        targets = np.array([target_label[k] for k in rows], dtype=float)
        if self.__name__ == "composite":
            return retro_composite(scores[rows], documents, targets, alpha=self.alpha, threshold=self.threshold)
        if self.__name__ == "rr":
            return erank_rr(scores[rows], documents, targets, [well_formed(completions[k]) for k in rows],
                            [reference_score[k] for k in rows], positive_label=self.positive_label)
        return list_ndcg(scores[rows], documents, targets, cutoff=self.cutoff)
