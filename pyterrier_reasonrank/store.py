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

A store is a PyTerrier artifact: a directory holding ``pt_meta.json`` (its type, format and
package) and one SQLite file, ``judgements.sqlite`` (write-ahead log, so several processes can read
and write at once; each batch of judgements is one transaction, so a killed run keeps every batch it
committed). ``pt.Artifact.load(path)`` opens it, and PyTerrier's artifact sharing packages it
(``store.to_hf("org/bright-judgements")``, ``JudgementStore.from_hf(...)``, ``build_package``,
``from_url``), a consistent snapshot even while others write. A store of the layout earlier releases, the
SQLite file alone, is opened and used as it is; to share it, merge it into a store directory. It
reads as a DataFrame, exports to and imports from Parquet, and merges with stores judged elsewhere.

Each judgement records the versions of the libraries that made it
(:func:`~pyterrier_reasonrank.versions.judging_versions`). They are not part of its key (or every
upgrade would empty every store): a judgement read back under other versions is served, with one
warning per set of versions naming the libraries that differ, so that a user knows when a stored
run may not be what this environment would judge.

A store checks what it opens before anything is judged: an SQLite file (its header), with the
store's tables, of a schema version it knows (``PRAGMA user_version``; a store written before the
version was recorded, with the tables of version 1, is version 1). A store of an older version is
brought up to this one when it is opened for writing (version 1 gains the library versions, none
recorded for its judgements); read-only, it is read as it is. Pages damaged beyond the tables'
first pages are found when a read reaches them (a full check would read the whole file at each
open). A store that cannot be written (a read-only file system, a file or folder without write
permission, or ``read_only=True``) serves what it holds, and the pairs it lacks are judged and not
saved (with one warning). Imported judgements (Parquet, another store) are checked like inputs.
SQLite's errors about the file (corrupted, full, locked) are a
:class:`~pyterrier_reasonrank.errors.StoreError` naming the store and the cause; a failed write
rolls back its own batch only, so every batch committed before it is kept.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import tempfile
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NoReturn, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt

from .errors import InputError, StoreError
from .identity import provenance_id
from .judgements import Judgements
from .versions import version_mismatch

COLUMNS = ["key", "provenance", "qid", "docno", "query", "document_sha256", "explanation", "p0", "p1", "p2", "forced",
           "tokens", "samples", "created", "versions"]
"""The columns of a store's records (``provenance`` is the id of a row of :meth:`JudgementStore.provenances`;
``versions`` the id of the library versions that made it, ``None`` where none were recorded)."""

SCHEMA_VERSION = 2
"""The version of the store's tables, recorded in the file (``PRAGMA user_version``); a newer one is refused.

1: judgements and their provenances; 2: and the library versions that made each judgement.
"""

_LAYOUTS = {1: {"provenances": ["id", "provenance"], "judgements": COLUMNS[:-1]},
            2: {"provenances": ["id", "provenance"], "judgements": COLUMNS, "versions": ["id", "versions"]}}
"""The tables of each schema version, and their columns."""

_SQLITE_HEADER = b"SQLite format 3\x00"

_VERSIONS_TABLE = "CREATE TABLE IF NOT EXISTS versions (id TEXT PRIMARY KEY, versions TEXT NOT NULL);"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS provenances (id TEXT PRIMARY KEY, provenance TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY, provenance TEXT NOT NULL, qid TEXT, docno TEXT, query TEXT, document_sha256 TEXT,
    explanation TEXT NOT NULL, p0 REAL NOT NULL, p1 REAL NOT NULL, p2 REAL NOT NULL, forced INTEGER NOT NULL,
    tokens INTEGER NOT NULL, samples INTEGER NOT NULL, created TEXT NOT NULL, versions TEXT);
{_VERSIONS_TABLE}
"""

_MIGRATIONS = {1: "ALTER TABLE judgements ADD COLUMN versions TEXT;" + _VERSIONS_TABLE}
"""What brings a store of each schema version to the next."""


DATABASE = "judgements.sqlite"
"""The SQLite file in a store's directory."""

