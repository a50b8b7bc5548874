"""JSONL files of annotations: crash-safe appends, resumption, and reading them back for training."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Union

from pyterrier_reasonrank.prompts import LABELS


def record_key(record: dict) -> tuple:
    """What identifies an annotation: (qid, docno) for a judgement, (qid,) for generated queries."""
    return (str(record["qid"]), str(record["docno"])) if "docno" in record else (str(record["qid"]),)


class AnnotationStore:
    """An append-only JSONL file of annotations that survives being killed.

    On opening, a last line left half-written by a crash is cut off, and the keys of the finished
    records are read so that a rerun skips them. Each record is written as one ``write`` of a whole
    line and flushed, so a kill loses at most the line being written. Only one process may hold
    the file: a second one gets a clear error instead of interleaved lines.

    Args:
        path: The JSONL file (created with its folder if missing).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RuntimeError(f"another process is writing annotations to {self.path}; "
                               "wait for it to finish or choose another output") from None
        self.repaired_bytes = _cut_torn_tail(self._file)
        self.records = read_jsonl(self.path)
        self.done = {record_key(record) for record in self.records}

    def append(self, record: dict) -> None:
        """Write one record as a line, at once."""
        self._file.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._file.flush()
        self.records.append(record)
        self.done.add(record_key(record))

    def close(self) -> None:
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_torn_tail(file) -> int:
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


def read_jsonl(path: Union[str, Path]) -> list[dict]:
    """All records of a JSONL file; a line that is not JSON is an error naming its number."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not a JSON record ({error})") from None
    return records


def usable_judgements(records: Iterable[dict]) -> list[dict]:
    """The judgements a student can learn from: no ``error``, a label of 0, 1 or 2, an explanation."""
    return [r for r in records if not r.get("error") and r.get("label") in LABELS and r.get("explanation")]


def usable_query_lists(records: Iterable[dict]) -> list[dict]:
    """The query-generation annotations a student can learn from: no ``error``, at least one query."""
    return [r for r in records if not r.get("error") and r.get("queries")]


def summarize(records: Iterable[dict], *, new: Optional[int] = None) -> dict:
    """Counts of an annotation file: records, usable ones, errors by kind, labels, forced labels."""
    records = list(records)
    errors = Counter(_error_kind(r["error"]) for r in records if r.get("error"))
    summary = {
        "records": len(records),
        "usable": len(records) - sum(errors.values()),
        "errors": dict(sorted(errors.items())),
        "labels": {str(k): v for k, v in sorted(Counter(r["label"] for r in records
                                                        if r.get("label") is not None).items())},
        "forced": sum(bool(r.get("forced")) for r in records),
    }
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
