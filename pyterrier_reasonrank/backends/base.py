"""The contract between :class:`~pyterrier_reasonrank.ReasonRanker` and an inference engine."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Protocol, Sequence

import numpy as np
import pyterrier as pt

from pyterrier_reasonrank.prompts import Mode, Prompt, PromptEncoder

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass
class Completion:
    """A generated response: its text (special tokens removed) and its token ids.

    The token ids run up to and including the end-of-turn token when the model wrote one.
    """

    text: str
    ids: list[int]


@dataclass
class Judgements:
    """What a backend returns for ``n`` prompts, in prompt order.

    Attributes:
        explanations: The explanation written before the label (empty strings in direct mode).
        probabilities: ``(n, 3)`` probabilities of labels 0, 1, 2, renormalised over the labels.
        forced: Whether the label marker had to be appended because the model ran out of
            explanation budget or left the format.
    """

    explanations: list[str]
    probabilities: np.ndarray
    forced: np.ndarray


class Backend(Protocol):
    """An engine that judges prompts built by a :class:`~pyterrier_reasonrank.prompts.PromptEncoder`."""

    tokenizer: object

    def judge(self, prompts: Sequence[Prompt], encoder: PromptEncoder, *, mode: Mode, batch_size: int,
              max_new_tokens: int, verbose: bool = False, progress: Optional[tqdm] = None,
              **options: object) -> Judgements:
        """Judge each prompt, given as (prefix, suffix) token ids.

        The prefix (instructions and query) is shared by the documents of a query, the suffix ends
        with the response start for ``mode``. ``progress``: a bar to advance per judged prompt,
        instead of one of its own when ``verbose``.
        """
        ...


@contextlib.contextmanager
def progress_bar(progress: Optional[tqdm], total: int, verbose: bool) -> Iterator[tqdm]:
    """``progress`` when given, else a new bar over ``total`` documents (hidden unless ``verbose``)."""
    if progress is not None:
        yield progress
        return
    with pt.tqdm(total=total, desc="ReasonRanker", unit="doc", disable=not verbose) as bar:
        yield bar


def marker_started(generated: Sequence[int], marker: Sequence[int]) -> int:
    """How many leading tokens of the marker, short of all of them, ``generated`` ends with (0 if none).

    Such a tail is a marker the model had started when it had to stop.
    """
    for k in range(len(marker) - 1, 0, -1):
        if list(generated[-k:]) == list(marker[:k]):
            return k
    return 0
