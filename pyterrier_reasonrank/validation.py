"""Checks on input frames that PyTerrier's own validation leaves to the transformer."""
from __future__ import annotations

import math

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
        qids = list(dict.fromkeys(frame.loc[blank, "qid"].astype(str)))
        raise ValueError(f"{who}: the {what} is missing or empty for qid(s) {qids[:10]}"
                         f"{' ...' if len(qids) > 10 else ''}")
