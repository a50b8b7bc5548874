"""Teacher consensus: k sampled answers per pair, the majority label, disagreements left out of training."""
import json

import openai
import pytest

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate
from pyterrier_reasonrank.training.consensus import agreement_summary, consensus
from pyterrier_reasonrank.training.records import labelled_pairs, read_jsonl, summarize, usable_judgements
from synthetic import make_pairs, teacher_answer


def answer(label, explanation="e"):
    return {"label": label, "explanation": f"{explanation}{label}", "raw": f"Explanation: {explanation}{label}"}


def error():
    return {"label": None, "explanation": None, "raw": "I cannot tell.", "error": "no 'Relevance:' line"}


def test_the_majority_label_wins_with_the_first_explanation_that_gives_it():
    answers = [answer(0, "a"), answer(2, "b"), answer(2, "c")]
    record = consensus(answers)
    assert record["label"] == 2 and record["explanation"] == "b2" and record["agreement"] == pytest.approx(2 / 3)
    assert record["samples"] == answers and "disagreement" not in record
    assert consensus([answer(1)] * 3)["agreement"] == 1.0


@pytest.mark.parametrize("labels, kept, agreement", [
    ([0, 2], 0, 0.5),  # mean 1: both as close, the first sampled
    ([2, 0], 2, 0.5),
    ([0, 1, 2], 1, 1 / 3),  # mean 1: label 1 is closest
    ([2, 2, 0, 0], 2, 0.5),  # half is not a majority
    ([2, None, None], 2, 1 / 3),  # an answer out of format votes for no label
])
def test_without_a_majority_the_pair_is_a_disagreement(labels, kept, agreement):
    record = consensus([answer(v) if v is not None else error() for v in labels])
    assert record["disagreement"] is True and record["label"] == kept
    assert record["agreement"] == pytest.approx(agreement)


def test_every_answer_out_of_format_makes_an_error_record():
    record = consensus([error(), error()])
    assert record["label"] is None and record["error"] and record["agreement"] == 0.0 and len(record["samples"]) == 2


def test_disagreements_are_left_out_of_training_unless_asked_for(tmp_path):
    records = [{"qid": "1", "docno": "a", "query": "q", "text": "t", **consensus([answer(2)] * 3)},
               {"qid": "1", "docno": "b", "query": "q", "text": "t", **consensus([answer(0), answer(2)] * 1)},
               {"qid": "1", "docno": "c", "query": "q", "text": "t", **consensus([answer(1), answer(1), answer(0)])}]
    assert [r["docno"] for r in usable_judgements(records)] == ["a", "c"]
    assert [r["docno"] for r in usable_judgements(records, include_disagreements=True)] == ["a", "b", "c"]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [r["docno"] for r in labelled_pairs(path)] == ["a", "c"]
    assert [r["docno"] for r in labelled_pairs(path, include_disagreements=True)] == ["a", "b", "c"]
    summary = summarize(records)
    assert summary["usable"] == 2
    assert summary["consensus"] == agreement_summary(records) == {
        "pairs": 3, "samples": 3, "unanimous": 1, "majority": 1, "disagreements": 1,
        "agreement": round((1 + 0.5 + 2 / 3) / 3, 4)}


def cycling_teacher(vocabulary, cycles):
    """The rule's answer, except for documents opening with a word in ``cycles``: the labels in turn."""
    asked = {}

    def reply(messages):
        content = messages[-1]["content"]
        word = content.split("Document:\n")[1].split()[0]
        if word not in cycles:
            return teacher_answer(vocabulary, messages)
        turn = asked[content] = asked.get(content, -1) + 1
        return f"Explanation: guess {turn}\nRelevance: {cycles[word][turn % len(cycles[word])]}"

    return reply


def http_config(server, output, **options):
    return AnnotateConfig(output=str(output), teacher="openai", teacher_model="rule-teacher",
                          base_url=server.base_url, api_key="test-key", concurrency=4, **options)


