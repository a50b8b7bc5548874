"""ReasonRanker results shown as readable explanations: in Jupyter and as a static HTML report."""
import pandas as pd

from pyterrier_reasonrank import ReasonRanker, ReasonRankResults, explanations_html, write_report


def results():
    return ReasonRankResults(pd.DataFrame([
        {"qid": "q1", "query": "tides <cause>", "docno": "d2", "text": "The moon pulls the ocean. " * 30,
         "explanation": "It names the moon's pull.", "label": 2, "score": 1.8, "forced": False, "rank": 0},
        {"qid": "q1", "query": "tides <cause>", "docno": "d1", "text": "Tide detergent.",
         "explanation": "A brand & nothing more.", "label": 0, "score": 0.2, "forced": True, "rank": 1},
        {"qid": "q2", "query": "sky", "docno": "d3", "text": "", "explanation": "", "label": 1, "score": 1.0,
         "forced": False, "rank": 0},
    ]))


def test_results_render_as_a_list_per_query():
    page = results()._repr_html_()
    assert page.index("<b>q1</b> tides &lt;cause&gt;") < page.index("<code>d2</code>") < page.index("<code>d1</code>") \
        < page.index("<b>q2</b>")
    assert '<span class="label l2">2 relevant</span>' in page and "score 1.800" in page
    assert "A brand &amp; nothing more." in page and "label forced" in page
    assert "The moon pulls the ocean. The moon" in page and "…" in page  # the document's opening, cut
    assert "(no explanation: direct mode)" in page


def test_limits_and_plain_frames():
    page = explanations_html(results(), max_queries=1, max_docs=1)
    assert "<b>q2</b>" not in page and "1 more queries" in page and "1 more documents" in page
    plain = results()[["qid", "docno"]]
    assert plain._repr_html_().startswith("<div>")  # without the explanation columns: the usual table


def test_ranker_output_renders(tiny_model):
    out = ReasonRanker(str(tiny_model), max_new_tokens=4)(
        pd.DataFrame({"qid": ["1"], "query": ["tides"], "docno": ["d"], "text": ["moon"]}))
    assert isinstance(out, ReasonRankResults) and "<code>d</code>" in out._repr_html_()
    assert isinstance(out.head(1), ReasonRankResults)


def test_static_report(tmp_path):
    path = write_report(results(), tmp_path / "report.html", title="Run <1>")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Run &lt;1&gt;</title>" in page
    assert page.count("<li>") == 3
