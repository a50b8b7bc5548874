"""A judgement store: what a student said about a pair, kept with where it came from.

Explanations are the expensive part of a re-ranking run, and an experiment is run many times (other
first stages, other cut-offs, a cascade added). A :class:`JudgementStore` keeps, per judged pair,
the explanation, the three label probabilities, whether the label was forced, the tokens decoded
and the samples drawn. It is keyed by the judgement's *provenance* — the model and a fingerprint of
its weights, the adapter and its fingerprint, the prompt format version, the mode, the truncation,
the chat-template variables, the generation settings — and by the exact query and document text
(hashed), so a change of any of them is a miss, never a stale hit.

The backend is not part of the key of greedy judgements: every backend encodes the same token ids
and ends an explanation by the same rule, and the parity tests (tests/test_vllm.py) show that they
agree (to 1e-3, with identical explanations), so a store filled by the transformers backend serves
vLLM's engine. Sampled explanations depend on the engine's sampler, and in half precision the
engines' kernels round differently (and split near-ties apart), so for those it is. The dtype is
part of the key (bfloat16 and float32 can choose different greedy tokens), and so are vLLM engine
options that may change the numbers (quantization, say; not those that set capacity). A served model
(``backend="openai"``) is identified by the name it is served under and its tokenizer: the server's
weights are not seen from here.

It is one SQLite file (write-ahead log, so several processes can read and write at once; each
batch of judgements is one transaction, so a killed run keeps every batch it committed). It reads
as a DataFrame, exports to and imports from Parquet, and merges with stores judged elsewhere.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import pandas as pd

COLUMNS = ["key", "provenance", "qid", "docno", "query", "document_sha256", "explanation", "p0", "p1", "p2", "forced",
           "tokens", "samples", "created"]
"""The columns of a store's records (``provenance`` is the id of a row of :meth:`JudgementStore.provenances`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS provenances (id TEXT PRIMARY KEY, provenance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY, provenance TEXT NOT NULL, qid TEXT, docno TEXT, query TEXT, document_sha256 TEXT,
    explanation TEXT NOT NULL, p0 REAL NOT NULL, p1 REAL NOT NULL, p2 REAL NOT NULL, forced INTEGER NOT NULL,
    tokens INTEGER NOT NULL, samples INTEGER NOT NULL, created TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Stored:
    """A judgement read back from the store."""

    explanation: str
    probabilities: tuple[float, float, float]
    forced: bool
    tokens: int
    samples: int


def provenance_id(provenance: dict) -> str:
    """The id of a provenance: the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()


def judgement_key(provenance: str, query: str, document: str) -> str:
    """The key of a judgement: its provenance id and the exact query and document text, hashed.

    Each text is preceded by its length, so that no two (query, document) pairs run together alike.
    """
    digest = hashlib.sha256(provenance.encode())
    for text in (query, document):
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.hexdigest()


def document_sha256(document: str) -> str:
    """The SHA-256 of a document's exact text (as the store records it)."""
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()


