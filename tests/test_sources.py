"""Candidate pairs from a real collection (irds:cranfield, offline)."""
import pyterrier as pt
import pytest

from pyterrier_reasonrank.qrels import grade_to_label
from pyterrier_reasonrank.training.sources import PAIR_COLUMNS, SourceConfig, candidate_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return candidate_pairs(SourceConfig(dataset="irds:cranfield", num_queries=8, relevant_per_query=2,
                                        bm25_negatives=3, random_negatives=1, seed=7))


def test_pairs_per_query_by_source(pairs):
    assert list(pairs.columns) == PAIR_COLUMNS
    assert pairs.qid.nunique() == 8 and not pairs.duplicated(["qid", "docno"]).any()
    counts = pairs.groupby(["qid", "source"]).size().unstack(fill_value=0)
    assert (counts["qrels"] == 2).all() and (counts["bm25"] == 3).all() and (counts["random"] == 1).all()
    assert pairs.text.str.len().gt(0).all()


def test_gold_labels_follow_the_qrels(pairs):
    qrels = pt.get_dataset("irds:cranfield").get_qrels()
    grades = dict(zip(zip(qrels.qid, qrels.docno), qrels.label))
    to_label = grade_to_label(None, 4)
    for row in pairs.itertuples():
        expected = to_label(grades[(row.qid, row.docno)]) if (row.qid, row.docno) in grades else 0
        assert row.gold_label == expected
    assert (pairs[pairs.source == "qrels"].gold_label > 0).all()
    assert (pairs[pairs.source != "qrels"].gold_label == 0).all()


def test_the_draw_is_deterministic_under_the_seed(pairs):
    config = dict(dataset="irds:cranfield", num_queries=8, relevant_per_query=2, bm25_negatives=3, random_negatives=1)
    assert candidate_pairs(SourceConfig(**config, seed=7)).equals(pairs)
    assert not candidate_pairs(SourceConfig(**config, seed=8))[["qid", "docno"]].equals(pairs[["qid", "docno"]])


def test_grade_mapping():
    default = grade_to_label(None, 4)
    assert [default(g) for g in (-1, 0, 1, 2, 3, 4)] == [0, 0, 1, 1, 1, 2]
    binary = grade_to_label(None, 1)
    assert [binary(g) for g in (0, 1)] == [0, 2]
    explicit = grade_to_label(SourceConfig(label_map="{1: 1, 2: 1, 3: 2, 4: 2}").label_map, 4)
    assert [explicit(g) for g in (-1, 1, 2, 3, 4)] == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="label_map must map grades to 0, 1 or 2"):
        SourceConfig(label_map="{1: 3}")


class _WithoutQrelsFor:
    """The real cranfield dataset, with the judgements of some queries removed."""

    def __init__(self, qids):
        self._dataset, self._qids = pt.get_dataset("irds:cranfield"), set(qids)

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def get_qrels(self):
        qrels = self._dataset.get_qrels()
        return qrels[~qrels.qid.isin(self._qids)]


@pytest.mark.parametrize("policy", ["skip", "keep"])
def test_queries_without_judgements(monkeypatch, policy):
    dataset = _WithoutQrelsFor({"2", "3"})
    monkeypatch.setattr(pt, "get_dataset", lambda name: dataset)
    pairs = candidate_pairs(SourceConfig(dataset="irds:cranfield", num_queries=4, queries_without_qrels=policy))
    if policy == "skip":
        assert sorted(pairs.qid.unique()) == ["1", "4"]
    else:
        unjudged = pairs[pairs.qid.isin(["2", "3"])]
        assert sorted(pairs.qid.unique()) == ["1", "2", "3", "4"]
        assert set(unjudged.source) == {"bm25", "random"} and unjudged.gold_label.isna().all()


def test_a_dataset_is_required():
    with pytest.raises(ValueError, match="no dataset"):
        candidate_pairs(SourceConfig())


def test_your_own_pairs_are_judged_by_the_teacher_alone(tmp_path, vocabulary):
    """Questions with candidate documents and no judgements (the paper's kind of data), and the
    query-generation annotation of the same questions in the same run."""
    import json

    from openai_server import OpenAICompatibleServer
    from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate
    from pyterrier_reasonrank.training.records import read_jsonl
    from synthetic import make_pairs, teacher_answer

    pairs = make_pairs(vocabulary, 6, seed=9).drop(columns=["gold_label"])
    pairs["qid"] = ["q1", "q1", "q2", "q2", "q3", "q3"]
    pairs["query"] = pairs.groupby("qid")["query"].transform("first")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs.to_dict("records")))
    config = SourceConfig(pairs_file=str(tmp_path / "pairs.jsonl"))
    drawn = candidate_pairs(config)
    assert list(drawn.columns) == PAIR_COLUMNS and len(drawn) == 6
    assert set(drawn.source) == {"given"} and drawn.gold_label.isna().all()
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m)) as server:
        summary = annotate(AnnotateConfig(pairs_file=str(tmp_path / "pairs.jsonl"), output=str(tmp_path / "a.jsonl"),
                                          queries_output=str(tmp_path / "q.jsonl"), teacher_model="rule",
                                          base_url=server.base_url, api_key="test-key"))
    assert summary["usable"] == 6 and summary["queries"]["usable"] == 3
    assert sorted(r["qid"] for r in read_jsonl(tmp_path / "q.jsonl")) == ["q1", "q2", "q3"]
    assert all(r["label"] == vocabulary.label(r["query"], r["text"]) for r in read_jsonl(tmp_path / "a.jsonl"))
    with pytest.raises(ValueError, match="either a dataset or a pairs_file"):
        SourceConfig(dataset="irds:cranfield", pairs_file="x.jsonl")
