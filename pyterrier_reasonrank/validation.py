"""Checks on input frames that PyTerrier's own validation leaves to the transformer."""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Iterable

import pandas as pd


def is_blank(column: pd.Series) -> pd.Series:
    """True where a text column holds NaN, None or only white space (as text or bytes)."""
    return column.isna() | column.map(lambda value: isinstance(value, (str, bytes, bytearray))
                                      and not value.strip()).astype(bool)


def as_text(column: pd.Series) -> list[str]:
    """The column's values as Python strings, missing values as ``""``.

    Bytes are decoded as UTF-8 (an invalid sequence as U+FFFD) rather than written ``"b'...'"``.

    Not ``astype(str)``: pandas' string dtype refuses text that Python holds (a lone surrogate
    from a broken JSON escape), and the tokenizer deals with such text itself.
    """
    return [_text(value) for value in column]


def _text(value: object) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def require_text(frame: pd.DataFrame, column: str, *, who: str, what: str) -> None:
    """Raise a ``ValueError`` naming the qids whose ``column`` is missing or blank.

    Args:
        frame: The input frame (with ``qid``).
        column: The column that must hold text.
        who: The transformer, for the message.
        what: What the column holds, for the message (``"query"``, ``"question"``).
    """
    blank = is_blank(frame[column])
    if blank.any():
        raise ValueError(f"{who}: the {what} is missing or empty for qid(s) "
                         f"{_first_ten(frame.loc[blank, 'qid'].astype(str))}")


def require_pairs(frame: pd.DataFrame, *, who: str) -> None:
    """Raise a ``ValueError`` for rows that are no (query, document) pair, and warn of a pair given twice.

    No pair: a missing qid or docno, or qids of different kinds (``1`` and ``"1"``, which would group
    as one query in one place and as two in another). A pair given twice is judged and ranked each
    time, as given, with a warning: a ranking usually holds a document once.

    Args:
        frame: The input frame (with ``qid`` and ``docno``).
        who: The transformer, for the messages.
    """
    no_qid = is_blank(frame["qid"])
    if no_qid.any():
        raise ValueError(f"{who}: {int(no_qid.sum())} row(s) have no qid; give each document its query's qid")
    kinds = sorted({"str" if isinstance(qid, str) else "number" if isinstance(qid, numbers.Number)
                    else type(qid).__name__ for qid in frame["qid"]})
    if len(kinds) > 1:
        raise ValueError(f"{who}: the qids are of {len(kinds)} kinds ({', '.join(kinds)}); give them one kind "
                         "(PyTerrier's qids are strings)")
    no_docno = is_blank(frame["docno"])
    if no_docno.any():
        raise ValueError(f"{who}: the docno is missing for qid(s) {_first_ten(frame.loc[no_docno, 'qid'].astype(str))}")
    twice = frame.duplicated(["qid", "docno"])
    if twice.any():
        pairs = zip(frame.loc[twice, "qid"].astype(str), frame.loc[twice, "docno"].astype(str))
        warnings.warn(f"{who}: (qid, docno) pair(s) {_first_ten(pairs)} appear more than once; each row is judged "
                      "and ranked (drop_duplicates(['qid', 'docno']) keeps one)", stacklevel=3)


def _first_ten(values: Iterable) -> str:
    """The distinct values, in order, as a list of the first ten (`` ...`` after it when there are more)."""
    distinct = list(dict.fromkeys(values))
    return f"{distinct[:10]}{' ...' if len(distinct) > 10 else ''}"
