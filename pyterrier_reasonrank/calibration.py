"""Calibrated, thresholdable scores: whether label distributions mean what they say, and a temperature to mend them.

RAG users keep the documents whose score passes a threshold, which needs probabilities that mean
what they say; after reasoning, label distributions tend to collapse towards 0 or 1. Measured
against graded judgements (qrels mapped to the labels 0, 1, 2):

- the **expected calibration error** of the expected label, scaled to [0, 1]: pairs are put in
  bins by their score / 2, and each bin's mean score is compared with its mean judged label / 2;
- the same of the label distribution: each pair's most probable label, its probability (the
  confidence) against whether it is the judged label;
- a **reliability diagram** of both (PNG).

A temperature on the label logits per mode (:func:`fit_temperature`, fitted on held-out judged
pairs by the negative log-likelihood of their labels) is saved in the student's settings and used
by ``ReasonRanker`` for the pairs that mode judged, unless overridden (fitting it on a student is
:mod:`~pyterrier_reasonrank.calibrating`'s). It is fitted only on judged
pairs that can pin it down: at least :data:`MIN_PAIRS` of them, carrying at least two labels (qrels
that judge relevant documents only, such as vaswani's, cannot), and a fit that ends at the
search's bound is refused rather than saved.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd

from .errors import InputError
from .prompts import LABELS
from .scoring import expected_label, tempered

if TYPE_CHECKING:
    import matplotlib.figure

BINS = 10
MIN_PAIRS = 30
"""The fewest judged pairs (per mode) that a temperature is fitted on."""


def calibration_table(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = BINS) -> pd.DataFrame:
    """Per bin: how many pairs, their mean predicted value and their mean observed value, for both measures.

    Returns:
        Rows with ``measure`` (``"expected label"`` or ``"confidence"``), ``bin`` (its upper edge),
        ``pairs``, ``predicted`` and ``observed``.
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    top = np.max(LABELS)
    measures = {"expected label": (expected_label(probabilities) / top, labels / top),
                "confidence": (probabilities.max(axis=1),
                               (np.argmax(probabilities, axis=1) == labels).astype(np.float64))}
    rows = []
    for measure, (predicted, observed) in measures.items():
        which = np.minimum((predicted * bins).astype(int), bins - 1)
        for b in range(bins):
            inside = which == b
            if inside.any():
                rows.append({"measure": measure, "bin": (b + 1) / bins, "pairs": int(inside.sum()),
                             "predicted": float(predicted[inside].mean()), "observed": float(observed[inside].mean())})
    return pd.DataFrame(rows, columns=["measure", "bin", "pairs", "predicted", "observed"])


