"""Teacher annotation: a large model explains and labels candidate pairs, into a resumable JSONL file.

Each line is one pair: ``qid, docno, query, text, label, explanation, teacher, gold_label, raw``
(and ``source``; ``error`` when the teacher's answer was not in the format — such a line has
``label: null``, is never trained on, and is counted in the summary). With ``task="queries"`` each
line is one question with the ``queries`` the teacher wrote for it.

A rerun with the same output skips the pairs already written; a line torn by a crash is cut off
and its pair asked again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import pandas as pd
import pyterrier as pt

from pyterrier_reasonrank import prompts
from pyterrier_reasonrank.dataset import get_dataset
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.redaction import config_secrets

from .records import AnnotationStore, record_key, summarize
from .sources import SourceConfig, candidate_pairs
from .teachers import LocalTeacher, OpenAITeacher


@dataclass
class AnnotateConfig(SourceConfig):
    """Configuration of ``reasonrank-train annotate``: the pairs (see :class:`SourceConfig`) and the teacher."""

    output: str = field(default="annotations.jsonl", metadata={"help": "JSONL file written (and resumed)"})
    task: str = field(default="relevance", metadata={"help": "relevance (judgements) or queries (query generation)"})
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
        for name, value, allowed in (("task", self.task, ("relevance", "queries")),
                                     ("teacher", self.teacher, ("openai", "local"))):
            if value not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {value!r}")


def make_teacher(config: AnnotateConfig) -> Union[LocalTeacher, OpenAITeacher]:
    """The teacher the configuration names."""
    if config.teacher == "local":
        return LocalTeacher(config.teacher_model, adapter=config.teacher_adapter, device=config.device,
                            dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                            batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                            max_doc_tokens=config.max_doc_tokens, temperature=config.temperature)
    return OpenAITeacher(config.teacher_model, base_url=config.base_url, api_key=config.api_key,
                         concurrency=config.concurrency, max_retries=config.max_retries, timeout=config.timeout,
                         temperature=config.temperature, max_tokens=config.max_tokens,
                         max_doc_chars=config.max_doc_chars)


def annotate(config: AnnotateConfig, pairs: Optional[pd.DataFrame] = None) -> dict:
    """Annotate the configured pairs (or questions) with the teacher, resuming the output file.

    Args:
        config: The source of the pairs, the teacher and the output.
        pairs: Pairs of your own instead of the configured source: ``qid, docno, query, text`` and
            optionally ``gold_label`` and ``source``.

    Returns:
        The summary of the whole file: records, usable ones, errors by kind, labels, and how many
        records this run added. It is also written beside the output as ``<output>.summary.json``.

    Every known secret (the ``api_key``, ``$OPENAI_API_KEY``, ``$HF_TOKEN``) is masked in what is
    written: a teacher can be made to repeat the key it was sent.
    """
    with AnnotationStore(config.output, secrets=config_secrets(config)) as store:
        if config.task == "relevance":
            todo = candidate_pairs(config) if pairs is None else _own_pairs(pairs)
        else:
            if not config.dataset:
                raise InputError("no dataset: set `dataset` (e.g. irds:cranfield), whose questions the teacher "
                                 "writes queries for")
            todo = get_dataset(config.dataset).get_topics()
            todo = (todo if config.num_queries is None else todo.head(config.num_queries))[["qid", "query"]]
        todo = todo[[record_key(row) not in store.done for row in todo.to_dict("records")]].reset_index(drop=True)
        new = 0
        if len(todo):
            teacher = make_teacher(config)
            if config.task == "relevance":
                hints = [prompts.hint_text(g) if config.gold_hint and g is not None else None for g in todo.gold_label]
                answers = teacher.judge(todo["query"].tolist(), todo["text"].tolist(), hints)
            else:
                answers = teacher.write_queries(todo["query"].tolist())
            rows = todo.to_dict("records")
            for index, fields in pt.tqdm(answers, total=len(rows), desc=f"annotate ({teacher.name})", unit="pair"):
                store.append(_record(rows[index], fields, teacher.name))
                new += 1
        summary = summarize(store.records, new=new)
    Path(f"{config.output}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _own_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    pt.validate.result_frame(pairs, extra_columns=["query", "text"])
    frame = pairs.assign(**{k: v for k, v in {"gold_label": None, "source": "given"}.items() if k not in pairs})
    gold = frame["gold_label"].astype(object)
    return frame.assign(gold_label=gold.where(gold.notna(), None))


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
