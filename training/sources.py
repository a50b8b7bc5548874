"""Candidate query-document pairs for the teacher: drawn from a PyTerrier / ir_datasets dataset, or your own.

Your own pairs (``pairs_file``) are a JSONL file of ``qid, query, docno, text`` (and optionally
``gold_label``): questions with candidate documents, judged by the teacher alone — the paper's kind
of data (StackExchange questions with the pages their answers link to, no human labels).

From a dataset, for each query: judged relevant documents (from the qrels), BM25 hard negatives (highly ranked
documents not judged relevant) and random negatives, each count configurable and the draw
deterministic under the seed.

Gold labels (0, 1, 2) come from the qrels when the dataset has them:

- with ``label_map`` (e.g. ``{1: 1, 2: 1, 3: 2, 4: 2}``) each grade maps as given, unlisted grades to 0;
- otherwise a grade <= 0 is 0, the dataset's highest grade is 2 and any grade in between is 1
  (so binary qrels give 0 and 2);
- a negative that was never judged for a query with judgements is taken as irrelevant (0), the
  usual convention for sparse judgements;
- a query without judgements has no gold labels (``None``): ``queries_without_qrels="skip"``
  (default) leaves it out, since its negatives cannot be told from unjudged positives, and
  ``"keep"`` keeps it with negatives only, for the teacher to judge. A dataset without qrels keeps
  every query, teacher-judged.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import pyterrier as pt
import yaml

from pyterrier_reasonrank.dataset import get_dataset
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.indexing import bm25
from pyterrier_reasonrank.numeric import check_fields, non_negative_int, positive_int
from pyterrier_reasonrank.qrels import grade_to_label

from .records import read_jsonl

PAIR_COLUMNS = ["qid", "query", "docno", "text", "gold_label", "source"]


@dataclass
class SourceConfig:
    """Where the pairs come from and how many of each kind.

    Attributes:
        dataset: A PyTerrier dataset id, e.g. ``"irds:cranfield"``.
        pairs_file: A JSONL file of your own pairs instead of a dataset.
        text_field: The document field given to the teacher and the student.
        num_queries: Use the first N queries (all when ``None``).
        relevant_per_query: Judged relevant documents drawn per query.
        bm25_negatives: Hard negatives drawn per query from BM25's top ``bm25_depth``.
        bm25_depth: How deep in the BM25 ranking hard negatives are drawn.
        random_negatives: Negatives drawn uniformly from the corpus per query.
        queries_without_qrels: ``"skip"`` or ``"keep"`` (see the module docstring).
        label_map: Grade -> label mapping, as a mapping or a JSON/YAML string.
        seed: Seed of the draw.
    """

    dataset: Optional[str] = field(default=None, metadata={"help": "PyTerrier dataset id, e.g. irds:cranfield"})
    pairs_file: Optional[str] = field(default=None, metadata={
        "help": "JSONL of your own pairs (qid, query, docno, text; gold_label optional) instead of a dataset"})
    text_field: str = field(default="text", metadata={"help": "document field to judge"})
    num_queries: Optional[int] = field(default=None, metadata={"help": "use the first N queries (default: all)"})
    relevant_per_query: int = field(default=2, metadata={"help": "judged relevant documents per query"})
    bm25_negatives: int = field(default=2, metadata={"help": "BM25 hard negatives per query"})
    bm25_depth: int = field(default=30, metadata={"help": "BM25 depth that hard negatives come from"})
    random_negatives: int = field(default=1, metadata={"help": "random negatives per query"})
    queries_without_qrels: str = field(default="skip", metadata={"help": "skip or keep queries without judgements"})
    label_map: Optional[str] = field(default=None, metadata={"help": "grade -> label mapping, e.g. '{1: 1, 2: 2}'"})
    seed: int = field(default=0, metadata={"help": "seed of the draw"})

    def __post_init__(self):
        check_fields(self, {"num_queries": positive_int, "relevant_per_query": non_negative_int,
                            "bm25_negatives": non_negative_int, "bm25_depth": positive_int,
                            "random_negatives": non_negative_int, "seed": non_negative_int}, optional=("num_queries",))
        if self.dataset and self.pairs_file:
            raise InputError("give either a dataset or a pairs_file, not both")
        if self.queries_without_qrels not in ("skip", "keep"):
            raise InputError(f"queries_without_qrels must be 'skip' or 'keep', got {self.queries_without_qrels!r}")
        if isinstance(self.label_map, str):
            self.label_map = yaml.safe_load(self.label_map)
        if self.label_map is not None:
            if not isinstance(self.label_map, dict) or not all(v in (0, 1, 2) for v in self.label_map.values()):
                raise InputError(f"label_map must map grades to 0, 1 or 2, got {self.label_map!r}")
            self.label_map = {int(k): int(v) for k, v in self.label_map.items()}


def candidate_pairs(config: SourceConfig) -> pd.DataFrame:
    """Draw the candidate pairs of a dataset, or read your own (``pairs_file``).

    Returns:
        A frame with ``qid, query, docno, text, gold_label, source`` (``source`` is ``"qrels"``,
        ``"bm25"`` or ``"random"``, or ``"given"`` for your own; ``gold_label`` is ``None`` where
        unknown), one row per pair, queries in dataset order.
    """
    if config.pairs_file:
        records = read_jsonl(config.pairs_file, required=("qid", "query", "docno", "text"))
        if not records:
            raise InputError(f"{config.pairs_file} holds no pairs")
        return own_pairs(pd.DataFrame(records))
    dataset = get_dataset(_dataset_id(config))
    topics = questions(config)
    judged = _judgements(dataset, config)
    retrieved = bm25(dataset, name=config.dataset, num_results=config.bm25_depth)(topics) \
        if config.bm25_negatives else pd.DataFrame(columns=["qid", "docno"])
    ranked = retrieved.groupby("qid")["docno"].apply(list).to_dict()
    corpus = _Corpus(dataset)

    rows = []
    for qid, query in zip(topics["qid"], topics["query"]):
        labels = judged.get(qid) if judged is not None else {}
        if labels is None and config.queries_without_qrels == "skip":
            continue
        unjudged = 0 if labels else None
        labels = labels or {}
        rng = random.Random(f"{config.seed}:{qid}")
        positives = sorted(docno for docno, label in labels.items() if label > 0)
        chosen = {d: ("qrels", labels[d])
                  for d in rng.sample(positives, min(config.relevant_per_query, len(positives)))}
        hard = [d for d in ranked.get(qid, []) if d not in chosen and labels.get(d, 0) == 0]
        for docno in rng.sample(hard, min(config.bm25_negatives, len(hard))):
            chosen[docno] = ("bm25", labels.get(docno, unjudged))
        for docno in corpus.sample(rng, config.random_negatives, exclude=set(chosen) | set(positives)):
            chosen[docno] = ("random", labels.get(docno, unjudged))
        rows += [(qid, query, docno, gold, source) for docno, (source, gold) in chosen.items()]
    pairs = pd.DataFrame(rows, columns=["qid", "query", "docno", "gold_label", "source"])
    pairs["gold_label"] = pairs["gold_label"].astype(object).where(pairs["gold_label"].notna(), None)
    with_text = pt.text.get_text(dataset, config.text_field)(pairs)
    return with_text.rename(columns={config.text_field: "text"})[PAIR_COLUMNS]


def questions(config: SourceConfig) -> pd.DataFrame:
    """The questions (``qid, query``) whose pairs are drawn.

    They are the dataset's first ``num_queries`` topics, or the questions of your own pairs.
    """
    if config.pairs_file:
        return questions_of(candidate_pairs(config))
    topics = get_dataset(_dataset_id(config)).get_topics()
    return (topics if config.num_queries is None else topics.head(config.num_queries))[["qid", "query"]]


def questions_of(pairs: pd.DataFrame) -> pd.DataFrame:
    """The distinct questions (``qid, query``) of a frame of pairs, in order."""
    return pairs[["qid", "query"]].drop_duplicates("qid", ignore_index=True)


def own_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs of your own in the form :func:`candidate_pairs` returns.

    They have ``qid, docno, query, text``, and optionally ``gold_label`` and ``source``.
    """
    pt.validate.result_frame(pairs, extra_columns=["query", "text"])
    frame = pairs.assign(**{k: v for k, v in {"gold_label": None, "source": "given"}.items() if k not in pairs})
    gold = frame["gold_label"].astype(object)
    return frame.assign(gold_label=gold.where(gold.notna(), None))[PAIR_COLUMNS]


