"""Scaling out on Ray: a pipeline on Ray workers, each with its own engine on its own GPU.

PyTerrier's ``pipeline.parallel(n, backend="ray")`` runs a pipeline in a pool of Ray processes
(``ray.util.multiprocessing.Pool``) that asks Ray for no GPU: Ray then neither gives a worker a GPU
of its own nor counts the GPUs the workers use, so every worker sees every GPU and loads its model
onto the first; and the pipeline travels to the pool, and its model is loaded again, at every call.
:class:`RayParallel` runs the pipeline on Ray actors that ask for ``gpus_per_worker`` GPUs each
(Ray sets each one's ``CUDA_VISIBLE_DEVICES``) and ``cpus_per_worker`` cores (Ray sets its
``OMP_NUM_THREADS``), and that keep the pipeline, and so its loaded engine, from call to call:

.. code-block:: python

    ray.init(address="auto")                        # a Ray cluster: one machine or many
    pipeline = bm25 >> text >> ReasonRanker(adapter="runs/paper-3b/refine", store="judgements")
    parallel = RayParallel(pipeline, workers=8, gpus_per_worker=1, per_worker_stores=True)
    pt.Experiment([parallel], topics, qrels, [pt.measures.nDCG @ 10])

Queries are split among the workers by qid, in qid order, and the results are put back in that
order, so that a pipeline that ends with a ``ReasonRanker`` returns the frame the serial run does.

Judgements: on one machine, every worker may write the rankers' stores themselves (SQLite lets
processes write one file at once). Across machines, with ``per_worker_stores=True``, each worker
judges into its own copy of each store (a snapshot of it, so that pairs judged before are served),
and after each call the judgements the workers added are sent back through Ray and merged into the
stores (:meth:`~pyterrier_reasonrank.store.JudgementStore.merge`).
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pyterrier as pt

from .contracts import parameters, signature_repr
from .numeric import non_negative_number, positive_int, positive_number, switch
from .ranker import ReasonRanker
from .store import DATABASE, JudgementStore

CHUNKS_PER_WORKER = 4
"""The input is split into this many chunks per worker, so that a worker that finishes early takes another."""


class RayParallel(pt.Transformer):
    """Runs a pipeline on Ray workers, each loading its own engine, on its own GPU(s) where there are GPUs.

    Workers start at the first call (Ray starts a local cluster then, unless ``ray.init`` was called)
    and are kept until :meth:`close` (or until this transformer is dropped).
    """

    def __init__(self, pipeline: pt.Transformer, workers: int = 2, *, gpus_per_worker: float = 0.0,
                 cpus_per_worker: float = 1.0, per_worker_stores: bool = False):
        """Check the settings; no worker starts yet.

        Args:
            pipeline: What each worker runs (it travels to them pickled, without any loaded model).
            workers: How many workers (Ray actors).
            gpus_per_worker: GPUs Ray gives each worker (and hides the others from it); 0 on CPUs.
            cpus_per_worker: Cores Ray gives each worker (its ``OMP_NUM_THREADS``).
            per_worker_stores: Each worker judges into its own copy of each ranker's store, and the
                judgements are merged into the stores after each call: for workers on several
                machines. Off: the workers write the stores themselves (one machine).

        Raises:
            InputError: A count that is not a positive integer, a share of a GPU or core out of range, or
                ``per_worker_stores`` not a bool.
        """
        self.pipeline = pipeline
        self.workers = positive_int("workers", workers)
        self.gpus_per_worker = non_negative_number("gpus_per_worker", gpus_per_worker)
        self.cpus_per_worker = positive_number("cpus_per_worker", cpus_per_worker)
        self.per_worker_stores = switch("per_worker_stores", per_worker_stores)
        self._actors: Optional[list] = None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Run the pipeline on the workers, a share of the queries each, and join their results in qid order."""
        if len(inp) == 0 or "qid" not in inp.columns:
            return self.pipeline(inp)
        from ray.util import ActorPool

        chunks = _split_by_qid(inp, self.workers * CHUNKS_PER_WORKER)
        results = list(ActorPool(self._started()).map(lambda actor, chunk: actor.run.remote(chunk), chunks))
        if self.per_worker_stores:
            self._merge_stores()
        return pd.concat(results, ignore_index=True)  # (a ReasonRanker's result type is kept)

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """The pipeline's output columns (``pt.inspect``); no worker starts."""
        return pt.inspect.transformer_outputs(self.pipeline, input_columns)

    def worker_info(self) -> list[dict]:
        """Each worker's process id, host, GPUs (as Ray gave them) and torch threads; starts the workers."""
        import ray

        return ray.get([actor.info.remote() for actor in self._started()])

    def close(self) -> None:
        """Stop the workers (and free their GPUs); the next call starts new ones."""
        import ray

        actors, self._actors = self._actors or [], None
        ray.get([actor.close.remote() for actor in actors])
        for actor in actors:
            ray.kill(actor)

    def _started(self) -> list:
        import ray

        if self._actors is None:
            seeds = {}
            if self.per_worker_stores:
                # Each ranker's store by its place in the pipeline: a relative path may not name it on a worker.
                seeds = {"keys": [None if r.store is None else _key(r.store) for r in _rankers(self.pipeline)],
                         "databases": {key: _database_bytes(store) for key, store in _stores(self.pipeline).items()}}
            seeds = ray.put(seeds)  # put once, read by every worker (a reference argument arrives as its value)
            worker = ray.remote(num_gpus=self.gpus_per_worker, num_cpus=self.cpus_per_worker)(_Worker)
            pipeline = ray.put(self.pipeline)
            self._actors = [worker.remote(pipeline, seeds) for _ in range(self.workers)]
        return self._actors

    def _merge_stores(self) -> None:
        """Merge into each store the judgements the workers added to their copies of it."""
        import ray

        stores = _stores(self.pipeline)
        numbers = itertools.count()
        with tempfile.TemporaryDirectory(prefix="reasonrank-merge-") as folder:
            for added in ray.get([actor.added_judgements.remote() for actor in self._actors]):
                for key, data in added.items():
                    copy = Path(folder) / str(next(numbers))
                    copy.mkdir()
                    (copy / DATABASE).write_bytes(data)
                    stores[key].merge(copy)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_actors": None}  # the workers belong to the process that started them

    def __repr__(self) -> str:
        return signature_repr(self, {name: getattr(self, name) for name in parameters(RayParallel)})


