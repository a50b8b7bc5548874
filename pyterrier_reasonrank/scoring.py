"""From label-token logits to relevance scores.

The score of a pair is the expected label ``sum_l l * p(l)`` over the labels 0, 1, 2, with the
probabilities renormalised over the three label tokens, so rankings are graded rather than
three-way ties.
"""
from __future__ import annotations

from typing import Union

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


def tempered(probabilities: np.ndarray, temperature: Union[float, np.ndarray]) -> np.ndarray:
    """The label distributions with their logits divided by ``temperature`` (1: unchanged).

    Renormalised over the labels, a distribution's logits are its log-probabilities up to a
    constant, so ``softmax(log p / T)``. A temperature above 1 softens over-confident
    distributions; below 1 sharpens them.

    Args:
        probabilities: Label distributions, one per row.
        temperature: One for all rows, or one per row.
    """
    temperature = np.asarray(temperature, dtype=np.float64)
    if (temperature == 1.0).all():
        return np.asarray(probabilities, dtype=np.float64)
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, None))
    logits /= temperature[..., None] if temperature.ndim else temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """The entropy (nats) of each label distribution: 0 when certain, ``ln 3`` (1.10) when uniform."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, None)
    return -(p * np.log(p)).sum(axis=-1)
