"""The packages a recipe's options need, checked before any work, each named with the extra that installs it.

The paper's recipe trains with 8-bit AdamW (``optim: adamw_8bit``) and QLoRA (``load_in_4bit``),
which need bitsandbytes (the ``gpu`` extra); sampling with vLLM needs vLLM (the ``vllm`` extra).
Without them, a run would load its model and fail in the middle of setting up the trainer.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from typing import Callable, NamedTuple, Optional

from pyterrier_reasonrank.errors import InputError

# transformers' optimizers built on bitsandbytes: adamw_8bit, adamw_bnb_8bit, paged_*, ademamix*,
# lion_*, rmsprop_bnb*. Not adamw_torch_8bit / 4bit (torchao) nor galore_adamw_8bit (galore).
_BITSANDBYTES_OPTIMIZER = re.compile(r"^(adamw_8bit|.*bnb.*|paged_.*|ademamix.*|lion_.*)$")


class Need(NamedTuple):
    """An option whose setting needs a package."""

    option: Callable[[object], Optional[str]]  # the option as set, e.g. "optim adamw_8bit"; None: not needed
    module: str
    extra: str


def _option(config: object, name: str) -> object:
    value = getattr(config, name, None)
    return getattr(value, "value", value)  # an enum (transformers' OptimizerNames) as its text


def _bitsandbytes_optimizer(config: object) -> Optional[str]:
    optim = _option(config, "optim")
    return f"optim {optim}" if isinstance(optim, str) and _BITSANDBYTES_OPTIMIZER.match(optim) else None


def _quantized(config: object) -> Optional[str]:
    on = [name for name in ("load_in_4bit", "load_in_8bit") if _option(config, name) is True]
    return f"{on[0]} (QLoRA)" if on else None


def _vllm_sampling(config: object) -> Optional[str]:
    return "sampling_backend vllm" if _option(config, "sampling_backend") == "vllm" else None


def _trl_vllm(config: object) -> Optional[str]:
    return "use_vllm" if _option(config, "use_vllm") is True else None


def _openai_teacher(config: object) -> Optional[str]:
    return "teacher openai" if _option(config, "teacher") == "openai" else None


NEEDS = (Need(_bitsandbytes_optimizer, "bitsandbytes", "gpu"), Need(_quantized, "bitsandbytes", "gpu"),
         Need(_vllm_sampling, "vllm", "vllm"), Need(_trl_vllm, "vllm", "vllm"),
         Need(_openai_teacher, "openai", "train"))
"""Which settings need which package, and the extra of pyterrier-reasonrank that installs it."""


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it: vLLM takes seconds)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import blocked
    return importlib.util.find_spec(module) is not None


def require_packages(*configs: object) -> None:
    """Refuse, before any work, options whose package is not installed.

    Args:
        configs: A command's configs (``DistillConfig``, ``StudentConfig``...).

    Raises:
        InputError: One line naming the option, the package and the extra to install.
    """
    for config in configs:
        for need in NEEDS:
            option = need.option(config)
            if option is not None and not installed(need.module):
                raise InputError(f"{option} needs {need.module}, which is not installed: "
                                 f"pip install 'pyterrier-reasonrank[{need.extra}]'")
