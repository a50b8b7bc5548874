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