class _Worker:
    """A Ray actor: keeps its copy of the pipeline (and so its loaded engine) from call to call."""

    def __init__(self, pipeline: pt.Transformer, seeds: dict[str, Any]):
        self.pipeline = pipeline
        self.copies: dict[str, JudgementStore] = {}
        self.exported: dict[str, int] = {}  # the revision of each copy sent back (or seeded)
        self.folder = None
        if seeds:
            folder = self.folder = Path(tempfile.mkdtemp(prefix="reasonrank-worker-"))
            for k, (key, data) in enumerate(seeds["databases"].items()):
                (folder / str(k)).mkdir()
                (folder / str(k) / DATABASE).write_bytes(data)
                self.copies[key] = JudgementStore(folder / str(k))
                self.exported[key] = self.copies[key].revision()
            for ranker, key in zip(_rankers(pipeline), seeds["keys"]):
                if key is not None:
                    ranker.set_parameter("store", self.copies[key])

    def run(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.pipeline(frame)

    def added_judgements(self) -> dict[str, bytes]:
        """Each store copy's judgements added since the last call, as an SQLite file's bytes (with the provenances)."""
        added = {}
        for key, store in self.copies.items():
            revision = store.revision()
            if revision > self.exported[key]:
                added[key] = _database_bytes(store, since=self.exported[key])
                self.exported[key] = revision
        return added

    def close(self) -> None:
        """Remove the store copies (the actor is killed next, and would leave them)."""
        self.copies.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def info(self) -> dict:
        import socket

        import ray
        import torch

        return {"pid": os.getpid(), "host": socket.gethostname(), "gpus": ray.get_gpu_ids(),
                "threads": torch.get_num_threads()}


def _split_by_qid(frame: pd.DataFrame, chunks: int) -> list[pd.DataFrame]:
    """The frame in about ``chunks`` parts of whole queries, in qid order."""
    groups = [group for _, group in frame.groupby("qid", sort=True)]
    size = -(-len(groups) // chunks)
    return [pd.concat(groups[start:start + size]) for start in range(0, len(groups), size)]


def _rankers(transformer: pt.Transformer) -> list[ReasonRanker]:
    """The ReasonRankers in a pipeline (through its stages, cut-offs, unions...)."""
    found, seen, todo = [], set(), [transformer]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ReasonRanker):
            found.append(current)
            continue
        for inner in pt.inspect.subtransformers(current).values():
            todo.extend(inner if isinstance(inner, list) else [inner])
    return found


def _key(store: Any) -> str:
    """What names a ranker's store (a store, or its path) across processes: its absolute path."""
    return str(Path(store.path if isinstance(store, JudgementStore) else store).resolve())


def _stores(pipeline: pt.Transformer) -> dict[str, JudgementStore]:
    """The stores of a pipeline's rankers, by key."""
    stores = {}
    for ranker in _rankers(pipeline):
        if ranker.store is not None and _key(ranker.store) not in stores:
            store = ranker.store
            stores[_key(store)] = store if isinstance(store, JudgementStore) else JudgementStore(store)
    return stores


def _database_bytes(store: JudgementStore, since: int = 0) -> bytes:
    """A snapshot of the store (of the judgements added after revision ``since``), as its SQLite file's bytes."""
    with tempfile.TemporaryDirectory() as folder:
        return (store.snapshot(Path(folder) / "snapshot", since=since) / DATABASE).read_bytes()

