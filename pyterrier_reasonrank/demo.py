"""The demo: BM25 against BM25 >> ReasonRanker, on the bundled collection or an ``irds:`` dataset."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Iterator, Optional, Union

import pandas as pd
import pyterrier as pt

from .dataset import get_dataset
from .indexing import bm25
from .numeric import positive_int
from .ranker import ReasonRanker


class DemoCollection:
    """The small collection bundled with the package, written for the demo.

    36 short documents and 6 queries whose BM25 top ranks hold keyword traps (a detergent named
    Tide for "what causes ocean tides"), with graded qrels: 2 relevant, 1 partially relevant,
    0 irrelevant. It offers the parts of a PyTerrier dataset that the demo uses.
    """

    def __init__(self):
        """Locate the bundled files and read the documents' texts into memory."""
        self._root = resources.files("pyterrier_reasonrank") / "data" / "demo"
        lines = (self._root / "docs.jsonl").read_text().splitlines()
        self._texts = {doc["docno"]: doc["text"] for doc in map(json.loads, lines)}

    def get_corpus_iter(self) -> Iterator[dict]:
        """The documents, as ``{"docno": ..., "text": ...}`` dicts (what indexing reads)."""
        return ({"docno": docno, "text": text} for docno, text in self._texts.items())

    def get_topics(self) -> pd.DataFrame:
        """The queries, as a frame with ``qid`` and ``query`` columns."""
        rows = [line.split("\t") for line in (self._root / "topics.tsv").read_text().splitlines()]
        return pd.DataFrame(rows, columns=["qid", "query"])

    def get_qrels(self) -> pd.DataFrame:
        """The graded relevance judgements, as a frame with ``qid``, ``docno`` and ``label`` (0, 1 or 2)."""
        rows = [line.split() for line in (self._root / "qrels.txt").read_text().splitlines()]
        qrels = pd.DataFrame([(q, d, int(g)) for q, _, d, g in rows], columns=["qid", "docno", "label"])
        return qrels

    def text_loader(self, fields: Union[list[str], str] = "*", *, verbose: bool = False) -> pt.Transformer:
        """Adds the ``text`` column (what ``pt.text.get_text(collection, "text")`` calls)."""
        return pt.apply.generic(lambda frame: frame.assign(text=frame["docno"].map(self._texts)))

    def __repr__(self) -> str:
        return "DemoCollection()"


@dataclass
class DemoResult:
    """What :func:`run_demo` measured.

    Attributes:
        table: The ``pt.Experiment`` table (one row per system).
        reranked: The re-ranked result frame, with explanations.
        seconds: Wall-clock time of the re-ranking pipeline.
    """

    table: pd.DataFrame
    reranked: pd.DataFrame
    seconds: float


def load_collection(dataset: Optional[str]) -> Union[DemoCollection, pt.datasets.Dataset]:
    """The bundled collection (``None``) or a PyTerrier dataset such as ``"irds:vaswani"``."""
    return DemoCollection() if dataset is None else get_dataset(dataset)


def run_demo(ranker: ReasonRanker, *, dataset: Optional[str] = None, k: int = 10,
             num_queries: Optional[int] = None, verbose: bool = False) -> DemoResult:
    """Compare BM25 with BM25 >> ranker in ``pt.Experiment``.

    Args:
        ranker: The re-ranker (its model is loaded here if it is not yet).
        dataset: ``None`` for the bundled collection, else a dataset id such as ``"irds:vaswani"``.
        k: BM25 depth, and so the number of documents re-ranked per query.
        num_queries: Use only the first queries (all when ``None``).
        verbose: Show BM25's indexing log (it is quiet otherwise, so the results come first).

    Raises:
        InputError: ``k`` or ``num_queries`` is not a positive integer, or the dataset is unknown.
    """
    k, num_queries = positive_int("k", k), positive_int("num_queries", num_queries, optional=True)
    collection = load_collection(dataset)
    ranker.load()  # fail fast on a missing model, before any indexing
    topics = collection.get_topics()
    if num_queries is not None:
        topics = topics.head(num_queries)
    qrels = collection.get_qrels()
    first_stage = bm25(collection, name=dataset, num_results=k, verbose=verbose)
    baseline = first_stage(topics)
    start = time.perf_counter()
    reranked = (pt.text.get_text(collection, "text") >> ranker)(baseline)
    seconds = time.perf_counter() - start
    table = pt.Experiment([baseline, reranked], topics, qrels, eval_metrics=[pt.measures.nDCG @ 10, pt.measures.AP],
                          names=["BM25", f"BM25 >> {ranker.display_name(k)}"])
    return DemoResult(table, reranked, seconds)
