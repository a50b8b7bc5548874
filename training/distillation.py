"""Distillation: supervised fine-tuning of the student on the teacher's judgements (trl ``SFTTrainer``).

The examples are built token by token with the same :class:`~pyterrier_reasonrank.prompts.PromptEncoder`
that inference uses, in prompt-completion form, so the loss covers the response only. With a
``query_generation_file`` the student learns the second task, writing search queries for a long
question, in the same run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from transformers import set_seed
from trl import SFTConfig, SFTTrainer, get_peft_config

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.outputs import writable_folder
from pyterrier_reasonrank.prompts import MODES, PromptEncoder, QueryPromptEncoder

from .arguments import TrainerDefaults
from .checkpoints import resume_point
from .evaluation import label_accuracy
from .records import (
    PAIR_FIELDS,
    file_sha256,
    labelled_pairs,
    read_jsonl,
    record_key,
    usable_judgements,
    usable_query_lists,
)
from .runcard import plot_curves, write_run_card
from .student import StudentConfig, load_student

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class DistillConfig(TrainerDefaults, SFTConfig):
    """trl's ``SFTConfig`` plus the data and the prompt truncation of the student.

    Differences from ``SFTConfig``'s defaults: the loss is on the response only
    (``completion_only_loss``), sequences are not cut (``max_length: null``; the prompt encoder
    already truncates query and document by tokens), bf16 only on a GPU that supports it, and no
    experiment tracker (``report_to: none``).
    """

    train_file: Optional[str] = field(default=None, metadata={"help": "annotated JSONL (reasonrank-train annotate)"})
    query_generation_file: Optional[str] = field(default=None, metadata={
        "help": "query-generation JSONL: trains the second task in the same run"})
    eval_file: Optional[str] = field(default=None, metadata={"help": "held-out JSONL: label accuracy in the run card"})
    mode: str = field(default="explain", metadata={"help": "explain (explanation, then label) or direct (label)"})
    max_query_tokens: int = field(default=512, metadata={"help": "queries cut to this many tokens"})
    max_doc_tokens: int = field(default=1024, metadata={"help": "documents cut to this many tokens"})
    max_question_tokens: int = field(default=1024, metadata={"help": "query generation: questions cut here"})
    completion_only_loss: Optional[bool] = field(default=True, metadata={"help": "loss on the response only"})
    max_length: Optional[int] = field(default=None, metadata={"help": "longest example; longer ones are an error"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}")
        super().__post_init__()


def training_examples(tokenizer: PreTrainedTokenizerBase, config: DistillConfig, judgements: list[dict],
                      query_lists: list[dict] = ()) -> list[dict]:
    """Tokenized prompt-completion examples: ``input_ids`` and a ``completion_mask`` (1 on the response)."""
    encoder = PromptEncoder(tokenizer, config.mode, max_query_tokens=config.max_query_tokens,
                            max_doc_tokens=config.max_doc_tokens)
    pairs = [(encoder.encode(r["query"], r["text"]), encoder.encode_response(r["explanation"], r["label"]))
             for r in judgements]
    if query_lists:
        questions = QueryPromptEncoder(tokenizer, max_question_tokens=config.max_question_tokens)
        pairs += [(questions.encode(r["query"]), questions.encode_response(r["queries"])) for r in query_lists]
    examples = [{"input_ids": prompt + completion, "completion_mask": [0] * len(prompt) + [1] * len(completion)}
                for prompt, completion in pairs]
    longest = max(len(e["input_ids"]) for e in examples)
    if config.max_length is not None and longest > config.max_length:
        raise InputError(f"an example has {longest} tokens, more than max_length={config.max_length}; "
                         "lower max_doc_tokens / max_query_tokens or raise max_length")
    return examples


def distill(config: DistillConfig, student: StudentConfig) -> dict:
    """Fine-tune the student on the annotations and save it (adapter or model, tokenizer, run card, curves).

    Returns:
        The run's metrics (also in ``run_card.json``).
    """
    from datasets import Dataset

    # Every input is read and checked before any work starts.
    if not config.train_file:
        raise InputError("no train_file: the annotated JSONL written by `reasonrank-train annotate`")
    records = read_jsonl(config.train_file, required=PAIR_FIELDS)
    # In key order: the file's order depends on when the teacher's answers arrived.
    judgements = sorted(usable_judgements(records), key=record_key)
    if not judgements:
        raise InputError(f"{config.train_file} holds no usable judgements ({len(records)} records, "
                         f"{sum(bool(r.get('error')) for r in records)} with errors)")
    query_lists = sorted(usable_query_lists(read_jsonl(config.query_generation_file, required=("query",))),
                         key=record_key) if config.query_generation_file else []
    held_out = labelled_pairs(config.eval_file) if config.eval_file else None
    writable_folder(config.output_dir)
    set_seed(config.seed)  # the adapter's initial weights too, which are drawn before the trainer seeds
    model, tokenizer = load_student(student, trust_remote_code=config.trust_remote_code)
    examples = training_examples(tokenizer, config, judgements, query_lists)
    dataset = Dataset.from_list(examples).shuffle(seed=config.seed)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=get_peft_config(student) if student.use_peft and student.adapter is None else None)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_point(config))
    metrics = {"train_loss": result.training_loss, "steps": result.global_step,
               "train_seconds": round(time.perf_counter() - start, 1)}
    trainer.save_model(config.output_dir)
    if held_out:
        metrics["eval"] = label_accuracy(trainer.model, tokenizer, held_out,
                                         max_query_tokens=config.max_query_tokens,
                                         max_doc_tokens=config.max_doc_tokens,
                                         batch_size=config.per_device_eval_batch_size)
    data = {"train_file": config.train_file, "train_sha256": file_sha256(config.train_file),
            "judgements": len(judgements), "skipped": len(records) - len(judgements), "query_lists": len(query_lists)}
    if config.query_generation_file:
        data["query_generation_sha256"] = file_sha256(config.query_generation_file)
    write_run_card(config.output_dir, stage="distill", configs=[config, student], data=data, metrics=metrics)
    plot_curves(trainer.state.log_history, f"{config.output_dir}/curves.png", title="distillation")
    return metrics
