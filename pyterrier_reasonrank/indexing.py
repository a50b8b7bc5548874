"""BM25 first stages over PyTerrier datasets, indexed with pyterrier_pisa on first use."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

import pyterrier as pt

if TYPE_CHECKING:
    from pyterrier_reasonrank.demo import DemoCollection


def index_cache() -> Path:
    """Where named indexes are kept: ``$REASONRANK_CACHE/indexes`` (default ``~/.cache/pyterrier_reasonrank``)."""
    root = Path(os.environ.get("REASONRANK_CACHE", Path.home() / ".cache" / "pyterrier_reasonrank"))
    return root / "indexes"


def bm25(collection: Union[pt.datasets.Dataset, DemoCollection], *, name: Optional[str],
         num_results: int, verbose: bool = False) -> pt.Transformer:
    """pyterrier_pisa BM25 (porter2 stemming, k1 0.9, b 0.4) over a collection.

    Args:
        collection: Anything with ``get_corpus_iter()`` (a PyTerrier dataset, the demo collection).
        name: The collection's name, e.g. ``"irds:vaswani"``: its index is built once and kept in
            :func:`index_cache`. ``None``: indexed in a temporary directory.
        num_results: Documents retrieved per query.
        verbose: Show PISA's indexing log and progress counters. Off, they are held back (and shown
            only if indexing fails), so that a command's results come first.
    """
    from pyterrier_pisa import PisaIndex

    if name is None:
        path = Path(tempfile.mkdtemp(prefix="reasonrank-index-")) / "index.pisa"
    else:
        path = index_cache() / (name.replace(":", "-").replace("/", "-") + ".pisa")
    index = PisaIndex(str(path), stemmer="porter2")
    with contextlib.nullcontext() if verbose else held_back():
        if not index.built():
            index.index(collection.get_corpus_iter())
        return index.bm25(k1=0.9, b=0.4, num_results=num_results)  # compresses the index for BM25 on first use


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """What is written to stdout and stderr meanwhile, held back; written to stderr if an error ends it.

    PISA's C++ code writes its log and progress counters to the file descriptors themselves, past
    ``sys.stdout``, so the descriptors are redirected, and C's buffers flushed before they are restored.
    """
    c_library = ctypes.CDLL(None)
    saved = [os.dup(1), os.dup(2)]
    failed = False
    with tempfile.TemporaryFile() as held:
        try:
            _point(held.fileno(), held.fileno(), c_library)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="text_field not specified")  # every str field: meant
                yield
        except BaseException:
            failed = True
            raise
        finally:
            _point(*saved, c_library)
            for descriptor in saved:
                os.close(descriptor)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))


def _point(stdout: int, stderr: int, c_library: ctypes.CDLL) -> None:
    """Point file descriptors 1 and 2 at ``stdout`` and ``stderr``, after flushing what is buffered for them."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    c_library.fflush(None)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
