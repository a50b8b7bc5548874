"""Distillation: supervised fine-tuning of the student on the teacher's judgements (trl ``SFTTrainer``).

One run trains every task the student serves: judging in explain mode (explanation, then label),
in direct mode (the label alone, from the same teacher labels) and, with a
``query_generation_file``, writing search queries for a long question. The examples are built token
by token by the same encoders that inference uses, in prompt-completion form, so the loss covers
the response only; the student is saved with its settings, so that it is served as it was trained.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.numeric import check_fields, proportion
from pyterrier_reasonrank.outputs import writable_folder
from pyterrier_reasonrank.settings import StudentSettings

from .arguments import TrainerDefaults
from .checkpoints import resume_point
from .evaluation import label_accuracy
from .packages import require_packages
from .records import (
    PAIR_FIELDS,
    file_sha256,
    labelled_pairs,
    read_jsonl,
    record_key,
    usable_judgements,
    usable_query_lists,
)
from .runcard import SettingsCallback, deferred_push, plot_curves, push_student, write_student
from .student import StudentConfig, load_student

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class DistillConfig(TrainerDefaults, SFTConfig):
    """trl's ``SFTConfig`` plus the data, the mix of tasks and the prompt truncation of the student.

    Differences from ``SFTConfig``'s defaults: the loss is on the response only
    (``completion_only_loss``), sequences are not cut (``max_length: null``; the prompt encoder
    already truncates query and document by tokens), bf16 only on a GPU that supports it, and no
    experiment tracker (``report_to: none``).
    """

    train_file: Optional[str] = field(default=None, metadata={"help": "annotated JSONL (reasonrank-train annotate)"})
    query_generation_file: Optional[str] = field(default=None, metadata={
        "help": "query-generation JSONL: trains the second task in the same run"})
    eval_file: Optional[str] = field(default=None, metadata={
        "help": "held-out JSONL: label accuracy of each mode trained, in the run card"})
    explain_fraction: float = field(default=1.0, metadata={
        "help": "fraction of the judgements trained in explain mode (explanation, then label)"})
    direct_fraction: float = field(default=1.0, metadata={
        "help": "fraction of the judgements also trained in direct mode (the label alone)"})
    query_fraction: float = field(default=1.0, metadata={"help": "fraction of the query lists trained"})
    completion_only_loss: Optional[bool] = field(default=True, metadata={"help": "loss on the response only"})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "longest example: a longer one has its document (or question) cut to fit, and is counted"})
    include_disagreements: bool = field(default=False, metadata={
        "help": "also train on pairs whose teacher samples had no majority label (annotate's teacher_samples)"})

    def __post_init__(self):
        check_fields(self, dict.fromkeys(("explain_fraction", "direct_fraction", "query_fraction"), proportion))
        if self.explain_fraction == self.direct_fraction == 0.0:
            raise InputError("explain_fraction and direct_fraction are both 0: nothing to judge is trained")
        super().__post_init__()


def training_examples(tokenizer: PreTrainedTokenizerBase, settings: StudentSettings, config: DistillConfig,
                      judgements: Sequence[dict], query_lists: Sequence[dict] = ()) -> tuple[list[dict], dict]:
    """Tokenized prompt-completion examples of every task, and what was done to build them.

    Each example has ``input_ids`` and a ``completion_mask`` (1 on the response). A fraction of the
    judgements (chosen under the config's seed) is trained in each mode, and of the query lists. An
    example longer than ``max_length`` has its document (or question) cut to fit; one that does not
    fit even without it is left out.

    Returns:
        The examples, and counts: ``examples`` per task, ``documents_cut``, ``questions_cut`` and
        ``too_long`` (left out).
    """
    examples, counts = [], Counter()

    def add(task: str, completion: list[int], prompt: Callable[[Optional[int]], list[int]],
            text_tokens: Callable[[], int], cut: str) -> None:
        # prompt(limit): the prompt with its text (document or question) cut to ``limit`` tokens (None: as
        # usual); text_tokens(): how many tokens the text has in the usual prompt.
        ids = prompt(None)
        excess = len(ids) + len(completion) - config.max_length if config.max_length else 0
        if excess > 0:
            room = text_tokens() - excess
            if room < 0:  # it does not fit even without its text
                counts["too_long"] += 1
                return
            counts[cut] += 1
            ids = prompt(room)
        examples.append({"input_ids": ids + completion, "completion_mask": [0] * len(ids) + [1] * len(completion)})
        counts[task] += 1

    for mode, fraction in (("explain", config.explain_fraction), ("direct", config.direct_fraction)):
        encoder = settings.encoder(tokenizer, mode)
        for r in _share(judgements, fraction, f"{config.seed}:{mode}"):
            add(mode, encoder.encode_response(r["explanation"], r["label"]),
                lambda limit, r=r: encoder.encode(r["query"], r["text"], max_doc_tokens=limit),
                lambda r=r: len(encoder.encode_text(r["text"], encoder.max_doc_tokens)), "documents_cut")
    questions = settings.query_encoder(tokenizer)
    for r in _share(query_lists, config.query_fraction, f"{config.seed}:queries"):
        add("queries", questions.encode_response(r["queries"]),
            lambda limit, r=r: questions.encode(r["query"], max_question_tokens=limit),
            lambda r=r: len(questions.encode_text(r["query"], questions.max_question_tokens)), "questions_cut")
    stats = {"examples": {task: counts[task] for task in ("explain", "direct", "queries") if counts[task]},
             **{name: counts[name] for name in ("documents_cut", "questions_cut", "too_long")}}
    return examples, stats


def _share(records: Sequence[dict], fraction: float, seed: str) -> list[dict]:
    """A ``fraction`` of the records, drawn under ``seed``, in their order."""
    if fraction >= 1.0:
        return list(records)
    chosen = set(random.Random(seed).sample(range(len(records)), round(fraction * len(records))))
    return [record for i, record in enumerate(records) if i in chosen]


def distill(config: DistillConfig, student: StudentConfig) -> dict:
    """Fine-tune the student on the annotations and save it, self-describing.

    Beside the adapter (or model) and its tokenizer it writes its settings, a model card, a run
    card and the curves; each checkpoint gets the settings too.

    Returns:
        The run's metrics (also in ``run_card.json``): the loss, steps, how the examples were built,
        and with an ``eval_file`` the held-out label accuracy of each mode trained.
    """
    from datasets import Dataset

    # Every input is read and checked before any work starts.
    require_packages(config, student)
    if not config.train_file:
        raise InputError("no train_file: the annotated JSONL written by `reasonrank-train annotate`")
    records = read_jsonl(config.train_file, required=PAIR_FIELDS)
    # In key order: the file's order depends on when the teacher's answers arrived.
    judgements = sorted(usable_judgements(records, include_disagreements=config.include_disagreements),
                        key=record_key)
    if not judgements:
        raise InputError(f"{config.train_file} holds no usable judgements ({len(records)} records, "
                         f"{sum(bool(r.get('error')) for r in records)} with errors)")
    query_lists = sorted(usable_query_lists(read_jsonl(config.query_generation_file, required=("query",))),
                         key=record_key) if config.query_generation_file else []
    held_out = labelled_pairs(config.eval_file) if config.eval_file else None
    writable_folder(config.output_dir)
    resume = resume_point(config)
    set_seed(config.seed)  # the adapter's initial weights too, which are drawn before the trainer seeds
    model, tokenizer = load_student(student, trust_remote_code=config.trust_remote_code,
                                    gradient_checkpointing=config.gradient_checkpointing)
    tasks = [task for task, fraction in (("explain", config.explain_fraction), ("direct", config.direct_fraction),
                                         ("queries", config.query_fraction if query_lists else 0.0)) if fraction]
    settings = config.student_settings(student, tokenizer, tasks=tasks, stage="distill")
    examples, building = training_examples(tokenizer, settings, config, judgements, query_lists)
    dataset = Dataset.from_list(examples).shuffle(seed=config.seed)
    push = deferred_push(config)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=student.peft_config() if student.use_peft and student.adapter is None else None,
                         callbacks=[SettingsCallback(settings)])
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = {"train_loss": result.training_loss, "steps": result.global_step,
               "train_seconds": round(time.perf_counter() - start, 1), **building}
    trainer.save_model(config.output_dir)
    if held_out:
        metrics["eval"] = {mode: label_accuracy(trainer.model, tokenizer, held_out, settings.encoder(tokenizer, mode),
                                                batch_size=config.per_device_eval_batch_size)
                           for mode in ("explain", "direct") if mode in tasks}
    data = {"train_file": config.train_file, "train_sha256": file_sha256(config.train_file),
            "judgements": len(judgements), "skipped": len(records) - len(judgements), "query_lists": len(query_lists)}
    if config.query_generation_file:
        data.update(query_generation_file=config.query_generation_file,
                    query_generation_sha256=file_sha256(config.query_generation_file))
    config.push_to_hub = push
    write_student(config.output_dir, settings, configs=[config, student], data=data, metrics=metrics)
    if push:
        push_student(config.output_dir, config, stage="distill")
    plot_curves(trainer.state.log_history, f"{config.output_dir}/curves.png", title="distillation")
    return metrics
