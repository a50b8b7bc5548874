"""Loading models, adapters and tokenizers, for every backend and for training.

One policy for all of them: weights load from safetensors only (a directory whose weights are only
pickle files is refused, as pickles can run code), a model or adapter that cannot be found is one
sentence that says what to do, ``trust_remote_code`` is off unless asked for, and the defaults for
the model, device and dtype are the same everywhere.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

import torch

from pyterrier_reasonrank.errors import InputError, ModelNotFoundError, PickleCheckpointError, UserError
from pyterrier_reasonrank.hub import model_file
from pyterrier_reasonrank.settings import FILENAME

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
"""Used when neither a model nor an adapter is given: small, ungated, Apache-2.0, with a chat
template, and each label digit is one token in its tokenizer. Zero-shot it is a weak judge; a
distilled adapter is the point."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def model_name(model: Optional[str], adapter: Optional[str]) -> str:
    """The model to load: ``model``, else the adapter's base model, else :data:`DEFAULT_MODEL`."""
    if model is not None:
        return model
    return base_model(adapter) if adapter is not None else DEFAULT_MODEL


def model_source(model: Optional[str], adapter: Optional[str], revision: Optional[str] = None,
                 ) -> tuple[str, Optional[str]]:
    """The model to load (:func:`model_name`) and its revision.

    The revision is ``revision`` when given; else, for the adapter's base model, the one the adapter
    was trained on (its PEFT config's ``revision``, which training records); else ``None``, the
    default branch.
    """
    if adapter is None:
        return model_name(model, adapter), revision
    config = adapter_config(adapter)
    name = model if model is not None else config.base_model_name_or_path
    if revision is None and name == config.base_model_name_or_path:
        revision = config.revision
    return name, revision


