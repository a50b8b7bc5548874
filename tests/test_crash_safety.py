"""Runs killed with SIGKILL (real subprocesses) resume and lose nothing: annotation and training."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank import InputError, prompts
from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate
from pyterrier_reasonrank.training.checkpoints import last_complete_checkpoint
from pyterrier_reasonrank.training.records import read_jsonl, record_key
from pyterrier_reasonrank.training.sources import candidate_pairs
from synthetic import printed_result, training_recipe, write_annotations

CLI = [sys.executable, "-m", "pyterrier_reasonrank.training.cli"]


def undecided(messages) -> bool:
    """The pairs the teacher gets wrong (no label): a fixed fifth of them, by their prompt."""
    return len(messages[-1]["content"]) % 5 == 0


def answer(messages, delay: float = 0.0) -> str:
    time.sleep(delay)
    if undecided(messages):
        return "I cannot tell."
    return f"Explanation: it is about the question.\nRelevance: {len(messages[-1]['content']) % 3}"


def wait_for(condition, process, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended first:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_annotation_killed_mid_run_resumes_without_loss_or_duplicates(tmp_path):
    output = tmp_path / "annotations.jsonl"
    options = dict(dataset="irds:cranfield", num_queries=12, teacher="openai", teacher_model="rule-teacher",
                   api_key="test-key", concurrency=2, output=str(output))
    expected = candidate_pairs(AnnotateConfig(**options))
    wrong = sum(undecided(prompts.messages(r.query, r.text, "explain")) for r in expected.itertuples())
    assert 0 < wrong < len(expected)

    with OpenAICompatibleServer(lambda m: answer(m, delay=0.05)) as slow:
        args = [f"--{key}={value}" for key, value in {**options, "base_url": slow.base_url}.items()]
        process = subprocess.Popen([*CLI, "annotate", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env={**os.environ, "OPENAI_API_KEY": "test-key"})
        try:
            wait_for(lambda: lines(output) >= 10, process)
            # a second run on the same output refuses while the first holds it
            with pytest.raises(InputError, match="another process is writing annotations"):
                annotate(AnnotateConfig(**options, base_url=slow.base_url))
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    written = read_jsonl(output)
    assert 10 <= len(written) < len(expected)
    with open(output, "ab") as file:
        file.write(b'{"qid": "1", "docno": "torn", "expl')  # the line a kill cut short

    with OpenAICompatibleServer(answer) as server:
        summary = annotate(AnnotateConfig(**options, base_url=server.base_url))
        again = annotate(AnnotateConfig(**options, base_url=server.base_url))
    records = read_jsonl(output)
    keys = [record_key(r) for r in records]
    assert len(keys) == len(set(keys))  # none twice
    assert set(keys) == {(str(r.qid), str(r.docno)) for r in expected.itertuples()}  # none lost
    assert len(server.requests) == len(expected) - len(written)  # only the unfinished were asked
    assert summary["new"] == len(expected) - len(written) and again["new"] == 0
    for result in (summary, again):  # counts over the whole file, across the resumes
        assert result["records"] == len(expected)
        assert sum(result["errors"].values()) == wrong and result["usable"] == len(expected) - wrong
    assert json.loads(Path(f"{output}.summary.json").read_text()) == again
    print(f"annotation: killed after {len(written)} of {len(expected)} pairs; resumed {summary['new']}; "
          f"{wrong} invalid answers counted")


# The steps an uninterrupted run takes: 2 epochs of 24 pairs in batches of 4; GRPO's max_steps.
@pytest.mark.parametrize("stage, steps", [("distill", 2 * 24 // 4), ("refine", 4)])
def test_training_killed_after_a_checkpoint_resumes_to_the_same_step_count(vocabulary, tiny_model, tmp_path, stage,
                                                                          steps):
    config = training_recipe(tmp_path, tiny_model, write_annotations(vocabulary, tmp_path / "a.jsonl", 24))
    output = tmp_path / ("distill" if stage == "distill" else "grpo")

    process = subprocess.Popen([*CLI, stage, "--config", str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: last_complete_checkpoint(str(output)) is not None, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert not (output / "run_card.json").exists()  # it did not get to the end
    reached = int(last_complete_checkpoint(str(output)).rsplit("-", 1)[1])
    # A checkpoint the kill cut short while saving is passed over.
    (output / "checkpoint-999").mkdir()
    (output / "checkpoint-999" / "trainer_state.json").write_text('{"global_st')

    resumed = subprocess.run([*CLI, stage, "--config", str(config)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {output / f'checkpoint-{reached}'}" in resumed.stdout
    assert printed_result(resumed.stdout)["steps"] == steps
    card = json.loads((output / "run_card.json").read_text())
    assert card["metrics"]["steps"] == steps
    print(f"{stage}: killed after checkpoint {reached}, resumed to step {steps} of {steps}")
