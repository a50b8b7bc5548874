"""The logits processor that reads the label in the request that writes the explanation (vLLM's engine),
step by step as the engine asks it: it follows the rule of backends/base.py (settle) token for token."""
import random
import re

import pytest
import torch

from pyterrier_reasonrank.backends.base import settle
from pyterrier_reasonrank.backends.label_reader import LabelReader
from pyterrier_reasonrank.backends.label_steering import ARGUMENT, label_logits, label_position, request_arguments

MARKER, FORCED, LABELS, END, BUDGET = [7, 8], [9, 7, 8], [1, 2, 3], 0, 6


class Encoder:
    marker_ids, forced_marker_ids, label_ids = MARKER, FORCED, LABELS


class Params:
    extra_args = request_arguments(Encoder, BUDGET, END)


def run(choices):
    """Decode greedily as the engine does: the reader masks, the model 'prefers' the next scripted token."""
    reader = LabelReader(None, torch.device("cpu"), False).new_req_logits_processor(Params())
    written, steps = [], []
    for step in range(BUDGET + len(FORCED) + 2):
        logits = torch.zeros(12)
        logits[choices[step] if step < len(choices) else 11] = 5.0
        steered = reader(written, logits)
        allowed = torch.isfinite(steered).nonzero().flatten().tolist()
        steps.append(allowed)
        written.append(int(steered.argmax()))
        if written[-1] == END and len(allowed) == 1:
            break
    return written, steps


def test_a_written_marker_is_followed_by_the_label_then_the_end():
    written, steps = run([4, 5, 7, 8, 2, 6])
    assert written == [4, 5, 7, 8, 2, END]
    assert steps[4] == LABELS and steps[5] == [END] and all(len(s) == 12 for s in steps[:4])
    settled = settle(written, Encoder, frozenset(), BUDGET)
    assert settled.context == [4, 5, 7, 8] and not settled.forced and label_position(written, settled, LABELS) == 4


def test_a_spent_budget_is_followed_by_the_forced_ending_as_settle_writes_it():
    for choices, ending in [([4, 5, 6, 4, 5, 6], FORCED), ([4, 5, 6, 4, 5, 7], [8])]:  # the marker started: its rest
        written, steps = run(choices)
        settled = settle(written, Encoder, frozenset(), BUDGET)
        assert settled.forced and settled.context == choices + ending
        assert written == choices + ending + [LABELS[0], END]
        assert label_position(written, settled, LABELS) == len(choices + ending)


def test_it_agrees_with_settle_on_random_sequences():
    draw = random.Random(0)
    for _ in range(200):
        choices = [draw.choice([4, 5, 7, 8]) for _ in range(BUDGET)]
        written, _ = run(choices)
        settled = settle(written, Encoder, frozenset(), BUDGET)
        position = label_position(written, settled, LABELS)
        assert position == len(settled.context) and written[position + 1:] == [END]


def test_the_engines_tempered_log_probabilities_give_the_greedy_distribution():
    logits = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    for temperature in (0.0, 0.7, 1.0, 1.5):
        tempered = torch.log_softmax(logits / (temperature or 1.0), dim=-1).tolist()
        read = torch.softmax(label_logits(tempered, temperature), dim=-1)
        assert torch.allclose(read, torch.softmax(logits, dim=-1), atol=1e-12)


@pytest.mark.parametrize(("arguments", "named"), [
    ({"marker": [7]}, "must be JSON text"),
    ("{not json", "is not valid JSON"),
    ('["marker"]', "must be a JSON object, not list"),
    ('{"marker": [7], "forced": [9], "labels": [1], "end": 0, "step": 1}', "missing ['budget'], unexpected ['step']"),
    ('{"marker": [], "forced": [9], "labels": [1], "end": 0, "budget": 4}', "'marker' must be a non-empty list"),
    ('{"marker": [7], "forced": [9], "labels": [1, -2], "end": 0, "budget": 4}', "'labels' must be a non-empty list"),
    ('{"marker": [7], "forced": [9], "labels": [1], "end": "0", "budget": 4}', "'end' must be a token id"),
    ('{"marker": [7], "forced": [9], "labels": [1], "end": 0, "budget": true}', "'budget' must be a count"),
])
def test_malformed_arguments_are_refused_as_a_request_is_admitted(arguments, named):
    """A server takes ``vllm_xargs`` from any client: vLLM turns this ValueError into HTTP 400."""
    class Malformed:
        extra_args = {ARGUMENT: arguments}

    with pytest.raises(ValueError, match=re.escape(named)):
        LabelReader.validate_params(Malformed())
    LabelReader.validate_params(Params())  # well-formed: admitted
    LabelReader.validate_params(type("Unsteered", (), {"extra_args": None})())


def test_token_ids_beyond_the_vocabulary_leave_the_request_unsteered(caplog):
    """Arguments made for another model's tokenizer: a warning, and the model writes freely."""
    class Foreign:
        extra_args = request_arguments(type("Wide", (), {"marker_ids": [7], "forced_marker_ids": [9, 7],
                                                         "label_ids": [1, 2, 40]}), BUDGET, END)

    reader = LabelReader(None, torch.device("cpu"), False).new_req_logits_processor(Foreign())
    logits = torch.arange(12, dtype=torch.float32)
    with caplog.at_level("WARNING"):
        assert all(torch.equal(reader(written, logits), logits) for written in ([], [4] * BUDGET, [4] * BUDGET + [9, 7]))
    assert [record.getMessage() for record in caplog.records] == [
        "a request's reasonrank_label names token 40, beyond the model's 12 logits: it is not steered"]
