"""Teacher annotation: a large model explains and labels candidate pairs, into a resumable JSONL file.

Each line is one pair: ``qid, docno, query, text, label, explanation, teacher, gold_label, raw``
(and ``source``; ``error`` when the teacher's answer was not in the format — such a line has
``label: null``, is never trained on, and is counted in the summary). With ``task="queries"`` each
line is one question with the ``queries`` the teacher wrote for it.

With ``teacher_samples: k`` the teacher answers each pair ``k`` times at ``teacher_temperature``
and the record is their consensus (:mod:`.consensus`: the majority label, all ``k`` answers kept in
``samples``; a pair without a majority is marked ``disagreement`` and left out of training by
default); the summary then reports how far the samples agreed.

A rerun with the same output skips the pairs already written; a line torn by a crash is cut off
and its pair asked again.
"""
from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import pandas as pd
import pyterrier as pt

from pyterrier_reasonrank import prompts
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.numeric import (
    check_fields,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
)
from pyterrier_reasonrank.redaction import config_secrets

from .consensus import consensus
from .packages import require_packages
from .records import AnnotationStore, record_key, summarize
from .sources import SourceConfig, candidate_pairs, own_pairs, questions, questions_of
from .teachers import LocalTeacher, OpenAITeacher


@dataclass
class AnnotateConfig(SourceConfig):
    """Configuration of ``reasonrank-train annotate``: the pairs (see :class:`SourceConfig`) and the teacher."""

    output: str = field(default="annotations.jsonl", metadata={"help": "JSONL file written (and resumed)"})
    task: str = field(default="relevance", metadata={"help": "relevance (judgements) or queries (query generation)"})
    queries_output: Optional[str] = field(default=None, metadata={
        "help": "with task relevance: also write query-generation annotations for the same questions here"})
    teacher: str = field(default="openai", metadata={"help": "openai (any OpenAI-compatible endpoint) or local"})
    teacher_model: str = field(default="meta-llama/Llama-3.3-70B-Instruct", metadata={"help": "teacher model"})
    teacher_adapter: Optional[str] = field(default=None, metadata={"help": "PEFT adapter for a local teacher"})
    base_url: Optional[str] = field(default=None, metadata={"help": "endpoint (default: $OPENAI_BASE_URL)"})
    api_key: Optional[str] = field(default=None, repr=False,
                                   metadata={"help": "API key (default: $OPENAI_API_KEY); never written anywhere"})
    concurrency: int = field(default=16, metadata={"help": "requests in flight"})
    max_retries: int = field(default=6, metadata={"help": "retries per request (rate limits, server errors)"})
    timeout: float = field(default=120.0, metadata={"help": "seconds per request"})
    temperature: float = field(default=0.0, metadata={"help": "teacher sampling temperature"})
    teacher_samples: int = field(default=1, metadata={
        "help": "answers per pair: more than 1 labels each pair by the majority of that many sampled answers"})
    teacher_temperature: Optional[float] = field(default=None, metadata={
        "help": "with teacher_samples > 1: the temperature the answers are sampled at (default 1.0)"})
    max_tokens: int = field(default=512, metadata={"help": "longest endpoint answer"})
    max_doc_chars: int = field(default=8000, metadata={"help": "documents sent to an endpoint are cut here"})
    gold_hint: bool = field(default=False, metadata={"help": "tell the teacher the gold label when known"})
    batch_size: int = field(default=8, metadata={"help": "local teacher: pairs per batch"})
    max_new_tokens: int = field(default=256, metadata={"help": "local teacher: answer budget in tokens"})
    max_doc_tokens: int = field(default=2048, metadata={"help": "local teacher: documents cut to this many tokens"})
    device: Optional[str] = field(default=None, metadata={"help": "local teacher: cuda, cpu, ..."})
    dtype: Optional[str] = field(default=None, metadata={"help": "local teacher: bfloat16, float32, ..."})
    trust_remote_code: bool = field(default=False, metadata={"help": "local teacher: run the model's own code"})

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, {"concurrency": positive_int, "max_retries": non_negative_int, "timeout": positive_number,
                            "temperature": non_negative_number, "max_tokens": positive_int,
                            "max_doc_chars": positive_int, "batch_size": positive_int, "max_new_tokens": positive_int,
                            "max_doc_tokens": positive_int, "teacher_samples": positive_int,
                            "teacher_temperature": non_negative_number}, optional=("teacher_temperature",))
        for name, value, allowed in (("task", self.task, ("relevance", "queries")),
                                     ("teacher", self.teacher, ("openai", "local"))):
            if value not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {value!r}")
        if self.teacher_samples == 1 and self.teacher_temperature is not None:
            raise InputError("teacher_temperature is the temperature of the teacher_samples answers to a pair; with "
                             "teacher_samples 1 the teacher answers at `temperature`")
        if self.teacher_samples > 1:
            if self.task != "relevance":
                raise InputError("teacher_samples labels judgements by majority; the queries task takes one answer")
            if self.teacher_temperature is None:
                self.teacher_temperature = 1.0
            if self.teacher_temperature == 0:
                raise InputError(f"teacher_samples {self.teacher_samples} at teacher_temperature 0 would ask for "
                                 "the same answer again: give a temperature above 0")
        if self.queries_output and self.task != "relevance":
            raise InputError("queries_output goes with task relevance (the queries are written to `output` when "
                             "the task is queries)")


