"""Reward-weighted fine-tuning, the paper's offline refinement.

Sample k responses per pair from the student, score each (and the teacher's response) with the
reward functions, min-max normalise the rewards within each pair, keep the responses at or above a
threshold and fine-tune on them with a loss of ``r ** power`` times the response-token NLL.

A pair whose candidates all get the same reward says nothing about which response is better.
The paper's code keeps all of them at weight 1 (``keep_ties=True``); leaving such a pair out
(``keep_ties=False``) trains only on pairs that tell responses apart, as GRPO does (its advantages
are zero there).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from pyterrier_reasonrank.backends import Completion
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.numeric import check_fields, non_negative_number, proportion
from pyterrier_reasonrank.prompts import PromptEncoder

from .evaluation import total_rewards
from .refine_config import ALGORITHM_HELP, RefineConfig
from .rewards import reward_columns
from .sampling import SAMPLING_BACKENDS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class RwsftConfig(RefineConfig, TrainingArguments):
    """The reward-weighted fine-tuning's config: transformers' ``TrainingArguments`` plus the refinement's settings.

    Those are the data, rewards and sampling both algorithms share (:class:`~.refine_config.RefineConfig`),
    and how responses are drawn, kept and weighted. Defaults differ from ``TrainingArguments`` in
    bf16 (only on a GPU that supports it), ``report_to`` (none), and as GRPO's: ``learning_rate``
    1e-6, ``gradient_checkpointing`` on, ``logging_steps`` 10 (what rwsft trained with when it was
    configured by ``GRPOConfig``, so that a recipe trains as it did).
    """

    algorithm: str = field(default="rwsft", metadata={"help": ALGORITHM_HELP})
    learning_rate: float = field(default=1e-6, metadata={"help": "The initial learning rate for AdamW."})
    gradient_checkpointing: bool = field(default=True, metadata={
        "help": "checkpoint activations: less memory, slower backward pass"})
    logging_steps: float = field(default=10, metadata={"help": "log every this many steps (a fraction: of the run)"})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "must be false: the loss needs each example's completion_mask and weight"})
    keep_threshold: float = field(default=0.85, metadata={"help": "keep responses with normalised reward >= this"})
    weight_power: float = field(default=3.0, metadata={"help": "loss weight = normalised reward ** this"})
    include_teacher: bool = field(default=True, metadata={"help": "the teacher's response is a candidate too"})
    keep_ties: bool = field(default=True, metadata={
        "help": "a pair whose candidates all tie keeps them at weight 1 (the paper), or is left out"})
    sampling_backend: str = field(default="transformers", metadata={
        "help": "draw the responses with transformers, or vllm (its engine, in a process of its own)"})
    sampling_engine_options: Union[dict, str, None] = field(default=None, metadata={
        "help": "with vllm: options of vllm.LLM, e.g. '{\"gpu_memory_utilization\": 0.5}'"})

    def __post_init__(self):
        check_fields(self, {"keep_threshold": proportion, "weight_power": non_negative_number})
        if self.remove_unused_columns:
            raise InputError("remove_unused_columns must be false with algorithm rwsft: its loss needs each "
                             "example's completion_mask and weight, which the model does not take")
        if self.sampling_backend not in SAMPLING_BACKENDS:
            raise InputError(f"sampling_backend must be one of {SAMPLING_BACKENDS}, got {self.sampling_backend!r}")
        if isinstance(self.sampling_engine_options, str):
            try:
                self.sampling_engine_options = json.loads(self.sampling_engine_options)
            except json.JSONDecodeError as error:
                raise InputError(f"sampling_engine_options is not JSON ({error}): give the options of vllm.LLM as "
                                 "a JSON object, e.g. '{\"gpu_memory_utilization\": 0.5}'") from None
        super().__post_init__()


def min_max(rewards: np.ndarray) -> Optional[np.ndarray]:
    """Rewards scaled to [0, 1] within one pair, or ``None`` when they all tie."""
    low, high = float(np.min(rewards)), float(np.max(rewards))
    return None if high == low else (rewards - low) / (high - low)


def weighted_examples(draw: Callable[[list[list[int]]], list[list[Completion]]], tokenizer: PreTrainedTokenizerBase,
                      records: Sequence[dict], targets: Sequence[int], encoder: PromptEncoder,
                      reward_funcs: Sequence[Callable], *, keep_threshold: float, weight_power: float,
                      include_teacher: bool, keep_ties: bool = True, reward_weights: Optional[Sequence[float]] = None,
                      references: Optional[Sequence[float]] = None) -> tuple[list[dict], dict]:
    """Sample, reward and select: the weighted training examples, and statistics of the draw.

    Every pair's candidates are rewarded in one pool, so that a ranking-aware reward sees all the
    rollouts of a query's candidates together (a pointwise reward is the same either way); the
    rewards are then normalised within each pair.

    Args:
        draw: The student's responses to each prompt (token ids): ``k`` per prompt (see
            :mod:`.sampling`).
        tokenizer: The student's tokenizer.
        records: The pairs (``query``, ``text``, ``qid``, ``docno``, and the teacher's
            ``explanation`` and ``label``).
        targets: The target label of each pair.
        encoder: The student's prompt encoder.
        reward_funcs: The rewards, weighted by ``reward_weights``.
        keep_threshold: Responses whose normalised reward is at least this are kept.
        weight_power: A kept response's loss weight is its normalised reward to this power.
        include_teacher: The teacher's response is a candidate too (one more rollout of its pair).
        keep_ties: A pair whose candidates all tie keeps them at weight 1, rather than being left out.
        reward_weights: One weight per reward (default: 1 each).
        references: The starting model's score of each pair (for the ``rr`` reward).

    Returns:
        Examples with ``input_ids``, ``completion_mask`` and ``weight``; and ``mean_sample_reward``,
        ``pairs``, ``pairs_tied`` (kept at weight 1, or left out) and ``kept`` (responses trained on).
    """
    prompts = [encoder.encode(r["query"], r["text"]) for r in records]
    samples = draw(prompts)
    pair_columns = reward_columns(records, targets, prompts, references)
    owner, texts, ids, sampled = [], [], [], []  # each candidate's pair, text, token ids, and whether it was drawn
    for pair, (record, completions) in enumerate(zip(records, samples)):
        candidates = [(c.text, c.ids, True) for c in completions]
        if include_teacher and record.get("explanation") and record.get("label") is not None:
            response = encoder.encode_response(record["explanation"], record["label"])
            candidates.append((tokenizer.decode(response, skip_special_tokens=True), response, False))
        for text, candidate_ids, drawn in candidates:
            owner.append(pair)
            texts.append(text)
            ids.append(candidate_ids)
            sampled.append(drawn)
    columns = {key: [pair_columns[pair][key] for pair in owner] for key in pair_columns[0]}
    rewards = total_rewards(texts, {**columns, "completion_ids": ids}, reward_funcs, reward_weights)
    owner, sampled = np.array(owner), np.array(sampled)
    examples, tied = [], 0
    for pair, prompt in enumerate(prompts):
        rows = np.flatnonzero(owner == pair)
        normalised = min_max(rewards[rows])
        if normalised is None:
            tied += 1
            if not keep_ties:
                continue
            normalised = np.ones(len(rows))
        for row, r in zip(rows, normalised):
            if r >= keep_threshold:
                examples.append({"input_ids": prompt + ids[row],
                                 "completion_mask": [0] * len(prompt) + [1] * len(ids[row]),
                                 "weight": float(r) ** weight_power})
    statistics = {"mean_sample_reward": float(np.mean(rewards[sampled])), "pairs": len(records),
                  "pairs_tied": tied, "kept": len(examples)}
    return examples, statistics


class RwsftTrainer(Trainer):
    """A ``Trainer`` whose loss is ``mean(weight * mean response-token NLL)`` over the sequences of a batch.

    Examples carry ``input_ids``, ``completion_mask`` (1 on response tokens) and ``weight``; the
    collator pads them on the right.
    """

    def __init__(self, *args, pad_token_id: int, **kwargs):
        """Set up the ``Trainer`` with a collator that pads ``input_ids`` with ``pad_token_id``.

        Args:
            *args: ``Trainer``'s positional arguments.
            pad_token_id: The token that pads ``input_ids`` (masked out by the attention mask).
            **kwargs: ``Trainer``'s keyword arguments, except ``data_collator``.
        """
        super().__init__(*args, data_collator=lambda batch: _collate(batch, pad_token_id), **kwargs)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Union[torch.Tensor, int, None] = None,
                     ) -> Union[torch.Tensor, tuple[torch.Tensor, Any]]:
        """The batch's reward-weighted loss: the mean over sequences of ``weight`` times the response-token NLL.

        Args:
            model: The model being trained.
            inputs: A collated batch: ``input_ids``, ``attention_mask``, ``completion_mask`` and ``weight``.
            return_outputs: Also return the model's outputs.
            num_items_in_batch: Ignored: the loss is a mean per sequence, not per token.

        Returns:
            The loss, or ``(loss, outputs)`` when ``return_outputs``.
        """
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        # The token at position t + 1 is predicted at position t: shift targets and mask together.
        logits = outputs.logits[:, :-1].float()
        targets = inputs["input_ids"][:, 1:]
        response = inputs["completion_mask"][:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        per_sequence = (nll * response).sum(dim=1) / response.sum(dim=1).clamp(min=1.0)
        loss = (inputs["weight"] * per_sequence).mean()
        return (loss, outputs) if return_outputs else loss


def _collate(batch: list[dict], pad_token_id: int) -> dict:
    width = max(len(e["input_ids"]) for e in batch)

    def padded(key: str, value: int) -> torch.Tensor:
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in batch])

    return {"input_ids": padded("input_ids", pad_token_id),
            "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                            for e in batch]),
            "completion_mask": padded("completion_mask", 0),
            "weight": torch.tensor([e["weight"] for e in batch], dtype=torch.float32)}
