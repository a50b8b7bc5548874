"""trl's ``GRPOTrainer``, fed the project's prompts token for token (see :mod:`.grpo` for its config).

A module of its own because importing ``GRPOTrainer`` imports vLLM when it is installed (trl's
generation server client), six seconds here: a command that only parses a config, or refines with
the reward-weighted algorithm, does not pay it.
"""
from __future__ import annotations

from typing import Optional

from trl import GRPOTrainer

from .query_groups import QueryGroupSampler


class GrpoRefineTrainer(GRPOTrainer):
    """``GRPOTrainer`` that feeds the policy the prompt token ids made by the project's prompt encoder.

    These are token for token what ``ReasonRanker`` feeds it; the prompt text is not re-tokenized.
    With a sampler of query groups, its batches hold whole query groups.
    """

    def __init__(self, *args, prompt_ids: dict[str, list[int]], sampler: Optional[QueryGroupSampler] = None,
                 **kwargs):
        """Keep the encoded prompts, then set up ``GRPOTrainer`` with the other arguments.

        Args:
            *args: ``GRPOTrainer``'s positional arguments.
            prompt_ids: Token ids of each prompt, keyed by the prompt text in the dataset.
            sampler: Draws the training batches instead of trl's sampler (for ranking rewards).
            **kwargs: ``GRPOTrainer``'s keyword arguments.
        """
        self._prompt_ids = prompt_ids
        self._sampler = sampler
        super().__init__(*args, **kwargs)

    def _tokenize_prompts(self, prompts: list[str]):
        # trl's hook for turning prompts into ids (returns ids, images, multimodal fields).
        return [self._prompt_ids[prompt] for prompt in prompts], None, {}

    def _get_train_sampler(self, dataset=None):  # noqa: ANN001, ANN202
        # trl has no public hook for what a batch holds; this is where its own RepeatSampler comes from.
        return self._sampler if self._sampler is not None else super()._get_train_sampler(dataset)
