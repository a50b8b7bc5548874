"""Plots and tables fit for a paper: results.md, the per-query differences and the reliability diagram.

Checked from the Markdown and from the matplotlib Figures (titles, labels, ticks, bar heights).
"""
import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_reasonrank.calibration import MARKERS, calibration_table, reliability_figure
from pyterrier_reasonrank.evaluation import Evaluation, differences_figure, results_markdown

QIDS = [f"q{i}" for i in range(1, 9)]
METRICS = [pt.measures.nDCG @ 10, pt.measures.AP]


def run(order_by_query):
    return pd.DataFrame([{"qid": qid, "docno": docno, "score": float(10 - rank), "rank": rank}
                         for qid, order in order_by_query.items() for rank, docno in enumerate(order)])


def evaluation(datasets=("irds:one",), rerankers=2):
    """An Evaluation as evaluate() makes it, from hand-made runs: 'good' puts the relevant document first
    for all queries but one (second there), 'mixed' for half of them; the first stage puts it third."""
    topics = pd.DataFrame({"qid": QIDS, "query": "q"})
    qrels = pd.DataFrame({"qid": QIDS, "docno": "rel", "label": 1})
    first = run({q: ["a", "b", "rel", "c"] for q in QIDS})
    good = run({q: ["rel", "a", "b", "c"] if q != "q8" else ["a", "rel", "b", "c"] for q in QIDS})
    mixed = run({q: ["rel", "a", "b", "c"] if i % 2 else ["a", "b", "c", "rel"] for i, q in enumerate(QIDS)})
    names = ["BM25", "BM25 >> good", "BM25 >> mixed"][:rerankers + 1]
    systems = [first, good, mixed][:rerankers + 1]
    tables, queries = [], []
    for dataset in datasets:
        tables.append(pt.Experiment(systems, topics, qrels, METRICS, names=names, baseline=0,
                                    correction="holm" if rerankers > 1 else None).assign(dataset=dataset))
        queries.append(pt.Experiment(systems, topics, qrels, METRICS, names=names, perquery=True).assign(dataset=dataset))
    table = pd.concat(tables, ignore_index=True)
    if len(datasets) > 1:
        average = table.groupby("name", sort=False)[[str(m) for m in METRICS]].mean().reset_index()
        table = pd.concat([table, average.assign(dataset="average")], ignore_index=True)
    return Evaluation(table, pd.concat(queries, ignore_index=True))


def test_results_markdown_has_the_columns_of_a_paper_table():
    text = results_markdown(evaluation(), model="Qwen/Qwen2.5-1.5B-Instruct", k=100)
    assert "On irds:one (8 queries)." in text
    assert "p (Holm): corrected for the 2 comparisons per dataset with Holm's step-down (Holm-Bonferroni) method" in text
    section = text.split("## nDCG@10")[1].split("## AP")[0]
    rows = [line.split(" | ") for line in section.strip().splitlines()]
    assert rows[0] == ["| system", "nDCG@10", "Δ", "p", "p (Holm)", "wins", "losses |"]
    assert rows[2] == ["| BM25 top 100", "0.5000", "—", "—", "—", "—", "— |"]  # no nan, no "reject False"
    good, mixed = rows[3], rows[4]
    assert good[0] == "| BM25 top 100 >> Qwen/Qwen2.5-1.5B-Instruct (good)" and good[1] == "0.9539†"
    assert good[2] == "+0.4539" and good[3] == "< 0.0001" and good[5:] == ["8", "0 |"]  # integers
    assert mixed[5:] == ["4", "4 |"] and "nan" not in text


def test_results_markdown_with_one_comparison_and_several_datasets():
    text = results_markdown(evaluation(datasets=("irds:one", "irds:two"), rerankers=1))
    assert "one comparison per dataset: no correction" in text and "p (Holm)" not in text
    assert "The average rows are the means over the datasets (not tested)." in text
    section = text.split("## nDCG@10")[1].split("## AP")[0]
    assert "| dataset | system | nDCG@10 | Δ | p | wins | losses |" in section
    assert "| average | BM25 >> good | 0.9539 | +0.4539 | — | — | — |" in section


def test_differences_per_query_with_query_ids_mean_and_significance():
    figure = differences_figure(evaluation())
    axis = figure.axes[0]
    ticks = [label.get_text() for label in axis.get_xticklabels()]
    assert sorted(ticks) == QIDS and ticks[:4] == ["q1", "q2", "q3", "q4"]  # each "good" gain is +0.5: a stable sort
    assert axis.get_title() == "nDCG@10: each re-ranker minus BM25, per query, on irds:one"
    assert axis.get_ylabel() == "nDCG@10 minus BM25" and axis.get_xlabel().startswith("query id (8 queries")
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert "BM25 >> good: mean +0.4539, p (Holm) = < 0.0001†" in legend
    assert any(text.startswith("BM25 >> mixed: mean ") for text in legend)
    means = sorted(line.get_ydata()[0] for line in axis.get_lines() if line.get_linestyle() == "--")
    # good: the relevant document from rank 3 to 1 (+0.5), once to 2; mixed: half to 1, half to 4
    assert means == pytest.approx([(0.5 + 1 / np.log2(5) - 0.5) / 2, (7 * 0.5 + 1 / np.log2(3) - 0.5) / 8])


def test_differences_per_dataset_mark_significance():
    figure = differences_figure(evaluation(datasets=("irds:one", "irds:two")))
    axis = figure.axes[0]
    assert [label.get_text() for label in axis.get_xticklabels()] == ["one", "two", "average"]
    assert axis.get_title() == "nDCG@10: each re-ranker minus BM25, per dataset"
    marks = [text for text in axis.texts if text.get_text() == "†"]
    assert len(marks) == 2  # "good" on each dataset; not on the average, which is not tested


def tables():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1, 1, 1], size=300)
    labels = rng.integers(0, 3, size=300)
    return {"BM25 >> direct": calibration_table(probabilities, labels),
            "BM25 >> explain": calibration_table(probabilities[:120], labels[:120])}


def test_reliability_diagram_for_a_paper():
    bins = tables()
    figure = reliability_figure(bins, dataset="irds:cranfield")
    assert figure.get_suptitle() == ("Reliability on irds:cranfield: BM25 >> direct, BM25 >> explain "
                                     "(120 or 300 judged pairs, 10 bins)")
    curves, counts = figure.axes[0::2], figure.axes[1::2]
    assert [axis.get_title() for axis in curves] == ["Expected label (score / 2)", "Most probable label"]
    assert curves[0].get_ylabel() == "observed: mean judged label / 2"
    assert counts[0].get_xlabel() == "predicted: mean score / 2 of the bin's pairs"
    assert counts[1].get_xlabel() == "confidence: mean probability of the most probable label"
    for axis, histogram, measure in zip(curves, counts, ["expected label", "confidence"]):
        lines = [line for line in axis.get_lines() if line.get_label() != "calibrated"]
        assert [line.get_marker() for line in lines] == list(MARKERS[:2])  # one does not hide the other
        assert not any(line.get_clip_on() for line in lines)  # a point at 0 or 1 is drawn whole
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        assert legend[1].startswith("BM25 >> direct (ECE ") and legend[1].endswith(", n = 300)")
        heights = [patch.get_height() for patch in histogram.patches]
        expected = [n for table in bins.values() for n in table[table["measure"] == measure]["pairs"]]
        assert heights == expected and histogram.get_ylabel() == "pairs per bin"
