"""Fusion with the first stage: the re-ranker's score interpolated with the first stage's.

A small re-ranker is wrong in ways a lexical first stage is not, and the peers that fuse gain from
it: ERank-4B's BRIGHT nDCG@10 goes from 32.9 to 36.1 fused with BM25 (arXiv 2509.00520, Table 4),
JudgeRank-8B's from 24.4 to 31.0. Both scores are min-max normalised within each query (their
scales differ, and a query's BM25 scores have no meaning across queries), then::

    score = weight * first_stage + (1 - weight) * re_ranker

so ``weight`` 0 is the re-ranker alone and 1 the first stage alone. The first stage's score is
read from the ``first_stage_score`` column that the re-ranker keeps beside its own ``score``.

The weight is a choice made on judged queries: :func:`cross_validated_fusion` picks it from a grid
by nDCG@10 with k-fold cross-validation over queries, so that no query's fused ranking uses a
weight chosen on that query.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .errors import InputError

if TYPE_CHECKING:
    from ir_measures import Measure

FIRST_STAGE_SCORE = "first_stage_score"
"""The column holding the first stage's score of each re-ranked document."""
RERANKER_SCORE = "reranker_score"
"""The column in which fusion keeps the re-ranker's own score."""
WEIGHTS = tuple(round(0.1 * step, 1) for step in range(11))
"""The weights tried by default: 0 to 1 by 0.1."""


