"""QueryGenerator: a long question into search queries, as a PyTerrier query rewriter."""
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_reasonrank import QueryGenerator, ReasonRanker
from pyterrier_reasonrank.indexing import bm25

QUESTIONS = pd.DataFrame({"qid": ["1", "2"], "query": ["why do heated models need similarity laws", "slabs?"]})


@pytest.fixture(scope="module")
def writes_moon_tides(script_model):
    # after "Queries:" the model writes "\n moon tides" and ends its turn
    return script_model({":": "Ċ", "Ċ": "Ġmoon", "Ġmoon": "Ġtides", "Ġtides": "<|im_end|>"})


def test_rewrites_following_pyterrier_convention(writes_moon_tides):
    out = QueryGenerator(str(writes_moon_tides))(QUESTIONS)
    assert list(out.columns) == ["qid", "query_0", "query", "generated_queries"]
    assert list(out.query_0) == list(QUESTIONS["query"])
    assert list(out["query"]) == ["moon tides", "moon tides"]
    assert list(out.generated_queries) == [["moon tides"], ["moon tides"]]
    both = QueryGenerator(str(writes_moon_tides), combine="question+join")(QUESTIONS)
    assert both["query"].iloc[1] == "slabs? moon tides"


def test_a_question_without_generated_queries_keeps_the_question(script_model):
    silent = script_model({":": "<|im_end|>"})
    with pytest.warns(UserWarning, match=r"wrote no search query for qid\(s\) \['1', '2'\]"):
        out = QueryGenerator(str(silent))(QUESTIONS)
    assert list(out["query"]) == list(QUESTIONS["query"]) and list(out.generated_queries) == [[], []]


def test_generate_then_retrieve_then_rerank_the_question(writes_moon_tides, tiny_model):
    dataset = pt.get_dataset("irds:cranfield")
    first_stage = bm25(dataset, name="irds:cranfield", num_results=5)
    pipeline = QueryGenerator(str(writes_moon_tides)) >> first_stage >> pt.rewrite.reset() \
        >> pt.text.get_text(dataset, "text") >> ReasonRanker(str(tiny_model), mode="direct")
    out = pipeline(QUESTIONS)
    expected = first_stage(pd.DataFrame({"qid": ["1", "2"], "query": ["moon tides", "moon tides"]}))
    assert sorted(zip(out.qid, out.docno)) == sorted(zip(expected.qid, expected.docno))
    assert set(out["query"]) == set(QUESTIONS["query"])  # the re-ranker judged the questions


def test_empty_input_and_inspection():
    generator = QueryGenerator("/no/such/model")
    assert list(generator(pd.DataFrame(columns=["qid", "query"])).columns) == \
        ["qid", "query_0", "query", "generated_queries"]
    assert pt.inspect.transformer_inputs(generator) == [["qid", "query"]]
    assert repr(generator) == "QueryGenerator('/no/such/model')"
    with pytest.raises(ValueError, match="combine must be one of"):
        QueryGenerator(combine="rrf")


TestInspection = pt.testing.transformer_test_class(lambda: QueryGenerator("/no/such/model"))
