r"""The OpenAI-compatible backend: the student served by vLLM, for throughput and scale-out.

Any server with vLLM's completions API will do. Serve the student, for instance::

    vllm serve Qwen/Qwen2.5-1.5B-Instruct --enable-prefix-caching --logprobs-mode processed_logprobs
    VLLM_USE_V2_MODEL_RUNNER=0 vllm serve meta-llama/Llama-3.2-3B-Instruct --enable-lora \
        --lora-modules student=runs/paper-3b/refine --enable-prefix-caching --logprobs-mode processed_logprobs \
        --tensor-parallel-size 2 --logits-processors pyterrier_reasonrank.backends.label_reader:LabelReader

and re-rank with ``ReasonRanker(backend="openai", base_url="http://localhost:8000/v1", model=...)``.

Prompts go to the completions API as token ids, built by the same prompt encoder as the local
backend (so truncation and injection rules are the same, and the chat template is rendered here,
with the pinned template variables: thinking off; the server renders none). Explain mode asks for the
explanation (greedy, or sampled), stopping at the label marker's text or any special token (``stop``,
``stop_token_ids``; the generated token ids come back with ``return_tokens_as_token_ids``), and
ends it by the rule every backend follows (:mod:`pyterrier_reasonrank.backends.base`); direct mode
skips that. The label distribution is then read exactly: one request allows only the label tokens
(``allowed_token_ids``) and returns their log-probabilities after that restriction, which the
server gives with ``--logprobs-mode processed_logprobs``. A server started with the logits processor
of :mod:`~pyterrier_reasonrank.backends.label_reader` (``--logits-processors``, as above: it needs this
package where vLLM runs, and vLLM's V1 model runner) writes the label in the request that wrote the
explanation (:mod:`~pyterrier_reasonrank.backends.label_steering`): one request per explanation, not
two. Whether it does is asked of the server by one small request before the first explanation.

Every request states the neutral sampling settings (:data:`NEUTRAL_SAMPLING`): vLLM fills the ones a
request leaves out from the model's ``generation_config.json`` (``--generation-config auto``, its
default), and a repetition penalty or top-k shipped there would change the explanations and the label
distribution the server returns.

The work each request cost is counted from the reply's ``usage``, as the other backends count
theirs (:attr:`OpenAIBackend.counts`); the prompt tokens the server's prefix cache served are
reported by vLLM started with ``--enable-prompt-tokens-details``.
"""
from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch

from pyterrier_reasonrank.errors import EndpointError
from pyterrier_reasonrank.judgements import Judgements
from pyterrier_reasonrank.loading import load_tokenizer
from pyterrier_reasonrank.prompts import LABEL_MARKER, Mode, Prompt, PromptEncoder
from pyterrier_reasonrank.redaction import known_secrets, redacted, scrub
from pyterrier_reasonrank.scoring import label_probabilities

from .base import Batching, Completion, Settled, end_ids, progress_bar, prompt_seed, settle, stop_ids
from .label_steering import label_logits, label_position, longest_response, request_arguments

if TYPE_CHECKING:
    from openai import OpenAI
    from openai.types import Completion
    from tqdm import tqdm
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")
R = TypeVar("R")


def openai_client(base_url: Optional[str] = None, api_key: Optional[str] = None, *, max_retries: int = 6,
                  timeout: float = 120.0) -> OpenAI:
    """An ``openai`` client for an OpenAI-compatible endpoint.

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` and the key to ``$OPENAI_API_KEY`` (a placeholder
    for local servers that need none). The client retries rate limits, server errors and dropped
    connections with exponential backoff.
    """
    from openai import OpenAI

    return OpenAI(base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
                  api_key=api_key or os.environ.get("OPENAI_API_KEY") or "no-key", max_retries=max_retries,
                  timeout=timeout)


NEUTRAL_SAMPLING = {"top_p": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
                    "extra_body": {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}}
"""The sampling settings of every request: the model's distribution as it is (the other backends' too),
whatever defaults the server took from the model's generation config."""


class MalformedReplyError(Exception):
    """A reply (HTTP 200) whose body is not what the API promises: no choices, a null message..."""


