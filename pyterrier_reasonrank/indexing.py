"""BM25 first stages over PyTerrier datasets, indexed with pyterrier_pisa on first use."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import pyterrier as pt

if TYPE_CHECKING:
    from pyterrier_reasonrank.demo import DemoCollection


def index_cache() -> Path:
    """Where named indexes are kept: ``$REASONRANK_CACHE/indexes`` (default ``~/.cache/pyterrier_reasonrank``)."""
    root = Path(os.environ.get("REASONRANK_CACHE", Path.home() / ".cache" / "pyterrier_reasonrank"))
    return root / "indexes"


def bm25(collection: Union[pt.datasets.Dataset, DemoCollection], *, name: Optional[str],
         num_results: int) -> pt.Transformer:
    """pyterrier_pisa BM25 (porter2 stemming, k1 0.9, b 0.4) over a collection.

    Args:
        collection: Anything with ``get_corpus_iter()`` (a PyTerrier dataset, the demo collection).
        name: The collection's name, e.g. ``"irds:vaswani"``: its index is built once and kept in
            :func:`index_cache`. ``None``: indexed in a temporary directory.
        num_results: Documents retrieved per query.
    """
    from pyterrier_pisa import PisaIndex

    if name is None:
        path = Path(tempfile.mkdtemp(prefix="reasonrank-index-")) / "index.pisa"
    else:
        path = index_cache() / (name.replace(":", "-").replace("/", "-") + ".pisa")
    index = PisaIndex(str(path), stemmer="porter2")
    if not index.built():
        index.index(collection.get_corpus_iter())
    return index.bm25(k1=0.9, b=0.4, num_results=num_results)
