"""Online refinement with trl's GRPO: the config (the trainer is :mod:`.grpo_trainer`).

The policy is rewarded on its own current samples (``num_generations`` per prompt), with the same
reward functions as the reward-weighted algorithm (:mod:`.rewards`); its prompts are the project's
prompt encoder's, token for token. With a ranking reward its batches hold whole query groups
(:mod:`.query_groups`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from trl import GRPOConfig

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.numeric import check_fields, positive_int

from .refine_config import ALGORITHM_HELP, RefineConfig


@dataclass
class GrpoRefineConfig(RefineConfig, GRPOConfig):
    """GRPO's config: trl's ``GRPOConfig`` plus the refinement's data and rewards.

    The sampling options both algorithms share (``num_generations``, ``temperature``,
    ``max_completion_length``, ``reward_weights``) are ``GRPOConfig``'s, with its defaults; the
    options of the reward-weighted algorithm are not here. Defaults differ from ``GRPOConfig`` in
    bf16 (only on a GPU that supports it) and ``report_to`` (none).
    """

    algorithm: str = field(default="grpo", metadata={"help": ALGORITHM_HELP})
    query_group_size: Optional[int] = field(default=None, metadata={
        "help": "with a ranking reward: candidates of a query per batch, drawn with a relevant and a "
                "non-relevant one (default: all of a query's)"})

    def __post_init__(self):
        if isinstance(self.num_generations, int) and self.num_generations < 2:
            raise InputError(f"num_generations must be at least 2 with algorithm grpo (its advantages compare the "
                             f"responses to one prompt), got {self.num_generations}")
        check_fields(self, {"query_group_size": positive_int}, optional=("query_group_size",))
        if self.query_group_size is not None and self.query_group_size < 2:
            raise InputError(f"query_group_size must be at least 2 (a relevant and a non-relevant candidate), got "
                             f"{self.query_group_size}")
        super().__post_init__()

