"""The settings both refinement algorithms share: the data, the rewards and the sampling.

Each algorithm has a config of its own that adds them to its trainer's arguments (trl's
convention, a config beside each trainer): :class:`~.rwsft.RwsftConfig` to transformers'
``TrainingArguments`` for the reward-weighted ``RwsftTrainer``, :class:`~.grpo.GrpoRefineConfig`
to trl's ``GRPOConfig`` for GRPO. Neither carries the other's options, so none is silently ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.numeric import check_fields, non_negative_number, positive_int, proportion

from .arguments import TrainerDefaults
from .recipes import COMMANDS
from .records import LABEL_SOURCES
from .rewards import REWARDS

ALGORITHMS: dict[str, str] = COMMANDS["refine"].choice.configs
"""Each algorithm and the name of its config (the recipes pick the config by the ``algorithm`` key)."""

ALGORITHM_HELP = "rwsft (reward-weighted, offline) or grpo (online): each has a config of its own"


@dataclass
class RefineConfig(TrainerDefaults):
    """What refinement needs whatever its algorithm, put before its trainer's arguments.

    ``class RwsftConfig(RefineConfig, TrainingArguments)``; not used alone. The sampling options
    (``num_generations``, ``temperature``, ``max_completion_length``, ``reward_weights``) and
    ``trust_remote_code`` have the names and defaults of trl's ``GRPOConfig``; each config sets its
    ``algorithm`` field to its own algorithm.
    """

    train_file: Optional[str] = field(default=None, metadata={"help": "annotated JSONL: the pairs to refine on"})
    eval_file: Optional[str] = field(default=None, metadata={
        "help": "held-out JSONL: mean sampled reward before and after, in the run card"})
    rewards: list[str] = field(default_factory=lambda: ["label", "format"], metadata={
        "help": f"reward functions: {', '.join(REWARDS)}, or the import path of your own (module.function)"})
    reward_weights: Optional[list[float]] = field(default=None, metadata={
        "help": "one weight per reward (default: 1 each)"})
    reward_model: Optional[str] = field(default=None, metadata={"help": "sequence-classification reward model"})
    reward_model_max_length: int = field(default=4096, metadata={
        "help": "conversations the reward model reads are fitted to this many tokens by cutting the document"})
    partial_credit: float = field(default=0.5, metadata={"help": "label reward for a label off by one"})
    label_source: str = field(default="gold_or_teacher", metadata={"help": f"target label: one of {LABEL_SOURCES}"})
    num_generations: int = field(default=8, metadata={"help": "responses sampled per pair"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_completion_length: int = field(default=512, metadata={"help": "longest sampled response, in tokens"})
    eval_samples: int = field(default=4, metadata={"help": "responses sampled per held-out pair for the mean reward"})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "let the student's and the reward model's own code run"})
    composite_alpha: float = field(default=0.75, metadata={
        "help": "composite reward: weight of Retro*'s intra-document part (the paper's 0.75)"})
    composite_threshold: float = field(default=0.4, metadata={
        "help": "composite reward: the intra-document threshold tau on the 0-2 scale (the paper's 20 of 100)"})
    rr_positive_label: int = field(default=1, metadata={"help": "rr reward: the least label of a positive document"})
    ndcg_cutoff: int = field(default=10, metadata={"help": "ndcg reward: the rank cutoff"})
    include_disagreements: bool = field(default=False, metadata={
        "help": "also refine on pairs whose teacher samples had no majority label (annotate's teacher_samples)"})

    def __post_init__(self):
        configs = ", ".join(f"{algorithm}: {config}" for algorithm, config in ALGORITHMS.items())
        if not isinstance(self, TrainingArguments):
            raise TypeError(f"RefineConfig holds what the refinement configs share; each algorithm has its own "
                            f"({configs})")
        own = next(f.default for f in dataclasses.fields(self) if f.name == "algorithm")
        if self.algorithm != own:
            raise InputError(f"{type(self).__name__} configures algorithm {own}, not {self.algorithm!r}; each "
                             f"algorithm has a config of its own ({configs})")
        check_fields(self, {"num_generations": positive_int, "max_completion_length": positive_int,
                            "partial_credit": proportion, "eval_samples": positive_int,
                            "reward_model_max_length": positive_int, "composite_alpha": proportion,
                            "composite_threshold": non_negative_number, "ndcg_cutoff": positive_int})
        if self.rr_positive_label not in (1, 2):
            raise InputError(f"rr_positive_label must be 1 or 2 (the least label of a positive document), got "
                             f"{self.rr_positive_label!r}")
        if self.label_source not in LABEL_SOURCES:
            raise InputError(f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}")
        if "reward_model" in self.rewards and len(self.rewards) > 1 and not self.reward_weights:
            raise InputError(f"rewards {self.rewards} mix a reward model's scores (unbounded logits) with rewards "
                             "in [0, 1]: give reward_weights, one per reward, to say how they add up")
        super().__post_init__()

    def ranking_options(self) -> dict:
        """The options of the ranking rewards (see :class:`.ranking_rewards.ListReward`)."""
        return {"alpha": self.composite_alpha, "threshold": self.composite_threshold,
                "positive_label": self.rr_positive_label, "cutoff": self.ndcg_cutoff}
