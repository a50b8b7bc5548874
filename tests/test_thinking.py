"""Thinking chat templates (Qwen3-family, SmolLM3): every prompt is rendered with thinking switched
off, the response starts after the template's empty think block, a teacher's server is asked the same
(``chat_template_kwargs``), and a model that writes a think block anyway is cut there and forced."""
import datetime
import warnings

import pytest
from transformers import AutoTokenizer

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank import ReasonRanker
from pyterrier_reasonrank.backends.base import stop_ids
from pyterrier_reasonrank.prompts import (
    TEMPLATE_VARIABLES,
    ConversationEncoder,
    PromptEncoder,
    QueryPromptEncoder,
    messages,
    parse_queries,
    parse_response,
)
from pyterrier_reasonrank.settings import FILENAME, StudentSettings, read_settings
from pyterrier_reasonrank.testing import build_tiny_model
from pyterrier_reasonrank.training.rewards import label_reward
from pyterrier_reasonrank.training.teachers import OpenAITeacher, judgement_fields
from test_ranker import EXPLAINS, LABEL_LOGITS, expected_score, pairs
from vllm_server import CompletionsServer

THINKING_OFF = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
"""How the Qwen3-style template ends the generation prompt with thinking off."""
DATE_ONLY = {"date_string": "26 Jul 2024"}
"""The template variables of a student trained before thinking was pinned."""
# Writes a think block straight away, then the marker: a silent scorer would read a label after it.
THINKS_FIRST = {":": "<think>", "<think>": "Ċ", "Ċ": "Relevance", "Relevance": ":"}
# Writes an explanation, then starts to think.
THINKS_MIDWAY = {":": "Ġthe", "Ġthe": "<think>", "<think>": "Ċ", "Ċ": "Relevance", "Relevance": ":"}


@pytest.fixture(scope="module")
def qwen3_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("qwen3"), chat_template="qwen3")


@pytest.fixture(scope="module")
def llama3_tokenizer(tmp_path_factory):
    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("llama3"), chat_template="llama3"))


def test_the_qwen3_style_template_thinks_unless_told_not_to(qwen3_model):
    tokenizer = AutoTokenizer.from_pretrained(qwen3_model)
    conversation = messages("q", "d")
    thinking = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    off = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert thinking.endswith("<|im_end|>\n<|im_start|>assistant\n") and off == thinking + "<think>\n\n</think>\n\n"
    # As in Qwen3: the delimiters are single added tokens, not special ones
    think, end = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    assert not tokenizer.added_tokens_decoder[think].special and not tokenizer.added_tokens_decoder[end].special
    assert tokenizer("<think>x</think>", add_special_tokens=False)["input_ids"][::2] == [think, end]
    # so only the think rule cuts an explanation at them
    assert {think, end} <= stop_ids(tokenizer, frozenset())


def test_every_prompt_switches_thinking_off_and_the_response_starts_after_the_think_block(qwen3_model):
    tokenizer = AutoTokenizer.from_pretrained(qwen3_model)
    assert TEMPLATE_VARIABLES["enable_thinking"] is False
    assert tokenizer.decode(PromptEncoder(tokenizer).encode("q", "d")).endswith(THINKING_OFF + "Explanation:")
    assert tokenizer.decode(PromptEncoder(tokenizer, "direct").encode("q", "d")).endswith(THINKING_OFF + "Relevance:")
    assert tokenizer.decode(QueryPromptEncoder(tokenizer).encode("q")).endswith(THINKING_OFF + "Queries:")
    # a reward model reads the response after the empty think block, as the template writes a last turn
    read = tokenizer.decode(ConversationEncoder(tokenizer, max_length=512).encode("q", "d", "It says why."))
    assert read.endswith(THINKING_OFF + "Explanation: It says why.<|im_end|>\n")


def test_pinning_thinking_changes_no_other_templates_prompts(tiny_model, llama3_tokenizer):
    for tokenizer in (AutoTokenizer.from_pretrained(tiny_model), llama3_tokenizer):
        for mode in ("explain", "direct"):
            assert PromptEncoder(tokenizer, mode).encode("q", "d") == \
                PromptEncoder(tokenizer, mode, template_variables=DATE_ONLY).encode("q", "d")
        assert QueryPromptEncoder(tokenizer).encode("q") == \
            QueryPromptEncoder(tokenizer, template_variables=DATE_ONLY).encode("q")


def test_template_variables_need_not_pin_a_date(tiny_model, llama3_tokenizer):
    chatml = AutoTokenizer.from_pretrained(tiny_model)
    assert PromptEncoder(chatml, template_variables={"enable_thinking": False}).encode("q", "d") == \
        PromptEncoder(chatml).encode("q", "d")
    # variables that pin no date leave a dated template today's date, as transformers gives it
    undated = llama3_tokenizer.decode(PromptEncoder(llama3_tokenizer, template_variables={}).encode("q", "d"))
    assert f"Today Date: {datetime.date.today():%d %b %Y}\n" in undated


