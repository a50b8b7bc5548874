"""PyTerrier datasets by id, with an error that names the id and the closest ones that exist."""
from __future__ import annotations

import difflib

import pyterrier as pt

from .errors import InputError


def get_dataset(name: str) -> pt.datasets.Dataset:
    """``pt.get_dataset(name)``.

    Raises:
        InputError: No dataset has that id; the message suggests the closest ``irds:`` ids.
    """
    try:
        return pt.get_dataset(name)
    except KeyError as error:
        if "not found" not in str(error):
            raise
    import ir_datasets

    known = list(ir_datasets.registry)
    close = difflib.get_close_matches(name.removeprefix("irds:"), known, n=3)
    hint = f" (did you mean {', '.join(f'irds:{c}' for c in close)}?)" if close else ""
    raise InputError(f"there is no dataset {name!r}{hint}; ir_datasets ids are written irds:<id>, "
                     "e.g. irds:vaswani") from None
