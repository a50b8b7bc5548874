"""Judging pairs with a loaded model: in chunks, with k sampled explanations, through a judgement store.

:class:`Judge` is what a loaded :class:`~pyterrier_reasonrank.ReasonRanker` judges with: it
encodes and judges the pairs a chunk at a time (a query's documents together, so that memory stays
flat however many queries an experiment passes), averages the label distributions of ``samples``
explanations per pair (self-consistency), and reads from and writes to a
:class:`~pyterrier_reasonrank.store.JudgementStore` when it has one, so that only the pairs it has
not judged before are judged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .prompts import FORMAT_VERSION, LABELS, Mode, PromptEncoder, chat_template_sha256
from .store import JudgementStore, document_sha256, judgement_key, provenance_id

if TYPE_CHECKING:
    from tqdm import tqdm

    from .backends import Backend

CHUNK_PAIRS = 512
"""Pairs encoded and judged at a time (or four batches, if more), so that memory stays flat."""


@dataclass(frozen=True)
class Sampling:
    """How many explanations a pair gets, and how they are drawn.

    Attributes:
        samples: Explanations per pair; their label distributions are averaged. 1: one greedy explanation.
        temperature: The temperature of the sampled ones.
        greedy_first: The first explanation is the greedy one (and is the one shown); the others are
            sampled. Off: all of them are sampled.
        seed: The seed of the first sampled explanation (each next one adds 1).
    """

    samples: int = 1
    temperature: float = 0.7
    greedy_first: bool = True
    seed: int = 0

    def draws(self) -> list[tuple[float, int]]:
        """(temperature, seed) of each explanation, in order."""
        return [(0.0 if self.greedy_first and k == 0 else self.temperature, self.seed + k)
                for k in range(self.samples)]


@dataclass
class Judged:
    """What a :class:`Judge` returns for ``n`` pairs, in their order."""

    explanations: np.ndarray
    probabilities: np.ndarray
    forced: np.ndarray
    tokens: np.ndarray
    samples: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Judged:
        """Room for ``n`` pairs."""
        return cls(np.full(n, "", dtype=object), np.zeros((n, len(LABELS))), np.zeros(n, dtype=bool),
                   np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))

    def put(self, rows: np.ndarray, other: Judged) -> None:
        """Put ``other``'s judgements (in the order of ``rows``) at ``rows``."""
        for name in ("explanations", "probabilities", "forced", "tokens", "samples"):
            getattr(self, name)[rows] = getattr(other, name)


class Judge:
    """Judges pairs with a loaded backend and its encoders, optionally through a store."""

    def __init__(self, backend: Backend, encoders: dict[str, PromptEncoder], *, options: dict,
                 store: Optional[JudgementStore] = None, identity: Optional[dict] = None):
        """Judge with ``backend``.

        Args:
            backend: The loaded backend.
            encoders: The prompt encoder of each mode it judges in.
            options: The backend's batching options (``batch_size``, ``max_new_tokens``, ...).
            store: Where judgements are read from and written to.
            identity: What identifies the model's judgements in the store (model, weights
                fingerprints, dtype, backend); the mode's settings are added per mode.
        """
        self.backend, self.encoders, self.options, self.store = backend, encoders, options, store
        self.identity = identity or {}

    def provenance(self, mode: Mode, sampling: Sampling) -> dict:
        """What makes a judgement in ``mode``: the model's identity, the prompt settings, the generation settings."""
        encoder = self.encoders[mode]
        # Backends agree on greedy judgements in float32 (the parity tests), so those are shared.
        # Sampled explanations depend on the engine's sampler, and in half precision engines'
        # kernels round differently and split near-ties apart: for those the backend is part of it.
        draws = [(temperature, seed if temperature > 0 else None) for temperature, seed in sampling.draws()]
        sampled = mode == "explain" and any(temperature > 0 for temperature, _ in draws)
        shared = not sampled and self.identity.get("dtype") == "torch.float32"
        identity = {name: value for name, value in self.identity.items() if name != "backend" or not shared}
        provenance = {**identity, "format_version": FORMAT_VERSION, "mode": mode,
                      "max_query_tokens": encoder.max_query_tokens, "max_doc_tokens": encoder.max_doc_tokens,
                      "template_variables": encoder.template_variables,
                      "chat_template_sha256": chat_template_sha256(encoder.tokenizer)}
        if mode == "explain":
            provenance.update(max_new_tokens=self.options["max_new_tokens"], samples=sampling.samples, draws=draws)
        return provenance

    def judge(self, queries: np.ndarray, documents: np.ndarray, *, mode: Mode, sampling: Sampling,
              qids: Sequence, docnos: Sequence, progress: tqdm) -> Judged:
        """Judge the pairs, a chunk at a time, a query's documents together; stored pairs are read, not judged."""
        n = len(queries)
        judged = Judged.empty(n)
        order = np.argsort(pd.factorize(queries)[0], kind="stable")
        chunk = max(CHUNK_PAIRS, 4 * self.options["batch_size"])  # several batches, so that batches sort by length
        provenance = self.provenance(mode, sampling) if self.store is not None else None
        identity = provenance_id(provenance) if provenance is not None else None
        for start in range(0, n, chunk):
            rows = order[start:start + chunk]
            if self.store is None:
                judged.put(rows, self._judge(queries[rows], documents[rows], mode, sampling, progress))
                continue
            keys = [judgement_key(identity, q, d) for q, d in zip(queries[rows], documents[rows])]
            stored = self.store.lookup(keys)
            missing = []
            for row, key in zip(rows, keys):
                hit = stored.get(key)
                if hit is None:
                    missing.append((row, key))
                    continue
                judged.explanations[row], judged.probabilities[row] = hit.explanation, hit.probabilities
                judged.forced[row], judged.tokens[row], judged.samples[row] = hit.forced, hit.tokens, hit.samples
            progress.update(len(rows) - len(missing))
            if missing:
                fresh = np.array([row for row, _ in missing], dtype=np.int64)
                judged.put(fresh, self._judge(queries[fresh], documents[fresh], mode, sampling, progress))
                self.store.add(provenance, [  # committed per chunk: a killed run keeps what it judged
                    {"key": key, "qid": str(qids[row]), "docno": str(docnos[row]), "query": queries[row],
                     "document_sha256": document_sha256(documents[row]),
                     "explanation": judged.explanations[row], "probabilities": judged.probabilities[row],
                     "forced": judged.forced[row], "tokens": judged.tokens[row], "samples": judged.samples[row]}
                    for row, key in missing])
        return judged

    def _judge(self, queries: np.ndarray, documents: np.ndarray, mode: Mode, sampling: Sampling,
               progress: tqdm) -> Judged:
        """The model's judgements of a chunk: in explain mode, the average over the explanations drawn."""
        encoder = self.encoders[mode]
        prompts = encoder.prompts(queries, documents)
        draws = sampling.draws() if mode == "explain" else [(0.0, 0)]
        judged = Judged.empty(len(prompts))
        silent = pt.tqdm(disable=True)  # the bar counts each pair once, not once per explanation
        for k, (temperature, seed) in enumerate(draws):
            one = self.backend.judge(prompts, encoder, mode=mode, temperature=temperature, seed=seed,
                                     progress=progress if k == 0 else silent, **self.options)
            judged.probabilities += one.probabilities / len(draws)
            judged.tokens += one.tokens
            if k == 0:  # the one shown: the greedy explanation, when there is one
                judged.explanations[:], judged.forced[:] = one.explanations, one.forced
        judged.samples[:] = len(draws) if mode == "explain" else 0
        return judged

