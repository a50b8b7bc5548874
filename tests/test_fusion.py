"""Fusion with the first stage: the interpolation, the cross-validated weight, and `reasonrank evaluate --fusion`."""
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_reasonrank.cli import main
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.fusion import FirstStageFusion, choose_weights, cross_validated_fusion


def test_fusion_interpolates_per_query_min_max_normalised_scores():
    reranked = pd.DataFrame({"qid": ["q1"] * 3 + ["q2"], "docno": ["a", "b", "c", "d"],
                             "first_stage_score": [10.0, 5.0, 0.0, 3.0], "score": [0.0, 2.0, 1.0, 1.0]})
    fused = FirstStageFusion(0.3)(reranked).set_index("docno")
    # q1: first stage 1, .5, 0 and re-ranker 0, 1, .5; q2 has one document: both normalise to 0
    assert fused["score"].to_dict() == pytest.approx({"a": 0.3, "b": 0.15 + 0.7, "c": 0.35, "d": 0.0})
    assert fused["rank"].to_dict() == {"b": 0, "c": 1, "a": 2, "d": 0}
    assert fused["reranker_score"].to_dict() == {"a": 0.0, "b": 2.0, "c": 1.0, "d": 1.0}
    assert list(FirstStageFusion(1.0)(reranked).query("qid == 'q1'")["docno"]) == ["a", "b", "c"]


def test_fusion_needs_the_first_stage_score_and_a_weight_from_0_to_1():
    with pytest.raises(pt.validate.InputValidationError, match="first_stage_score"):
        FirstStageFusion(0.5)(pd.DataFrame({"qid": ["q"], "docno": ["d"], "score": [1.0]}))
    columns = ["qid", "docno", "score", "rank", "first_stage_score"]
    outputs = ["qid", "docno", "score", "first_stage_score", "reranker_score", "rank"]
    assert pt.inspect.transformer_outputs(FirstStageFusion(0.5), columns) == outputs
    assert list(FirstStageFusion(0.5)(pd.DataFrame(columns=columns)).columns) == outputs
    for weight in (-0.1, 1.5, "0.5"):
        with pytest.raises(InputError, match="from 0 to 1"):
            FirstStageFusion(weight)


def test_each_fold_gets_the_weight_best_on_the_other_folds():
    # query a alone is best at weight 1; the others at 0: a's own weight is chosen on them
    rows = [{"qid": q, "weight": w, "value": float(w == (1.0 if q == "a" else 0.0))}
            for q in "abcde" for w in (0.0, 0.5, 1.0)]
    assert choose_weights(pd.DataFrame(rows), [["a"], ["b"], ["c"], ["d"], ["e"]]) == [0.0] * 5
    # b, c, d, e tie between 0 and 0.5 on the others: the smaller weight
    rows = [{"qid": q, "weight": w, "value": 1.0 if w < 1 else 0.0} for q in "abcde" for w in (0.0, 0.5, 1.0)]
    assert choose_weights(pd.DataFrame(rows), [["a", "b"], ["c", "d", "e"]]) == [0.0, 0.0]


def runs(queries: int):
    """A first stage that ranks each query's relevant document last, and a re-ranker that ranks it first."""
    first, reranked, qrels = [], [], []
    for q in range(queries):
        for d in range(4):
            first.append({"qid": f"q{q}", "docno": f"q{q}-{d}", "score": float(4 - d), "rank": d})
            reranked.append({"qid": f"q{q}", "docno": f"q{q}-{d}", "score": float(d) / 3, "rank": 3 - d})
        qrels.append({"qid": f"q{q}", "docno": f"q{q}-3", "label": 1})
    return pd.DataFrame(first), pd.DataFrame(reranked), pd.DataFrame(qrels)


def test_cross_validation_picks_the_weight_on_other_queries():
    first, reranked, qrels = runs(7)
    fused, folds = cross_validated_fusion(first, reranked, qrels)
    # the fused order is the re-ranker's while its weight (1 - w) exceeds w: weights 0 to 0.4 tie; the smallest
    assert list(folds.columns) == ["fold", "weight", "queries", "training"]
    assert folds["weight"].tolist() == [0.0] * 5 and folds["queries"].sum() == 7
    assert (fused.query("rank == 0")["docno"].str.endswith("-3")).all() and len(fused) == 28
    # the other way round: the first stage ranks the relevant document (-0) first, the re-ranker last
    first_right = first.assign(score=first["docno"].str[-1].map({"0": 4.0, "1": 3.0, "2": 2.0, "3": 1.5}))
    reranker_wrong = reranked.assign(score=reranked["docno"].str[-1].map({"0": 0.0, "1": 0.2, "2": 0.5, "3": 0.9}))
    # fused, -0 scores w and -3 scores 0.2 w + (1 - w): -0 is first from w = 0.6 on
    _, folds = cross_validated_fusion(first_right, reranker_wrong, qrels.assign(docno=qrels["docno"].str[:-1] + "0"),
                                      folds=3)
    assert folds["weight"].tolist() == [0.6] * 3 and folds["training"].tolist() == [1.0] * 3
    with pytest.raises(InputError, match="needs at least 2, got 1"):
        cross_validated_fusion(first.head(4), reranked.head(4), qrels.head(1))


def test_a_reranked_document_the_first_stage_did_not_rank_is_an_error():
    first, reranked, qrels = runs(3)
    with pytest.raises(InputError, match="q0-3 of query q0 is not in the first stage's ranking"):
        cross_validated_fusion(first[first.docno != "q0-3"], reranked, qrels)


def test_evaluate_command_with_fusion(tiny_model, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["evaluate", "--dataset", "irds:vaswani", "--model", str(tiny_model), "--k", "10",
                 "--num-queries", "6", "--modes", "direct", "--fusion", "--output", str(output)]) == 0
    table = pd.read_csv(output / "results.csv")
    assert list(table.name) == ["BM25", "BM25 >> direct", "BM25 >> direct + fusion"]
    assert table["nDCG@10 p-value"].iloc[1:].notna().all()
    folds = pd.read_csv(output / "fusion.csv")
    assert list(folds.columns) == ["dataset", "name", "fold", "weight", "queries", "training"]
    assert len(folds) == 5 and folds["queries"].sum() == 6 and set(folds["name"]) == {"BM25 >> direct + fusion"}
    assert set(folds["weight"]) <= {round(0.1 * k, 1) for k in range(11)}
    assert len(list((output / "runs").glob("*.run"))) == 3
    assert "Fusion weights of the first stage" in capsys.readouterr().out
