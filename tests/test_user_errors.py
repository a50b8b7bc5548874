"""Every mistake a user can make on the command line is one line on stderr, a non-zero exit and no
traceback — found before any work starts where it can be; ``--debug`` shows the traceback; a real
bug keeps its traceback."""
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank.cli import main as reasonrank
from pyterrier_reasonrank.training.cli import main as reasonrank_train
from pyterrier_reasonrank.training.records import read_jsonl, record_key
from synthetic import make_pairs, teacher_answer, write_annotations

UNWRITABLE = "/sys/reasonrank-test"  # sysfs: no one, not even root, may create files there


def one_line_error(capsys, code: int, program: str) -> str:
    """The error a command printed: exit code 1, no traceback, and one line naming the command, last
    on stderr (after progress bars and log lines, if the work had started)."""
    captured = capsys.readouterr()
    assert code == 1, captured.err
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and lines[-1].startswith(f"{program}: "), captured.err
    assert sum(line.startswith(program) for line in lines) == 1, captured.err
    return lines[-1]


@pytest.fixture()
def recipe(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "recipe.yaml"
        path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize("text, message", [
    ("distill:\n  learning_rate: [2e-4\n", r"recipe.yaml is not valid YAML: line 3, column 1: expected ',' or ']'"),
    ("distill:\n\tlearning_rate: 2.0e-4\n", r"is not valid YAML: line 2, column 1: found character '\\t'"),
    ("- distill\n- refine\n", r"is not a recipe: it holds a list \['distill', 'refine'\], not sections"),
    ("distill: [1, 2]\n", r"the 'distill:' section of .* holds a list \[1, 2\], not keys with values"),
    ("distill: 42\n", r"the 'distill:' section of .* holds the value 42, not keys with values"),
    ("distill:\n  learning_rate: fast\n", r"learning_rate: 'fast' is not a number"),
    ("distill:\n  num_train_epochs: [1, 2]\n", r"num_train_epochs: \[1, 2\] is not a number"),
    ("distill:\n  use_peft: maybe\n", r"use_peft: 'maybe' is not true or false"),
    ("distill:\n  lr_scheduler_type: fastest\n", r"lr_scheduler_type: 'fastest' is not one of linear, cosine"),
    ("distill:\n  per_device_train_batch_size: true\n", r"per_device_train_batch_size: True is not an integer"),
])
def test_a_malformed_recipe_is_one_line(recipe, capsys, text, message):
    import re

    line = one_line_error(capsys, reasonrank_train(["distill", "--config", recipe(text)]), "reasonrank-train distill")
    assert re.search(message, line), line


def test_a_recipe_value_in_yaml_1_1_notation_is_read_as_a_number(recipe, tiny_model, tmp_path):
    from pyterrier_reasonrank.training.recipes import read_recipe

    # PyYAML reads "1e-4" (no dot) as text; the recipe converts it as the command line would.
    config, _ = read_recipe("distill", recipe(f"distill:\n  model_name_or_path: {tiny_model}\n  learning_rate: 1e-4\n"
                                              f"  output_dir: {tmp_path}\n"))
    assert config.learning_rate == 1e-4 and isinstance(config.learning_rate, float)


@pytest.mark.parametrize("option, message", [
    (["--learning_rate", "fast"], "argument --learning_rate/--learning-rate: invalid float value: 'fast'"),
    (["--use_peft", "maybe"], "argument --use_peft/--use-peft: Truthy value expected: got maybe"),
    (["--num_train_epochs"], "argument --num_train_epochs/--num-train-epochs: expected one argument"),
])
def test_a_wrong_command_line_value_is_one_line_not_a_usage_dump(capsys, option, message):
    line = one_line_error(capsys, reasonrank_train(["distill", "--model_name_or_path", "m", *option]),
                          "reasonrank-train distill")
    assert line == f"reasonrank-train distill: command line: {message}" or line.startswith(
        f"reasonrank-train distill: command line: {message}")


@pytest.mark.parametrize("bad_line, message", [
    ("[1, 2, 3]", "line 2: a record is a JSON object, not list ([1, 2, 3])"),
    ("42", "line 2: a record is a JSON object, not int (42)"),
    ('{"qid": "x", "text": "d", "label": 1, "explanation": "e"}', "line 2: no 'query' text in the record"),
    ('{"qid": "x", "query": "q", "label": 1', "line 2: not a JSON record"),
])
@pytest.mark.parametrize("stage", ["distill", "refine"])
def test_a_bad_record_is_named_by_file_and_line(vocabulary, tiny_model, tmp_path, capsys, stage, bad_line, message):
    data = write_annotations(vocabulary, tmp_path / "train.jsonl", 3)
    lines = data.read_text().splitlines()
    data.write_text("\n".join([lines[0], bad_line, *lines[1:]]) + "\n")
    code = reasonrank_train([stage, "--model_name_or_path", str(tiny_model), "--train_file", str(data),
                             "--output_dir", str(tmp_path / "out")])
    line = one_line_error(capsys, code, f"reasonrank-train {stage}")
    assert f"{data}, {message}" in line
    assert not (tmp_path / "out").exists()  # found before any work


@pytest.mark.parametrize("stage", ["distill", "refine"])
def test_every_input_is_checked_before_any_work(vocabulary, tiny_model, tmp_path, capsys, stage):
    data = write_annotations(vocabulary, tmp_path / "train.jsonl", 8)
    common = [stage, "--model_name_or_path", str(tiny_model), "--train_file", str(data)]
    start = time.perf_counter()
    code = reasonrank_train([*common, "--eval_file", str(tmp_path / "missing.jsonl"),
                             "--output_dir", str(tmp_path / "out")])
    assert one_line_error(capsys, code, f"reasonrank-train {stage}") == \
        f"reasonrank-train {stage}: No such file or directory: {tmp_path / 'missing.jsonl'}"
    assert not (tmp_path / "out").exists() and time.perf_counter() - start < 5

    code = reasonrank_train([*common, "--output_dir", f"{UNWRITABLE}/out"])
    assert one_line_error(capsys, code, f"reasonrank-train {stage}") == \
        f"reasonrank-train {stage}: Operation not permitted: {UNWRITABLE}"


def test_an_unknown_dataset_is_named_with_the_closest_ids(tmp_path, capsys):
    code = reasonrank_train(["annotate", "--dataset", "irds:vaswan", "--output", str(tmp_path / "a.jsonl")])
    assert one_line_error(capsys, code, "reasonrank-train annotate") == (
        "reasonrank-train annotate: there is no dataset 'irds:vaswan' (did you mean irds:vaswani?); "
        "ir_datasets ids are written irds:<id>, e.g. irds:vaswani")
    for command in (["demo", "--dataset", "irds:cranfeld"], ["evaluate", "--dataset", "irds:cranfeld"]):
        code = reasonrank([*command, "--model", "/no/such/model"])  # the dataset is checked first
        assert "there is no dataset 'irds:cranfeld' (did you mean irds:cranfield" in \
            one_line_error(capsys, code, f"reasonrank {command[0]}")


def test_evaluate_checks_its_output_folder_before_any_work(tiny_model, capsys):
    code = reasonrank(["evaluate", "--dataset", "irds:vaswani", "--model", str(tiny_model),
                       "--output", f"{UNWRITABLE}/results"])
    assert one_line_error(capsys, code, "reasonrank evaluate") == \
        f"reasonrank evaluate: Operation not permitted: {UNWRITABLE}"


def test_an_unwritable_annotation_file_is_one_line(capsys):
    code = reasonrank_train(["annotate", "--dataset", "irds:cranfield", "--output", f"{UNWRITABLE}/a.jsonl"])
    assert one_line_error(capsys, code, "reasonrank-train annotate") == \
        f"reasonrank-train annotate: Operation not permitted: {UNWRITABLE}"


def test_a_disk_that_fills_mid_run_loses_nothing_on_resume(tmp_path):
    """The file-size limit stands in for a full disk: writes past it fail (EFBIG) mid-line."""
    from pyterrier_reasonrank.training.annotation import AnnotateConfig
    from pyterrier_reasonrank.training.sources import candidate_pairs

    output = tmp_path / "a.jsonl"
    options = dict(dataset="irds:cranfield", num_queries=8)
    expected = candidate_pairs(AnnotateConfig(**options))  # also builds the index the runs read
    args = [sys.executable, "-m", "pyterrier_reasonrank.training.cli", "annotate", "--teacher_model", "t",
            "--api_key", "test-key", "--concurrency", "1", "--output", str(output),
            *(f"--{key}={value}" for key, value in options.items())]

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    answer = lambda messages: "Explanation: it is about the question.\nRelevance: 1"  # noqa: E731
    with OpenAICompatibleServer(answer) as server:
        full = subprocess.run([*args, "--base_url", server.base_url], capture_output=True, text=True, timeout=300,
                              preexec_fn=small_disk)
    assert full.returncode == 1 and "Traceback" not in full.stderr  # (progress bars before the error line)
    assert full.stderr.strip().splitlines()[-1] == f"reasonrank-train annotate: File too large: {output}"
    written = output.read_bytes()
    complete = written.count(b"\n")
    assert 0 < complete < len(expected) and not written.endswith(b"\n")  # whole lines, then a torn one
    with OpenAICompatibleServer(answer) as server:
        resumed = subprocess.run([*args, "--base_url", server.base_url], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(server.requests) == len(expected) - complete  # the torn line's pair was asked again
    records = read_jsonl(output)
    assert sorted(map(record_key, records)) == sorted((str(r.qid), str(r.docno)) for r in expected.itertuples())


MALFORMED = {
    "no choices": b'{"id": "x", "object": "chat.completion", "created": 0, "model": "t"}',
    "empty choices": b'{"id": "x", "object": "chat.completion", "created": 0, "model": "t", "choices": []}',
    "null message": b'{"id": "x", "object": "chat.completion", "created": 0, "model": "t", "choices": '
                    b'[{"index": 0, "finish_reason": "stop", "message": null}]}',
    "truncated JSON": b'{"id": "x", "object": "chat.completion", "choi',
}


class GarbageServer(OpenAICompatibleServer):
    """Answers the first ``bad`` requests (all, when ``None``) with ``body`` and HTTP 200."""

    def __init__(self, body: bytes, bad, answer):
        self.body, self.bad = body, bad
        super().__init__(answer)

    def respond(self, path, headers, body):
        status, payload, extra = super().respond(path, headers, body)
        return (status, self.body, extra) if self.bad is None or len(self.requests) <= self.bad \
            else (status, payload, extra)


@pytest.mark.parametrize("fault", MALFORMED)
def test_a_teacher_reply_of_the_wrong_shape_is_retried_then_named(vocabulary, tmp_path, monkeypatch, fault):
    from pyterrier_reasonrank import EndpointError
    from pyterrier_reasonrank.backends import openai as endpoint
    from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate

    monkeypatch.setattr(endpoint, "RETRY_DELAY", 0.01)
    pairs = make_pairs(vocabulary, 6, seed=3)
    answer = lambda messages: teacher_answer(vocabulary, messages)  # noqa: E731

    def config(server, **options):
        return AnnotateConfig(output=str(tmp_path / "a.jsonl"), teacher_model="t", base_url=server.base_url,
                              api_key="test-key", concurrency=1, max_retries=2, **options)

    with GarbageServer(MALFORMED[fault], 2, answer) as server:  # two bad replies, then good ones: retried
        assert annotate(config(server), pairs=pairs.head(1))["usable"] == 1
    assert len(server.requests) == 3
    with GarbageServer(MALFORMED[fault], None, answer) as server:  # always bad: the run stops, naming it
        with pytest.raises(EndpointError) as raised:
            annotate(config(server), pairs=pairs)
    asked = [request["messages"][-1]["content"] for request in server.requests]
    assert asked.count(asked[0]) == 3 and len(asked) <= 6  # each pair in flight (two) tried at most three times
    assert str(raised.value).startswith(f"the endpoint {server.base_url}/ answered 3 time(s) with a reply that is "
                                        "not OpenAI-compatible: ")
    with OpenAICompatibleServer(answer) as server:  # and a rerun against a good server resumes
        summary = annotate(config(server), pairs=pairs)
    assert summary["records"] == 6 and summary["new"] == 5 and len(server.requests) == 5


def test_a_teacher_that_keeps_answering_garbage_is_one_line(tmp_path, capsys):
    with GarbageServer(MALFORMED["no choices"], None, lambda m: "") as server:
        code = reasonrank_train(["annotate", "--dataset", "irds:cranfield", "--num_queries", "1", "--teacher_model",
                                 "t", "--api_key", "test-key", "--base_url", server.base_url, "--max_retries", "1",
                                 "--output", str(tmp_path / "a.jsonl")])
    assert one_line_error(capsys, code, "reasonrank-train annotate") == (
        f"reasonrank-train annotate: the endpoint {server.base_url}/ answered 2 time(s) with a reply that is not "
        "OpenAI-compatible: no choices")


def test_debug_shows_the_traceback(capsys, monkeypatch):
    with pytest.raises(Exception, match="invalid float value"):
        reasonrank_train(["distill", "--model_name_or_path", "m", "--learning_rate", "fast", "--debug"])
    monkeypatch.setenv("REASONRANK_DEBUG", "1")
    with pytest.raises(Exception, match="there is no dataset"):
        reasonrank(["demo", "--dataset", "irds:nope"])


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch, tmp_path):
    from pyterrier_reasonrank import training

    def broken(*configs):
        return {}["a key our own code forgot"]

    monkeypatch.setattr(training, "distill", broken, raising=False)
    with pytest.raises(KeyError):
        reasonrank_train(["distill", "--model_name_or_path", "m", "--output_dir", str(tmp_path)])


def test_the_installed_commands_print_one_line(tmp_path):
    """Through the console scripts, as a user runs them."""
    scripts = Path(sys.executable).parent
    env = {**os.environ, "REASONRANK_DEBUG": ""}
    for command in ([scripts / "reasonrank-train", "distill", "--learning_rate", "fast"],
                    [scripts / "reasonrank", "demo", "--dataset", "irds:nope"]):
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