class JudgementStore:
    """Judgements kept in one SQLite file, shared by processes and runs.

    .. code-block:: python

        store = JudgementStore("judgements.sqlite")
        ranker = ReasonRanker(adapter=student, store=store)
        pt.Experiment([bm25 >> text >> ranker, ...], ...)   # a second run reads what the first judged
        store.frame()                                        # every judgement, for audits
    """

    def __init__(self, path: Union[str, Path, None] = None):
        """Open (or create) the store at ``path``.

        Args:
            path: The SQLite file. Default: ``judgements.sqlite`` in ``$REASONRANK_CACHE``
                (``~/.cache/pyterrier_reasonrank``).
        """
        if path is None:
            root = Path(os.environ.get("REASONRANK_CACHE", Path.home() / ".cache" / "pyterrier_reasonrank"))
            path = root / "judgements.sqlite"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        connection = self._connection()
        with _transaction(connection):  # two processes creating one store take turns
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread and process (SQLite connections may not cross either).
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            connection = sqlite3.connect(self.path, timeout=120, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def lookup(self, keys: Sequence[str]) -> dict[str, Stored]:
        """The stored judgements of those keys that are in the store."""
        found: dict[str, Stored] = {}
        connection = self._connection()
        for start in range(0, len(keys), 500):  # SQLite caps the parameters of one statement
            chunk = list(keys[start:start + 500])
            rows = connection.execute(
                f"SELECT key, explanation, p0, p1, p2, forced, tokens, samples FROM judgements "
                f"WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, explanation, p0, p1, p2, forced, tokens, samples in rows:
                found[key] = Stored(explanation, (p0, p1, p2), bool(forced), int(tokens), int(samples))
        return found

    def add(self, provenance: dict, records: Iterable[dict]) -> int:
        """Keep judgements of one provenance, in one transaction; returns how many were new.

        Args:
            provenance: What made them (see the module docstring).
            records: Each with ``key``, ``qid``, ``docno``, ``query``, ``document_sha256``,
                ``explanation``, ``probabilities``, ``forced``, ``tokens`` and ``samples``.
        """
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        identity = provenance_id(provenance)
        rows = [(r["key"], identity, _storable(r["qid"]), _storable(r["docno"]), _storable(r["query"]),
                 r["document_sha256"], _storable(r["explanation"]),
                 *map(float, r["probabilities"]), int(r["forced"]), int(r["tokens"]), int(r["samples"]), created)
                for r in records]
        connection = self._connection()
        with _transaction(connection):
            connection.execute("INSERT OR IGNORE INTO provenances VALUES (?, ?)",
                               (identity, json.dumps(provenance, sort_keys=True, default=str)))
            before = connection.total_changes
            connection.executemany(f"INSERT OR IGNORE INTO judgements VALUES ({','.join('?' * len(COLUMNS))})", rows)
            return connection.total_changes - before

    def frame(self) -> pd.DataFrame:
        """Every judgement, for audits of explanations and comparisons (with a teacher's, say).

        The columns are those of :data:`COLUMNS`, and ``mode``, ``model`` and ``adapter`` from the
        provenance.
        """
        frame = pd.read_sql_query(f"SELECT {', '.join(COLUMNS)} FROM judgements ORDER BY created, key",
                                  self._connection())
        provenances = {identity: json.loads(text) for identity, text in self._provenance_texts().items()}
        for field in ("mode", "model", "adapter"):
            frame[field] = [provenances[p].get(field) for p in frame["provenance"]]
        frame["forced"] = frame["forced"].astype(bool)
        return frame

    def provenances(self) -> pd.DataFrame:
        """Every provenance in the store: ``id`` and its fields."""
        texts = self._provenance_texts()
        return pd.DataFrame([{"id": identity, **json.loads(text)} for identity, text in texts.items()])

    def _provenance_texts(self) -> dict[str, str]:
        return dict(self._connection().execute("SELECT id, provenance FROM provenances").fetchall())

    def to_parquet(self, path: Union[str, Path]) -> Path:
        """Export every judgement and its provenance to a Parquet file (see :meth:`import_parquet`)."""
        frame = self.frame()[COLUMNS]
        frame = frame.assign(provenance_json=frame["provenance"].map(self._provenance_texts()))
        frame.to_parquet(path, index=False)
        return Path(path)

    def import_parquet(self, path: Union[str, Path]) -> int:
        """Add the judgements of a Parquet export (judgements already here are kept); returns how many were new."""
        frame = pd.read_parquet(path)
        connection = self._connection()
        with _transaction(connection):
            connection.executemany("INSERT OR IGNORE INTO provenances VALUES (?, ?)",
                                   frame[["provenance", "provenance_json"]].drop_duplicates().itertuples(index=False))
            before = connection.total_changes
            rows = frame[COLUMNS].astype(object).where(frame[COLUMNS].notna(), None).itertuples(index=False)
            connection.executemany(f"INSERT OR IGNORE INTO judgements VALUES ({','.join('?' * len(COLUMNS))})",
                                   [tuple(_plain(v) for v in row) for row in rows])
            return connection.total_changes - before

    def merge(self, other: Union[JudgementStore, str, Path]) -> int:
        """Add the judgements of another store (judged on another machine, say); returns how many were new.

        Raises:
            FileNotFoundError: ``other`` is a path to no file.
        """
        path = other.path if isinstance(other, JudgementStore) else Path(other)
        if not path.is_file():  # SQLite would create an empty file there
            raise FileNotFoundError(f"no judgement store at {path}")
        connection = self._connection()
        connection.execute("ATTACH DATABASE ? AS other", (str(path),))
        try:
            with _transaction(connection):
                connection.execute("INSERT OR IGNORE INTO provenances SELECT * FROM other.provenances")
                before = connection.total_changes
                connection.execute("INSERT OR IGNORE INTO judgements SELECT * FROM other.judgements")
                return connection.total_changes - before
        finally:
            connection.execute("DETACH DATABASE other")

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"JudgementStore({str(self.path)!r})"


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error): one writer at a time, each waiting its turn."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _storable(value: object) -> object:
    """A value SQLite can store: in text, a lone surrogate (which UTF-8 cannot encode) becomes U+FFFD.

    Only the readable copy changes; keys hash the exact text.
    """
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)


def _plain(value: object) -> object:
    """A NumPy scalar as the Python value SQLite takes."""
    return value.item() if isinstance(value, np.generic) else value