_META = "pt_meta.json"
_OWN_FILES = {_META, DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", f"{DATABASE}-journal"}


class JudgementStore(pt.Artifact):
    """Judgements kept in a directory (a PyTerrier artifact) around one SQLite file, shared by processes and runs.

    .. code-block:: python

        store = JudgementStore("judgements")
        ranker = ReasonRanker(adapter="runs/paper-3b/refine", store=store)
        pt.Experiment([bm25 >> text >> ranker, ...], ...)   # a second run reads what the first judged
        store.frame()                                        # every judgement, for audits
        store.to_hf("org/bright-judgements")                 # shared: JudgementStore.from_hf(...)

    Attributes:
        path: The store's directory (for a store of the layout earlier releases: its SQLite file).
        file: The SQLite file.
        read_only: Whether it is read but not written (asked for, or the file cannot be written).
        read_only_reason: Why it is read-only (``None`` when it is not).
        schema_version: The schema version of the file (:data:`SCHEMA_VERSION`, or an older one read
            read-only).
    """

    ARTIFACT_TYPE = "judgement_store"
    ARTIFACT_FORMAT = "sqlite3"
    ARTIFACT_PACKAGE_HINT = "pyterrier-reasonrank"

    def __init__(self, path: Union[str, Path, None] = None, *, read_only: bool = False):
        """Open (or create) the store at ``path``, and check that it is a store this version can use.

        Args:
            path: The store's directory (created if need be), or the SQLite file of a store of the
                layout earlier releases. Default: ``judgements`` in ``$REASONRANK_CACHE``
                (``~/.cache/pyterrier_reasonrank``).
            read_only: Never write to it: the pairs it holds are served, the others judged and not
                saved. A store that cannot be written (a read-only file system, a file or folder
                without write permission) is opened so anyway.

        Raises:
            StoreError: ``path`` is a directory that is no judgement store (another artifact, or
                other files without ``pt_meta.json``); its SQLite file is no SQLite file, a database
                with other tables, a store of a newer schema version, or corrupted; or it cannot be
                created.
            FileNotFoundError: ``read_only`` and there is no store at ``path``.
        """
        if path is None:
            root = Path(os.environ.get("REASONRANK_CACHE", Path.home() / ".cache" / "pyterrier_reasonrank"))
            path = root / "judgements"
        super().__init__(path)
        self._asked_read_only = read_only
        self._warned_unsaved = False
        self._warned_versions: set[str] = set()
        self._local = threading.local()
        self.file = _database(self.path, read_only)
        try:
            self._open(read_only)
        except BaseException:
            self._close()  # (SQLite's -wal and -shm files go with the last connection)
            raise

    def _open(self, read_only: bool) -> None:
        """Check the file, then open it for writing if it can be written, else read-only."""
        _check_file(self.file)
        reason = "opened with read_only=True" if read_only else _unwritable(self.file)
        if reason is None:
            self._use(self.file.resolve().as_uri(), None)
            try:
                self._set_up()
                return
            except sqlite3.Error as error:  # SQLite saw what the file system did not say
                if _code(error) not in ("SQLITE_READONLY", "SQLITE_CANTOPEN") or not self.file.is_file():
                    self._raise(error, "could not open it")
                reason = f"SQLite cannot write it: {error}"
        if not self.file.is_file():
            if read_only:
                raise FileNotFoundError(f"no judgement store at {self.path}")
            raise StoreError(f"judgement store {self.path} cannot be created: {reason}")
        # A store is in WAL mode, whose readers need a -shm index beside the file; in a read-only
        # folder without one, SQLite can read only the file itself, as immutable (a -wal file's
        # last transactions, if one was left there, are then not seen).
        uri = self.file.resolve().as_uri() + "?mode=ro"
        for attempt in (uri, uri + "&immutable=1"):
            self._use(attempt, reason)
            try:
                self.schema_version = self._check_schema(self._connection()) or SCHEMA_VERSION
                return
            except sqlite3.Error as error:
                if _code(error) != "SQLITE_CANTOPEN" or attempt.endswith("immutable=1"):
                    self._raise(error, "could not open it")

    def _use(self, uri: str, read_only_reason: Optional[str]) -> None:
        """Connect to ``uri`` from now on (read-only when there is a reason)."""
        self._close()
        self._uri, self.read_only, self.read_only_reason = uri, read_only_reason is not None, read_only_reason

    def _close(self) -> None:
        """Close this thread's connection, if it has one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            del self._local.connection

    def _set_up(self) -> None:
        """Check the tables and version of the store, creating them in a new file and bringing an old one up to date.

        Under a write lock, so that two processes creating (or updating) one store take turns.
        """
        connection = self._connection()
        with _transaction(connection):
            recorded = self._check_schema(connection)
            if recorded is None:
                _execute(connection, _SCHEMA)
            else:
                for version in range(recorded, SCHEMA_VERSION):
                    _execute(connection, _MIGRATIONS[version])
            if recorded != SCHEMA_VERSION:  # (a store up to date is not written: its disk may be full)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.schema_version = SCHEMA_VERSION
        connection.execute("PRAGMA journal_mode=WAL")  # only now that the file is known to be a store

    def _check_schema(self, connection: sqlite3.Connection) -> Optional[int]:
        """The schema version of the file, once its tables are checked; ``None`` for an empty file.

        A file that records no version, with tables, is version 1 (written before versions were recorded).

        Raises:
            StoreError: A newer schema version, or not the store's tables.
        """
        recorded = connection.execute("PRAGMA user_version").fetchone()[0]
        if recorded > SCHEMA_VERSION:
            raise StoreError(f"judgement store {self.file} has schema version {recorded}, from a newer "
                             f"pyterrier-reasonrank; this one reads version {SCHEMA_VERSION} (upgrade it to use "
                             f"this store)")
        tables = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name")]
        if not tables and recorded == 0:
            return None
        version = max(recorded, 1)
        layout = _LAYOUTS[version]
        if not set(layout) <= set(tables):
            raise StoreError(f"{self.file} is not a judgement store: it holds the tables {tables}, not "
                             f"{list(layout)}")
        for table, columns in layout.items():
            found = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            if found != columns:
                unknown, lacking = [c for c in found if c not in columns], [c for c in columns if c not in found]
                what = " and ".join([*([f"the columns {unknown}, which it does not know"] if unknown else []),
                                     *([f"no {lacking}"] if lacking else [])]) or "its columns in another order"
                raise StoreError(f"{self.file} is not a judgement store of schema version {version}: its "
                                 f"{table} table has {what}")
        # Each table's and key index's first page: a store damaged there is found now, not mid-run.
        for table, key in (("provenances", "id"), ("judgements", "key")):
            connection.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
            connection.execute(f"SELECT {key} FROM {table} WHERE {key} = ''").fetchall()
        return version

    @property
    def _versions_column(self) -> str:
        """The ``versions`` column as SQL selects it from this file (one of version 1 recorded no versions)."""
        return "versions" if self.schema_version >= 2 else "NULL AS versions"

    @property
    def _selected(self) -> str:
        """The columns of :data:`COLUMNS` as SQL selects them from this file."""
        return ", ".join(self._versions_column if column == "versions" else column for column in COLUMNS)

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread and process (SQLite connections may not cross either).
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            connection = sqlite3.connect(self._uri, uri=True, timeout=120, isolation_level=None)
            if not self.read_only:
                connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _raise(self, error: sqlite3.Error, doing: str, then: str = "") -> NoReturn:
        """Raise an SQLite error about the file as a :class:`StoreError` naming the store; any other as it is."""
        cause = _cause(error)
        if cause is None:
            raise error
        raise StoreError(f"judgement store {self.file}: {doing}: {cause}{then}") from error

    @contextlib.contextmanager
    def _failing(self, doing: str, then: str = "") -> Iterator[None]:
        """SQLite's errors about the file, raised as :class:`StoreError` (see :meth:`_raise`)."""
        try:
            yield
        except sqlite3.Error as error:
            self._raise(error, doing, then)

    def lookup(self, keys: Sequence[str], versions: Optional[Mapping[str, str]] = None
               ) -> tuple[np.ndarray, Judgements]:
        """The stored judgements of those keys that are in the store.

        Args:
            keys: The judgements' keys.
            versions: The library versions the caller would judge with (see
                :func:`~pyterrier_reasonrank.versions.judging_versions`): judgements recorded under
                others are served, and a warning names the libraries that differ (once per set of
                versions). ``None``: no check.

        Returns:
            The positions in ``keys`` of those found (in order), and their judgements.
        """
        found: dict[str, tuple] = {}
        with self._failing("could not read it"):
            connection = self._connection()
            for start in range(0, len(keys), 500):  # SQLite caps the parameters of one statement
                chunk = list(keys[start:start + 500])
                rows = connection.execute(
                    f"SELECT key, explanation, p0, p1, p2, forced, tokens, samples, {self._versions_column} "
                    f"FROM judgements WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                for key, *row in rows:
                    found[key] = row
        if versions is not None:
            self._check_versions({row[7] for row in found.values()} - {None}, versions)
        positions = np.array([i for i, key in enumerate(keys) if key in found], dtype=np.int64)
        rows = [found[keys[i]] for i in positions]
        return positions, Judgements.of([row[0] for row in rows], [row[1:4] for row in rows],
                                        [bool(row[4]) for row in rows], [row[5] for row in rows],
                                        [row[6] for row in rows])

    def add(self, provenance: dict, pairs: Sequence[dict], judgements: Judgements,
            versions: Optional[Mapping[str, str]] = None) -> int:
        """Keep judgements of one provenance, in one transaction; returns how many were new.

        A read-only store keeps none (and warns, once).

        Args:
            provenance: What made them (see :mod:`~pyterrier_reasonrank.identity`).
            pairs: What each judgement is of: its ``key``, ``qid``, ``docno``, ``query`` and
                ``document_sha256``.
            judgements: The judgements, in the order of ``pairs``.
            versions: The versions of the libraries that made them (see
                :func:`~pyterrier_reasonrank.versions.judging_versions`); ``None``: not recorded.

        Raises:
            StoreError: The write failed (a full disk, say); the judgements added before are kept.
        """
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        identity = provenance_id(provenance)
        versions_text = None if versions is None else json.dumps(dict(versions), sort_keys=True)
        versions_id = None if versions is None else provenance_id(dict(versions))  # the same canonical hash
        rows = [(pair["key"], identity, _storable(pair["qid"]), _storable(pair["docno"]), _storable(pair["query"]),
                 pair["document_sha256"], _storable(explanation), *map(float, probabilities), int(forced), int(tokens),
                 int(samples), created, versions_id)
                for pair, explanation, probabilities, forced, tokens, samples in zip(
                    pairs, judgements.explanations, judgements.probabilities, judgements.forced, judgements.tokens,
                    judgements.samples)]
        if self.read_only:
            self._not_saved()
            return 0
        connection = self._connection()
        try:
            with _transaction(connection):
                connection.execute("INSERT OR IGNORE INTO provenances VALUES (?, ?)",
                                   (identity, json.dumps(provenance, sort_keys=True, default=str)))
                if versions_id is not None:
                    connection.execute("INSERT OR IGNORE INTO versions VALUES (?, ?)", (versions_id, versions_text))
                before = connection.total_changes
                connection.executemany(_INSERT, rows)
                return connection.total_changes - before
        except sqlite3.Error as error:
            if _code(error) == "SQLITE_READONLY":  # read-only in a way the file system did not tell
                self.read_only, self.read_only_reason = True, f"SQLite cannot write it: {error}"
                self._not_saved()
                return 0
            self._raise(error, f"could not save {len(rows)} judgements", "; the judgements saved before are kept")

    def _not_saved(self) -> None:
        if not self._warned_unsaved:
            self._warned_unsaved = True
            warnings.warn(f"judgement store {self.file} is read-only ({self.read_only_reason}): it serves the pairs "
                          f"it holds; the pairs it lacks are judged but not saved", stacklevel=3)

    def _check_versions(self, identities: set[str], current: Mapping[str, str]) -> None:
        """Warn (once per set of versions) where judgements served were made with other library versions.

        Only the libraries named on both sides are compared: a judgement made by the transformers
        backend is not stale because vLLM, which did not make it, is installed now.
        """
        unseen = identities - self._warned_versions
        if not unseen:
            return
        texts = self._versions_texts()
        for identity in sorted(unseen):
            self._warned_versions.add(identity)
            recorded = json.loads(texts[identity])
            problem = version_mismatch({name: recorded[name] for name in recorded if name in current},
                                       {name: current[name] for name in current if name in recorded})
            if problem is not None:
                warnings.warn(f"judgement store {self.file}: {problem}, for judgements it serves; they are served "
                              f"as stored (versions are not part of a judgement's key: judge again into a new "
                              f"store to compare)", stacklevel=3)

    def frame(self) -> pd.DataFrame:
        """Every judgement, for audits of explanations and comparisons (with a teacher's, say).

        The columns are those of :data:`COLUMNS`, ``mode``, ``model`` and ``adapter`` from the
        provenance, and ``library_versions`` (a dict; ``None`` where none were recorded).
        """
        with self._failing("could not read it"):
            frame = pd.read_sql_query(f"SELECT {self._selected} FROM judgements ORDER BY created, key",
                                      self._connection())
        provenances = {identity: json.loads(text) for identity, text in self._provenance_texts().items()}
        for field in ("mode", "model", "adapter"):
            frame[field] = [provenances[p].get(field) for p in frame["provenance"]]
        versions = {identity: json.loads(text) for identity, text in self._versions_texts().items()}
        frame["library_versions"] = [versions.get(v) for v in frame["versions"]]
        frame["forced"] = frame["forced"].astype(bool)
        return frame

    def provenances(self) -> pd.DataFrame:
        """Every provenance in the store: ``id`` and its fields."""
        texts = self._provenance_texts()
        return pd.DataFrame([{"id": identity, **json.loads(text)} for identity, text in texts.items()])

    def _provenance_texts(self) -> dict[str, str]:
        with self._failing("could not read it"):
            return dict(self._connection().execute("SELECT id, provenance FROM provenances").fetchall())

    def _versions_texts(self) -> dict[str, str]:
        if self.schema_version < 2:
            return {}
        with self._failing("could not read it"):
            return dict(self._connection().execute("SELECT id, versions FROM versions").fetchall())

    def _judgement_chunks(self, size: int = 10_000) -> Iterator[pd.DataFrame]:
        """Every judgement, in the order they were added, ``size`` at a time."""
        with self._failing("could not read it"):
            yield from pd.read_sql_query(f"SELECT {self._selected} FROM judgements ORDER BY rowid",
                                         self._connection(), chunksize=size)

    def to_parquet(self, path: Union[str, Path]) -> Path:
        """Export every judgement, with its provenance and library versions, to Parquet (see :meth:`import_parquet`)."""
        frame = self.frame()[COLUMNS]
        frame = frame.assign(provenance_json=frame["provenance"].map(self._provenance_texts()),
                             versions_json=frame["versions"].map(self._versions_texts()))
        frame.to_parquet(path, index=False)
        return Path(path)

    def import_parquet(self, path: Union[str, Path]) -> int:
        """Add the judgements of a Parquet export (judgements already here are kept); returns how many were new.

        Each judgement is checked as an input is (all or none are added): its columns, their types,
        probabilities in [0, 1] that sum to 1, and a provenance (and library versions) whose id is its
        hash. An export of a store that recorded no versions (``versions`` and ``versions_json``
        absent) is imported without them.

        Raises:
            InputError: The file is not a Parquet export of a store, or a judgement in it is malformed;
                the error names the file and the row (counted from 0, as pandas reads it).
            StoreError: This store is read-only, or the write failed.
        """
        try:
            frame = pd.read_parquet(path)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{path} is not a Parquet file: {error}") from None
        if "versions" not in frame.columns and "versions_json" not in frame.columns:  # exported before versions
            frame = frame.assign(versions=None, versions_json=None)
        missing = [column for column in [*COLUMNS, "provenance_json", "versions_json"] if column not in frame.columns]
        if missing:
            raise InputError(f"{path} is not an export of a judgement store: it lacks the columns {missing}")
        texts: dict[str, dict[str, str]] = {"provenance": {}, "versions": {}}
        for field, records in texts.items():
            pairs = frame[[field, f"{field}_json"]].astype(object).drop_duplicates()
            if field == "versions":  # (a judgement may have none; one without a provenance is refused below)
                pairs = pairs.dropna(subset=[field])
            for row, identity, text in zip(pairs.index, pairs[field], pairs[f"{field}_json"]):
                problem = _record_problem(field, identity, text, f"{field}_json")
                if problem is not None:
                    raise InputError(f"{path}, row {row}: {problem}")
                records[identity] = text
        return self._insert([frame], texts["provenance"], texts["versions"], str(path))

    def merge(self, other: Union[JudgementStore, str, Path]) -> int:
        """Add the judgements of another store (judged on another machine, say); returns how many were new.

        The other store is checked as the constructor checks a store, and its judgements as
        :meth:`import_parquet` checks them. Merging a store into itself adds nothing.

        Raises:
            FileNotFoundError: ``other`` is a path to no file.
            StoreError: ``other`` is not a judgement store this version can read, this store is
                read-only, or the write failed.
            InputError: A judgement of ``other`` is malformed (the error names the row).
        """
        path = other.path if isinstance(other, JudgementStore) else Path(other)
        if not _database_of(path).is_file():  # SQLite would create an empty file there
            raise FileNotFoundError(f"no judgement store at {path}")
        if self.file.is_file() and os.path.samefile(_database_of(path), self.file):
            return 0  # (SQLite would wait for its own lock)
        source = JudgementStore(path, read_only=True)
        texts = {"provenance": source._provenance_texts(), "versions": source._versions_texts()}
        for field, records in texts.items():
            for identity, text in records.items():
                problem = _record_problem(field, identity, text, "its JSON")
                if problem is not None:
                    raise InputError(f"judgement store {source.file}, {field} {identity!r}: {problem}")
        return self._insert(source._judgement_chunks(), texts["provenance"], texts["versions"],
                            f"judgement store {source.file}")

    def _insert(self, frames: Iterable[pd.DataFrame], provenances: dict[str, str], versions: dict[str, str],
                source: str) -> int:
        """Check and add the judgements of ``frames`` (rows counted on across them), in one transaction."""
        if self.read_only:
            raise StoreError(f"judgement store {self.file} is read-only ({self.read_only_reason}): the judgements "
                             f"of {source} cannot be added to it")
        connection = self._connection()
        with self._failing(f"could not add the judgements of {source}", "; nothing of it was added"):
            with _transaction(connection):
                before, first, used, used_versions = connection.total_changes, 0, set(), set()
                for frame in frames:
                    rows = _checked_rows(frame, provenances, versions, source, first)
                    first += len(frame)
                    used.update(row[1] for row in rows)
                    used_versions.update(row[-1] for row in rows if row[-1] is not None)
                    connection.executemany(_INSERT, rows)
                new = connection.total_changes - before
                connection.executemany("INSERT OR IGNORE INTO provenances VALUES (?, ?)",
                                       [(identity, provenances[identity]) for identity in sorted(used)])
                connection.executemany("INSERT OR IGNORE INTO versions VALUES (?, ?)",
                                       [(identity, versions[identity]) for identity in sorted(used_versions)])
                return new

    def revision(self) -> int:
        """A number that grows with each judgement added: what :meth:`snapshot` takes as ``since``."""
        with self._failing("could not read it"):
            return self._connection().execute("SELECT COALESCE(MAX(rowid), 0) FROM judgements").fetchone()[0]

    def snapshot(self, path: Union[str, Path], *, since: int = 0) -> Path:
        """Write a consistent copy of the store, as it is now, to a new store directory ``path``.

        Others may write to the store meanwhile. The copy is one self-contained SQLite file (no
        write-ahead log) beside its ``pt_meta.json``, ready to package or to send elsewhere.

        Args:
            path: The new directory.
            since: Only the judgements added after this :meth:`revision` (with every provenance),
                e.g. to send what a worker judged to be merged elsewhere.

        Raises:
            StoreError: ``path`` exists already, or the store could not be read.
        """
        target = Path(path)
        if target.exists():
            raise StoreError(f"{target} exists: a snapshot of judgement store {self.path} is written to a new "
                             "directory")
        target.mkdir(parents=True)
        destination = sqlite3.connect(_database(target, read_only=False))
        try:
            with self._failing("could not copy it"):
                self._connection().backup(destination)
            if since:
                destination.execute("DELETE FROM judgements WHERE rowid <= ?", (since,))
                destination.commit()
                destination.execute("VACUUM")
            destination.execute("PRAGMA journal_mode=DELETE")  # a reader needs no -wal or -shm beside it
        finally:
            destination.close()
        return target

    def build_package(self, package_path: Optional[str] = None, **options: Any) -> str:
        """Package a snapshot of the store as one file, as :meth:`pyterrier.Artifact.build_package` does.

        ``to_hf``, ``to_zenodo`` and ``to_p2p`` share what this packages; ``from_url`` and ``from_hf``
        open it again. The snapshot is consistent even while others write (see :meth:`snapshot`).

        Raises:
            StoreError: The store is one SQLite file (the earlier layout), not a directory: merge it
                into a store directory to share it.
        """
        if self.path.is_file():
            raise StoreError(f"judgement store {self.path} is one SQLite file (the earlier layout), not a store "
                             f"directory: to share it, merge it into one: "
                             f"JudgementStore(<new directory>).merge({str(self.path)!r})")
        with tempfile.TemporaryDirectory() as folder:
            snapshot = self.snapshot(Path(folder) / self.path.name)
            return pt.Artifact(snapshot).build_package(f"{self.path}.tar.lz4" if package_path is None
                                                       else package_path, **options)

    def __len__(self) -> int:
        with self._failing("could not read it"):
            return self._connection().execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    def __getstate__(self) -> dict:
        return {"path": self.path, "read_only": self._asked_read_only}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], read_only=state.get("read_only", False))

    def __repr__(self) -> str:
        return f"JudgementStore({str(self.path)!r}{', read_only=True' if self._asked_read_only else ''})"


