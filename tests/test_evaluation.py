"""`reasonrank evaluate` and the evaluation API: vaswani and cranfield end to end, and BRIGHT's
qrels and exclusions on its real queries and judgements (placeholder documents)."""
import pandas as pd
import pyterrier as pt
import pytest

import bright_home
from conftest import SHARED
from pyterrier_reasonrank import ReasonRanker
from pyterrier_reasonrank.cli import main
from pyterrier_reasonrank.evaluation import EXCLUDED, DropExcluded, dataset_ids, evaluate
from pyterrier_reasonrank.indexing import bm25

SIGNIFICANCE = ["nDCG@10 +", "nDCG@10 -", "nDCG@10 p-value"]


def test_evaluate_command_on_vaswani(tiny_model, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["evaluate", "--dataset", "irds:vaswani", "--model", str(tiny_model), "--k", "20", "--num-queries", "8",
            "--modes", "explain", "direct", "--cascade", "5", "--max-new-tokens", "8", "--output", str(output),
            "--report"]
    assert main(argv) == 0
    table = pd.read_csv(output / "results.csv")
    assert list(table.name) == ["BM25", "BM25 >> explain", "BM25 >> direct", "BM25 >> direct % 5 >> explain"]
    assert list(table.columns[:3]) == ["dataset", "name", "nDCG@10"] and set(SIGNIFICANCE) <= set(table.columns)
    assert table[SIGNIFICANCE].iloc[0].isna().all() and table["nDCG@10 p-value"].iloc[1:].notna().all()
    assert "nDCG@10 p-value corrected" in table.columns  # Holm, for three comparisons
    # the baseline row is BM25 on those queries
    dataset = pt.get_dataset("irds:vaswani")
    topics = dataset.get_topics().head(8)
    expected = pt.Evaluate(bm25(dataset, name="irds:vaswani", num_results=20)(topics),
                           dataset.get_qrels()[lambda q: q.qid.isin(topics.qid)], [pt.measures.nDCG @ 10])
    assert table["nDCG@10"].iloc[0] == pytest.approx(expected["nDCG@10"])
    per_query = pd.read_csv(output / "per_query.csv", dtype={"qid": str})
    assert len(per_query) == 4 * 8 * 2  # systems x queries x measures
    markdown = (output / "results.md").read_text()
    model = tiny_model.name  # systems named by model and depth, the correction named
    assert f"| BM25 top 20 >> {model} (direct % 5 >> explain) | " in markdown and "Holm" in markdown
    assert "nan" not in markdown and ".0000 |" not in markdown.split("## AP")[0].split("| wins")[1]
    assert (output / "differences.png").stat().st_size > 5000
    assert len(list((output / "runs").glob("*.run"))) == 4
    # a report for each system that explains, with the qrels; none for direct mode
    reports = sorted(path.name for path in output.glob("report-*.html"))
    assert reports == ["report-irds-vaswani-direct-5-explain.html", "report-irds-vaswani-explain.html"]
    page = (output / "report-irds-vaswani-explain.html").read_text()
    assert f"<title>BM25 &gt;&gt; explain · {tiny_model} · irds:vaswani</title>" in page
    assert page.count('<section class="q') == 8 and "judged 2 relevant" in page and "first stage #" in page
    out = capsys.readouterr().out
    assert "BM25 >> direct % 5 >> explain" in out and "report irds:vaswani BM25 >> explain: " in out


def test_a_report_of_direct_mode_only_when_asked_for_by_name(tiny_model, tmp_path, capsys):
    argv = ["evaluate", "--dataset", "irds:vaswani", "--model", str(tiny_model), "--k", "5", "--num-queries", "2",
            "--modes", "direct", "--output", str(tmp_path / "out")]
    assert main([*argv, "--report"]) == 1
    error = capsys.readouterr().err
    assert "--report: no re-ranked system writes explanations (--modes direct)" in error and "--report-system" in error
    assert not (tmp_path / "out" / "results.csv").exists()  # refused before any work
    assert main([*argv, "--report-system", "nope"]) == 1
    assert "--report-system 'nope': no such re-ranked system; the systems are ['direct']" in capsys.readouterr().err
    assert main([*argv, "--report-system", "BM25 >> direct"]) == 0
    page = (tmp_path / "out" / "report-irds-vaswani-direct.html").read_text()
    assert "<dt>mode</dt><dd>direct</dd>" in page and "(no explanation: judged in direct mode)" in page


def test_the_cascade_keeps_the_full_depth(tiny_model):
    evaluation = evaluate(["irds:cranfield"], {"direct": ReasonRanker(str(tiny_model), mode="direct")}, k=15,
                          num_queries=4)
    runs = evaluation.runs
    assert {len(run) for run in runs.values()} == {60}
    assert list(evaluation.table.dataset) == ["irds:cranfield"] * 2


def test_bright_qrels_are_the_real_judgements_with_exclusions(bright):
    topics = bright_home.shared_topics(SHARED, "leetcode")
    qrels = bright.get_qrels()
    positives = qrels[qrels.label == 1]
    assert set(zip(positives.qid, positives.docno)) == bright_home.shared_qrels(SHARED, "leetcode")
    excluded = qrels[qrels.label == EXCLUDED]
    assert set(zip(excluded.qid, excluded.docno)) == {(t["id"], d) for t in topics for d in bright_home.excluded(t)}
    assert len(excluded) == 33485 and set(qrels.label) == {1, EXCLUDED}
    questions = bright.get_topics("text")
    assert len(questions) == 142 and questions["query"].iloc[0] == topics[0]["query"]


def test_excluded_documents_are_removed_before_scoring(bright):
    topics = bright.get_topics("text").head(3)[["qid", "query"]]
    qrels = bright.get_qrels()
    ranking = bm25(bright, name="irds:bright/leetcode", num_results=20)(topics)
    excluded = set(zip(qrels[qrels.label == EXCLUDED].qid, qrels[qrels.label == EXCLUDED].docno))
    assert {pair for pair in zip(ranking.qid, ranking.docno)} & excluded  # BM25 ranks some excluded first
    kept = DropExcluded(qrels)(ranking)
    assert not set(zip(kept.qid, kept.docno)) & excluded
    assert all(list(group["rank"]) == list(range(len(group))) for _, group in kept.groupby("qid"))
    judged = qrels[(qrels.label != EXCLUDED) & qrels.qid.isin(topics.qid)]
    with_exclusion = pt.Evaluate(kept, judged, [pt.measures.nDCG @ 10])["nDCG@10"]
    without = pt.Evaluate(ranking, judged, [pt.measures.nDCG @ 10])["nDCG@10"]
    assert with_exclusion == pytest.approx(1.0) and without < 0.9


def test_bright_evaluation_over_domains(bright, tiny_model):
    evaluation = evaluate(["irds:bright/leetcode", "irds:bright/biology"],
                          {"direct": ReasonRanker(str(tiny_model), mode="direct", max_doc_tokens=64)},
                          k=20, num_queries=3)
    table = evaluation.table
    assert list(table.dataset) == ["irds:bright/leetcode"] * 2 + ["irds:bright/biology"] * 2 + ["average"] * 2
    baseline = table[table.name == "BM25"].set_index("dataset")["nDCG@10"]
    assert baseline["irds:bright/leetcode"] == pytest.approx(1.0)  # the excluded documents did not count
    assert baseline["average"] == pytest.approx((baseline["irds:bright/leetcode"] + baseline["irds:bright/biology"]) / 2)
    qrels = bright.get_qrels()
    excluded = set(zip(qrels[qrels.label == EXCLUDED].qid, qrels[qrels.label == EXCLUDED].docno))
    for (dataset, _), run in evaluation.runs.items():
        assert not set(zip(run.qid, run.docno)) & excluded


def test_bright_stands_for_its_twelve_domains():
    ids = dataset_ids(["bright", "irds:vaswani"])
    assert len(ids) == 13 and ids[0] == "irds:bright/biology" and ids[-1] == "irds:vaswani"
