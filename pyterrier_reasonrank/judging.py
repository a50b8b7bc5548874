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

from .backends import Batching
from .identity import document_sha256, judgement_key, provenance, provenance_id
from .judgements import Judgements
from .prompts import Mode, PromptEncoder
from .versions import judging_versions

if TYPE_CHECKING:
    from tqdm import tqdm

    from .backends import Backend
    from .store import JudgementStore

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


class Judge:
    """Judges pairs with a loaded backend and its encoders, optionally through a store."""

    def __init__(self, engine: Backend, encoders: dict[str, PromptEncoder], *, max_new_tokens: int,
                 batching: Batching = Batching(), store: Optional[JudgementStore] = None,
                 identity: Optional[dict] = None):
        """Judge with ``engine``.

        Args:
            engine: The loaded backend.
            encoders: The prompt encoder of each mode it judges in.
            max_new_tokens: The explanation budget.
            batching: How the backend batches.
            store: Where judgements are read from and written to.
            identity: What identifies the student's judgements (see
                :func:`~pyterrier_reasonrank.identity.student_identity`); needed with a store.
        """
        self.engine, self.encoders, self.store = engine, encoders, store
        self.max_new_tokens, self.batching = max_new_tokens, batching
        self.identity = identity or {}

    def provenance(self, mode: Mode, sampling: Sampling) -> dict:
        """What makes a judgement in ``mode`` (see :func:`~pyterrier_reasonrank.identity.provenance`)."""
        return provenance(self.identity, self.encoders[mode], mode, sampling, self.max_new_tokens)

    def judge(self, queries: np.ndarray, documents: np.ndarray, *, mode: Mode, sampling: Sampling,
              qids: Sequence, docnos: Sequence, progress: tqdm) -> Judgements:
        """Judge the pairs, a chunk at a time, a query's documents together; stored pairs are read, not judged."""
        n = len(queries)
        judged = Judgements.empty(n)
        order = np.argsort(pd.factorize(queries)[0], kind="stable")
        chunk = max(CHUNK_PAIRS, 4 * self.batching.batch_size)  # several batches, so that batches sort by length
        made = self.provenance(mode, sampling) if self.store is not None else None
        identity = provenance_id(made) if made is not None else None
        versions = judging_versions(self.identity["backend"]) if self.store is not None else None
        for start in range(0, n, chunk):
            rows = order[start:start + chunk]
            if self.store is None:
                judged.put(rows, self._judge(queries[rows], documents[rows], mode, sampling, progress))
                continue
            keys = [judgement_key(identity, q, d) for q, d in zip(queries[rows], documents[rows])]
            found, stored = self.store.lookup(keys, versions)
            judged.put(rows[found], stored)
            progress.update(len(found))
            missing = np.setdiff1d(np.arange(len(rows)), found)
            if len(missing):
                fresh = rows[missing]
                judgements = self._judge(queries[fresh], documents[fresh], mode, sampling, progress)
                judged.put(fresh, judgements)
                self.store.add(made, [  # committed per chunk: a killed run keeps what it judged
                    {"key": keys[i], "qid": str(qids[row]), "docno": str(docnos[row]), "query": queries[row],
                     "document_sha256": document_sha256(documents[row])} for i, row in zip(missing, fresh)],
                    judgements, versions)
        return judged

    def _judge(self, queries: np.ndarray, documents: np.ndarray, mode: Mode, sampling: Sampling,
               progress: tqdm) -> Judgements:
        """The model's judgements of a chunk: in explain mode, the average over the explanations drawn."""
        encoder = self.encoders[mode]
        prompts = encoder.prompts(queries, documents)
        draws = sampling.draws() if mode == "explain" else [(0.0, 0)]
        judged = Judgements.empty(len(prompts))
        silent = pt.tqdm(disable=True)  # the bar counts each pair once, not once per explanation
        for k, (temperature, seed) in enumerate(draws):
            one = self.engine.judge(prompts, encoder, mode=mode, max_new_tokens=self.max_new_tokens,
                                    batching=self.batching, temperature=temperature, seed=seed,
                                    progress=progress if k == 0 else silent)
            judged.probabilities += one.probabilities / len(draws)
            judged.tokens += one.tokens
            judged.samples += one.samples
            if k == 0:  # the one shown: the greedy explanation, when there is one
                judged.explanations[:], judged.forced[:] = one.explanations, one.forced
        return judged
