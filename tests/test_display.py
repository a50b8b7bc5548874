"""ReasonRanker results shown as readable explanations: in Jupyter and as a static HTML report."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from pyterrier_reasonrank import ReasonRanker, ReasonRankResults, explanations_html, write_report
from pyterrier_reasonrank.display import model_label
from pyterrier_reasonrank.versions import __version__


def results():
    return ReasonRankResults(pd.DataFrame([
        {"qid": "q1", "query": "tides <cause>", "docno": "d2", "text": "The moon pulls the ocean. " * 30,
         "explanation": "It names the moon's pull.", "label": 2, "score": 1.8, "probabilities": (0.05, 0.1, 0.85),
         "forced": False, "samples": 1, "rank": 0, "first_stage_rank": 2, "first_stage_score": 11.5},
        {"qid": "q1", "query": "tides <cause>", "docno": "d1", "text": "Tide detergent.",
         "explanation": "A brand & nothing more.", "label": 0, "score": 0.937, "probabilities": (0.5, 0.063, 0.437),
         "forced": True, "samples": 1, "rank": 1, "first_stage_rank": 0, "first_stage_score": 14.0},
        {"qid": "q2", "query": "sky", "docno": "d3", "text": "", "explanation": "", "label": 1, "score": 1.0,
         "probabilities": (0.0, 1.0, 0.0), "forced": False, "samples": 0, "rank": 0, "first_stage_rank": 0,
         "first_stage_score": 3.0},
    ]))


QRELS = pd.DataFrame({"qid": ["q1", "q1"], "docno": ["d2", "d1"], "label": [1, 1]})  # binary: grade 1 is label 2


def items(page):
    return re.findall(r'<li class="d[^"]*">.*?</li>', page)


def test_each_document_has_one_line_of_facts_then_its_explanation_and_opening():
    page = results()._repr_html_()
    assert page.index("<code>q1</code> tides &lt;cause&gt;") < page.index("<code>d2</code>") \
        < page.index("<code>d1</code>") < page.index("<code>q2</code>")
    first, second, third = items(page)
    assert "<b>#1</b>" in first and "first stage #3 (11.5) ↑2" in first  # from rank 3 in the first stage to 1
    assert "<b>#2</b>" in second and "first stage #1 (14) ↓1" in second and "first stage #1 (3) =" in third
    # the most probable label beside its distribution, and the score on its scale: no contradiction to read
    assert 'most probable <span class="b l0">0 irrelevant</span>' in second and "score 0.94 / 2" in second
    assert 'title="p(0)=0.50 p(1)=0.06 p(2)=0.44"' in second and 'style="width:43.7%"' in second
    assert 'class="fc"' in second and 'class="fc"' not in first  # forced, explained in the report's legend
    assert "A brand &amp; nothing more." in second
    assert "The moon pulls the ocean. The moon" in first and "…" in first  # the document's opening, cut
    assert "(no explanation: judged in direct mode)" in third


@pytest.mark.parametrize("column, value, shown", [
    ("label", -1, "label -1 (outside 0–2)"), ("label", 7, "label 7 (outside 0–2)"), ("label", np.nan, "label missing"),
    ("label", None, "label missing"), ("label", "<b>2</b>", "label &lt;b&gt;2&lt;/b&gt; (outside 0–2)"),
    ("label", "x" * 500, f"label {'x' * 30}… (outside 0–2)"),
    ("score", np.nan, "score missing"), ("score", None, "score missing"), ("explanation", None, "(no explanation)"),
    ("explanation", np.nan, "(no explanation)"), ("probabilities", None, "(no distribution)"),
    ("probabilities", (0.5, 0.5), "(distribution invalid)"), ("probabilities", (np.nan, 0.5, 0.5),
                                                                "(distribution invalid)"),
    ("probabilities", (2.0, -1.0, 0.0), "(distribution invalid)"), ("rank", np.nan, "<b>#?</b>"),
    ("first_stage_rank", None, "<b>#1</b> · <code>d2</code>"), ("forced", np.nan, "score 1.80 / 2</span></div>"),
    ("docno", None, "<code>None</code>"), ("text", b"bytes \xff", "bytes \ufffd"), ("qid", 7, "<code>7</code>"),
])
def test_a_missing_or_out_of_range_value_is_shown_as_such(column, value, shown):
    frame = pd.DataFrame(results()).astype(object)
    frame.at[0, column] = value
    for page in (explanations_html(frame), explanations_html(frame, qrels=QRELS)):
        assert shown in page


def test_jupyter_says_how_to_see_the_queries_and_documents_it_leaves_out():
    page = explanations_html(results(), max_queries=1, max_docs=1)
    assert "<code>q2</code>" not in page and "1 more documents not shown (max_docs=None shows them)" in page
    assert "… 1 more queries (2 in all) not shown" in page
    assert '<code>write_report(results, "report.html")</code>' in page and "max_queries=None" in page
    assert "<code>results[results.qid == &#x27;q2&#x27;]</code> shows one" in page
    plain = results()[["qid", "docno"]]
    assert plain._repr_html_().startswith("<div>")  # without the explanation columns: the usual table


def test_the_first_documents_of_a_query_are_open_and_the_rest_collapsed():
    frame = pd.concat([pd.DataFrame(results()).iloc[[0]].assign(docno=f"d{i}", rank=i) for i in range(7)])
    page = explanations_html(frame, expanded=3)
    opened, collapsed = page.split('<details class="more">')
    assert len(items(opened)) == 3 and len(items(collapsed)) == 4
    assert "<summary>4 more documents (#4–#7)</summary>" in collapsed


def test_ranker_output_renders(tiny_model):
    out = ReasonRanker(str(tiny_model), max_new_tokens=4)(
        pd.DataFrame({"qid": ["1"], "query": ["tides"], "docno": ["d"], "text": ["moon"]}))
    assert isinstance(out, ReasonRankResults) and "<code>d</code>" in out._repr_html_()
    assert isinstance(out.head(1), ReasonRankResults)


def test_the_ranker_keeps_the_first_stages_score_and_rank(tiny_model):
    first = pd.DataFrame({"qid": "1", "query": "tides", "docno": ["a", "b", "c"], "text": ["moon", "sea", "tide"],
                          "score": [9.0, 8.0, 7.0], "rank": [0, 1, 2]})
    direct = ReasonRanker(str(tiny_model), mode="direct")
    out = direct(first)
    kept = out.set_index("docno")[["first_stage_score", "first_stage_rank"]]
    assert kept.to_dict("index") == {"a": {"first_stage_score": 9.0, "first_stage_rank": 0},
                                     "b": {"first_stage_score": 8.0, "first_stage_rank": 1},
                                     "c": {"first_stage_score": 7.0, "first_stage_rank": 2}}
    # A second re-ranker keeps the first stage's, not the first re-ranker's.
    again = ReasonRanker(str(tiny_model), mode="direct")(out).set_index("docno")
    assert again["first_stage_score"].to_dict() == {"a": 9.0, "b": 8.0, "c": 7.0}
    assert "first_stage_rank" not in direct(first.drop(columns=["score", "rank"])).columns


def test_the_report_has_a_header_a_legend_an_index_and_the_judged_labels(tmp_path):
    ranker = ReasonRanker("Qwen/Qwen2.5-0.5B-Instruct", mode="explain")  # not loaded: its settings are read
    path = write_report(results(), tmp_path / "report.html", qrels=QRELS, ranker=ranker, dataset="irds:test <1>",
                        k=20, title="Run <1>")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Run &lt;1&gt;</title>" in page
    header = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))
    assert header["model"] == "Qwen/Qwen2.5-0.5B-Instruct" and header["adapter"] == "none"
    assert header["mode"] == "explain" and header["dataset"] == "irds:test &lt;1&gt;" and header["k"] == "20 (the first stage&#x27;s depth)"
    assert header["judged pairs"] == "2 of 3" and header["version"] == f"pyterrier-reasonrank {__version__}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", header["date"])
    assert "How to read an entry" in page and "the marker was appended and the label read there" in page
    assert '<a href="#q0" title="tides &lt;cause&gt; · 2 docs, 1 disagree">q1</a><sup class="fc">1</sup>' in page
    assert 'id="q0"' in page and '<a href="#q1" title="sky · 1 docs, 0 disagree">q2</a></li>' in page
    first, second, third = items(page)
    assert '<span class="b j l2">judged 2 relevant</span>' in first and 'class="d"' in first  # agrees
    assert '<li class="d x">' in second  # judged 2, predicted 0: a disagreement, for the filter
    assert '<i class="m">unjudged</i>' in third
    assert "show only the 1 judged pairs whose most probable label is not the judged one" in page


def test_the_report_infers_what_it_is_not_told(tmp_path):
    page = write_report(results(), tmp_path / "report.html").read_text()
    header = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))
    assert header["mode"] == "mixed: 2 of 3 pairs explained (adaptive or a cascade)"
    assert header["k"] == "up to 2 documents per query" and "judged pairs" not in header
    assert 'id="rr-x"' not in page  # no qrels: no filter


def test_model_labels_for_tables(tmp_path):
    (tmp_path / "runs" / "refine").mkdir(parents=True)
    assert model_label("Qwen/Qwen2.5-1.5B-Instruct", str(tmp_path / "runs" / "refine")) \
        == "Qwen/Qwen2.5-1.5B-Instruct + refine"  # a local directory by its folder, a Hub id as it is
    assert model_label("Qwen/Qwen2.5-1.5B-Instruct", "someone/adapter") == "Qwen/Qwen2.5-1.5B-Instruct + someone/adapter"


def test_a_report_of_vaswanis_size_stays_small(tmp_path):
    from report_pages import vaswani_scale

    frame, qrels = vaswani_scale()
    path = write_report(frame, tmp_path / "report.html", qrels=qrels, dataset="irds:vaswani", k=100)
    assert path.stat().st_size < 10e6
    assert len(frame) == 9300 and not math.isnan(frame["score"].sum())