RETRY_DELAY = 0.5
"""Seconds before the first retry of a malformed reply; doubled for each further one (at most 8 s)."""


def read_reply(request: Callable[[], T], read: Callable[[T], R], *, endpoint: str, retries: int) -> R:
    """``read(request())``, where a reply in the wrong shape counts as a server fault.

    The ``openai`` client retries rate limits, server errors and dropped connections itself; a
    reply it parses but that lacks what the API promises (no ``choices``, a choice without a
    message), or whose JSON is cut off, is retried here with the same backoff.

    Args:
        request: Sends the request and returns the parsed response.
        read: Takes what is needed from the response; raises :class:`MalformedReplyError` when it is not
            there.
        endpoint: The endpoint's URL, for the error.
        retries: Retries after the first attempt.

    Raises:
        EndpointError: Every attempt got a malformed reply; it names the endpoint and the fault.
    """
    for attempt in range(retries + 1):
        try:
            return read(request())
        except (MalformedReplyError, json.JSONDecodeError) as error:
            fault = error
        if attempt < retries:
            time.sleep(min(RETRY_DELAY * 2 ** attempt, 8.0) * random.uniform(0.75, 1.25))
    what = f"invalid JSON ({fault})" if isinstance(fault, json.JSONDecodeError) else str(fault)
    raise EndpointError(f"the endpoint {endpoint} answered {retries + 1} time(s) with a reply that is not "
                        f"OpenAI-compatible: {what}")


def bounded_map(fn: Callable, items: Sequence, concurrency: int) -> Iterator[tuple[int, object]]:
    """``(index, fn(item))`` in completion order, at most ``2 * concurrency`` calls pending.

    The first error cancels what has not started and is raised.
    """
    pending = {}
    queue = iter(enumerate(items))
    with ThreadPoolExecutor(concurrency) as pool:
        try:
            while True:
                for index, item in queue:
                    pending[pool.submit(fn, item)] = index
                    if len(pending) >= 2 * concurrency:
                        break
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()


