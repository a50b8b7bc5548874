"""Measuring a student on held-out annotated pairs: label accuracy, and mean reward of its samples."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from pyterrier_reasonrank.backends import Batching
from pyterrier_reasonrank.backends.hf import HFBackend
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.prompts import PromptEncoder
from pyterrier_reasonrank.scoring import most_probable_label

from .records import target_label
from .rewards import reward_columns

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def label_accuracy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict],
                   encoder: PromptEncoder, *, label_source: str = "gold_or_teacher", max_new_tokens: int = 128,
                   batch_size: int = 16) -> dict:
    """How often the student's label, as ``ReasonRanker`` reads it in the encoder's mode, is the target label.

    Returns:
        ``accuracy``, ``majority_rate`` (accuracy of always answering the most frequent target) and ``pairs``.
    """
    pairs = [(r, target_label(r, label_source)) for r in records]
    pairs = [(r, t) for r, t in pairs if t is not None]
    if not pairs:
        raise InputError("no held-out pairs with a target label")
    was_training = model.training
    model.eval()
    prompts = encoder.prompts([r["query"] for r, _ in pairs], [r["text"] for r, _ in pairs])
    judged = HFBackend(model, tokenizer).judge(prompts, encoder, mode=encoder.mode, max_new_tokens=max_new_tokens,
                                               batching=Batching(batch_size=batch_size))
    model.train(was_training)
    targets = np.array([t for _, t in pairs])
    majority = Counter(targets.tolist()).most_common(1)[0][1] / len(targets)
    accuracy = float((most_probable_label(judged.probabilities) == targets).mean())
    return {"accuracy": accuracy, "majority_rate": majority, "pairs": len(targets)}


def mean_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict],
                reward_funcs: Sequence[Callable], encoder: PromptEncoder, *, label_source: str = "gold_or_teacher",
                num_samples: int = 4, temperature: float = 1.0, max_new_tokens: int = 128, batch_size: int = 16,
                reward_weights: Optional[Sequence[float]] = None,
                references: Optional[Sequence[float]] = None) -> float:
    """The mean (weighted) reward of ``num_samples`` responses sampled per held-out pair.

    The responses of all pairs are rewarded together, so that a ranking-aware reward compares a
    query's pairs; ``references`` are the starting model's scores of the pairs (for ``rr``).
    """
    prompts = [encoder.encode(r["query"], r["text"]) for r in records]
    samples = HFBackend(model, tokenizer).sample(prompts, num_samples=num_samples, temperature=temperature,
                                                 max_new_tokens=max_new_tokens, batch_size=batch_size)
    pairs = reward_columns(records, [target_label(r, label_source) for r in records], prompts, references)
    columns = {key: [row[key] for row in pairs for _ in range(num_samples)] for key in pairs[0]}
    columns["completion_ids"] = [c.ids for per_pair in samples for c in per_pair]
    completions = [c.text for per_pair in samples for c in per_pair]
    return float(np.mean(total_rewards(completions, columns, reward_funcs, reward_weights)))


def total_rewards(completions: Sequence[str], columns: dict, reward_funcs: Sequence[Callable],
                  reward_weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """The weighted sum of the reward functions for each completion (a missing reward counts 0)."""
    weights = reward_weights or [1.0] * len(reward_funcs)
    if len(weights) != len(reward_funcs):
        raise InputError(f"{len(weights)} reward weights for {len(reward_funcs)} reward functions")
    total = np.zeros(len(completions))
    for weight, function in zip(weights, reward_funcs):
        values = function(completions=list(completions), **columns)
        total += weight * np.array([0.0 if v is None else v for v in values])
    return total
