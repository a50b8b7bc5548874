"""Evaluation: a first stage alone against re-ranked pipelines, with significance, over one or more datasets.

The datasets may include BRIGHT's twelve domains; the results are written as CSV, Markdown and a PNG.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt

from .calibration import calibration_table, expected_calibration_error, reliability_diagram
from .dataset import get_dataset
from .errors import InputError
from .indexing import bm25
from .numeric import positive_int
from .qrels import judged_labels

if TYPE_CHECKING:
    from ir_measures import Measure

BRIGHT_DOMAINS = ("biology", "earth-science", "economics", "psychology", "robotics", "stackoverflow",
                  "sustainable-living", "leetcode", "pony", "aops", "theoremqa-theorems", "theoremqa-questions")
EXCLUDED = -100
"""The qrels label of a document excluded from evaluation for a query (BRIGHT's convention)."""

HEADLINE = pt.measures.nDCG @ 10
METRICS = (pt.measures.nDCG @ 10, pt.measures.AP)


def dataset_ids(names: Sequence[str]) -> list[str]:
    """Dataset ids to evaluate: ``"bright"`` (or ``"irds:bright"``) stands for BRIGHT's twelve domains."""
    ids: list[str] = []
    for name in names:
        ids += [f"irds:bright/{d}" for d in BRIGHT_DOMAINS] if name in ("bright", "irds:bright") else [name]
    return ids


class DropExcluded(pt.Transformer):
    """Removes from rankings the documents that the qrels exclude from evaluation (label -100).

    This is what BRIGHT prescribes; the remaining documents are ranked again.
    """

    def __init__(self, qrels: pd.DataFrame):
        """Collect the (qid, docno) pairs that the qrels exclude.

        Args:
            qrels: The dataset's qrels (``qid, docno, label``).
        """
        self.qrels = qrels  # as given: PyTerrier rebuilds a transformer from its constructor's parameters
        excluded = qrels[qrels["label"] == EXCLUDED]
        self.excluded = frozenset(zip(excluded["qid"].astype(str), excluded["docno"].astype(str)))

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Drop the excluded (qid, docno) pairs from a result frame and recompute the ranks of the rest.

        Without exclusions, or without rows, the frame is returned as it is.
        """
        pt.validate.result_frame(inp)
        if not self.excluded or len(inp) == 0:
            return inp
        keep = [pair not in self.excluded for pair in zip(inp["qid"].astype(str), inp["docno"].astype(str))]
        return pt.model.add_ranks(inp[keep].copy())

    def __repr__(self) -> str:
        return f"DropExcluded({len(self.excluded)} pairs)"

    def schematic(self, *, input_columns: Optional[list[str]] = None) -> dict[str, Any]:
        """How PyTerrier draws this stage in a pipeline: a plain label, with no help link."""
        return {"label": "DropExcluded", "help_url": None}


def cascade(first: pt.Transformer, second: pt.Transformer, depth: int) -> pt.Transformer:
    """``first`` ranks everything, ``second`` re-ranks its top ``depth``, and the rest follow below.

    The rest keep ``first``'s order, so the ranking keeps its full depth.

    Raises:
        InputError: ``depth`` is not a positive integer.
    """
    depth = positive_int("cascade depth", depth)
    return first >> ((pt.RankCutoff(depth) >> second) ^ pt.Transformer.identity())


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    Attributes:
        table: One row per dataset and system: the measures, and for each re-ranked system the
            significance test against the first stage (``+``/``-`` counts, p-value, Holm-corrected
            rejection). With several datasets, an ``average`` dataset holds the mean per system.
        per_query: Long format: ``dataset, name, qid, measure, value``.
        runs: Each system's ranking, by (dataset, name).
        judged: Each dataset's judged pairs as labels (``qid, docno, label``; see :mod:`~pyterrier_reasonrank.qrels`).
    """

    table: pd.DataFrame
    per_query: pd.DataFrame
    runs: dict = field(default_factory=dict)
    judged: dict = field(default_factory=dict)

    def judged_runs(self) -> dict[tuple[str, str], pd.DataFrame]:
        """Each re-ranker's judged pairs: its run joined with the dataset's labels, by (dataset, name).

        Only runs with label distributions (``probabilities``) that ranked a judged pair are kept:
        the first stage has none. A run's own ``label`` becomes ``label_predicted``; ``label`` is the
        judged one.
        """
        joined = {(dataset_id, name): run.assign(qid=run["qid"].astype(str), docno=run["docno"].astype(str)).merge(
                      self.judged[dataset_id], on=["qid", "docno"], suffixes=("_predicted", ""))
                  for (dataset_id, name), run in self.runs.items() if "probabilities" in run.columns}
        return {key: judged for key, judged in joined.items() if len(judged)}

    def calibration(self) -> tuple[pd.DataFrame, dict[str, dict[str, pd.DataFrame]]]:
        """How well each re-ranker's label distributions mean what they say, on the judged pairs it ranked.

        Returns:
            A table of ``dataset, name, measure, ece, pairs`` (see
            :mod:`~pyterrier_reasonrank.calibration`), and the bins behind it, by dataset and name.
        """
        rows, bins = [], {}
        for (dataset_id, name), judged in self.judged_runs().items():
            table = calibration_table(np.stack(judged["probabilities"].to_numpy()), judged["label"].to_numpy())
            bins.setdefault(dataset_id, {})[name] = table
            for measure, error in expected_calibration_error(table).items():
                rows.append({"dataset": dataset_id, "name": name, "measure": measure, "ece": error,
                             "pairs": len(judged)})
        return pd.DataFrame(rows, columns=["dataset", "name", "measure", "ece", "pairs"]), bins


def evaluate(datasets: Sequence[str], rerankers: dict[str, pt.Transformer], *, k: int = 100,
             num_queries: Optional[int] = None, query_field: Optional[str] = None, text_field: str = "text",
             metrics: Sequence = METRICS, first_stage_name: str = "BM25", verbose: bool = False) -> Evaluation:
    """Evaluate BM25 alone and BM25 >> each re-ranker on each dataset.

    Documents the qrels exclude (label -100) are removed from every ranking before scoring, and
    excluded pairs never count as judged.

    Args:
        datasets: Dataset ids (``"bright"`` expands to its twelve domains; see :func:`dataset_ids`).
        rerankers: Named re-rankers, each applied to the BM25 top ``k`` with the documents' text.
        k: BM25 depth.
        num_queries: Use the first N queries of each dataset.
        query_field: The topics' field to use as the query when a dataset has several (BRIGHT: ``"text"``).
        text_field: The document field given to the re-rankers.
        metrics: ir_measures measures; the first is the headline.
        first_stage_name: The baseline's name in the tables.
        verbose: Show the first stage's indexing log (it is quiet otherwise).

    Raises:
        InputError: ``k`` or ``num_queries`` is not a positive integer, or a dataset id is unknown
            (checked before any work).
    """
    k, num_queries = positive_int("k", k), positive_int("num_queries", num_queries, optional=True)
    rows, per_query, runs, labels = [], [], {}, {}
    loaded = {dataset_id: get_dataset(dataset_id) for dataset_id in dataset_ids(datasets)}  # every id checked first
    for dataset_id, dataset in loaded.items():
        topics = load_topics(dataset, dataset_id, query_field)
        if num_queries is not None:
            topics = topics.head(num_queries)
        qrels = dataset.get_qrels()
        judged = qrels[qrels["label"] != EXCLUDED]
        labels[dataset_id] = judged_labels(judged)
        first_stage = bm25(dataset, name=dataset_id, num_results=k, verbose=verbose) >> DropExcluded(qrels)
        baseline = first_stage(topics)
        text = pt.text.get_text(dataset, text_field)
        names = [first_stage_name] + [f"{first_stage_name} >> {name}" for name in rerankers]
        results = [baseline] + [(text >> reranker)(baseline) for reranker in rerankers.values()]
        runs.update({(dataset_id, name): result for name, result in zip(names, results)})
        table = pt.Experiment(results, topics, judged, list(metrics), names=names, baseline=0,
                              correction="holm" if len(rerankers) > 1 else None)
        rows.append(table.assign(dataset=dataset_id))
        queries = pt.Experiment(results, topics, judged, list(metrics), names=names, perquery=True)
        per_query.append(queries.assign(dataset=dataset_id))
    table = pd.concat(rows, ignore_index=True)
    if table["dataset"].nunique() > 1:
        measures = [str(m) for m in metrics]
        average = table.groupby("name", sort=False)[measures].mean().reset_index().assign(dataset="average")
        table = pd.concat([table, average], ignore_index=True)
    # Each measure with its significance columns, in the order asked for (the headline first).
    columns = ["dataset", "name"] + [c for m in map(str, metrics) for c in table.columns
                                     if c == m or c.startswith(f"{m} ")]
    table = table[columns]
    per_query = pd.concat(per_query, ignore_index=True)[["dataset", "name", "qid", "measure", "value"]]
    return Evaluation(table, per_query, runs, labels)


def load_topics(dataset: pt.datasets.Dataset, dataset_id: str, query_field: Optional[str]) -> pd.DataFrame:
    """The topics with a ``query`` column (from ``query_field`` when given; BRIGHT's is ``"text"``)."""
    if query_field is None and dataset_id.startswith("irds:bright/"):
        query_field = "text"
    topics = dataset.get_topics(query_field) if query_field else dataset.get_topics()
    if "query" not in topics.columns:
        raise InputError(f"{dataset_id} has several query fields ({[c for c in topics.columns if c != 'qid']}); "
                         "choose one with query_field / --query-field")
    return topics[["qid", "query"]]


def write_outputs(evaluation: Evaluation, output: Union[str, Path], *,
                  headline: Measure = HEADLINE) -> dict[str, Path]:
    """Write the tables, the runs and the plot of an evaluation into the folder ``output``.

    The files are ``results.csv``, ``results.md``, ``per_query.csv``, one TREC run per system and
    dataset (``runs/``), and ``differences.png`` (per query, or per dataset when there are several).
    """
    output = Path(output)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    files = {"csv": output / "results.csv", "markdown": output / "results.md", "per_query": output / "per_query.csv",
             "plot": output / "differences.png"}
    evaluation.table.to_csv(files["csv"], index=False)
    files["markdown"].write_text(evaluation.table.to_markdown(index=False, floatfmt=".4f") + "\n")
    evaluation.per_query.to_csv(files["per_query"], index=False)
    for (dataset_id, name), run in evaluation.runs.items():
        slug = "_".join(re.sub(r"[^A-Za-z0-9]+", "-", part).strip("-") for part in (dataset_id, name))
        pt.io.write_results(run, str(output / "runs" / f"{slug}.run"), format="trec", run_name=slug)
    plot_differences(evaluation, files["plot"], headline=headline)
    return files


def write_calibration(evaluation: Evaluation, output: Union[str, Path]) -> dict[str, Path]:
    """Write how well each re-ranker is calibrated, per dataset, into the folder ``output``.

    The files are ``calibration.csv`` (the expected calibration error of each re-ranker on each
    dataset) and a reliability diagram per dataset (``reliability-<dataset>.png``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    table, bins = evaluation.calibration()
    files = {"calibration": output / "calibration.csv"}
    table.to_csv(files["calibration"], index=False)
    for dataset_id, tables in bins.items():
        slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset_id).strip("-")
        files[f"reliability {dataset_id}"] = reliability_diagram(tables, output / f"reliability-{slug}.png")
    return files


def plot_differences(evaluation: Evaluation, path: Union[str, Path], *, headline: Measure = HEADLINE) -> Path:
    """Bars of each re-ranked system's difference from the first stage in the headline measure.

    The bars are per query for one dataset, per dataset (with the average) for several.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = str(headline)
    table = evaluation.table
    baseline = table["name"].iloc[0]
    systems = [n for n in dict.fromkeys(table["name"]) if n != baseline]
    datasets = list(dict.fromkeys(table["dataset"]))
    figure, axis = plt.subplots(figsize=(min(16.0, max(6.0, 0.35 * _bars(evaluation, datasets))), 3.8))
    if len(datasets) == 1:
        scores = evaluation.per_query[evaluation.per_query["measure"] == measure] \
            .pivot_table(index="qid", columns="name", values="value")
        # Queries in the order of the first system's difference, so that a group of bars is one query.
        order = (scores[systems[0]] - scores[baseline]).sort_values(ascending=False).index
        for offset, system in enumerate(systems):
            delta = (scores[system] - scores[baseline]).reindex(order)
            axis.bar([i + offset / (len(systems) + 1) for i in range(len(delta))], delta.to_numpy(),
                     width=1 / (len(systems) + 1), label=system)
        axis.set_xlabel(f"queries of {datasets[0]}, by {systems[0]}'s difference")
        axis.set_xticks([])
    else:
        means = table.pivot_table(index="dataset", columns="name", values=measure).reindex(datasets)
        width = 0.8 / max(1, len(systems))
        for offset, system in enumerate(systems):
            axis.bar([i + offset * width for i in range(len(datasets))], (means[system] - means[baseline]).to_numpy(),
                     width=width, label=system)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(datasets))])
        axis.set_xticklabels([d.removeprefix("irds:") for d in datasets], rotation=45, ha="right")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_ylabel(f"{measure} minus {baseline}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def _bars(evaluation: Evaluation, datasets: list) -> int:
    return len(datasets) if len(datasets) > 1 else evaluation.per_query["qid"].nunique()
