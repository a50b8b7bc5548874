"""Teacher annotation: through an OpenAI-compatible HTTP server on loopback (the real client), and
with a local transformers teacher; retries, invalid answers, interruption and resumption."""
import json

import openai
import pytest

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate
from pyterrier_reasonrank.training.records import read_jsonl, usable_judgements
from synthetic import make_pairs, teacher_answer

FIELDS = ["qid", "docno", "query", "text", "label", "explanation", "teacher", "gold_label", "source", "raw"]


def http_config(server, output, **options):
    return AnnotateConfig(output=str(output), teacher="openai", teacher_model="rule-teacher",
                          base_url=server.base_url, api_key="test-key", concurrency=4, **options)


def test_annotation_through_an_openai_compatible_server(vocabulary, tmp_path):
    pairs = make_pairs(vocabulary, 30, seed=3)
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m), fail_first=3) as server:
        summary = annotate(http_config(server, tmp_path / "a.jsonl", gold_hint=True), pairs=pairs)
    records = read_jsonl(tmp_path / "a.jsonl")
    assert summary == {"records": 30, "usable": 30, "errors": {}, "labels": summary["labels"], "forced": 0, "new": 30}
    assert len(server.requests) == 33  # three rate-limited requests were retried
    assert sorted(r["qid"] for r in records) == sorted(pairs.qid)
    assert all(list(r) == FIELDS for r in records)
    gold = dict(zip(pairs.qid, pairs.gold_label))
    assert all(r["label"] == gold[r["qid"]] == r["gold_label"] and r["teacher"] == "rule-teacher" for r in records)
    # the hint reached the teacher, after the document
    assert all("\n\nHint: human assessors judged this document" in q["messages"][-1]["content"]
               for q in server.requests[3:])
    assert json.loads((tmp_path / "a.jsonl.summary.json").read_text()) == summary


def test_invalid_answers_are_recorded_with_an_error_never_as_label_zero(vocabulary, tmp_path):
    def answer(messages):
        good = teacher_answer(vocabulary, messages)
        word = messages[-1]["content"].split("Document:\n")[1].split()[0]
        return {vocabulary.words[0]: "I cannot tell.", vocabulary.words[1]: "Explanation: x\nRelevance: 7"}\
            .get(word, good)

    pairs = make_pairs(vocabulary, 40, seed=4)
    with OpenAICompatibleServer(answer) as server:
        summary = annotate(http_config(server, tmp_path / "a.jsonl"), pairs=pairs)
    records = read_jsonl(tmp_path / "a.jsonl")
    first = sum(t.split()[0] == vocabulary.words[0] for t in pairs.text)
    second = sum(t.split()[0] == vocabulary.words[1] for t in pairs.text)
    assert first and second
    assert summary["errors"] == {"no 'Relevance:' line in the response": first,
                                 "label '...' is not one of [0, 1, 2]": second}
    assert summary["usable"] == 40 - first - second
    bad = [r for r in records if r.get("error")]
    assert all(r["label"] is None for r in bad) and len(usable_judgements(records)) == summary["usable"]


def test_interrupted_annotation_resumes_without_loss_or_duplicates(vocabulary, tmp_path):
    pairs = make_pairs(vocabulary, 40, seed=5)
    output = tmp_path / "a.jsonl"
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m), fail_after=12, fail_status=500) as server:
        with pytest.raises(openai.InternalServerError):
            annotate(http_config(server, output, max_retries=0), pairs=pairs)
    written = read_jsonl(output)
    assert 0 < len(written) <= 12
    with open(output, "a") as file:
        file.write('{"qid": "torn')  # a line cut off by a crash
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m)) as server:
        summary = annotate(http_config(server, output), pairs=pairs)
    records = read_jsonl(output)
    assert len(server.requests) == 40 - len(written)  # only the unfinished pairs were asked
    assert summary["records"] == 40 and summary["new"] == 40 - len(written)
    assert sorted(r["qid"] for r in records) == sorted(pairs.qid)


def test_a_wrong_api_key_stops_the_run_and_writes_nothing(vocabulary, tmp_path):
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m), api_key="right") as server:
        with pytest.raises(openai.AuthenticationError):
            annotate(http_config(server, tmp_path / "a.jsonl"), pairs=make_pairs(vocabulary, 5, seed=6))
    assert read_jsonl(tmp_path / "a.jsonl") == []


def test_query_generation_through_the_server(tmp_path):
    with OpenAICompatibleServer(lambda m: "Queries:\n1. heat transfer slabs\n2. composite conduction\n2. x") as server:
        summary = annotate(http_config(server, tmp_path / "q.jsonl", task="queries", dataset="irds:cranfield",
                                       num_queries=3))
    records = read_jsonl(tmp_path / "q.jsonl")
    assert summary["records"] == 3 and summary["usable"] == 3
    assert [r["qid"] for r in sorted(records, key=lambda r: int(r["qid"]))] == ["1", "2", "3"]
    assert all(r["queries"] == ["heat transfer slabs", "composite conduction", "x"] for r in records)
    assert "Question:\n" in server.requests[0]["messages"][-1]["content"]


def test_local_teacher_on_cranfield_resumes(tiny_model, tmp_path):
    config = AnnotateConfig(dataset="irds:cranfield", num_queries=3, teacher="local", teacher_model=str(tiny_model),
                            max_new_tokens=8, output=str(tmp_path / "a.jsonl"), gold_hint=True)
    first = annotate(config)
    records = read_jsonl(tmp_path / "a.jsonl")
    assert first["records"] == first["usable"] == len(records) == 15  # 3 queries x (2 + 2 + 1)
    assert all(r["label"] in (0, 1, 2) and len(r["probabilities"]) == 3 and r["teacher"] == str(tiny_model)
               for r in records)
    assert all(r["label"] == max(range(3), key=r["probabilities"].__getitem__) for r in records)
    again = annotate(config)
    assert again["new"] == 0 and again["records"] == 15 and len(read_jsonl(tmp_path / "a.jsonl")) == 15