_INSERT = f"INSERT OR IGNORE INTO judgements VALUES ({','.join('?' * len(COLUMNS))})"

# SQLite's result codes for what is wrong with the file, not with this code: (the code's name, its
# message for Pythons before 3.11, which do not name it; what it means for a store).
_CAUSES = {
    "SQLITE_NOTADB": ("file is not a database", "it is not an SQLite database"),
    "SQLITE_CORRUPT": ("malformed", "it is corrupted, truncated or overwritten"),
    "SQLITE_FULL": ("is full", "the disk is full"),
    "SQLITE_IOERR": ("disk I/O error", "a disk I/O error, as on a full disk or past a file-size limit"),
    "SQLITE_READONLY": ("readonly database", "it is read-only"),
    "SQLITE_CANTOPEN": ("unable to open", "it cannot be opened"),
    "SQLITE_BUSY": ("is locked", "another process kept it locked for minutes"),
}


def _code(error: BaseException) -> Optional[str]:
    """The SQLite result code (of :data:`_CAUSES`) of an error about the file; ``None`` for any other error."""
    name = getattr(error, "sqlite_errorname", None)
    for code, (message, _) in _CAUSES.items():
        if name.startswith(code) if name else message in str(error):
            return code
    return None


def _cause(error: BaseException) -> Optional[str]:
    """What an SQLite error says about the store file, in words; ``None`` when it is not about the file (a bug)."""
    code = _code(error)
    return None if code is None else f"{_CAUSES[code][1]} (SQLite: {error})"


