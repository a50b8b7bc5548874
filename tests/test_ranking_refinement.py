"""Refinement with ranking rewards on the tiny recipe: rwsft rewards a query's candidates in one pool, and
GRPO's batches hold whole query groups (queries of 9, 7 and 5 candidates, groups of 3)."""
import contextlib
import json
import shutil
from collections import Counter
from importlib import resources

import re

import pytest

import custom_rewards
from pyterrier_reasonrank.training.cli import main
from synthetic import printed_result, ranking_task

RECIPE = str(resources.files("pyterrier_reasonrank.training") / "configs" / "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def distilled(tiny_model, vocabulary, tmp_path_factory):
    """runs/tiny/distill (one step of the tiny recipe) and annotations grouped by query."""
    work = tmp_path_factory.mktemp("ranking")
    shutil.copytree(tiny_model, work / "runs/tiny/model")
    frame, qrels = ranking_task(vocabulary, seed=4, queries_per_topic=1)
    frame = frame[~frame.docno.isin(frame[frame.qid == "h1-0"].docno[:2]) & ~frame.docno.isin(
        frame[frame.qid == "h2-0"].docno[:4])]  # 9, 7 and 5 candidates
    labels = dict(zip(qrels.docno, qrels.label))
    records = [{**row, "label": labels[row["docno"]], "gold_label": labels[row["docno"]],
                "explanation": vocabulary.explanation(row["query"], row["text"])}
               for row in frame[["qid", "docno", "query", "text"]].to_dict("records")]
    (work / "runs/tiny/annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    questions = [{"qid": qid, "query": query, "queries": vocabulary.queries(query)}
                 for qid, query in dict(zip(frame.qid, frame["query"])).items()]
    (work / "runs/tiny/queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    with contextlib.chdir(work):
        assert main(["distill", "--config", RECIPE, "--max_steps", "1"]) == 0
    return work, labels


def run(work, monkeypatch, capsys, *argv):
    monkeypatch.chdir(work)
    assert main(list(argv)) == 0, capsys.readouterr().err
    return printed_result(capsys.readouterr().out)


def test_rwsft_rewards_every_candidate_of_a_query_in_one_pool(distilled, monkeypatch, capsys):
    work, labels = distilled
    custom_rewards.CALLS.clear()
    result = run(work, monkeypatch, capsys, "refine", "--config", RECIPE, "--rewards", "composite", "rr",
                 "custom_rewards.recording", "--num_generations", "2", "--max_completion_length", "8",
                 "--max_steps", "1", "--output_dir", "runs/tiny/rwsft-ranking")
    assert result["sampling"]["pairs"] == 21 and result["steps"] == 1
    [pool] = custom_rewards.CALLS  # one call: every rollout (2 drawn + the teacher's) of every pair
    assert Counter(pool) == {(qid, docno): 3 for qid, docno in Counter(pool)} and len(pool) == 21 * 3
    assert {qid for qid, _ in pool} == {"h0-0", "h1-0", "h2-0"}


def test_grpo_batches_hold_whole_query_groups(distilled, monkeypatch, capsys):
    work, labels = distilled
    custom_rewards.CALLS.clear()
    result = run(work, monkeypatch, capsys, "refine", "--config", RECIPE, "--algorithm", "grpo", "--rewards",
                 "composite", "custom_rewards.recording", "--query_group_size", "3", "--num_generations", "2",
                 "--per_device_train_batch_size", "6", "--max_completion_length", "8", "--max_steps", "2",
                 "--output_dir", "runs/tiny/grpo-ranking")
    assert result["steps"] == 2
    # topic 0 needs depth 0: its candidates are all relevant, so it cannot make a group
    assert result["query_groups"] == {"queries": 2, "group_size": 3, "queries_per_batch": 1,
                                      "left_out": {"one_label": 1, "too_few": 0}}
    assert len(custom_rewards.CALLS) == 2
    for batch in custom_rewards.CALLS:  # each generation batch: one query, three candidates, two rollouts each
        counts = Counter(batch)
        assert len({qid for qid, _ in batch}) == 1 and len(counts) == 3 and set(counts.values()) == {2}
        assert {labels[docno] > 0 for _, docno in counts} == {True, False}


@pytest.mark.parametrize("options, message", [
    (["--algorithm", "grpo", "--rewards", "composite", "--query_group_size", "3", "--num_generations", "2",
      "--per_device_train_batch_size", "4"], r"\(4 x 1 = 4\) must be a multiple of query_group_size x num_generations"),
    (["--algorithm", "grpo", "--rewards", "ndcg", "--query_group_size", "1"], "query_group_size must be at least 2"),
    (["--rewards", "ndcg", "--query_group_size", "3"], "query_group_size .an option of algorithm grpo, not rwsft"),
    (["--rewards", "rr", "--rr_positive_label", "3"], "rr_positive_label must be 1 or 2"),
    (["--rewards", "composite", "--composite_alpha", "1.5"], "composite_alpha"),
])
def test_ranking_options_are_checked_before_any_model_loads(distilled, monkeypatch, capsys, options, message):
    monkeypatch.chdir(distilled[0])
    assert main(["refine", "--config", RECIPE, "--adapter", "no-such-adapter", *options]) == 1
    error = capsys.readouterr().err
    assert re.search(message, error) and "no-such-adapter" not in error, error