def _dataset_id(config: SourceConfig) -> str:
    if not config.dataset:
        raise InputError("no dataset: set `dataset` (e.g. irds:cranfield) or `pairs_file` in the config or on the "
                         "command line")
    return config.dataset


def _judgements(dataset: pt.datasets.Dataset, config: SourceConfig) -> Optional[dict[Any, dict[str, int]]]:
    """Gold labels per query and document, or ``None`` for a dataset without qrels."""
    if not _has_qrels(dataset):
        return None
    qrels = dataset.get_qrels()
    to_label = grade_to_label(config.label_map, int(qrels["label"].max()))
    qrels = qrels.assign(gold=qrels["label"].map(to_label))
    return {qid: dict(zip(group["docno"], group["gold"])) for qid, group in qrels.groupby("qid")}


def _has_qrels(dataset: pt.datasets.Dataset) -> bool:
    irds = getattr(dataset, "irds_ref", None)
    if irds is not None:
        return irds().has_qrels()
    try:
        dataset.get_qrels()
    except (ValueError, KeyError, NotImplementedError):
        return False
    return True


class _Corpus:
    """Uniform draws of document ids from a dataset's corpus."""

    def __init__(self, dataset: pt.datasets.Dataset):
        irds = dataset.irds_ref() if hasattr(dataset, "irds_ref") else None
        if irds is not None:
            # ir_datasets looks documents up by position: no need to hold every docno.
            self._size, self._docs = irds.docs_count(), irds.docs_iter()
            self._docno = lambda i: self._docs[i].doc_id
        else:
            docnos = [doc["docno"] for doc in dataset.get_corpus_iter()]
            self._size, self._docno = len(docnos), docnos.__getitem__

    def sample(self, rng: random.Random, n: int, exclude: set) -> list[str]:
        drawn: list[str] = []
        for _ in range(100 * n):
            if len(drawn) == n:
                break
            docno = self._docno(rng.randrange(self._size))
            if docno not in exclude and docno not in drawn:
                drawn.append(docno)
        return drawn