def _check_file(path: Path) -> None:
    """Refuse what is plainly no SQLite file, before SQLite opens it (and writes to it)."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a judgement store's SQLite file")
    if path.is_file():
        with open(path, "rb") as file:
            head = file.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:  # (an empty file is a new store)
            raise StoreError(f"{path} is not a judgement store: it is not an SQLite file (it starts with {head!r})")


def _database(path: Path, read_only: bool) -> Path:
    """The SQLite file of the store at ``path``, once its directory is checked (and, for a new store, made).

    A store's directory gets its ``pt_meta.json`` when it lacks one and can be written. Several processes
    may create one store at once: each step tolerates the others'.

    Raises:
        StoreError: ``path`` is a directory that is not a judgement store, or a new store cannot be made there.
        FileNotFoundError: ``read_only`` and there is nothing at ``path``.
    """
    if path.is_file():
        return path  # the layout earlier releases: the SQLite file alone
    if path.is_dir():
        _check_directory(path)
    elif read_only:
        raise FileNotFoundError(f"no judgement store at {path}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        reason = _unwritable(path)
        if reason is not None:
            raise StoreError(f"judgement store {path} cannot be created: {reason}")
        path.mkdir(exist_ok=True)
    if not read_only and not (path / _META).is_file() and _unwritable(path / _META) is None:
        metadata = {"type": JudgementStore.ARTIFACT_TYPE, "format": JudgementStore.ARTIFACT_FORMAT,
                    "package_hint": JudgementStore.ARTIFACT_PACKAGE_HINT}
        temporary = path / f".{_META}.{os.getpid()}"  # then renamed: no reader sees half a file
        temporary.write_text(json.dumps(metadata) + "\n")
        os.replace(temporary, path / _META)
    return path / DATABASE


def _database_of(path: Path) -> Path:
    """Where the SQLite file of the store at ``path`` is (nothing is checked or made)."""
    return path / DATABASE if path.is_dir() else path


def _check_directory(path: Path) -> None:
    """Refuse a directory that is not a judgement store: another artifact, or other files and no ``pt_meta.json``."""
    meta = path / _META
    if meta.is_file():
        try:
            fields = json.loads(meta.read_text())
        except (ValueError, OSError) as error:
            raise StoreError(f"{meta} is not a judgement store's metadata: {error}") from None
        kind = (fields.get("type"), fields.get("format")) if isinstance(fields, dict) else (None, None)
        if kind != (JudgementStore.ARTIFACT_TYPE, JudgementStore.ARTIFACT_FORMAT):
            raise StoreError(f"{path} is not a judgement store: its {_META} says it is a {kind[0]}.{kind[1]} "
                             f"artifact, not a {JudgementStore.ARTIFACT_TYPE}.{JudgementStore.ARTIFACT_FORMAT}")
        return
    others = sorted(name for name in os.listdir(path) if name not in _OWN_FILES and not name.startswith(f".{_META}."))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise StoreError(f"{path} is a directory, not a judgement store: it has no {_META}, and other files ({shown})")


def _unwritable(path: Path) -> Optional[str]:
    """Why the file system will not let the store at ``path`` be written; ``None`` when it will.

    The folder counts: SQLite keeps a store's log (-wal) and index (-shm) beside it.
    """
    folder = path.parent
    if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY:
        return "it is on a read-only file system"
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is not writable"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "its folder is not writable"
    return None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _record_problem(kind: str, identity: object, text: object, field: str) -> Optional[str]:
    """What is wrong with a provenance or a set of library versions (``kind``): its id, and its JSON text in ``field``.

    ``None`` when nothing is. Both are identified by the SHA-256 of their canonical JSON.
    """
    if not isinstance(identity, str) or not _SHA256.fullmatch(identity):
        return f"{kind} is {_shown(identity)}, not a SHA-256 in hex"
    if not isinstance(text, str):
        return f"{field} is {_shown(text)}, not JSON text"
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as error:
        return f"{field} is not JSON ({error})"
    if not isinstance(fields, dict):
        return f"{field} is {_shown(fields)}, not a JSON object"
    if kind == "versions" and not all(isinstance(value, str) for value in fields.values()):
        return f"{field} is {_shown(fields)}, not library names and their versions"
    if provenance_id(fields) != identity:
        return f"{field} is not the {kind} whose id is {identity} (it was edited)"
    return None


def _real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and math.isfinite(value)


def _count(value: object) -> bool:
    return _real(value) and float(value).is_integer() and value >= 0


# The check of each column of an imported judgement: (columns, test, what a value that fails is not).
_CHECKS = [
    (("key", "document_sha256"), lambda v: isinstance(v, str) and bool(_SHA256.fullmatch(v)), "a SHA-256 in hex"),
    (("qid", "docno", "query"), lambda v: v is None or isinstance(v, str), "text"),
    (("explanation", "created"), lambda v: isinstance(v, str), "text"),
    (("p0", "p1", "p2"), lambda v: _real(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    (("forced",), lambda v: isinstance(v, (bool, np.bool_)) or (_count(v) and v <= 1), "true or false"),
    (("tokens", "samples"), _count, "a count (a whole number, 0 or more)"),
]


def _checked_rows(frame: pd.DataFrame, provenances: dict[str, str], versions: dict[str, str], source: str,
                  first: int) -> list[tuple]:
    """The judgements of ``frame`` as rows to insert, checked as inputs are.

    Raises:
        InputError: The first malformed row, named by its position (``first`` + its row in ``frame``).
    """
    values = frame[COLUMNS].astype(object).where(frame[COLUMNS].notna(), None)
    problems = []
    for columns, test, wanted in _CHECKS:
        for column in columns:
            failing = ~values[column].map(test).astype(bool).to_numpy()
            if failing.any():
                row = int(np.argmax(failing))
                problems.append((row, f"{column} is {_shown(values[column].iloc[row])}, not {wanted}"))
    failing = ~values["provenance"].map(lambda v: isinstance(v, str) and v in provenances).astype(bool).to_numpy()
    if failing.any():
        row = int(np.argmax(failing))
        problems.append((row, f"provenance {_shown(values['provenance'].iloc[row])} has no provenance_json"))
    failing = ~values["versions"].map(lambda v: v is None or v in versions).astype(bool).to_numpy()
    if failing.any():
        row = int(np.argmax(failing))
        problems.append((row, f"versions {_shown(values['versions'].iloc[row])} has no versions_json"))
    if not problems:
        totals = values[["p0", "p1", "p2"]].astype(float).sum(axis=1).to_numpy()
        failing = np.abs(totals - 1) > 1e-3
        if failing.any():
            row = int(np.argmax(failing))
            problems.append((row, f"p0, p1 and p2 sum to {totals[row]:g}, not 1"))
    if problems:
        row, problem = min(problems)
        raise InputError(f"{source}, row {first + row}: {problem}")
    for column, kind in (("forced", int), ("tokens", int), ("samples", int), ("p0", float), ("p1", float),
                         ("p2", float)):
        values[column] = values[column].map(kind)
    return [tuple(_plain(v) for v in row) for row in values.itertuples(index=False)]


def _shown(value: object) -> str:
    """A value as an error message shows it: its repr, cut to 40 characters."""
    text = repr(_plain(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _execute(connection: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script``, in the transaction open (``executescript`` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


@contextlib.contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error): one writer at a time, each waiting its turn.

    SQLite may have rolled back already (a full disk): then there is nothing to roll back, and the
    error raised is the one that ended the transaction.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


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
