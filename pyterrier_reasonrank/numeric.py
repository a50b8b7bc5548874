"""Numeric options, checked in one place: an argument, a settings file, a recipe and a command line alike.

A number that makes the output meaningless (an infinite temperature that makes every score 1, a
negative budget that slices off the last candidate, a NaN threshold that no pair passes) is refused
with an error naming the option, never used. Each kind of option is a :class:`NumericOption`:

.. code-block:: python

    batch_size = positive_int("batch_size", batch_size)         # InputError unless an int >= 1
    temperature = positive_number("temperature", temperature)   # InputError unless finite and > 0
    parser.add_argument("--k", type=positive_int.parse)         # the same check on the command line

A criterion that is not wanted is switched off with ``None`` (where the option allows it), not by an
out-of-range number.
"""
from __future__ import annotations

import argparse
import math
import numbers
from typing import Union

import numpy as np

from .errors import InputError


class NumericOption:
    """A kind of numeric option: integer or real, finite, within bounds."""

    def __init__(self, requirement: str, *, integral: bool, low: float = -math.inf, high: float = math.inf,
                 above_low: bool = False):
        """Describe the kind.

        Args:
            requirement: What a value must be, as the error says it (``"a positive integer"``).
            integral: Integers only (``bool`` is not one); otherwise any real number (an integer too).
            low: The lowest value allowed.
            high: The highest value allowed.
            above_low: ``low`` itself is not allowed.
        """
        self.requirement = requirement
        self.integral = integral
        self.low, self.high, self.above_low = low, high, above_low

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is of this kind."""
        kind = numbers.Integral if self.integral else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            return False
        return (value > self.low if self.above_low else value >= self.low) and value <= self.high

    def __call__(self, name: str, value: object, *, optional: bool = False) -> Union[int, float, None]:
        """The value, as ``int`` or ``float``, if it is of this kind.

        Args:
            name: The option, as the error names it (``"label_temperature"``, ``"--k"``, ``"file: field"``).
            value: What was given.
            optional: ``None`` is allowed (and returned): the option's default, or the criterion off.

        Raises:
            InputError: ``value`` is not of this kind (a string, NaN, infinite, out of range); the
                error names the option, what it must be and what it got.
        """
        if value is None and optional:
            return None
        if not self.accepts(value):
            allowed = " (or None)" if optional else ""
            raise InputError(f"{name} must be {self.requirement}{allowed}, got {value!r}")
        return int(value) if self.integral else float(value)

    def parse(self, text: str) -> Union[int, float]:
        """The command-line form (``argparse``'s ``type=``): text converted, then checked.

        Raises:
            argparse.ArgumentTypeError: Not a number, or not of this kind (argparse names the option).
        """
        try:
            value = int(text) if self.integral else float(text)
        except ValueError:
            value = None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {self.requirement}, got {text!r}")
        return value


positive_int = NumericOption("a positive integer", integral=True, low=1)
"""Counts and sizes: ``batch_size``, ``max_new_tokens``, ``k``, ``num_queries``..."""

non_negative_int = NumericOption("an integer of 0 or more", integral=True, low=0)
"""Seeds, and counts where 0 means none (explanations shown)."""

positive_number = NumericOption("a finite number above 0", integral=False, low=0.0, above_low=True)
"""Temperatures and other scales."""

non_negative_number = NumericOption("a finite number of 0 or more", integral=False, low=0.0)
"""Sampling temperatures where 0 is greedy, timeouts, weights."""

proportion = NumericOption("a number from 0 to 1", integral=False, low=0.0, high=1.0)
"""Shares and thresholds on a 0-1 scale."""


def switch(name: str, value: object) -> bool:
    """An on/off option's value, if it is a bool (numpy's too): a string such as ``"no"`` is refused, not read as on.

    Raises:
        InputError: ``value`` is not a bool; the error names the option.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_fields(config: object, rules: dict[str, NumericOption], *, optional: tuple[str, ...] = ()) -> None:
    """Check the numeric fields of a config object (a recipe's dataclass), and set them to the checked values.

    Args:
        config: The config.
        rules: Field name -> its kind.
        optional: The fields that may be ``None``.

    Raises:
        InputError: A field's value is not of its kind (the error names the field).
    """
    for name, rule in rules.items():
        setattr(config, name, rule(name, getattr(config, name), optional=name in optional))