def min_max_per_query(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` scaled to [0, 1] within each query; a query whose scores all tie gets 0 throughout."""
    grouped = frame.groupby("qid", sort=False)[column]
    low, high = grouped.transform("min"), grouped.transform("max")
    span = (high - low).where(high > low)
    return ((frame[column] - low) / span).fillna(0.0)


class FirstStageFusion(pt.Transformer):
    """Interpolates the per-query min-max normalised first-stage and re-ranker scores.

    Put it after a re-ranker whose output keeps the first stage's score in ``first_stage_score``
    (``bm25 >> ReasonRanker() >> FirstStageFusion(0.3)``; ReasonRanker keeps it). The fused score
    becomes ``score``, the re-ranker's is kept as ``reranker_score``, and the ranks follow the fused
    score.
    """

    def __init__(self, weight: float):
        """Choose the first stage's weight.

        Args:
            weight: From 0 (the re-ranker alone) to 1 (the first stage alone).

        Raises:
            InputError: The weight is not a number in [0, 1].
        """
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise InputError(f"the fusion weight must be a number from 0 to 1, got {weight!r}")
        self.weight = float(weight)

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """The input with the fused ``score`` (and ``reranker_score``), ranked again.

        Raises:
            pyterrier.validate.InputValidationError: A column is missing (it is named): the input
                must be a re-ranker's result frame with ``first_stage_score``.
        """
        pt.validate.result_frame(inp, extra_columns=[FIRST_STAGE_SCORE])
        fused = inp.assign(**{RERANKER_SCORE: inp["score"]})
        fused["score"] = self.weight * min_max_per_query(inp, FIRST_STAGE_SCORE) \
            + (1 - self.weight) * min_max_per_query(inp, "score")
        return pt.model.add_ranks(fused.sort_values(["qid", "score"], ascending=[True, False]))

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """The output columns for these input columns (PyTerrier's inspection), without fusing anything."""
        pt.validate.result_frame(input_columns, extra_columns=[FIRST_STAGE_SCORE])
        kept = [c for c in input_columns if c not in (RERANKER_SCORE, "rank")]
        return [*kept, RERANKER_SCORE, "rank"]  # the ranks are made again, last

    def __repr__(self) -> str:
        return f"FirstStageFusion({self.weight})"

    def schematic(self, *, input_columns: Optional[list[str]] = None) -> dict[str, Any]:
        """How PyTerrier draws this stage: a plain label with its weight."""
        return {"label": f"FirstStageFusion({self.weight})", "help_url": None}


def with_first_stage(first_stage: pd.DataFrame, reranked: pd.DataFrame) -> pd.DataFrame:
    """The re-ranked run with the first stage's scores in ``first_stage_score``, where it does not have them.

    Raises:
        InputError: A re-ranked document the first stage did not rank.
    """
    if FIRST_STAGE_SCORE in reranked.columns:
        return reranked
    scores = first_stage[["qid", "docno", "score"]].rename(columns={"score": FIRST_STAGE_SCORE})
    joined = reranked.merge(scores, on=["qid", "docno"], how="left")
    if joined[FIRST_STAGE_SCORE].isna().any():
        row = joined[joined[FIRST_STAGE_SCORE].isna()].iloc[0]
        raise InputError(f"the re-ranked document {row['docno']} of query {row['qid']} is not in the first stage's "
                         "ranking: fusion needs its first-stage score")
    return joined


def choose_weights(per_query: pd.DataFrame, folds: Sequence[Sequence[str]]) -> list[float]:
    """For each fold, the weight with the best mean measure over the *other* folds' queries.

    Args:
        per_query: ``qid, weight, value``: the measure of each query's fused ranking at each weight.
        folds: The queries of each fold.

    Returns:
        One weight per fold; on a tie, the smallest (the one that leans on the re-ranker most).

    Raises:
        InputError: A fold whose other folds hold no judged query.
    """
    chosen = []
    for held_out in folds:
        training = per_query[~per_query["qid"].isin(held_out)]
        if training.empty:
            raise InputError("fusion found no judged query outside a fold to choose its weight on: judge more "
                             "queries, or use fewer folds")
        means = training.groupby("weight")["value"].mean()
        chosen.append(float(means.index[np.argmax(means.to_numpy())]))
    return chosen


def cross_validated_fusion(first_stage: pd.DataFrame, reranked: pd.DataFrame, qrels: pd.DataFrame, *,
                           weights: Sequence[float] = WEIGHTS, folds: int = 5, measure: Optional[Measure] = None,
                           seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The re-ranked run fused with the first stage, each fold of queries at a weight chosen on the others.

    The queries are shuffled under ``seed`` and split into ``folds`` folds (as many as there are
    queries, when fewer); each fold's queries are fused at the weight whose fused rankings have the
    best mean ``measure`` over the other folds' judged queries.

    Args:
        first_stage: The first stage's run (its ``score`` is used unless the re-ranked run has
            ``first_stage_score``).
        reranked: The re-ranker's run of the first stage's documents.
        qrels: The judgements.
        weights: The first-stage weights to try.
        folds: How many folds.
        measure: What the weight is chosen by (default nDCG@10).
        seed: The shuffle of the queries into folds.

    Returns:
        The fused run of every query, and a table of the folds: ``fold, weight, queries`` and the
        training queries' mean measure at that weight (``training``).

    Raises:
        InputError: Fewer than two queries (no query would be left to choose a weight on).
    """
    measure = measure or pt.measures.nDCG @ 10
    run = with_first_stage(first_stage, reranked)
    queries = list(dict.fromkeys(run["qid"]))
    if len(queries) < 2:
        raise InputError(f"fusion chooses its weight by cross-validation over queries and needs at least 2, "
                         f"got {len(queries)}")
    order = np.random.default_rng(seed).permutation(len(queries))
    split = [[queries[i] for i in part] for part in np.array_split(order, min(folds, len(queries)))]
    fused = {weight: FirstStageFusion(weight)(run) for weight in weights}
    per_query = pd.DataFrame([{"qid": qid, "weight": weight, "value": values[str(measure)]}
                              for weight, ranking in fused.items()
                              for qid, values in pt.Evaluate(ranking, qrels, [measure], perquery=True).items()])
    chosen = choose_weights(per_query, split)
    parts, rows = [], []
    for k, (part, weight) in enumerate(zip(split, chosen)):
        parts.append(fused[weight][fused[weight]["qid"].isin(part)])
        training = per_query[~per_query["qid"].isin(part) & (per_query["weight"] == weight)]["value"].mean()
        rows.append({"fold": k, "weight": weight, "queries": len(part), "training": training})
    return pd.concat(parts, ignore_index=True), pd.DataFrame(rows)
