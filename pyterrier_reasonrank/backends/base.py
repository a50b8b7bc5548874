"""The contract between ``ReasonRanker`` and an inference engine, and where an explanation ends.

The rule, the same for the transformers backend, the vLLM engine and an OpenAI-compatible server,
decoding greedily: the explanation ends when the tokens written end with the label marker
(``Relevance:`` as the tokenizer writes it); it is cut short, and the label is *forced*, at the
first special token the model writes (an end of turn, or any other: the token is not kept) or think
delimiter (a model that starts to "think" in spite of thinking switched off, see
:data:`~pyterrier_reasonrank.prompts.THINK_TOKENS`), or when it has written ``max_new_tokens``
tokens without the marker. A forced explanation gets the rest of a marker the model had started,
else a line break and the marker, and the label is read there.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Protocol, Sequence

import pyterrier as pt

from pyterrier_reasonrank.judgements import Judgements
from pyterrier_reasonrank.prompts import THINK_TOKENS, Mode, Prompt, PromptEncoder

if TYPE_CHECKING:
    from tqdm import tqdm
    from transformers import GenerationConfig, PreTrainedTokenizerBase


def prompt_seed(seed: int, ids: Sequence[int]) -> int:
    """The seed of one prompt's sampled explanation: a function of ``seed`` and the prompt's tokens only.

    So a pair draws the same explanation whatever else is in its batch, chunk or request, and
    whether or not a judgement store held its neighbours: runs with and without a store agree.
    """
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, ids))}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1  # below 2**31: every engine takes it


@dataclass
class Completion:
    """A generated response: its text (special tokens removed) and its token ids.

    The token ids run up to and including the end-of-turn token when the model wrote one.
    """

    text: str
    ids: list[int]


@dataclass(frozen=True)
class Batching:
    """How a local backend groups prompts into batches.

    Attributes:
        batch_size: Most prompts in a batch.
        max_batch_tokens: Most tokens in a batch, counted as rows x (longest prompt + explanation
            budget), so that long documents make smaller batches. ``None``: only ``batch_size`` limits.
        prefix_reuse: Compute the prompt prefix that a query's documents share once per batch.
    """

    batch_size: int = 16
    max_batch_tokens: Optional[int] = 65536
    prefix_reuse: bool = True


class Backend(Protocol):
    """An engine that judges prompts made by a :class:`~pyterrier_reasonrank.prompts.PromptEncoder`, and samples."""

    tokenizer: PreTrainedTokenizerBase
    counts: dict[str, int]
    """The work done so far: prompt tokens ``computed``, prompt tokens ``cached`` (served from a cache of
    earlier prompts instead), tokens ``decoded``."""

    @property
    def reusable_prompt_tokens(self) -> Optional[int]:
        """The most prompt tokens the engine keeps for a later request to continue from.

        Its prompt or prefix cache; 0: none; ``None``: not known here (a server's).
        """
        ...

    def judge(self, prompts: Sequence[Prompt], encoder: PromptEncoder, *, mode: Mode, max_new_tokens: int,
              batching: Batching = Batching(), temperature: float = 0.0, seed: int = 0, verbose: bool = False,
              progress: Optional[tqdm] = None) -> Judgements:
        """Judge each prompt, given as (prefix, suffix) token ids.

        The prefix (instructions and query) is shared by the documents of a query, the suffix ends
        with the response start for ``mode``. The explanation is decoded greedily, or sampled at
        ``temperature``, each prompt seeded by :func:`prompt_seed`. ``batching``: how a local
        engine batches (engines that schedule their own batches ignore it). ``progress``: a bar to
        advance per judged prompt, instead of one of its own when ``verbose``. The judgements
        count one explanation per pair in explain mode (``samples`` 1), none in direct mode.
        """
        ...

    def sample(self, prompts: Sequence[list[int]], *, num_samples: int = 1, temperature: float = 1.0,
               max_new_tokens: int = 128, batch_size: int = 8, verbose: bool = False) -> list[list[Completion]]:
        """Free-text responses: ``num_samples`` per prompt (token ids), sampled at ``temperature`` (0: greedy).

        Plain sampling from the model's distribution (no top-p or top-k), as refinement needs; a
        response ends at the model's end of sequence, which its ids keep.
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


@dataclass(frozen=True)
class Settled:
    """Where a generated explanation ended, by the rule of this module.

    Attributes:
        length: How many of the generated tokens are the explanation (before the marker).
        context: The generated tokens up to the label position: those written, then the marker
            tokens appended when it was forced.
        forced: Whether the marker was appended.
    """

    length: int
    context: list[int]
    forced: bool


def end_ids(generation_config: Optional[GenerationConfig], tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The tokens that end a response: the model's generation config's ends of sequence, and the tokenizer's."""
    eos = generation_config.eos_token_id if generation_config is not None else None
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return frozenset(eos + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []))


def stop_ids(tokenizer: PreTrainedTokenizerBase, ends: frozenset[int]) -> frozenset[int]:
    """The tokens that cut an explanation short: special tokens, think delimiters, and ``ends``.

    The think delimiters are those the tokenizer has as single tokens
    (:data:`~pyterrier_reasonrank.prompts.THINK_TOKENS`). Special tokens are those the tokenizer
    names (``all_special_ids``) and every added token marked special (Llama 3's header and reserved
    tokens are only the latter).
    """
    added = {token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special}
    vocabulary = tokenizer.get_vocab()
    think = {vocabulary[token] for token in THINK_TOKENS if token in vocabulary}
    return frozenset(tokenizer.all_special_ids) | frozenset(added) | frozenset(think) | ends


def forced_ending(written: Sequence[int], encoder: PromptEncoder) -> tuple[int, list[int]]:
    """For an explanation cut short: how many written tokens are the explanation, and the marker tokens to append.

    The rest of a marker the model had started is appended, else a line break and the marker.
    """
    started = marker_started(written, encoder.marker_ids)
    return len(written) - started, encoder.marker_ids[started:] if started else list(encoder.forced_marker_ids)


def settle(generated: Sequence[int], encoder: PromptEncoder, stops: frozenset[int],
           max_new_tokens: int, start: int = 0) -> Optional[Settled]:
    """Where a greedily generated sequence ends its explanation, or ``None`` if it has not ended yet.

    An engine that stops generating at the marker's *text* (a stop string) may stop where the
    tokens are not the marker's; the sequence has then not ended, and generating goes on.

    Args:
        generated: The tokens generated after the prompt, in order.
        encoder: The encoder of the prompt, or anything with its ``marker_ids`` and ``forced_marker_ids``.
        stops: The tokens that cut the explanation short (:func:`stop_ids`).
        max_new_tokens: The explanation budget.
        start: Look from this token on: the tokens before it were looked at already (the sequence
            had not ended there), so that a sequence looked at as it grows costs its length in all.
    """
    marker = encoder.marker_ids
    for k in range(start, min(len(generated), max_new_tokens)):
        token = generated[k]
        if token in stops:
            return _forced(list(generated[:k]), encoder)
        if list(generated[max(0, k + 1 - len(marker)):k + 1]) == marker:
            return Settled(k + 1 - len(marker), list(generated[:k + 1]), False)
    if len(generated) >= max_new_tokens:
        return _forced(list(generated[:max_new_tokens]), encoder)
    return None


def _forced(written: list[int], encoder: PromptEncoder) -> Settled:
    length, ending = forced_ending(written, encoder)
    return Settled(length, written + ending, True)
