"""Secrets (API keys, Hub tokens) kept out of everything the project writes, prints or raises.

The secrets known to a run are the keys and tokens it was given (``api_key``, ``hub_token``) and
those in the environment (:data:`SECRET_VARIABLES`). Whatever the project writes (annotation
records, summaries, run cards, model cards, trainer arguments) or prints goes through
:func:`scrub`, which replaces each of them by ``***``: a server that echoes the key, or a document
that talks the teacher into repeating it, cannot put it on disk.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

SECRET_VARIABLES = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""Environment variables that hold secrets."""
SECRET_FIELDS = ("api_key", "hub_token")
"""Config fields that hold secrets."""
MASK = "***"
MIN_SECRET_LENGTH = 8
"""Shorter values are placeholders (vLLM's ``EMPTY``), not secrets: masking them would garble text."""


def known_secrets(*given: Optional[str]) -> tuple[str, ...]:
    """The secrets ``given`` and those in the environment, longest first.

    The order makes a secret that contains another be masked whole.
    """
    values = [*given, *(os.environ.get(name) for name in SECRET_VARIABLES)]
    return tuple(sorted({v for v in values if v and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True))


def config_secrets(*configs) -> tuple[str, ...]:
    """:func:`known_secrets` with the secret fields of the given configs (dataclasses)."""
    return known_secrets(*(getattr(config, name, None) for config in configs for name in SECRET_FIELDS))


def scrub(value: T, secrets: Iterable[str]) -> T:
    """``value`` with every secret replaced by ``***``.

    Secrets are replaced in strings and inside dicts, lists and tuples (keys too); other values
    come back as they are.
    """
    secrets = tuple(secrets)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {scrub(key, secrets): scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(item, secrets) for item in value)
    return value


@contextlib.contextmanager
def redacted(secrets: Iterable[str]) -> Iterator[None]:
    """Errors raised inside have every secret replaced by ``***``, along their chain of causes.

    The secrets are replaced in each error's message, arguments and body (servers quote the key
    they were sent).
    """
    secrets = tuple(secrets)
    try:
        yield
    except Exception as error:
        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            error.args = scrub(error.args, secrets)
            for name in ("message", "body"):
                if hasattr(error, name):
                    setattr(error, name, scrub(getattr(error, name), secrets))
            error = error.__cause__ or error.__context__
        raise


class SecretFieldsNotPickled:
    """A mixin for config dataclasses: pickling (the trainer's ``training_args.bin``) leaves the secret fields out.

    A Hub token given on the command line is thus not written with the checkpoint. The unpickled
    config has them as ``None``.
    """

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in SECRET_FIELDS:
            if name in state:
                state[name] = None
        return state

