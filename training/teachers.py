"""Teachers: large models that write an explanation and a label (or search queries) for the student.

Both teachers take the same requests and yield ``(index, fields)`` as answers arrive, where
``fields`` holds what goes into the annotation record: ``label``, ``explanation`` and ``raw`` for a
judgement, ``queries`` and ``raw`` for query generation, and ``error`` when the teacher's answer is
not in the format (such a record is kept, counted, and never trained on).
"""
from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, Union

from pyterrier_reasonrank import prompts
from pyterrier_reasonrank.backends import Batching
from pyterrier_reasonrank.backends.openai import MalformedReplyError, bounded_map, openai_client, read_reply
from pyterrier_reasonrank.redaction import known_secrets, redacted
from pyterrier_reasonrank.scoring import most_probable_label
from pyterrier_reasonrank.student import Student

if TYPE_CHECKING:
    import torch
    from openai.types.chat import ChatCompletion


def judgement_fields(text: str) -> dict:
    """The record fields for a judgement the teacher wrote as text."""
    parsed = prompts.parse_response(text)
    fields = {"label": parsed.label, "explanation": parsed.explanation, "raw": text}
    if parsed.error:
        fields["error"] = parsed.error
    return fields


def query_fields(text: str) -> dict:
    """The record fields for search queries the teacher wrote as text."""
    parsed = prompts.parse_queries(text)
    fields = {"queries": parsed.queries, "raw": text}
    if parsed.error:
        fields["error"] = parsed.error
    return fields


