"""What the trainer configs of distillation and refinement share."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from pyterrier_reasonrank.numeric import check_fields, positive_int
from pyterrier_reasonrank.prompts import chat_template_sha256
from pyterrier_reasonrank.redaction import SecretFieldsNotPickled
from pyterrier_reasonrank.settings import StudentSettings, read_settings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .student import StudentConfig

PROMPT_OPTIONS = ("max_query_tokens", "max_doc_tokens", "max_question_tokens")


@dataclass
class TrainerDefaults(SecretFieldsNotPickled):
    """Options and defaults put before a trl config (``class DistillConfig(TrainerDefaults, SFTConfig)``).

    They are: the prompt truncation (by default the adapter's that training continues from, else
    the library's), bf16 only on a GPU that supports it, no experiment tracker, and no Hub token in
    the pickled ``training_args.bin`` that the trainer writes with every checkpoint.
    """

    max_query_tokens: Optional[int] = field(default=None, metadata={
        "help": "queries cut to this many tokens (default: the adapter's, else 512)"})
    max_doc_tokens: Optional[int] = field(default=None, metadata={
        "help": "documents cut to this many tokens (default: the adapter's, else 1024)"})
    max_question_tokens: Optional[int] = field(default=None, metadata={
        "help": "query generation: questions cut to this many tokens (default: the adapter's, else 1024)"})
    bf16: Optional[bool] = field(default=None, metadata={"help": "default: on a GPU that supports bfloat16"})
    report_to: Optional[str] = field(default="none", metadata={"help": "experiment trackers"})

    def __post_init__(self):
        check_fields(self, dict.fromkeys(PROMPT_OPTIONS, positive_int), optional=PROMPT_OPTIONS)
        if self.bf16 is None:
            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        with warnings.catch_warnings():
            # trl's configs default gradient_checkpointing to True, which newer transformers warn is a
            # deprecated name: a warning about a default the user did not set, that they cannot act on.
            warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
            super().__post_init__()

    def student_settings(self, student: StudentConfig, tokenizer: PreTrainedTokenizerBase, *, tasks: Sequence[str],
                         stage: str) -> StudentSettings:
        """The settings of the student this run trains.

        They are those of the adapter the run continues from (or the library's defaults), with this
        config's truncation in place where given, the tasks trained added to the adapter's, and the
        tokenizer's chat template recorded.
        """
        start = read_settings(student.adapter) if student.adapter else None
        given = {name: getattr(self, name) for name in PROMPT_OPTIONS if getattr(self, name) is not None}
        return dataclasses.replace(
            start or StudentSettings(), **given, tasks=tuple(dict.fromkeys([*(start.tasks if start else ()), *tasks])),
            stage=stage, base_model=student.base_model_name(), chat_template_sha256=chat_template_sha256(tokenizer),
            label_temperature={})  # a calibration is of the weights it was fitted on