def test_annotation_by_three_samples_records_the_consensus_and_its_agreement(vocabulary, tmp_path):
    pairs = make_pairs(vocabulary, 30, seed=8)
    split, mixed = vocabulary.words[0], vocabulary.words[1]
    reply = cycling_teacher(vocabulary, {split: [0, 2, 0], mixed: [0, 1, 2]})
    with OpenAICompatibleServer(reply) as server:
        summary = annotate(http_config(server, tmp_path / "a.jsonl", teacher_samples=3), pairs=pairs)
    assert len(server.requests) == 90 and {r["temperature"] for r in server.requests} == {1.0}
    records = {r["qid"]: r for r in read_jsonl(tmp_path / "a.jsonl")}
    first = {qid: text.split()[0] for qid, text in zip(pairs.qid, pairs.text)}
    n_split = sum(word == split for word in first.values())
    n_mixed = sum(word == mixed for word in first.values())
    assert n_split and n_mixed
    for qid, record in records.items():
        assert len(record["samples"]) == 3 and record["teacher"] == "rule-teacher"
        if first[qid] == split:
            assert record["label"] == 0 and record["agreement"] == pytest.approx(2 / 3)
        elif first[qid] == mixed:
            assert record["disagreement"] is True and record["label"] == 1 and record["explanation"] == "guess 1"
        else:
            assert record["label"] == record["gold_label"] and record["agreement"] == 1.0
    assert summary["usable"] == 30 - n_mixed
    assert summary["consensus"] == {"pairs": 30, "samples": 3, "unanimous": 30 - n_split - n_mixed,
                                    "majority": n_split, "disagreements": n_mixed,
                                    "agreement": round((30 - n_split - n_mixed + n_split * 2 / 3 + n_mixed / 3) / 30,
                                                       4)}


def test_an_interrupted_consensus_run_resumes_pair_by_pair(vocabulary, tmp_path):
    pairs = make_pairs(vocabulary, 20, seed=9)
    output = tmp_path / "a.jsonl"
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m), fail_after=31, fail_status=500) as server:
        with pytest.raises(openai.InternalServerError):
            annotate(http_config(server, output, teacher_samples=3, max_retries=0), pairs=pairs)
    written = read_jsonl(output)
    assert 0 < len(written) <= 10 and all(len(r["samples"]) == 3 for r in written)
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m)) as server:
        summary = annotate(http_config(server, output, teacher_samples=3), pairs=pairs)
    assert len(server.requests) == 3 * (20 - len(written))  # a pair without all its answers is asked again
    assert summary["records"] == 20 and summary["consensus"]["unanimous"] == 20
    with pytest.raises(InputError, match="holds pairs annotated with teacher_samples 3, not 1"):
        annotate(http_config(server, output), pairs=pairs)


@pytest.mark.parametrize("options, message", [
    ({"teacher_temperature": 0.7}, "with teacher_samples 1 the teacher answers at `temperature`"),
    ({"teacher_samples": 3, "teacher_temperature": 0.0}, "would ask for the same answer again"),
    ({"teacher_samples": 0}, "teacher_samples"),
    ({"teacher_samples": 3, "task": "queries"}, "the queries task takes one answer"),
])
def test_consensus_options_are_checked(options, message):
    with pytest.raises(InputError, match=message):
        AnnotateConfig(teacher="openai", **options)


def test_a_local_teacher_samples_each_answer_under_its_own_seed(tiny_model, tmp_path):
    pairs = make_pairs_frame(4)
    config = AnnotateConfig(teacher="local", teacher_model=str(tiny_model), max_new_tokens=8,
                            output=str(tmp_path / "a.jsonl"), teacher_samples=2)
    summary = annotate(config, pairs=pairs)
    records = read_jsonl(tmp_path / "a.jsonl")
    assert summary["records"] == 4 and summary["consensus"]["samples"] == 2
    assert all(len(r["samples"]) == 2 and len(r["samples"][0]["probabilities"]) == 3 for r in records)
    # sampled at temperature 1 under seeds 0 and 1: the two explanations of a pair differ
    assert any(r["samples"][0]["explanation"] != r["samples"][1]["explanation"] for r in records)


def make_pairs_frame(n):
    import pandas as pd

    return pd.DataFrame({"qid": [f"q{i}" for i in range(n)], "docno": [f"d{i}" for i in range(n)],
                         "query": ["heat transfer in slabs"] * n,
                         "text": [f"document {i} about the conduction of heat" for i in range(n)]})