class OpenAITeacher:
    """A teacher behind an OpenAI-compatible chat-completions endpoint: a vLLM server or a hosted API.

    Requests run concurrently; the ``openai`` client retries rate limits (429), server errors (5xx)
    and dropped connections with exponential backoff; a reply in the wrong shape (no choices, cut-off
    JSON) is retried the same way. An error that outlasts the retries (a wrong key, an unreachable
    server, a server that keeps answering garbage) stops the run, so that the unanswered pairs are
    asked again on resume instead of being recorded as failures.

    The server renders the chat template; each request asks it to render it with the pinned template
    variables (``chat_template_kwargs``: thinking off, the date of
    :data:`~pyterrier_reasonrank.prompts.TEMPLATE_VARIABLES`), as vLLM's server does. An endpoint
    that refuses the field (a hosted API that renders its own templates) is asked without it, with
    a warning.
    """

    def __init__(self, model: str, *, base_url: Optional[str] = None, api_key: Optional[str] = None,
                 concurrency: int = 16, max_retries: int = 6, timeout: float = 120.0, temperature: float = 0.0,
                 max_tokens: int = 512, max_doc_chars: int = 8000):
        """Set up the client for the endpoint; no request is sent until the first answers are asked for.

        Args:
            model: The model name the endpoint serves, e.g. ``"meta-llama/Llama-3.3-70B-Instruct"``.
            base_url: The endpoint, e.g. ``"http://localhost:8000/v1"``. Default: ``$OPENAI_BASE_URL``,
                else OpenAI's.
            api_key: Default: ``$OPENAI_API_KEY``; a local server that needs none gets a placeholder.
            concurrency: Requests in flight.
            max_retries: Retries per request.
            timeout: Seconds per request.
            temperature: Sampling temperature (the paper's teacher used 0).
            max_tokens: Longest answer.
            max_doc_chars: Documents are cut to this many characters before they are sent.
        """
        self.name = model
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_doc_chars = max_doc_chars
        self.max_retries = max_retries
        self._client = openai_client(base_url, api_key, max_retries=max_retries, timeout=timeout)
        self._template_kwargs: Optional[dict] = dict(prompts.TEMPLATE_VARIABLES)
        self._refused = threading.Lock()  # requests run in threads: the first to learn of a refusal says so

    def judge(self, queries: Sequence[str], documents: Sequence[str], hints: Sequence[Optional[str]], *,
              samples: int = 1) -> Iterator[tuple[int, dict]]:
        """Ask the endpoint for a judgement of each pair; yields ``(index, fields)`` as answers arrive.

        Args:
            queries: The query of each pair.
            documents: The document text of each pair (cut to ``max_doc_chars``).
            hints: The gold-label hint shown after each document, or ``None``.
            samples: Answers per pair (each a request of its own, sampled at the teacher's
                temperature); with more than one, each answer's fields say which ``sample`` it is.
        """
        conversations = [prompts.messages(q, d[:self.max_doc_chars], "explain", h)
                         for q, d, h in zip(queries, documents, hints) for _ in range(samples)]
        for index, fields in self._answers(conversations, judgement_fields):
            yield index // samples, {**fields, "sample": index % samples} if samples > 1 else fields

    def write_queries(self, questions: Sequence[str]) -> Iterator[tuple[int, dict]]:
        """Ask the endpoint for search queries for each question; yields ``(index, fields)`` as answers arrive."""
        return self._answers([prompts.query_messages(q) for q in questions], query_fields)

    def _answers(self, conversations: list[list[dict]],
                 to_fields: Callable[[str], dict]) -> Iterator[tuple[int, dict]]:
        with redacted(known_secrets(self._client.api_key)):
            for index, text in bounded_map(self._complete, conversations, self.concurrency):
                yield index, to_fields(text)

    def _complete(self, messages: list[dict]) -> str:
        return read_reply(lambda: self._create(messages), _answer_text, endpoint=str(self._client.base_url),
                          retries=self.max_retries)

    def _create(self, messages: list[dict]) -> ChatCompletion:
        """One chat completion, with the pinned template variables while the endpoint takes them."""
        from openai import BadRequestError

        request = dict(model=self.name, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
        template_kwargs = self._template_kwargs
        if template_kwargs is None:
            return self._client.chat.completions.create(**request)
        try:
            return self._client.chat.completions.create(**request,
                                                        extra_body={"chat_template_kwargs": template_kwargs})
        except BadRequestError as error:
            if "chat_template_kwargs" not in str(error):
                raise
        with self._refused:
            first, self._template_kwargs = self._template_kwargs is not None, None
        if first:
            warnings.warn(f"the teacher's endpoint {self._client.base_url} refuses chat_template_kwargs: its chat "
                          f"template is rendered with the server's own defaults, not {template_kwargs} (a model "
                          "that thinks may write a think block before its answer)", stacklevel=2)
        return self._client.chat.completions.create(**request)


def _answer_text(response: ChatCompletion) -> str:
    """The text of a chat completion's first choice (a model may answer nothing: ``""``)."""
    if not response.choices:
        raise MalformedReplyError("no choices")
    message = response.choices[0].message
    if message is None:
        raise MalformedReplyError("a choice without a message")
    return message.content or ""


class LocalTeacher:
    """A teacher run with transformers on this machine.

    Judgements use the student's own format machinery: the teacher writes its explanation
    greedily, and its label is the most probable label token after the marker (appended, and the
    record marked ``forced``, when the teacher did not write it) — so every answer has a valid
    label, and the record also keeps the teacher's label ``probabilities``. Queries are generated
    as text and parsed.
    """

    def __init__(self, model: str, *, adapter: Optional[str] = None, device: Union[str, torch.device, None] = None,
                 dtype: Union[str, torch.dtype, None] = None, trust_remote_code: bool = False, batch_size: int = 8,
                 max_new_tokens: int = 256, max_doc_tokens: int = 2048, temperature: float = 0.0,
                 judge_temperature: float = 0.0):
        """Load the teacher model (and adapter) now, with the prompt encoder for its tokenizer.

        Args:
            model: Hub id or local directory of the teacher.
            adapter: Optional PEFT adapter for it.
            device: Default: CUDA when available.
            dtype: Default: bfloat16 on a GPU, float32 on CPU.
            trust_remote_code: Allow the model's own code to run.
            batch_size: Requests judged at once.
            max_new_tokens: Explanation (or query list) budget.
            max_doc_tokens: Documents are cut to this many tokens.
            temperature: For query generation; 0 decodes greedily.
            judge_temperature: For judgements: the explanations are sampled at it (0: greedy).

        Raises:
            ModelNotFoundError: The model or adapter could not be found.
        """
        self.name = model if adapter is None else f"{model}+{adapter}"
        self._backend = Student(model, adapter=adapter, device=device, dtype=dtype,
                                trust_remote_code=trust_remote_code).engine
        self._encoder = prompts.PromptEncoder(self._backend.tokenizer, max_doc_tokens=max_doc_tokens)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.judge_temperature = judge_temperature

    def judge(self, queries: Sequence[str], documents: Sequence[str], hints: Sequence[Optional[str]], *,
              samples: int = 1) -> Iterator[tuple[int, dict]]:
        """Judge the pairs ``batch_size`` at a time in explain mode; yields ``(index, fields)`` in order.

        The label is the most probable label token after the explanation, so every answer has a
        valid label; the fields also hold ``forced`` and the label ``probabilities``.

        Args:
            queries: The query of each pair.
            documents: The document text of each pair (cut to ``max_doc_tokens`` tokens).
            hints: The gold-label hint shown after each document, or ``None``.
            samples: Answers per pair, each explanation sampled at ``judge_temperature`` under a seed
                of its own; with more than one, each answer's fields say which ``sample`` it is.
        """
        for sample in range(samples):
            for index, fields in self._judge(queries, documents, hints, seed=sample):
                yield index, {**fields, "sample": sample} if samples > 1 else fields

    def _judge(self, queries: Sequence[str], documents: Sequence[str], hints: Sequence[Optional[str]], *,
               seed: int) -> Iterator[tuple[int, dict]]:
        for start in range(0, len(queries), self.batch_size):
            batch = range(start, min(start + self.batch_size, len(queries)))
            ids = self._encoder.prompts([queries[i] for i in batch], [documents[i] for i in batch],
                                        [hints[i] for i in batch])
            judged = self._backend.judge(ids, self._encoder, mode="explain", max_new_tokens=self.max_new_tokens,
                                         batching=Batching(batch_size=self.batch_size),
                                         temperature=self.judge_temperature, seed=seed)
            labels = most_probable_label(judged.probabilities)
            for k, i in enumerate(batch):
                label = int(labels[k])
                yield i, {"label": label, "explanation": judged.explanations[k],
                          "raw": prompts.format_response(judged.explanations[k], label),
                          "forced": bool(judged.forced[k]),
                          "probabilities": [round(float(p), 6) for p in judged.probabilities[k]]}

    def write_queries(self, questions: Sequence[str]) -> Iterator[tuple[int, dict]]:
        """Generate search queries for each question, ``batch_size`` at a time; yields ``(index, fields)`` in order."""
        encoder = prompts.QueryPromptEncoder(self._backend.tokenizer)
        for start in range(0, len(questions), self.batch_size):
            batch = questions[start:start + self.batch_size]
            samples = self._backend.sample([encoder.encode(q) for q in batch], temperature=self.temperature,
                                           max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
            for k, completions in enumerate(samples):
                yield start + k, query_fields(prompts.QUERIES_PREFIX + completions[0].text)
