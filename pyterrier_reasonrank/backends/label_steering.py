"""The label read in the request that writes the explanation: one request per pair, not two.

Reading the label in a second request (the prompt, the explanation and the marker) makes vLLM
compute again what its prefix cache holds only in part: the last partial block of every explanation,
and of the prompt for each sample after the first (on long documents, 4 samples per pair computed
1.2x the prompt tokens of one pass). Instead, a request that carries :data:`ARGUMENT` is steered,
by vLLM's logits processor :class:`~pyterrier_reasonrank.backends.label_reader.LabelReader`, along
the rule of :mod:`~pyterrier_reasonrank.backends.base`:

* while the explanation has not ended, the model writes freely;
* when it has spent its budget without the marker, the forced ending
  (:func:`~pyterrier_reasonrank.backends.base.forced_ending`) is written token by token;
* at the label position only the label tokens may come, so the log-probabilities there (after the
  logits processors: ``processed_logprobs``) are the label distribution, divided by the request's
  temperature (:func:`label_logits` undoes that);
* after the label, only an end token, which stops the request.

An explanation cut short by a special token stops at that token (a stop token of the request), and
its label is read by a second request, as before. This module is the rule and the reading of its
result, which the engine backend and the served one share; it needs no vLLM.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from .base import Settled, settle

if TYPE_CHECKING:
    from pyterrier_reasonrank.prompts import PromptEncoder

logger = logging.getLogger(__name__)

ARGUMENT = "reasonrank_label"
"""The key of a request's ``extra_args`` (a server's ``vllm_xargs``) that asks for the steering."""
_SAMPLING_EPS = 1e-5
"""Below this temperature vLLM decodes greedily, and its log-probabilities are not divided by it."""


@dataclass(frozen=True)
class _Ending:
    """The marker tokens, as :func:`~.base.settle` reads them from an encoder."""

    marker_ids: list[int]
    forced_marker_ids: list[int]


def request_arguments(encoder: PromptEncoder, budget: int, end: int) -> dict:
    """What the steering of one request needs, as its ``extra_args``.

    The value is JSON text: a server's ``vllm_xargs`` take plain values only, and they may cross processes.

    Args:
        encoder: The encoder of the prompt (marker and label tokens).
        budget: The explanation budget, in tokens.
        end: A token that stops the request (one of its stop token ids).
    """
    return {ARGUMENT: json.dumps({"marker": list(encoder.marker_ids), "forced": list(encoder.forced_marker_ids),
                                  "labels": list(encoder.label_ids), "end": int(end), "budget": int(budget)})}


def read_arguments(arguments: object) -> dict:
    """The steering :func:`request_arguments` asked for, checked: a server takes ``vllm_xargs`` from anyone.

    Raises:
        ValueError: They are not what :func:`request_arguments` writes; the message names what is wrong.
            (vLLM answers such a request with HTTP 400, before it reaches the engine.)
    """
    if not isinstance(arguments, str):
        raise ValueError(f"{ARGUMENT} must be JSON text, not {type(arguments).__name__}")
    try:
        given = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise ValueError(f"{ARGUMENT} is not valid JSON: {error}") from None
    if not isinstance(given, dict):
        raise ValueError(f"{ARGUMENT} must be a JSON object, not {type(given).__name__}")
    if set(given) != _KEYS:  # arguments of another version of this package, most likely
        raise ValueError(f"{ARGUMENT} must have exactly the keys {sorted(_KEYS)}: missing "
                         f"{sorted(_KEYS - set(given))}, unexpected {sorted(set(given) - _KEYS)}")
    for key in ("marker", "forced", "labels"):
        if not isinstance(given[key], list) or not given[key] or not all(map(_is_token, given[key])):
            raise ValueError(f"{ARGUMENT}: {key!r} must be a non-empty list of token ids")
    if not _is_token(given["end"]):
        raise ValueError(f"{ARGUMENT}: 'end' must be a token id")
    if not _is_token(given["budget"]):
        raise ValueError(f"{ARGUMENT}: 'budget' must be a count of tokens, 0 or more")
    return given


_KEYS = frozenset({"marker", "forced", "labels", "end", "budget"})


def _is_token(value: object) -> bool:
    """A whole number, 0 or more (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def longest_response(encoder: PromptEncoder, budget: int) -> int:
    """The most tokens a steered request writes: the budget, the longest forced ending, the label and the end."""
    return budget + max(len(encoder.forced_marker_ids), len(encoder.marker_ids)) + 2


def label_position(generated: Sequence[int], settled: Settled, labels: Sequence[int]) -> Optional[int]:
    """Where a steered request wrote its label, or ``None`` when it did not (it stopped at a special token)."""
    position = len(settled.context)
    if len(generated) > position and generated[position] in labels \
            and list(generated[:position]) == list(settled.context):
        return position
    return None


def label_logits(logprobs: Sequence[float], temperature: float) -> torch.Tensor:
    """The label logits (up to a constant) from the log-probabilities at the label position.

    Those are ``log_softmax(logits / temperature)`` over the labels (the others were masked), so
    multiplying by the temperature gives the logits less a constant, which the softmax over the labels
    ignores: the distribution of a greedy read, whatever the explanation was sampled at.
    """
    scale = temperature if temperature >= _SAMPLING_EPS else 1.0
    return torch.tensor(logprobs, dtype=torch.float64) * scale


class RequestSteering:
    """Steers one request: from the tokens it has written, what it may write next."""

    def __init__(self, arguments: str):
        """Args: arguments: the value :func:`request_arguments` gave the request.

        Raises:
            ValueError: See :func:`read_arguments`.
        """
        given = read_arguments(arguments)
        self.ending = _Ending(given["marker"], given["forced"])
        self.labels = given["labels"]
        self.end = [given["end"]]
        self.budget = given["budget"]
        self.settled: Optional[Settled] = None
        self.looked = 0  # the tokens written that have been looked at for the marker
        self.highest = max(*given["marker"], *given["forced"], *given["labels"], given["end"])
        self.fits: Optional[bool] = None  # whether the token ids are in the model's vocabulary: known at the first step

    def __call__(self, written: list[int], logits: torch.Tensor) -> torch.Tensor:
        """The logits of the next token, masked where the steering decides it.

        A request whose token ids lie beyond the model's logits (arguments made for another model)
        is not steered, with a warning: its reply then has no label where the explanation ends, and the
        client reads the label by a second request.
        """
        if self.fits is None:
            self.fits = self.highest < logits.shape[-1]
            if not self.fits:
                logger.warning("a request's %s names token %d, beyond the model's %d logits: it is not steered",
                               ARGUMENT, self.highest, logits.shape[-1])
        if not self.fits:
            return logits
        # Asked at every step of every request: each token is looked at once. Stop tokens end the
        # request before this is asked again, so none is looked for here.
        if self.settled is None:
            self.settled = settle(written, self.ending, frozenset(), self.budget, start=self.looked)
            self.looked = len(written)
            if self.settled is None:
                return logits
        n, position = len(written), len(self.settled.context)
        allowed = [self.settled.context[n]] if n < position else self.labels if n == position else \
            self.end if n == position + 1 else None
        if allowed is None:
            return logits
        steered = torch.full_like(logits, float("-inf"))
        steered[allowed] = logits[allowed]
        return steered
