"""Scoring rollouts as the ranker scores pairs: the expected label at the marker.

A ranking-aware reward (:mod:`.ranking_rewards`) ranks a query's rollouts by the score the
re-ranker would give: the expected label under the model's label distribution after the
explanation. Each rollout's explanation ends where the inference rule says
(:func:`~pyterrier_reasonrank.backends.base.settle`: at the label marker, or cut at a special token
with the marker appended, as the ranker forces a label); one forward pass over the prompt and
that explanation reads the distribution.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from pyterrier_reasonrank.backends import Batching
from pyterrier_reasonrank.backends.base import settle
from pyterrier_reasonrank.backends.hf import HFBackend
from pyterrier_reasonrank.prompts import PromptEncoder
from pyterrier_reasonrank.scoring import expected_label, label_probabilities

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class RolloutScorer:
    """The expected label of each rollout under a model (during GRPO: the policy being trained, as it is now)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoder: PromptEncoder, *,
                 batch_size: int = 16):
        """Keep the model, and the encoder whose marker and label tokens are read.

        Args:
            model: The student.
            tokenizer: Its tokenizer.
            encoder: The prompt encoder the rollouts' prompts were made with.
            batch_size: Rollouts scored in one forward pass.
        """
        self.backend = HFBackend(model, tokenizer)
        self.encoder = encoder
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]) -> np.ndarray:
        """The expected label (0 to 2) of each rollout: its prompt and completion, as token ids."""
        contexts = [list(prompt) + settle(list(completion), self.encoder, self.backend.stop_ids,
                                          len(completion)).context
                    for prompt, completion in zip(prompts, completions)]
        model = self.backend.model
        was_training = model.training
        model.eval()
        scores = np.zeros(len(contexts))
        for start in range(0, len(contexts), self.batch_size):
            batch = contexts[start:start + self.batch_size]
            input_ids, mask = self.backend.left_pad(batch, max(map(len, batch)))
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # padding does not shift the positions
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False,
                           logits_to_keep=1).logits[:, -1]
            scores[start:start + len(batch)] = expected_label(label_probabilities(logits[:, self.encoder.label_ids]))
        model.train(was_training)
        return scores


def reference_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict],
                     encoder: PromptEncoder, *, max_new_tokens: int, batch_size: int = 16) -> list[float]:
    """The model's score of each pair as the ranker gives it (greedy explanation, expected label).

    ERank's ``r_RR`` compares a rollout's score with the reference model's score of its document;
    refinement takes it from the model it starts from, before any training.
    """
    was_training = model.training
    model.eval()
    judged = HFBackend(model, tokenizer).judge(encoder.prompts([r["query"] for r in records],
                                                               [r["text"] for r in records]),
                                               encoder, mode="explain", max_new_tokens=max_new_tokens,
                                               batching=Batching(batch_size=batch_size))
    model.train(was_training)
    return expected_label(judged.probabilities).tolist()
