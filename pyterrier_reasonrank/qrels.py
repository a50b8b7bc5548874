"""Graded judgements (qrels) as the student's labels 0, 1, 2.

With a ``label_map`` (e.g. ``{1: 1, 2: 1, 3: 2, 4: 2}``) each grade maps as given, unlisted grades
to 0; otherwise a grade <= 0 is 0, the collection's highest grade is 2 and any grade in between is
1 (so binary qrels give 0 and 2). Training draws its gold labels this way, and calibration compares
the student's label distributions with them.
"""
from __future__ import annotations

from typing import Callable, Optional

import pandas as pd


def grade_to_label(label_map: Optional[dict], top_grade: int) -> Callable[[int], int]:
    """The function from a qrels grade to a label, as the module docstring describes."""
    if label_map is not None:
        return lambda grade: label_map.get(int(grade), 0)
    return lambda grade: 0 if grade <= 0 else 2 if grade >= top_grade else 1


def judged_labels(qrels: pd.DataFrame, label_map: Optional[dict] = None) -> pd.DataFrame:
    """The judged pairs as ``qid, docno, label`` (0, 1, 2), from qrels with graded ``label`` s.

    Excluded pairs (BRIGHT's label -100) are left out.
    """
    judged = qrels[qrels["label"] > -100]
    to_label = grade_to_label(label_map, int(judged["label"].max()))
    return judged.assign(qid=judged["qid"].astype(str), docno=judged["docno"].astype(str),
                         label=judged["label"].map(to_label))[["qid", "docno", "label"]]
