"""From label-token logits to relevance scores.

The score of a pair is the expected label ``sum_l l * p(l)`` over the labels 0, 1, 2, with the
probabilities renormalised over the three label tokens, so rankings are graded rather than
three-way ties.
"""
from __future__ import annotations

import numpy as np
import torch

from .prompts import LABELS

_LABEL_VALUES = np.asarray(LABELS, dtype=np.float64)


def label_probabilities(label_logits: torch.Tensor) -> np.ndarray:
    """Probabilities of the labels from the logits of their tokens, renormalised over the labels.

    Args:
        label_logits: ``(n, 3)`` logits of the tokens for labels 0, 1, 2.

    Returns:
        ``(n, 3)`` float64 array whose rows sum to one.
    """
    return torch.softmax(label_logits.double(), dim=-1).cpu().numpy()


def expected_label(probabilities: np.ndarray) -> np.ndarray:
    """The expected label ``sum_l l * p(l)`` of each row, in ``[0, 2]``."""
    return np.asarray(probabilities, dtype=np.float64) @ _LABEL_VALUES


def most_probable_label(probabilities: np.ndarray) -> np.ndarray:
    """The most probable label of each row (the lower label on a tie)."""
    return _LABEL_VALUES[np.argmax(probabilities, axis=-1)].astype(np.int64)
