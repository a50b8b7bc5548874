"""The errors that say what the user can fix, and how the command-line tools report them.

Everything raised for the user's input (a recipe, an option, a data file, a dataset id, a model
that cannot be found, an endpoint that keeps failing) derives from :class:`UserError`; the
``reasonrank`` and ``reasonrank-train`` commands print such an error as one line and exit with 1.
Anything else is a bug and keeps its traceback. ``--debug`` (or ``REASONRANK_DEBUG=1``) shows the
traceback of a user error too, for bug reports.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Optional


class UserError(Exception):
    """Something the user can fix; a command-line tool prints it as one line."""


class InputError(UserError, ValueError):
    """What the user gave cannot be used: a recipe, an option, a data file or a dataset id."""


class EndpointError(UserError, RuntimeError):
    """An HTTP endpoint kept failing, or kept answering in a shape it should not, after the retries."""


class ModelNotFoundError(UserError, OSError):
    """The model (or adapter) could not be loaded: no such local path, and not on the Hub or in its cache."""


class StoreError(UserError):
    """A judgement store cannot be used: not a store (or of a newer schema), corrupted, or a write failed.

    The message names the store and the cause.
    """


class PickleCheckpointError(ModelNotFoundError):
    """The weights are only in pickle files (``.bin``, ``.pt``...), which can run code when loaded: refused."""


# File-system errors that are about where the user pointed us, not about our code.
_FILE_SYSTEM_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                       errno.ENOENT, errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}


def one_line(error: BaseException) -> Optional[str]:
    """The error as the one line a command prints, or ``None`` when it is not the user's to fix (a bug)."""
    if isinstance(error, UserError):
        text = str(error)
    elif isinstance(error, OSError) and error.errno in _FILE_SYSTEM_ERRORS:
        where = error.filename if error.filename is not None else ""
        text = f"{error.strerror}: {where}" if where else str(error)
    elif _is_endpoint_error(error):
        text = str(error)
    else:
        return None
    return " ".join(text.split())


def _is_endpoint_error(error: BaseException) -> bool:
    """An ``openai`` client error that outlasted its retries: a wrong key, a server that is down."""
    openai = sys.modules.get("openai")  # never imported here: an error of it exists only once it is loaded
    return openai is not None and isinstance(error, openai.APIError)


def debugging(argv: list[str]) -> bool:
    """Whether tracebacks are wanted: ``--debug`` among the arguments (removed from them) or ``REASONRANK_DEBUG``."""
    wanted = "--debug" in argv
    while "--debug" in argv:
        argv.remove("--debug")
    return wanted or os.environ.get("REASONRANK_DEBUG", "").lower() not in ("", "0", "false", "no")


def run_command(program: str, command: Callable[[], int], *, debug: bool, scrub: Callable[[str], str] = str) -> int:
    """Run a command-line tool's command: a user error becomes one line on stderr and exit code 1.

    Args:
        program: What the line starts with, e.g. ``"reasonrank-train distill"``.
        command: The command; returns the exit code.
        debug: Let every error raise with its traceback.
        scrub: Applied to the line before it is printed (to mask secrets).
    """
    try:
        return command()
    except Exception as error:
        line = one_line(error)
        if line is None or debug:
            raise
        print(scrub(f"{program}: {line}"), file=sys.stderr)
        return 1