Teacher = Union[LocalTeacher, OpenAITeacher]


def make_teacher(config: AnnotateConfig) -> Teacher:
    """The teacher the configuration names."""
    sampled = config.teacher_samples > 1
    if config.teacher == "local":
        return LocalTeacher(config.teacher_model, adapter=config.teacher_adapter, device=config.device,
                            dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                            batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                            max_doc_tokens=config.max_doc_tokens, temperature=config.temperature,
                            judge_temperature=config.teacher_temperature if sampled else 0.0)
    return OpenAITeacher(config.teacher_model, base_url=config.base_url, api_key=config.api_key,
                         concurrency=config.concurrency, max_retries=config.max_retries, timeout=config.timeout,
                         temperature=config.teacher_temperature if sampled else config.temperature,
                         max_tokens=config.max_tokens, max_doc_chars=config.max_doc_chars)


def annotate(config: AnnotateConfig, pairs: Optional[pd.DataFrame] = None) -> dict:
    """Annotate the configured pairs (or questions) with the teacher, resuming the output file.

    Args:
        config: The source of the pairs, the teacher and the output.
        pairs: Pairs of your own instead of the configured source: ``qid, docno, query, text`` and
            optionally ``gold_label`` and ``source``.

    Returns:
        The summary of the whole file: records, usable ones, errors by kind, labels, and how many
        records this run added. It is also written beside the output as ``<output>.summary.json``.
        With ``queries_output``, the summary of that file is under ``"queries"``.

    Every known secret (the ``api_key``, ``$OPENAI_API_KEY``, ``$HF_TOKEN``) is masked in what is
    written: a teacher can be made to repeat the key it was sent.
    """
    require_packages(config)
    own = None if pairs is None else own_pairs(pairs)
    teacher = functools.cache(lambda: make_teacher(config))  # made once, when a pair is not annotated yet
    with contextlib.ExitStack() as stack:
        # The output files are opened (and their records read, so a broken line is reported) before the
        # pairs are drawn, which may build an index.
        store = stack.enter_context(AnnotationStore(config.output, secrets=config_secrets(config)))
        queries_store = stack.enter_context(AnnotationStore(config.queries_output, secrets=config_secrets(config))) \
            if config.queries_output else None
        if config.task == "queries":
            return _annotate(store, config, teacher, "queries", questions(config) if own is None else questions_of(own))
        if own is None:
            own = candidate_pairs(config)
        summary = _annotate(store, config, teacher, "relevance", own)
        if queries_store is not None:
            summary["queries"] = _annotate(queries_store, config, teacher, "queries", questions_of(own))
    return summary


def _annotate(store: AnnotationStore, config: AnnotateConfig, teacher: Callable[[], Teacher], task: str,
              todo: pd.DataFrame) -> dict:
    """Annotate what ``todo`` lists and is not in the store yet; the summary of the whole file."""
    samples = config.teacher_samples if task == "relevance" else 1
    _check_samples(store, samples)
    frame = todo[[record_key(row) not in store.done for row in todo.to_dict("records")]].reset_index(drop=True)
    if len(frame):
        if task == "relevance":
            hints = [prompts.hint_text(g) if config.gold_hint and g is not None else None for g in frame.gold_label]
            answers = teacher().judge(frame["query"].tolist(), frame["text"].tolist(), hints, samples=samples)
        else:
            answers = teacher().write_queries(frame["query"].tolist())
        rows = frame.to_dict("records")
        unit = "pair" if task == "relevance" else "question"
        pending: dict[int, list[dict]] = {}  # a pair's answers until all of its samples are in
        for index, fields in pt.tqdm(answers, total=len(rows) * samples, desc=f"annotate {task} ({teacher().name})",
                                     unit=unit if samples == 1 else "answer"):
            if samples > 1:
                pending.setdefault(index, []).append(fields)
                if len(pending[index]) < samples:
                    continue
                answered = sorted(pending.pop(index), key=lambda answer: answer["sample"])
                fields = consensus([{k: v for k, v in answer.items() if k != "sample"} for answer in answered])
            store.append(_record(rows[index], fields, teacher().name))
    summary = summarize(store.records, new=len(frame))
    Path(f"{store.path}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_samples(store: AnnotationStore, samples: int) -> None:
    """A file resumed with the answers per pair it was started with, so that its records are alike."""
    written = {len(r.get("samples", [None])) for r in store.records if "docno" in r}
    if written and written != {samples}:
        raise InputError(f"{store.path} holds pairs annotated with teacher_samples {sorted(written)[0]}, not "
                         f"{samples}: resume it with the same teacher_samples, or write to another output")


def _record(item: dict, fields: dict, teacher: str) -> dict:
    record = {"qid": item["qid"]}
    if "docno" in item:
        record.update(docno=item["docno"], query=item["query"], text=item["text"], label=fields.pop("label"),
                      explanation=fields.pop("explanation"), teacher=teacher,
                      gold_label=None if item["gold_label"] is None else int(item["gold_label"]),
                      source=item["source"])
    else:
        record.update(query=item["query"], queries=fields.pop("queries"), teacher=teacher)
    record.update(fields)
    return record