def test_a_students_settings_record_thinking_off_and_old_settings_serve_as_before(qwen3_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(qwen3_model)
    StudentSettings().save(tmp_path)
    recorded = read_settings(str(tmp_path))
    assert recorded.template_variables == {"date_string": "26 Jul 2024", "enable_thinking": False}
    assert (tmp_path / FILENAME).read_text().count('"enable_thinking": false') == 1
    # a student trained before thinking was pinned: its file has the date only, and it is served the
    # prompt it was trained with (thinking on: the response starts right after the turn's header)
    old = tmp_path / "old"
    old.mkdir()
    for path in qwen3_model.iterdir():
        (old / path.name).symlink_to(path)
    StudentSettings(template_variables=dict(DATE_ONLY)).save(old)
    served = ReasonRanker(str(old)).load().encoder
    assert served.template_variables == DATE_ONLY
    assert tokenizer.decode(served.encode("q", "d")).endswith("<|im_end|>\n<|im_start|>assistant\nExplanation:")
    assert tokenizer.decode(ReasonRanker(str(qwen3_model)).load().encoder.encode("q", "d")).endswith(
        THINKING_OFF + "Explanation:")


@pytest.mark.parametrize("script, explanation, forced", [
    (EXPLAINS, "the", False),       # no think block: the marker it writes ends the explanation
    (THINKS_FIRST, "", True),       # thinks at once: cut there, nothing explained, forced
    (THINKS_MIDWAY, "the", True),   # explains, then thinks: cut at the think block, forced
])
@pytest.mark.parametrize("backend", ["transformers", "openai"])
def test_a_think_block_the_model_writes_anyway_ends_the_explanation_forced(script_model, qwen3_model, script,
                                                                            explanation, forced, backend):
    model = script_model(script, LABEL_LOGITS, base=qwen3_model)
    if backend == "transformers":
        out = ReasonRanker(str(model), max_new_tokens=16)(pairs(1, 3))
    else:
        with CompletionsServer(str(model)) as server:
            out = ReasonRanker("served", backend="openai", base_url=server.base_url, tokenizer=str(model),
                               max_new_tokens=16)(pairs(1, 3))
    assert (out.explanation == explanation).all() and (out.forced == forced).all()
    assert not out.explanation.str.contains("think").any()
    assert out.score.tolist() == pytest.approx([expected_score(LABEL_LOGITS)] * 3, abs=1e-5)


class RefusingServer(OpenAICompatibleServer):
    """An endpoint that refuses request fields it does not know, as OpenAI's API does."""

    def respond(self, path, headers, body):
        if "chat_template_kwargs" in body:
            with self._lock:
                self.requests.append(body)
            return 400, {"error": {"message": "Unrecognized request argument supplied: chat_template_kwargs",
                                   "type": "invalid_request_error", "param": None, "code": None}}, {}
        return super().respond(path, headers, body)


def test_the_teacher_asks_its_server_to_switch_thinking_off():
    answer = "Explanation: It says why.\nRelevance: 2"
    with OpenAICompatibleServer(lambda m: answer) as server:
        teacher = OpenAITeacher("teacher", base_url=server.base_url, api_key="test-key", concurrency=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            answers = dict(teacher.judge(["q1", "q2", "q3"], ["d1", "d2", "d3"], [None] * 3))
    assert [answers[i]["label"] for i in range(3)] == [2, 2, 2]
    assert [r["chat_template_kwargs"] for r in server.requests] == [
        {"date_string": "26 Jul 2024", "enable_thinking": False}] * 3


def test_an_endpoint_that_refuses_template_variables_is_asked_without_them_with_one_warning():
    with RefusingServer(lambda m: "Explanation: It says why.\nRelevance: 1") as server:
        teacher = OpenAITeacher("teacher", base_url=server.base_url, api_key="test-key", concurrency=1)
        with pytest.warns(UserWarning, match=r"refuses chat_template_kwargs: .*'enable_thinking': False") as caught:
            answers = dict(teacher.judge(["q1", "q2", "q3"], ["d1", "d2", "d3"], [None] * 3))
    assert [answers[i]["label"] for i in range(3)] == [1, 1, 1] and len(caught) == 1
    # refused once, then every request goes without the field
    assert ["chat_template_kwargs" in r for r in server.requests] == [True, False, False, False]


def test_a_response_text_with_a_think_block_is_an_error_never_an_answer():
    """A teacher behind an endpoint that renders its own template, or a sampled completion, that thought."""
    thought = "<think>\nIt is about tides, so 2.\n</think>\n\nExplanation: It says why.\nRelevance: 2"
    error = "a think block (<think>) in the response, with thinking switched off"
    assert parse_response(thought).label is None and parse_response(thought).error == error
    assert judgement_fields(thought)["error"] == error and judgement_fields(thought)["label"] is None
    assert label_reward([thought, "Explanation: It says why.\nRelevance: 2"], [2, 2]) == [0.0, 1.0]
    assert parse_queries("Queries:\n<think>\nhmm\n</think>\n1. tides").queries == []
    assert parse_queries("Queries:\n<think>\nhmm\n</think>\n1. tides").error == error
