"""Where results go: checked before the work that produces them starts."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Union


def writable_folder(path: Union[str, Path]) -> None:
    """Create ``path`` if needed and check that a file can be written there.

    A run that could not save its result thus stops before it starts rather than after hours of work.

    Raises:
        OSError: The folder cannot be created or written (read-only file system, no permission).
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
        pass


def writable_file(path: Union[str, Path]) -> None:
    """Check that the file ``path`` can be written (replaced, or created in its existing folder), changing nothing.

    Writing is tried, not read off the permissions, which say nothing for root or a read-only mount:
    an existing file is opened for appending (and closed, unchanged), else a file is created and
    removed beside it.

    Raises:
        OSError: It cannot be written (a directory in its place, a read-only file system, no permission).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        with open(path, "ab"):
            pass
    else:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-check-"):
            pass
