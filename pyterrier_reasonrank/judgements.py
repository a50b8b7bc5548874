"""One record type for judged pairs, from the backend that judges them to the store and the result frame.

A backend returns :class:`Judgements` for the prompts it was given; a
:class:`~pyterrier_reasonrank.judging.Judge` averages the draws of a pair and fills the judgements
of a whole chunk (some read from a :class:`~pyterrier_reasonrank.store.JudgementStore`, which
keeps and returns the same fields); the ranker turns them into its output columns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .prompts import LABELS


@dataclass
class Judgements:
    """The judgements of ``n`` pairs, in their order.

    Attributes:
        explanations: The explanation written before the label (the greedy one when several were
            drawn; empty in direct mode), ``(n,)`` objects.
        probabilities: ``(n, 3)`` probabilities of labels 0, 1, 2, renormalised over the labels
            (averaged over the explanations drawn).
        forced: ``(n,)`` whether the label marker had to be appended because the model ran out of
            explanation budget or left the format.
        tokens: ``(n,)`` tokens decoded for the pair: every explanation drawn, with its marker
            (written or appended); 0 in direct mode.
        samples: ``(n,)`` explanations drawn; 0 for a pair judged in direct mode.
    """

    explanations: np.ndarray
    probabilities: np.ndarray
    forced: np.ndarray
    tokens: np.ndarray
    samples: np.ndarray

    @classmethod
    def of(cls, explanations: Sequence[str], probabilities: np.ndarray, forced: Sequence[bool],
           tokens: Sequence[int], samples: Sequence[int]) -> Judgements:
        """Judgements from sequences, converted to the arrays of the record."""
        return cls(np.array(list(explanations), dtype=object).reshape(-1),
                   np.asarray(probabilities, dtype=np.float64).reshape(-1, len(LABELS)),
                   np.asarray(forced, dtype=bool), np.asarray(tokens, dtype=np.int64),
                   np.asarray(samples, dtype=np.int64))

    @classmethod
    def empty(cls, n: int) -> Judgements:
        """Room for ``n`` pairs."""
        return cls.of([""] * n, np.zeros((n, len(LABELS))), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64),
                      np.zeros(n, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.explanations)

    def put(self, rows: np.ndarray, other: Judgements) -> None:
        """Put ``other``'s judgements (in the order of ``rows``) at ``rows``."""
        for name in FIELDS:
            getattr(self, name)[rows] = getattr(other, name)

    def take(self, rows: np.ndarray) -> Judgements:
        """The judgements at ``rows``, in that order."""
        return Judgements(*(getattr(self, name)[rows] for name in FIELDS))

    @property
    def modes(self) -> np.ndarray:
        """The mode that judged each pair (see :func:`judging_mode`)."""
        return judging_mode(self.samples)


FIELDS = ("explanations", "probabilities", "forced", "tokens", "samples")
"""The fields of :class:`Judgements`, in order."""


def judging_mode(samples: Sequence[int]) -> np.ndarray:
    """The mode that judged each pair, from its ``samples``: ``"explain"`` if it drew explanations, else ``"direct"``.

    In adaptive mode both occur in one frame; calibration and the label temperature read it so.
    """
    return np.where(np.asarray(samples) > 0, "explain", "direct")
