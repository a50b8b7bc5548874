"""JSONL files of annotations: crash-safe appends, resumption, and reading them back for training."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterable, Optional, Sequence, Union

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.prompts import LABELS
from pyterrier_reasonrank.redaction import scrub

from .consensus import agreement_summary

if TYPE_CHECKING:
    from types import TracebackType


def record_key(record: dict) -> tuple:
    """What identifies an annotation: (qid, docno) for a judgement, (qid,) for generated queries."""
    return (str(record["qid"]), str(record["docno"])) if "docno" in record else (str(record["qid"]),)


class AnnotationStore:
    """An append-only JSONL file of annotations that survives being killed.

    On opening, a last line left half-written by a crash is cut off, and the keys of the finished
    records are read so that a rerun skips them. Each record is written as one ``write`` of a whole
    line and flushed, so a kill loses at most the line being written. Only one process may hold
    the file: a second one gets a clear error instead of interleaved lines. Every secret given is
    replaced by ``***`` in what is written (a teacher may repeat a key it was shown or sent).
    """

    def __init__(self, path: Union[str, Path], *, secrets: Sequence[str] = ()):
        """Open and lock the file, cut off a torn last line, and read the records already written.

        Args:
            path: The JSONL file (created with its folder if missing).
            secrets: Strings that must never reach the file (see :mod:`pyterrier_reasonrank.redaction`).

        Raises:
            InputError: Another process holds the file.
        """
        self.path = Path(path)
        self.secrets = tuple(secrets)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise InputError(f"another process is writing annotations to {self.path}; "
                             "wait for it to finish or choose another output") from None
        self.repaired_bytes = _cut_torn_tail(self._file)
        self.records = read_jsonl(self.path)
        self.done = {record_key(record) for record in self.records}

    def append(self, record: dict) -> None:
        """Write one record as a line, at once, with the secrets masked."""
        record = scrub(record, self.secrets)
        try:
            self._file.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            self._file.flush()
        except OSError as error:  # a full disk: say which file (a rerun repairs a torn last line)
            raise OSError(error.errno, error.strerror, str(self.path)) from error
        self.records.append(record)
        self.done.add(record_key(record))

    def close(self) -> None:
        """Sync the file to disk and close it (which releases the lock)."""
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(OSError):  # the error in flight (a full disk, say) is the one to report
            self.close()


def _cut_torn_tail(file: IO[bytes]) -> int:
    """Truncate an unfinished last line (no newline at the end); returns the bytes removed."""
    size = file.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    position = size
    while position > 0:
        step = min(65536, position)
        file.seek(position - step)
        chunk = file.read(step)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = position - step + newline + 1
            break
        position -= step
    else:
        end = 0
    if end < size:
        file.truncate(end)
    file.seek(0, os.SEEK_END)
    return size - end


PAIR_FIELDS = ("query", "text")
"""What every record of a query-document pair holds (annotations, held-out pairs)."""


def read_jsonl(path: Union[str, Path], *, required: Sequence[str] = ()) -> list[dict]:
    """All records of a JSONL file.

    Args:
        path: The file.
        required: Fields every record must hold as text (``query`` also not blank).

    Raises:
        InputError: A line is not JSON, not a JSON object, or lacks a required field; the error
            names the file and the line.
        FileNotFoundError: There is no such file.
    """
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}, line {number}: not a JSON record ({error})") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}, line {number}: a record is a JSON object, not {type(record).__name__} "
                                 f"({line.strip()[:40]})")
            missing = [name for name in required if not isinstance(record.get(name), str)
                       or (name == "query" and not record[name].strip())]
            if missing:
                raise InputError(f"{path}, line {number}: no {' or '.join(repr(m) for m in missing)} text in the "
                                 f"record (each record needs {', '.join(required)})")
            records.append(record)
    return records


LABEL_SOURCES = ("gold_or_teacher", "gold", "teacher")


def target_label(record: dict, source: str = "gold_or_teacher") -> Optional[int]:
    """The label a pair should get: its gold label, the teacher's, or the gold one when known else the teacher's."""
    if source not in LABEL_SOURCES:
        raise InputError(f"label source must be one of {LABEL_SOURCES}, got {source!r}")
    gold, teacher = record.get("gold_label"), record.get("label")
    if source == "gold":
        return gold
    if source == "teacher":
        return teacher
    return gold if gold is not None else teacher


def labelled_pairs(path: Union[str, Path], label_source: str = "gold_or_teacher", *,
                   include_disagreements: bool = False) -> list[dict]:
    """The pairs of a JSONL file that have a target label (see :func:`target_label`), in key order.

    Key order, because a file's order depends on when the teacher's answers arrived. Pairs whose
    teacher samples disagreed (see :mod:`.consensus`) are left out unless ``include_disagreements``.

    Raises:
        InputError: The file holds none, or a record is not a pair (see :func:`read_jsonl`).
    """
    records = [r for r in read_jsonl(path, required=PAIR_FIELDS) if target_label(r, label_source) is not None
               and (include_disagreements or not r.get("disagreement"))]
    if not records:
        raise InputError(f"{path} holds no pairs with a {label_source.replace('_', ' ')} label")
    return sorted(records, key=record_key)


def usable_judgements(records: Iterable[dict], *, include_disagreements: bool = False) -> list[dict]:
    """The judgements a student can learn from: no ``error``, a label of 0, 1 or 2, an explanation.

    A judgement whose teacher samples disagreed (see :mod:`.consensus`) is one only with
    ``include_disagreements``.
    """
    return [r for r in records if not r.get("error") and r.get("label") in LABELS and r.get("explanation")
            and (include_disagreements or not r.get("disagreement"))]


def usable_query_lists(records: Iterable[dict]) -> list[dict]:
    """The query-generation annotations a student can learn from: no ``error``, at least one query."""
    return [r for r in records if not r.get("error") and r.get("queries")]


def summarize(records: Iterable[dict], *, new: Optional[int] = None) -> dict:
    """Counts of an annotation file: records, usable ones, errors by kind, labels, forced labels.

    A file annotated by teacher consensus also gets ``consensus``: how far the samples agreed (see
    :func:`.consensus.agreement_summary`); its disagreements are not counted usable.
    """
    records = list(records)
    errors = Counter(_error_kind(r["error"]) for r in records if r.get("error"))
    disagreements = sum(bool(r.get("disagreement")) for r in records)
    summary = {
        "records": len(records),
        "usable": len(records) - sum(errors.values()) - disagreements,
        "errors": dict(sorted(errors.items())),
        "labels": {str(k): v for k, v in sorted(Counter(r["label"] for r in records
                                                        if r.get("label") is not None).items())},
        "forced": sum(bool(r.get("forced")) for r in records),
    }
    if any("samples" in r for r in records):
        summary["consensus"] = agreement_summary(records)
    if new is not None:
        summary["new"] = new
    return summary


def _error_kind(error: str) -> str:
    # "label '7' is not one of [0, 1, 2]" and "label 'x' ..." are one kind of error.
    return re.sub(r"label '[^']*'", "label '...'", error)


def file_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file (recorded in run cards, so a model can be traced to its data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
