"""A file of a model that lives in a directory or in a Hugging Face Hub repository.

A student carries files besides its weights (its prompt settings, the tokenizer and chat template
it was trained with); where it lives on the Hub, they are looked up there (or in the Hub's cache),
as the weights are. When the Hub cannot say whether an adapter has the file (offline and never
fetched, or no answer), a warning says what the student is served with instead, so that a student
is never quietly served with a prompt it was not trained on. Offline, a plain model (no adapter:
the students this library trains are adapters, unless fully fine-tuned) and a repository the cache
holds whole are taken to lack a file the cache has not: a base model used offline is not warned of.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional


def model_file(source: str, filename: str, *, otherwise: str) -> Optional[Path]:
    """The file ``filename`` of the model at ``source``: a directory, or a Hub id.

    Args:
        source: A local directory, or a Hub repository id.
        filename: The file's name in it.
        otherwise: What happens without the file, for the warning (``"it is served with ..."``).

    Returns:
        Its local path; ``None`` when the model has no such file, or when the Hub cannot be asked
        (with a warning; an id that is no repository is left to the model's own loading to report).
    """
    if os.path.isdir(source):
        path = Path(source) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        cached = try_to_load_from_cache(source, filename)
    except HFValidationError:  # not a repository id at all
        return None
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None:  # the Hub said before that it has no such file
        return None
    try:
        return Path(hf_hub_download(source, filename))
    except LocalEntryNotFoundError as error:  # offline, and never fetched: whether it exists is unknown...
        reason = error
        whole = isinstance(try_to_load_from_cache(source, ".gitattributes"), str)  # hf download fetches it too
        adapter = isinstance(try_to_load_from_cache(source, "adapter_config.json"), str)
        if whole or not adapter:  # ...unless the cache holds all of it, or it is no adapter (see the module's doc)
            return None
    except (EntryNotFoundError, RepositoryNotFoundError):  # no such file; or no such (or a gated) repository
        return None
    except (OSError, ValueError) as error:  # the Hub did not answer
        reason = error
    first_line = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    warnings.warn(f"could not tell whether {source!r} has {filename} ({first_line}); {otherwise}. Fetch it once "
                  "online (or use a local copy of the model) if it has one", RuntimeWarning, stacklevel=3)
    return None