def load_causal_lm(model: Optional[str], adapter: Optional[str] = None, *, dtype: torch.dtype,
                   trust_remote_code: bool = False, revision: Optional[str] = None,
                   ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM (with the adapter merged into it, so that it costs what the base model costs) and its tokenizer.

    The model is loaded at ``revision``, by default the one the adapter was trained on (:func:`model_source`).

    Raises:
        ModelNotFoundError: The model or adapter could not be found (locally, in the cache or on the Hub).
        PickleCheckpointError: Its weights are pickle files only.
    """
    name, revision = model_source(model, adapter, revision)
    lm = load_model(name, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision)
    tokenizer = load_tokenizer(*tokenizer_source(name, adapter, revision), trust_remote_code=trust_remote_code)
    if adapter is not None:
        lm = load_adapter(lm, adapter).merge_and_unload()
    return lm, tokenizer


def load_model(name: str, *, dtype: Union[torch.dtype, str], trust_remote_code: bool = False,
               model_class: Optional[type] = None, what: str = "model", **options: object) -> PreTrainedModel:
    """The model at ``name`` (a Hub id or directory), from its safetensors weights.

    Args:
        name: Hub id or local directory.
        dtype: Its dtype (a ``torch.dtype``, a name such as ``"bfloat16"``, or ``"auto"``: the checkpoint's).
        trust_remote_code: Allow the model's own code to run.
        model_class: The transformers auto class (default: ``AutoModelForCausalLM``).
        what: What it is, in the error when it cannot be loaded (``"reward model"``...).
        **options: Further arguments of ``from_pretrained`` (``revision``, ``attn_implementation``,
            ``quantization_config``, ``device_map``...).

    Raises:
        ModelNotFoundError: It could not be found (locally, in the cache or on the Hub).
        PickleCheckpointError: Its weights are pickle files only.
    """
    from transformers import AutoModelForCausalLM

    with clear_load_errors(what, name):
        return (model_class or AutoModelForCausalLM).from_pretrained(
            name, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **options)


def load_adapter(model: PreTrainedModel, adapter: str, *, trainable: bool = False) -> PeftModel:
    """``model`` with the PEFT adapter at ``adapter`` (a Hub id or directory) on it; its weights trainable if asked.

    Raises:
        ModelNotFoundError: The adapter could not be found, or its directory holds no weights.
        PickleCheckpointError: Its weights are pickle files only.
    """
    from peft import PeftModel

    with clear_load_errors("adapter", adapter):
        return PeftModel.from_pretrained(model, adapter, is_trainable=trainable)


def fingerprint(source: str, revision: Optional[str] = None) -> str:
    """What identifies the weights at ``source`` (a directory, or a Hub id), without reading them all.

    For a directory: a hash of its weight files' names and sizes, of the first and last MiB of each,
    and of its configs — whole files when they are small (an adapter's). The student's settings
    (``reasonrank_config.json``) are not its weights: calibrating a student changes them, not what
    it judges. For a Hub id: the commit of its snapshot at ``revision`` (default: the default branch)
    in the local cache (``hub:<id>`` when it is not cached).
    """
    import hashlib

    if not os.path.isdir(source):
        from huggingface_hub import try_to_load_from_cache

        for config in ("config.json", "adapter_config.json"):  # a model's, an adapter's
            cached = try_to_load_from_cache(source, config, revision=revision)
            if isinstance(cached, str):
                return f"hub:{source}@{Path(cached).parent.name}"
        return f"hub:{source}"
    digest = hashlib.sha256()
    for path in sorted(Path(source).iterdir()):
        if not path.is_file() or not path.name.endswith((".safetensors", "config.json")) or path.name == FILENAME:
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as file:
            if size <= 3 * _FINGERPRINT_CHUNK:
                digest.update(file.read())
            else:
                digest.update(file.read(_FINGERPRINT_CHUNK))
                file.seek(-_FINGERPRINT_CHUNK, os.SEEK_END)
                digest.update(file.read())
    return digest.hexdigest()


_FINGERPRINT_CHUNK = 1 << 20


def load_tokenizer(source: str, revision: Optional[str] = None, *, trust_remote_code: bool = False,
                   ) -> PreTrainedTokenizerBase:
    """The tokenizer at ``source`` (a Hub id or directory).

    Args:
        source: Where it is: a model's, or an adapter's that saved one (:func:`tokenizer_source`).
        trust_remote_code: Allow the tokenizer's own code to run.
        revision: Its revision on the Hub (default: the default branch's).

    Raises:
        ModelNotFoundError: It could not be found.
    """
    from transformers import AutoTokenizer

    with clear_load_errors("tokenizer", source):
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)


def adapter_config(adapter: str) -> PeftConfig:
    """A PEFT adapter's configuration (its base model, the base's revision, its rank...)."""
    from peft import PeftConfig

    with clear_load_errors("adapter", adapter):
        return PeftConfig.from_pretrained(adapter)


def base_model(adapter: str) -> str:
    """The base model a PEFT adapter was trained on, from its configuration."""
    return adapter_config(adapter).base_model_name_or_path


def tokenizer_source(model: str, adapter: Optional[str], revision: Optional[str] = None,
                     ) -> tuple[str, Optional[str]]:
    """Where the tokenizer comes from, and its revision.

    That is an adapter that saved one (here or on the Hub; its files are its own), else the model at
    ``revision`` (:func:`model_source`); what :func:`load_tokenizer` takes.
    """
    if adapter is not None and model_file(adapter, "tokenizer_config.json",
                                          otherwise=f"it is served with its base model's tokenizer ({model})"):
        return adapter, None
    return model, revision


@contextlib.contextmanager
def clear_load_errors(what: str, name: str) -> Iterator[None]:
    """Turns the loaders' errors for a missing model into one sentence that says what to do.

    It also refuses a local checkpoint whose weights are only in pickle files, and a local adapter
    without its weights, before any loader is asked (vLLM would find that out only at its first
    request). An error already said for the user (a :class:`UserError`) passes through as it is.
    """
    if what != "tokenizer":  # a tokenizer loads no weights
        refuse_pickle_weights(what, name)
    if what == "adapter" and os.path.isdir(name):
        missing = [file for file in ADAPTER_FILES if not os.path.isfile(os.path.join(name, file))]
        if missing:
            raise not_found(what, name, f"no {' and no '.join(missing)}")
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError) as error:
        raise not_found(what, name, f"{error.__class__.__name__}: {error}") from error


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What a PEFT adapter directory holds: its configuration and its weights."""


def not_found(what: str, name: str, reason: str) -> ModelNotFoundError:
    """The error for a model (or adapter, tokenizer...) that could not be loaded from ``name``, and why."""
    if os.path.exists(name):
        where = f"the directory {name!r} holds no loadable {what} ({reason})"
    elif name.startswith(("/", ".", "~")) or name.count("/") > 1:
        where = f"there is no directory {name!r}"
    else:
        where = (f"{name!r} is not a local directory, not in the Hugging Face cache, and could not be "
                 "fetched from the Hub (offline, gated, or no such repository)")
    option = "adapter" if what == "adapter" else "model"
    return ModelNotFoundError(f"Could not load the {what}: {where}; pass --{option} / {option}= a local "
                              "directory or a Hub id you can download.")


def refuse_pickle_weights(what: str, name: str) -> None:
    """Weights load from safetensors only: a directory with pickle weights and no safetensors is refused.

    Raises:
        PickleCheckpointError: naming the files and how to convert them.
    """
    if not os.path.isdir(name):
        return  # a Hub id: the loaders are asked for safetensors (use_safetensors=True)
    files = sorted(os.listdir(name))
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES) and not f.startswith("training_args")]
    if pickles and not any(f.endswith(".safetensors") for f in files):
        raise PickleCheckpointError(
            f"Refusing to load the {what} in {name!r}: its weights are pickle files ({', '.join(pickles[:3])}), "
            "which can run code when loaded; convert them to safetensors where you trust them "
            "(from_pretrained, then save_pretrained(..., safe_serialization=True)).")


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """The given device, or CUDA when available, else CPU.

    Raises:
        InputError: ``device`` is not one torch knows.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device such as 'cpu', 'cuda' or 'cuda:1'") from None


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """The given dtype (a name such as ``"bfloat16"`` is accepted), or the default for the device."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise InputError(f"dtype {dtype!r} is not a torch dtype name such as 'float32' or 'bfloat16'")
        return resolved
    return dtype
