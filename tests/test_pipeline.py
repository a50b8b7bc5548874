"""bm25 >> ReasonRanker on a real collection (irds:cranfield, offline), inside pt.Experiment."""
import numpy as np
import pyterrier as pt
import pytest
from pyterrier_pisa import PisaIndex

from pyterrier_reasonrank import ReasonRanker


@pytest.fixture(scope="module")
def cranfield(tmp_path_factory):
    dataset = pt.get_dataset("irds:cranfield")
    index = PisaIndex(str(tmp_path_factory.mktemp("cranfield") / "index.pisa"), stemmer="porter2")
    index.index(dataset.get_corpus_iter())
    return dataset, index


def test_bm25_then_reasonranker_in_an_experiment(cranfield, tiny_model):
    dataset, index = cranfield
    topics = dataset.get_topics().head(10)
    bm25 = index.bm25(num_results=20)
    ranker = ReasonRanker(str(tiny_model), max_new_tokens=16, batch_size=32)
    pipeline = bm25 >> pt.text.get_text(dataset, "text") >> ranker

    first_stage = bm25(topics)
    reranked = pipeline(topics)
    assert len(first_stage) == 200
    assert sorted(zip(reranked.qid, reranked.docno)) == sorted(zip(first_stage.qid, first_stage.docno))
    assert np.isfinite(reranked.score).all() and reranked.score.between(0, 2).all()
    assert (reranked.explanation.str.len() > 0).all()
    assert reranked.score.nunique() > 150  # graded scores, not three-way ties
    for _, group in reranked.groupby("qid"):
        assert list(group["rank"]) == list(range(20))
        assert (np.diff(group.score.to_numpy()) <= 0).all()

    qrels = dataset.get_qrels()
    qrels = qrels[qrels.qid.isin(topics.qid)]
    table = pt.Experiment([bm25, pipeline], topics, qrels, [pt.measures.nDCG @ 10],
                          names=["BM25", "BM25 >> ReasonRanker"])
    assert list(table.name) == ["BM25", "BM25 >> ReasonRanker"]
    # the re-ranked run in the experiment is the one checked above
    expected = pt.Evaluate(reranked, qrels, [pt.measures.nDCG @ 10])
    assert table["nDCG@10"].iloc[1] == pytest.approx(expected["nDCG@10"])