def expected_calibration_error(table: pd.DataFrame) -> dict[str, float]:
    """The pair-weighted mean gap between predicted and observed, per measure, from :func:`calibration_table`."""
    errors = {}
    for measure, rows in table.groupby("measure", sort=False):
        errors[measure] = float((rows["pairs"] * (rows["predicted"] - rows["observed"]).abs()).sum()
                                / rows["pairs"].sum())
    return errors


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, *, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature on the label logits that minimises the negative log-likelihood of the labels.

    A golden-section search over log-temperature, from ``low`` to ``high`` (the likelihood is
    unimodal in it).

    Raises:
        InputError: The likelihood is best at a bound of the search (it keeps improving beyond it):
            the labels do not pin a temperature down, e.g. when they are all one label.
    """
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels, dtype=np.int64)

    def nll(log_temperature: float) -> float:
        chosen = tempered(probabilities, float(np.exp(log_temperature)))[np.arange(len(labels)), labels]
        return float(-np.log(np.clip(chosen, 1e-300, None)).mean())

    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(80):
        if nll(c) < nll(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    temperature = float(np.exp((a + b) / 2))
    bound = next((bound for bound in (low, high) if math.isclose(temperature, bound, rel_tol=1e-6)), None)
    if bound is not None:
        raise InputError(f"the likelihood of the {len(labels)} judged labels keeps improving up to the temperature "
                         f"search's bound ({bound:g}): these judgements do not pin a temperature down (labels "
                         f"{np.unique(labels).tolist()}); fit on more, and more varied, judged pairs")
    return temperature


def fittable(labels: np.ndarray, *, what: str) -> None:
    """Refuse judged labels that cannot pin a temperature down: fewer than :data:`MIN_PAIRS`, or one label.

    Args:
        labels: The judged labels of the pairs.
        what: The pairs, for the message (``"the direct mode's judged pairs among ..."``).

    Raises:
        InputError: Saying which, and what to do.
    """
    present = np.unique(labels).tolist()
    if len(present) < 2:
        raise InputError(f"{what} all carry label {present[0] if present else None} ({len(labels)} pairs): a "
                         "temperature cannot be fitted on one label (qrels that judge relevant documents only "
                         "cannot calibrate); use a dataset with graded judgements, e.g. irds:cranfield")
    if len(labels) < MIN_PAIRS:
        raise InputError(f"{what} are only {len(labels)} (at least {MIN_PAIRS} are needed to fit a temperature); "
                         "use more queries (num_queries) or a deeper first stage (k)")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
"""One marker per system in a reliability diagram, so that coinciding points stay visible."""
_AXES = {"expected label": ("Expected label (score / 2)", "predicted: mean score / 2 of the bin's pairs",
                            "observed: mean judged label / 2"),
         "confidence": ("Most probable label", "confidence: mean probability of the most probable label",
                        "observed: share whose most\nprobable label is the judged one")}


def reliability_figure(tables: dict[str, pd.DataFrame], *, dataset: str = "") -> "matplotlib.figure.Figure":
    """The reliability diagram of several systems on one dataset, as a matplotlib Figure.

    For each measure (the expected label and the confidence), a panel of each system's observed
    value against its predicted value per bin (the diagonal is calibration), and beneath it the
    pairs in each bin, so that a bin of one pair is not read like one of hundreds. Each system has
    its own marker; the legend gives its expected calibration error and its number of pairs.

    Args:
        tables: Each system's :func:`calibration_table`, by name (e.g. ``"BM25 >> explain"``).
        dataset: The dataset's name, for the title.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5.6), layout="constrained")
    grid = figure.add_gridspec(2, len(_AXES), height_ratios=(3, 1))
    systems = list(tables)
    width = 1 / BINS / (len(systems) + 1)
    for column, (measure, (title, xlabel, ylabel)) in enumerate(_AXES.items()):
        axis = figure.add_subplot(grid[0, column])
        counts = figure.add_subplot(grid[1, column], sharex=axis)
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        for number, (name, table) in enumerate(tables.items()):
            rows = table[table["measure"] == measure]
            error = expected_calibration_error(table).get(measure, float("nan"))
            pairs = int(rows["pairs"].sum())
            line, = axis.plot(rows["predicted"], rows["observed"], marker=MARKERS[number % len(MARKERS)],
                              markersize=8 - 1.5 * (number % 3), markerfacecolor="none", markeredgewidth=1.5,
                              linewidth=1, clip_on=False, zorder=3 + number,
                              label=f"{name} (ECE {error:.3f}, n = {pairs})")
            # Each system's bars side by side within a bin: the bin spans (bin - 1 / BINS, bin].
            lefts = rows["bin"] - 1 / BINS + width * (number + 0.5)
            counts.bar(lefts, rows["pairs"], width=width, align="edge", color=line.get_color(), label=name)
        axis.set_title(title)
        axis.set_ylabel(ylabel)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.tick_params(labelbottom=False)
        axis.legend(fontsize=7, loc="upper left")
        axis.grid(alpha=0.3)
        counts.set_xlabel(xlabel)
        counts.set_ylabel("pairs per bin")
        counts.set_xticks([b / BINS for b in range(BINS + 1)])
        counts.grid(alpha=0.3, axis="y")
    pairs = sorted({int(t[t["measure"] == "confidence"]["pairs"].sum()) for t in tables.values()})
    judged = " or ".join(f"{n:,}" for n in pairs)
    figure.suptitle(f"Reliability on {dataset or 'the judged pairs'}: {', '.join(systems)} "
                    f"({judged} judged pairs, {BINS} bins)", fontsize=11)
    return figure


def reliability_diagram(tables: dict[str, pd.DataFrame], path: Union[str, Path], *, dataset: str = "") -> Path:
    """Write :func:`reliability_figure` as a PNG."""
    reliability_figure(tables, dataset=dataset).savefig(path, dpi=110)
    return Path(path)
