"""What the trainer configs of distillation and refinement share."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch

from pyterrier_reasonrank.redaction import SecretFieldsNotPickled


@dataclass
class TrainerDefaults(SecretFieldsNotPickled):
    """Defaults put before a trl config (``class DistillConfig(TrainerDefaults, SFTConfig)``).

    They are: bf16 only on a GPU that supports it, no experiment tracker, and no Hub token in the
    pickled ``training_args.bin`` that the trainer writes with every checkpoint.
    """

    bf16: Optional[bool] = field(default=None, metadata={"help": "default: on a GPU that supports bfloat16"})
    report_to: Optional[str] = field(default="none", metadata={"help": "experiment trackers"})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        with warnings.catch_warnings():
            # trl's configs default gradient_checkpointing to True, which newer transformers warn is a
            # deprecated name: a warning about a default the user did not set, that they cannot act on.
            warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
            super().__post_init__()
