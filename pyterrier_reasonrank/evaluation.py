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
from .display import write_report
from .errors import InputError
from .fusion import cross_validated_fusion
from .indexing import bm25
from .numeric import positive_int, switch
from .qrels import judged_labels

if TYPE_CHECKING:
    import matplotlib.figure
    from ir_measures import Measure

BRIGHT_DOMAINS = ("biology", "earth-science", "economics", "psychology", "robotics", "stackoverflow",
                  "sustainable-living", "leetcode", "pony", "aops", "theoremqa-theorems", "theoremqa-questions")
EXCLUDED = -100
"""The qrels label of a document excluded from evaluation for a query (BRIGHT's convention)."""

HEADLINE = pt.measures.nDCG @ 10
METRICS = (pt.measures.nDCG @ 10, pt.measures.AP)
CORRECTION = "holm"
"""The multiple-testing correction of the p-values when several re-rankers are compared with the first stage."""
CORRECTIONS = {"holm": ("Holm", "Holm's step-down (Holm-Bonferroni) method")}
"""Each correction's short name (for a column) and its description."""
SIGNIFICANCE = 0.05
"""The level below which a (corrected) p-value marks a difference as significant (†)."""


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
        fusion: With fusion, the folds of each fused run by (dataset, name): the weight each fold's
            queries were fused at, chosen on the other folds (see :mod:`~pyterrier_reasonrank.fusion`).
    """

    table: pd.DataFrame
    per_query: pd.DataFrame
    runs: dict = field(default_factory=dict)
    judged: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)

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
             metrics: Sequence = METRICS, first_stage_name: str = "BM25", fusion: bool = False,
             fusion_folds: int = 5, verbose: bool = False) -> Evaluation:
    """Evaluate BM25 alone and BM25 >> each re-ranker on each dataset (and each fused with BM25).

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
        fusion: Also evaluate each re-ranker fused with the first stage (``<name> + fusion``), at a
            weight chosen by the headline measure with cross-validation over each dataset's queries
            (:func:`~pyterrier_reasonrank.fusion.cross_validated_fusion`).
        fusion_folds: The folds of that cross-validation.
        verbose: Show the first stage's indexing log (it is quiet otherwise).

    Raises:
        InputError: ``k`` or ``num_queries`` is not a positive integer, or a dataset id is unknown
            (checked before any work).
    """
    k, num_queries = positive_int("k", k), positive_int("num_queries", num_queries, optional=True)
    fusion_folds = positive_int("fusion_folds", fusion_folds)
    fusion, verbose = switch("fusion", fusion), switch("verbose", verbose)
    rows, per_query, runs, labels, folds = [], [], {}, {}, {}
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
        if fusion:
            for name, result in zip(list(names[1:]), results[1:]):
                fused, folds[(dataset_id, f"{name} + fusion")] = cross_validated_fusion(
                    baseline, result, judged, folds=fusion_folds, measure=metrics[0])
                names.append(f"{name} + fusion")
                results.append(fused)
        runs.update({(dataset_id, name): result for name, result in zip(names, results)})
        table = pt.Experiment(results, topics, judged, list(metrics), names=names, baseline=0,
                              correction=CORRECTION if len(results) > 2 else None)
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
    return Evaluation(table, per_query, runs, labels, folds)


def load_topics(dataset: pt.datasets.Dataset, dataset_id: str, query_field: Optional[str]) -> pd.DataFrame:
    """The topics with a ``query`` column (from ``query_field`` when given; BRIGHT's is ``"text"``)."""
    if query_field is None and dataset_id.startswith("irds:bright/"):
        query_field = "text"
    topics = dataset.get_topics(query_field) if query_field else dataset.get_topics()
    if "query" not in topics.columns:
        raise InputError(f"{dataset_id} has several query fields ({[c for c in topics.columns if c != 'qid']}); "
                         "choose one with query_field / --query-field")
    return topics[["qid", "query"]]


def write_outputs(evaluation: Evaluation, output: Union[str, Path], *, headline: Measure = HEADLINE,
                  model: Optional[str] = None, k: Optional[int] = None) -> dict[str, Path]:
    """Write the tables, the runs and the plot of an evaluation into the folder ``output``.

    The files are ``results.csv``, ``results.md`` (see :func:`results_markdown`), ``per_query.csv``,
    one TREC run per system and dataset (``runs/``), ``differences.png`` (see :func:`differences_figure`),
    and with fusion ``fusion.csv`` (each fold's weight).

    Args:
        evaluation: What :func:`evaluate` measured.
        output: The folder (made if missing).
        headline: The measure of the plot.
        model: The re-rankers' model, to name the systems in ``results.md`` (see
            :func:`~pyterrier_reasonrank.display.model_label`).
        k: The first stage's depth, to name the systems in ``results.md``.
    """
    output = Path(output)
    (output / "runs").mkdir(parents=True, exist_ok=True)
    files = {"csv": output / "results.csv", "markdown": output / "results.md", "per_query": output / "per_query.csv",
             "plot": output / "differences.png"}
    evaluation.table.to_csv(files["csv"], index=False)
    files["markdown"].write_text(results_markdown(evaluation, model=model, k=k))
    evaluation.per_query.to_csv(files["per_query"], index=False)
    for (dataset_id, name), run in evaluation.runs.items():
        name_slug = f"{slug(dataset_id)}_{slug(name)}"
        pt.io.write_results(run, str(output / "runs" / f"{name_slug}.run"), format="trec", run_name=name_slug)
    differences_figure(evaluation, headline=headline).savefig(files["plot"], dpi=110)
    if evaluation.fusion:
        files["fusion"] = output / "fusion.csv"
        fusion_table(evaluation).to_csv(files["fusion"], index=False)
    return files


def fusion_table(evaluation: Evaluation) -> pd.DataFrame:
    """Each fused run's folds: ``dataset, name, fold, weight, queries, training`` (see :func:`evaluate`)."""
    return pd.concat([folds.assign(dataset=dataset_id, name=name)[["dataset", "name", *folds.columns]]
                      for (dataset_id, name), folds in evaluation.fusion.items()], ignore_index=True)


def slug(text: str) -> str:
    """A name as a file name's part: runs of other characters than letters and digits become ``-``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


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
        files[f"reliability {dataset_id}"] = reliability_diagram(
            tables, output / f"reliability-{slug(dataset_id)}.png", dataset=dataset_id)
    return files


def write_reports(evaluation: Evaluation, output: Union[str, Path], systems: Sequence[str], *,
                  about: Optional[dict] = None, k: Optional[int] = None) -> dict[str, Path]:
    """Write an explanation report (:func:`~pyterrier_reasonrank.display.write_report`) per dataset and system.

    Each is ``report-<dataset>-<system>.html`` in ``output``, with the dataset's judgements beside
    the predicted labels.

    Args:
        evaluation: What :func:`evaluate` measured.
        output: The folder.
        systems: The re-rankers to report, by the names given to :func:`evaluate` (``"explain"``) or
            in the table (``"BM25 >> explain"``).
        about: Facts for each report's header (model, adapter...).
        k: The first stage's depth.

    Raises:
        InputError: A system is not one of the evaluation's re-rankers (the known ones are named).
    """
    baseline = evaluation.table["name"].iloc[0]
    known = [name for name in dict.fromkeys(name for _, name in evaluation.runs) if name != baseline]
    wanted = {name if name in known else f"{baseline} >> {name}" for name in systems}
    unknown = sorted(wanted - set(known))
    if unknown:
        raise InputError(f"no re-ranked system {unknown[0].removeprefix(f'{baseline} >> ')!r} to report; the "
                         f"re-ranked systems are {[name.removeprefix(f'{baseline} >> ') for name in known]}")
    files = {}
    for (dataset_id, name), run in evaluation.runs.items():
        if name not in wanted:
            continue
        mode = name.removeprefix(f"{baseline} >> ")
        facts = {**(about or {}), "system": name, "mode": mode}
        title = " · ".join(str(part) for part in (name, facts.get("model"), dataset_id) if part)
        files[f"report {dataset_id} {name}"] = write_report(
            run, Path(output) / f"report-{slug(dataset_id)}-{slug(mode)}.html", qrels=evaluation.judged[dataset_id],
            dataset=dataset_id, k=k, title=title, about=facts)
    return files


def system_names(names: Sequence[str], baseline: str, *, model: Optional[str] = None,
                 k: Optional[int] = None) -> dict[str, str]:
    """The systems' names for a paper's table: the first stage with its depth, each re-ranker with its model.

    ``"BM25 >> explain"`` becomes ``"BM25 top 100 >> Qwen/Qwen2.5-1.5B-Instruct (explain)"``.
    """
    first = f"{baseline} top {k}" if k is not None else baseline
    named = {}
    for name in names:
        rest = name.removeprefix(f"{baseline} >> ")
        named[name] = first if name == baseline else f"{first} >> {model} ({rest})" if model else f"{first} >> {rest}"
    return named


def results_markdown(evaluation: Evaluation, *, model: Optional[str] = None, k: Optional[int] = None) -> str:
    """The evaluation as Markdown tables for a paper: per measure, each system's value, difference and tests.

    Per measure, one row per dataset and system: the value, its difference from the first stage
    (Δ), the paired t-test's p-value over the queries, the p-value corrected for the number of
    re-rankers (named), and the queries won and lost (integers); † marks a significant difference.
    """
    table = evaluation.table
    baseline = table["name"].iloc[0]
    named = system_names(list(dict.fromkeys(table["name"])), baseline, model=model, k=k)
    measures = [c for c in table.columns if c not in ("dataset", "name") and " " not in c]
    corrected = any(c.endswith(" p-value corrected") for c in table.columns)
    comparisons = len(named) - 1
    several = table["dataset"].nunique() > 1
    short, method = CORRECTIONS[CORRECTION]
    adjusted = f"p ({short})"
    queries = evaluation.per_query.groupby("dataset", sort=False)["qid"].nunique()
    lines = ["# Results", "", "On " + ", ".join(f"{dataset} ({count} queries)" for dataset, count in queries.items())
             + f". {named[baseline]}: the first stage" + (f", its top {k} documents per query re-ranked" if k else "")
             + (f" by {model} in each mode named" if model else "") + ". Δ: the difference from the first stage; "
             "p: paired t-test over the queries; "
             + (f"{adjusted}: corrected for the {comparisons} comparisons per dataset with {method}; "
                if corrected else "one comparison per dataset: no correction; ")
             + "wins / losses: queries on which the system scores above / below the first stage; †: "
             + (adjusted if corrected else "p") + f" < {SIGNIFICANCE}."
             + (" The average rows are the means over the datasets (not tested)." if several else "")]
    for measure in measures:
        header = (["dataset"] if several else []) + ["system", measure, "Δ", "p"] + ([adjusted] if corrected else []) \
            + ["wins", "losses"]
        lines += ["", f"## {measure}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" if h in ("dataset", "system") else "---:" for h in header) + "|"]
        reference = table[table["name"] == baseline].set_index("dataset")[measure]
        for row in table.to_dict("records"):
            tested = row["name"] != baseline and not pd.isna(row.get(f"{measure} p-value", float("nan")))
            p = row.get(f"{measure} p-value corrected" if corrected else f"{measure} p-value")
            mark = "†" if tested and p < SIGNIFICANCE else ""
            cells = ([row["dataset"]] if several else []) + [named[row["name"]], f"{row[measure]:.4f}{mark}"]
            if row["name"] == baseline:
                cells += ["—"] * (len(header) - len(cells))
            else:
                cells.append(f"{row[measure] - reference[row['dataset']]:+.4f}")
                values = [row.get(f"{measure} p-value")] + [row.get(f"{measure} p-value corrected")] * corrected
                cells += [_p_value(v) if tested else "—" for v in values]
                cells += [str(int(row[f"{measure} {sign}"])) if tested else "—" for sign in "+-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _p_value(p: float) -> str:
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def differences_figure(evaluation: Evaluation, *, headline: Measure = HEADLINE) -> "matplotlib.figure.Figure":
    """Bars of each re-ranked system's difference from the first stage in the headline measure, as a Figure.

    For one dataset, the bars are per query, sorted by the first re-ranker's difference and labelled
    with the query ids; for several, per dataset (with the average). Each re-ranker's mean difference
    is a dashed line, and the legend gives it with its p-value; † marks a significant difference
    (p, corrected when several re-rankers are compared, below :data:`SIGNIFICANCE`).
    """
    from matplotlib.figure import Figure

    measure = str(headline)
    table = evaluation.table
    baseline = table["name"].iloc[0]
    systems = [n for n in dict.fromkeys(table["name"]) if n != baseline]
    datasets = list(dict.fromkeys(table["dataset"]))
    bars = len(datasets) if len(datasets) > 1 else evaluation.per_query["qid"].nunique()
    figure = Figure(figsize=(min(16.0, max(7.0, 2.5 + 0.14 * bars * max(1, len(systems) / 2))), 4.6),
                    layout="constrained")
    axis = figure.add_subplot()
    width = 0.8 / max(1, len(systems))
    if len(datasets) == 1:
        scores = evaluation.per_query[evaluation.per_query["measure"] == measure] \
            .pivot_table(index="qid", columns="name", values="value")
        # Queries in the order of the first system's difference, so that a group of bars is one query.
        order = (scores[systems[0]] - scores[baseline]).sort_values(ascending=False, kind="stable").index
        for offset, system in enumerate(systems):
            delta = (scores[system] - scores[baseline]).reindex(order)
            drawn = axis.bar([i + offset * width for i in range(len(delta))], delta.to_numpy(), width=width,
                             align="edge", label=system)
            p, mark = _significance(table, datasets[0], system, measure)
            axis.axhline(delta.mean(), color=drawn.patches[0].get_facecolor(), linestyle="--", linewidth=1.2,
                         label=f"{system}: mean {delta.mean():+.4f}, {p}{mark}")
        step = max(1, -(-len(order) // 150))  # at most 150 query ids under the bars
        axis.set_xticks([i + 0.4 for i in range(0, len(order), step)])
        axis.set_xticklabels([str(q) for q in order[::step]], rotation=90,
                             fontsize=8 if len(order) <= 30 else 6 if len(order) <= 80 else 5)
        axis.set_xlim(-0.2, len(order))
        axis.set_xlabel(f"query id ({len(order)} queries of {datasets[0]}, by {systems[0]}'s difference)")
        axis.set_title(f"{measure}: each re-ranker minus {baseline}, per query, on {datasets[0]}")
    else:
        means = table.pivot_table(index="dataset", columns="name", values=measure).reindex(datasets)
        for offset, system in enumerate(systems):
            delta = (means[system] - means[baseline]).to_numpy()
            drawn = axis.bar([i + offset * width for i in range(len(datasets))], delta, width=width, align="edge",
                             label=system)
            for i, dataset_id in enumerate(datasets):
                if _significance(table, dataset_id, system, measure)[1]:
                    axis.annotate("†", (i + (offset + 0.5) * width, delta[i]), ha="center",
                                  va="bottom" if delta[i] >= 0 else "top", fontsize=10)
            average = float(np.nanmean(delta[[d != "average" for d in datasets]]))
            axis.axhline(average, color=drawn.patches[0].get_facecolor(), linestyle="--", linewidth=1.2,
                         label=f"{system}: mean over datasets {average:+.4f}")
        axis.set_xticks([i + 0.4 for i in range(len(datasets))])
        axis.set_xticklabels([d.removeprefix("irds:") for d in datasets], rotation=45, ha="right")
        axis.set_xlabel("dataset (†: significant on it)")
        axis.set_title(f"{measure}: each re-ranker minus {baseline}, per dataset")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_ylabel(f"{measure} minus {baseline}")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, axis="y")
    return figure


def _significance(table: pd.DataFrame, dataset_id: str, system: str, measure: str) -> tuple[str, str]:
    """The p-value of a system on a dataset as text (corrected when it was), and ``"†"`` when significant."""
    row = table[(table["dataset"] == dataset_id) & (table["name"] == system)]
    corrected = f"{measure} p-value corrected"
    column = corrected if corrected in table.columns else f"{measure} p-value"
    if not len(row) or column not in table.columns or pd.isna(row[column].iloc[0]):
        return "not tested", ""
    p = float(row[column].iloc[0])
    name = f"p ({CORRECTIONS[CORRECTION][0]})" if column == corrected else "p"
    return f"{name} = {_p_value(p)}", "†" if p < SIGNIFICANCE else ""
