"""Engines that turn prompts into explanations and label distributions, and sample responses."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .base import Backend, Batching, Completion

LOCAL_BACKENDS = ("transformers", "vllm")
"""The engines that run the model in this process."""
BACKENDS = (*LOCAL_BACKENDS, "openai")
"""Every engine: those of this process, and an OpenAI-compatible server."""


def load_local(backend: str, model: Optional[str], *, adapter: Optional[str] = None,
               device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None,
               engine_options: Optional[dict] = None, trust_remote_code: bool = False,
               prompt_cache_tokens: Optional[int] = None, revision: Optional[str] = None) -> Backend:
    """Load (or reuse) a model in an engine of this process: ``"transformers"`` or ``"vllm"``.

    Args:
        backend: The engine.
        model: Hub id or local directory (``None``: the adapter's base model, or the default model).
        adapter: A PEFT adapter: merged by transformers, applied per request by vLLM.
        device: For transformers: ``"cuda"``, ``"cpu"``... (vLLM places the model itself).
        dtype: ``torch.dtype`` or its name.
        engine_options: For vLLM: options of ``vllm.LLM``.
        trust_remote_code: Allow the model's own code from its repository to run.
        prompt_cache_tokens: For transformers: the most prompt tokens whose keys and values are kept
            for reuse (``None``: its default; vLLM's engine has its own prefix cache).
        revision: The model's revision on the Hub (default: the one the adapter was trained on, else
            the default branch).

    Raises:
        InputError: An unknown backend, or options it does not take.
    """
    from pyterrier_reasonrank.errors import InputError

    if backend == "vllm":
        from . import vllm

        return vllm.load(model, adapter=adapter, dtype=dtype, engine_options=engine_options,
                         trust_remote_code=trust_remote_code, revision=revision)
    if backend != "transformers":
        raise InputError(f"backend must be one of {LOCAL_BACKENDS}, got {backend!r}")
    if engine_options:
        raise InputError("engine_options are options of the vllm backend; the transformers backend takes none")
    from . import hf

    cache = {} if prompt_cache_tokens is None else {"prompt_cache_tokens": prompt_cache_tokens}
    return hf.load(model, adapter=adapter, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                   revision=revision, **cache)


__all__ = ["Backend", "Batching", "Completion", "BACKENDS", "LOCAL_BACKENDS", "load_local"]
