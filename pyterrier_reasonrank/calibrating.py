"""Calibrating a student: re-rank held-out judged pairs, fit a label temperature per mode, save it with the student.

The maths (reliability, the temperature fit) is :mod:`~pyterrier_reasonrank.calibration`'s; this
module runs the evaluation it needs (``reasonrank calibrate``).
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import pandas as pd
import pyterrier as pt

from .calibration import calibration_table, expected_calibration_error, fit_temperature, fittable
from .errors import InputError
from .evaluation import evaluate
from .judgements import judging_mode
from .numeric import positive_int
from .outputs import writable_file
from .prompts import MODES
from .scoring import tempered
from .settings import FILENAME, StudentSettings, read_settings

if TYPE_CHECKING:
    from .ranker import ReasonRanker


def calibrate(ranker: ReasonRanker, datasets: Sequence[str], *, k: int = 20, num_queries: Optional[int] = None,
              query_field: Optional[str] = None, verbose: bool = False) -> dict:
    """Fit the label temperatures of the ranker's student on judged pairs, and save them in the student's settings.

    The ranker re-ranks BM25's top ``k`` of each dataset; the judged pairs among them (qrels
    mapped to labels) are what the temperatures are fitted on, one per mode that judged pairs (an
    adaptive ranker's explained and unexplained pairs each fit their mode's). ``ReasonRanker`` then
    uses them unless given another ``label_temperature``. Fit with the ``samples`` you serve with:
    with several, the temperature applies to their averaged distribution.

    Args:
        ranker: The student, as it will be served (its mode, samples...); its own temperature is
            not applied while fitting.
        datasets: Dataset ids with graded judgements (fit on held-out data: not the training pairs).
        k: BM25's depth.
        num_queries: Use the first N queries of each dataset.
        query_field: The topics' field used as the query (BRIGHT: ``text``).
        verbose: Show the first stage's indexing log.

    The counts, the student and whether its settings file can be written are checked before any
    work; a mode is fitted only on at least :data:`MIN_PAIRS` judged pairs that carry at least two
    labels, and a temperature at the search's bound is refused (see :func:`fit_temperature`).

    Returns:
        Per mode fitted, its ``temperature``, ``pairs`` and the expected calibration errors
        ``before`` and ``after``; and the ``settings`` file written.

    Raises:
        InputError: ``k`` or ``num_queries`` is not a positive integer; the student is not a local
            directory (its settings are written there); too few judged pairs, or one label, or a
            temperature at the search's bound (nothing is written then).
        OSError: The settings file cannot be written.
    """
    k, num_queries = positive_int("k", k), positive_int("num_queries", num_queries, optional=True)
    student = ranker.student.source
    if not Path(student).is_dir():
        raise InputError(f"the student's settings are written beside it, and {student!r} is not a local directory")
    writable_file(Path(student) / FILENAME)  # before the evaluation, not after it
    raw = pt.inspect.transformer_apply_attributes(ranker, model=ranker.student, label_temperature=1.0)
    with warnings.catch_warnings():
        # Fitting reads the untempered distributions of a student that may have been calibrated before.
        warnings.filterwarnings("ignore", message=".*label_temperature=")
        evaluation = evaluate(list(datasets), {"student": raw}, k=k, num_queries=num_queries,
                              query_field=query_field, verbose=verbose)
    runs = list(evaluation.judged_runs().values())
    if not runs:
        raise InputError(f"no judged pair among BM25's top {k} of {list(datasets)}: nothing to fit on")
    return calibrate_on(student, pd.concat(runs, ignore_index=True),
                        what=f"BM25's top {k} of {list(datasets)}")


def calibrate_on(student: str, judged: pd.DataFrame, *, what: str = "the judged pairs") -> dict:
    """Fit the label temperatures of a student on pairs a ranker judged, and save them in the student's settings.

    What :func:`calibrate` does once it has judged pairs; call it with pairs judged elsewhere (a
    task of your own, with its labels).

    Args:
        student: The student's directory.
        judged: The pairs, as a :class:`~pyterrier_reasonrank.ReasonRanker` with
            ``label_temperature=1.0`` re-ranked them (``probabilities`` and ``samples``: the
            untempered distributions, and which mode judged each pair), with the true ``label``.
        what: What the pairs are, for error messages.

    Returns:
        As :func:`calibrate`: per mode fitted, its ``temperature``, ``pairs`` and the expected
        calibration errors ``before`` and ``after``; and the ``settings`` file written.

    Raises:
        InputError: ``student`` is not a local directory; too few pairs of a mode, or one label, or a
            temperature at the search's bound (nothing is written then).
        OSError: The settings file cannot be written.
    """
    if not Path(student).is_dir():
        raise InputError(f"the student's settings are written beside it, and {student!r} is not a local directory")
    writable_file(Path(student) / FILENAME)
    by_mode = {mode: pairs for mode, pairs in judged.groupby(judging_mode(judged["samples"]))}
    for mode, pairs in by_mode.items():  # every mode checked before any is fitted
        fittable(pairs["label"].to_numpy(), what=f"the {mode} mode's judged pairs among {what}")
    fitted = {}
    for mode, pairs in by_mode.items():
        probabilities, labels = np.stack(pairs["probabilities"].to_numpy()), pairs["label"].to_numpy()
        temperature = fit_temperature(probabilities, labels)
        fitted[mode] = {"temperature": temperature, "pairs": len(pairs),
                        "before": expected_calibration_error(calibration_table(probabilities, labels)),
                        "after": expected_calibration_error(calibration_table(tempered(probabilities, temperature),
                                                                              labels))}
    # A model not trained by this library gets a settings file for the calibration; it claims no
    # training, so no mode is warned about.
    settings = read_settings(student) or StudentSettings(tasks=MODES)
    temperatures = {**settings.label_temperature, **{mode: fit["temperature"] for mode, fit in fitted.items()}}
    path = dataclasses.replace(settings, label_temperature=temperatures).save(student)
    return {**fitted, "settings": str(path)}