class OpenAIBackend:
    """Judges prompts with a model behind an OpenAI-compatible completions endpoint (vLLM)."""

    def __init__(self, model: str, tokenizer: PreTrainedTokenizerBase, *, base_url: Optional[str] = None,
                 concurrency: int = 32, max_retries: int = 6, timeout: float = 120.0):
        """Set up the client for the endpoint; no request is sent until the first judgement.

        Args:
            model: The model name the server serves.
            tokenizer: The model's tokenizer (to encode prompts as the server's model would).
            base_url: The endpoint, e.g. ``"http://localhost:8000/v1"`` (default: ``$OPENAI_BASE_URL``).
            concurrency: Pairs in flight.
            max_retries: Retries per request.
            timeout: Seconds per request.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.concurrency = concurrency
        self.max_retries = max_retries
        self._client = openai_client(base_url, max_retries=max_retries, timeout=timeout)
        self.end_ids = end_ids(None, tokenizer)
        self.stop_ids = stop_ids(tokenizer, self.end_ids)
        self.counts = {"computed": 0, "cached": 0, "decoded": 0}
        """Prompt tokens the server computed, those its prefix cache served instead, and tokens decoded, as
        each reply's ``usage`` reports them. A server that does not report cached tokens (vLLM without
        ``--enable-prompt-tokens-details``) has all its prompt tokens counted computed."""
        self.requests: collections.deque[tuple[int, Optional[int]]] = collections.deque(maxlen=100_000)
        """(prompt tokens, of which cached, ``None`` where the server did not say) of the latest requests."""
        self._counting = threading.Lock()  # requests run in threads
        self.label_in_request: Optional[bool] = None
        """Whether the server writes the label in the request that writes the explanation (it runs
        :class:`~pyterrier_reasonrank.backends.label_reader.LabelReader`); asked before the first explanation."""

    reusable_prompt_tokens = None
    """A server's prefix cache is not known here."""

    def judge(self, prompts: Sequence[Prompt], encoder: PromptEncoder, *, mode: Mode, max_new_tokens: int,
              batching: Batching = Batching(), temperature: float = 0.0, seed: int = 0, verbose: bool = False,
              progress: Optional[tqdm] = None) -> Judgements:
        """Judge each prompt through the endpoint, ``concurrency`` pairs in flight.

        Explain mode first asks for the explanation (greedy, or sampled, until it settles); both modes
        then read the label log-probabilities from one request per pair, unless the server wrote the
        label in the explanation's request (:attr:`label_in_request`).

        Args:
            prompts: The prompts as (prefix, suffix) token ids, in the order the judgements are returned.
            encoder: The encoder that made them (marker and label tokens).
            mode: ``"explain"`` or ``"direct"``.
            max_new_tokens: Explanation budget.
            batching: Unused: the server batches requests itself.
            temperature: 0 decodes the explanation greedily; above, samples it at that temperature.
            seed: Seeds the sampling (each prompt by :func:`~.base.prompt_seed`).
            verbose: Show a progress bar.
            progress: A bar to advance instead (the ranker's, over all of its chunks).
        """
        n = len(prompts)
        explanations = [""] * n
        label_logprobs = torch.empty((n, len(encoder.label_ids)), dtype=torch.float64)
        forced = np.zeros(n, dtype=bool)
        tokens = np.zeros(n, dtype=np.int64)

        def one(prompt: Prompt) -> tuple[str, list[float], bool, int]:
            prefix, suffix = prompt
            ids = list(prefix) + list(suffix)
            if mode == "direct":
                return "", self._label_logprobs(ids, encoder), False, 0
            settled, logits = self._explain(ids, encoder, max_new_tokens, temperature, prompt_seed(seed, ids), steer)
            explanation = self.tokenizer.decode(settled.context[:settled.length], skip_special_tokens=True)
            if logits is None:
                logits = self._label_logprobs(ids + settled.context, encoder)
            return explanation.strip(), logits, settled.forced, len(settled.context)

        with progress_bar(progress, n, verbose) as progress, redacted(known_secrets(self._client.api_key)):
            steer = mode == "explain" and n > 0 and self._steers(encoder)
            for i, (explanation, logprobs, was_forced, spent) in bounded_map(one, list(prompts),
                                                                            self.concurrency):
                explanations[i], forced[i], tokens[i] = explanation, was_forced, spent
                label_logprobs[i] = torch.tensor(logprobs, dtype=torch.float64)
                progress.update(1)
        return Judgements.of(explanations, label_probabilities(label_logprobs), forced, tokens,
                             [int(mode == "explain")] * n)

    def sample(self, prompts: Sequence[list[int]], *, num_samples: int = 1, temperature: float = 1.0,
               max_new_tokens: int = 128, batch_size: int = 0, verbose: bool = False) -> list[list[Completion]]:
        """Free-text responses: ``num_samples`` per prompt at ``temperature`` (0: greedy), ``concurrency`` in flight.

        Plain sampling from the model's distribution (no top-p or top-k), as refinement needs; a
        response ends at the model's end of sequence, which its ids keep. ``batch_size`` is unused:
        the server batches requests itself.
        """
        copies = num_samples if temperature > 0 else 1  # greedy decoding has one answer per prompt

        def one(prompt: list[int]) -> list[Completion]:
            choices = self._complete(copies, prompt=list(prompt), n=copies, max_tokens=max_new_tokens,
                                     temperature=temperature, logprobs=1,
                                     extra_body={"return_tokens_as_token_ids": True,
                                                 "skip_special_tokens": False, "stop_token_ids": sorted(self.end_ids)})
            completions = [Completion(self.tokenizer.decode(ids, skip_special_tokens=True), ids)
                           for ids in map(_token_ids, choices)]
            return completions * (num_samples // copies)

        results: list = [None] * len(prompts)
        with progress_bar(None, len(prompts), verbose) as progress, redacted(known_secrets(self._client.api_key)):
            for i, completions in bounded_map(one, list(prompts), self.concurrency):
                results[i] = completions
                progress.update(1)
        return results

    def _steers(self, encoder: PromptEncoder) -> bool:
        """Whether the server writes labels where explanations end (:attr:`label_in_request`), asked once.

        The question is a steered request with no budget: a server that steers writes the forced ending,
        a label and the end token, which a model left to itself does not, and returns the labels'
        log-probabilities where it wrote one. A server that refuses the request's arguments (HTTP 400: its
        label reader from another version of this package, say) does not steer, which is said, with its
        reason, as a warning.
        """
        from openai import BadRequestError

        if self.label_in_request is None:
            end = min(self.end_ids or self.stop_ids, default=None)
            if end is None:  # nothing would stop a steered request
                self.label_in_request = False
                return False
            try:
                choice, = self._complete(
                    1, prompt=list(encoder.forced_marker_ids), max_tokens=longest_response(encoder, 0),
                    temperature=0.0, logprobs=len(encoder.label_ids),
                    extra_body={"return_tokens_as_token_ids": True, "skip_special_tokens": False,
                                "stop_token_ids": sorted(self.stop_ids),
                                "vllm_xargs": request_arguments(encoder, 0, end)})
            except BadRequestError as error:
                warnings.warn(f"the server at {self._client.base_url} refused the label reader's arguments, so each "
                              f"label is read by a second request (twice the requests per explanation): "
                              f"{scrub(error.message, known_secrets(self._client.api_key))}", RuntimeWarning,
                              stacklevel=4)
                self.label_in_request = False
                return False
            written, position = _token_ids(choice), len(encoder.forced_marker_ids)
            steered = written in ([*encoder.forced_marker_ids, label, end] for label in encoder.label_ids)
            self.label_in_request = steered and self._labels_at(choice.logprobs.top_logprobs[position],
                                                                encoder) is not None
        return self.label_in_request

    def _explain(self, ids: list[int], encoder: PromptEncoder, max_new_tokens: int, temperature: float,
                 seed: int, steer: bool) -> tuple[Settled, Optional[list[float]]]:
        """The explanation after ``ids`` (greedy, or sampled), and its label logits if its request read them.

        The explanation is generated until it settles (see :func:`~.base.settle`); the label logits are
        ``None`` where the request that wrote it did not read them. With ``steer``, the server writes
        the explanation, its forced ending if any and the label (:mod:`~.label_steering`), and stops at
        a special token. Else it stops at the marker's text or a special token (``stop_token_ids``), and
        a sequence whose text matched the marker without its tokens goes on in another request.
        """
        generated: list[int] = []
        while True:
            if steer:
                request = dict(max_tokens=longest_response(encoder, max_new_tokens), logprobs=len(encoder.label_ids),
                               extra_body={"vllm_xargs": request_arguments(encoder, max_new_tokens,
                                                                           min(self.end_ids or self.stop_ids))})
            else:
                request = dict(max_tokens=max_new_tokens - len(generated), stop=[LABEL_MARKER], logprobs=1,
                               extra_body={"include_stop_str_in_output": True})
            request["extra_body"].update({"return_tokens_as_token_ids": True, "skip_special_tokens": False,
                                          "stop_token_ids": sorted(self.stop_ids)})
            choice, = self._complete(1, prompt=ids + generated, temperature=temperature,
                                     seed=seed if temperature else None, **request)
            new = _token_ids(choice)
            generated += new
            # A request that wrote nothing cannot write more: the budget ends there.
            settled = settle(generated, encoder, self.stop_ids, max_new_tokens if new else len(generated))
            if settled is not None:
                position = label_position(generated, settled, encoder.label_ids) \
                    if steer and len(new) == len(generated) else None  # the reply's positions are ours
                read = None if position is None else self._labels_at(choice.logprobs.top_logprobs[position], encoder)
                return settled, None if read is None else label_logits(read, temperature).tolist()

    def _label_logprobs(self, context: list[int], encoder: PromptEncoder) -> list[float]:
        """The log-probabilities of the labels after ``context``, renormalised over them, from one request.

        The request allows only the label tokens; a server that returns log-probabilities after
        that mask (``--logprobs-mode processed_logprobs``) gives their distribution exactly.

        Raises:
            EndpointError: The server returned log-probabilities before the mask.
        """
        choice, = self._complete(1, prompt=context, max_tokens=1, temperature=0.0, logprobs=len(encoder.label_ids),
                                 extra_body={"allowed_token_ids": list(encoder.label_ids),
                                             "return_tokens_as_token_ids": True})
        logprobs = self._labels_at(choice.logprobs.top_logprobs[0], encoder)
        if logprobs is None:
            raise self._unprocessed()
        return logprobs

    def _labels_at(self, top: dict[str, float], encoder: PromptEncoder) -> Optional[list[float]]:
        """The labels' log-probabilities among the top ones of a position only the labels were allowed.

        ``None`` where one is missing.

        Raises:
            EndpointError: They are not renormalised over the labels: the server returned them before the mask.
        """
        returned = {int(token.split(":", 1)[1]): value for token, value in top.items()}
        logprobs = [returned.get(label) for label in encoder.label_ids]
        if None in logprobs:
            return None
        if abs(float(torch.logsumexp(torch.tensor(logprobs, dtype=torch.float64), 0))) > 1e-3:
            raise self._unprocessed()
        return logprobs

    def _unprocessed(self) -> EndpointError:
        return EndpointError(f"the server at {self._client.base_url} returned the labels' log-probabilities before "
                             "restricting them to the labels: start it with --logprobs-mode processed_logprobs")

    def _complete(self, expected: int, /, **request) -> list:
        """The ``expected`` choices of a completions request, in order, with their log-probabilities.

        The request (its own ``n`` among them) is sent with :data:`NEUTRAL_SAMPLING`.
        """
        request = {**NEUTRAL_SAMPLING, **request,
                   "extra_body": {**NEUTRAL_SAMPLING["extra_body"], **(request.get("extra_body") or {})}}

        def read(response: Completion) -> list:
            choices = sorted(response.choices or [], key=lambda choice: choice.index)
            if len(choices) != expected:
                raise MalformedReplyError(f"{len(choices)} choices where {expected} were asked for")
            if any(choice.logprobs is None or choice.text is None for choice in choices):
                raise MalformedReplyError("a choice without text or log-probabilities")
            self._count(response.usage)
            return choices

        return read_reply(lambda: self._client.completions.create(model=self.model, **request), read,
                          endpoint=str(self._client.base_url), retries=self.max_retries)

    def _count(self, usage: object) -> None:
        """Add a reply's ``usage`` to :attr:`counts` and :attr:`requests`.

        A reply without one adds nothing: the counts are the server's account, and the judgement stands without it.
        """
        prompt = getattr(usage, "prompt_tokens", None)
        if prompt is None:
            return
        cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
        with self._counting:
            self.requests.append((prompt, cached))
            self.counts["computed"] += prompt - (cached or 0)
            self.counts["cached"] += cached or 0
            self.counts["decoded"] += getattr(usage, "completion_tokens", None) or 0


def _token_ids(choice: object) -> list[int]:
    """The token ids of a choice (``return_tokens_as_token_ids``), with the stop token it ended at."""
    ids = [int(token.split(":", 1)[1]) for token in choice.logprobs.tokens]
    stopped_at = (choice.model_extra or {}).get("stop_reason")
    if choice.finish_reason == "stop" and isinstance(stopped_at, int) and ids[-1:] != [stopped_at]:
        ids.append(stopped_at)  # the special token it stopped at
    return ids


def load(model: str, *, tokenizer: Optional[str] = None, base_url: Optional[str] = None, concurrency: int = 32,
         trust_remote_code: bool = False) -> OpenAIBackend:
    """An :class:`OpenAIBackend` for ``model`` as the server names it.

    The tokenizer comes from ``tokenizer`` (a Hub id or directory; default: ``model``).

    Raises:
        ModelNotFoundError: The tokenizer could not be found.
    """
    loaded = load_tokenizer(tokenizer or model, trust_remote_code=trust_remote_code)
    return OpenAIBackend(model, loaded, base_url=base_url, concurrency=concurrency)
