"""Teacher consensus: one record from ``k`` sampled answers of the teacher to the same pair.

ERank (arXiv 2509.00520, Section 3.2) sampled its teacher several times per pair and kept the
answer closest to the consensus; a 3-sample consensus raised its labels' nDCG@10 from 63.5 to
65.6, a 10-sample one to 67.4. Retro* (arXiv 2509.24869, Section 3.2.1) filters its SFT data the
same way. On a 0-2 scale the consensus is the majority label:

- a label more than half of the ``k`` answers give is the pair's label, with the explanation of
  the first answer that gives it;
- without a majority (``{0, 2}``, or ``{0, 1, 2}``) the pair is a *disagreement*: it is recorded
  with the answer whose label is closest to the answers' mean label (ERank's rule), marked
  ``disagreement: true``, and left out of training unless ``include_disagreements`` is set;
- an answer not in the format is a vote for no label; when every answer is one, the record is
  an error record, as a single bad answer is.

Every answer is kept in the record's ``samples``, and ``agreement`` is the share of them that
give the record's label.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from pyterrier_reasonrank.prompts import LABELS


def consensus(answers: Sequence[dict]) -> dict:
    """The record fields for the answers (each ``label``, ``explanation``, ``raw``, maybe ``error``) to one pair.

    Args:
        answers: The teacher's answers, in the order they were sampled.
    """
    answers = list(answers)
    labels = [a["label"] if not a.get("error") and a.get("label") in LABELS else None for a in answers]
    votes = Counter(label for label in labels if label is not None)
    if not votes:
        return {**answers[0], "samples": answers, "agreement": 0.0}
    label, count = votes.most_common(1)[0]
    fields: dict = {}
    if 2 * count <= len(answers):
        mean = float(np.mean([v for v in labels if v is not None]))
        label = min(votes, key=lambda v: (abs(v - mean), labels.index(v)))  # the closest, the first sampled on a tie
        fields["disagreement"] = True
    chosen = answers[labels.index(label)]
    return {**chosen, **fields, "samples": answers, "agreement": labels.count(label) / len(answers)}


def agreement_summary(records: Iterable[dict]) -> dict:
    """How far the teacher's samples agreed, over the records made by consensus (those with ``samples``)."""
    records = [r for r in records if "samples" in r]
    labelled = [r for r in records if r.get("label") is not None]
    return {"pairs": len(records), "samples": max(len(r["samples"]) for r in records),
            "unanimous": sum(r["agreement"] == 1.0 for r in labelled),
            "majority": sum(r["agreement"] < 1.0 and not r.get("disagreement") for r in labelled),
            "disagreements": sum(bool(r.get("disagreement")) for r in records),
            "agreement": round(float(np.mean([r["agreement"] for r in labelled])), 4) if labelled else 0.0}
