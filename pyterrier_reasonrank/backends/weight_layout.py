"""The transformers backend's linear layers on a CPU in float32: each weight stored transposed.

``nn.Linear`` keeps its weight as (out, in), and ``F.linear`` multiplies by its transpose. On a CPU in
float32, PyTorch's product is faster when the weight's memory holds (in, out) row by row: the same
values, the same shape, only the strides differ. Per layer of Qwen2.5-0.5B's shape on 2 cores, for
the 1-20 rows a decoding step has (one per pair), 1.1-1.7x faster (a decoding step 1.22x); for the
thousands of rows of reading prompts, 0.98-1.07x (benchmarks/cpu_linear.py). In bfloat16 it is
slower at decoding's batches (the CPU's bfloat16 kernels want the weight as it is: 0.75-0.98x,
``cpu_linear.py --dtype bfloat16``), and GPUs are not measured here: only float32 weights on a CPU
change.

A weight stored so is not contiguous: code that views it as flat memory (``weight.view(-1)``,
``parameters_to_vector``, safetensors' ``save_file`` of a state dict) needs the layout back first:
:func:`store_weights_as_transformers`. (``save_pretrained`` makes tensors contiguous itself.)
"""
from __future__ import annotations

from typing import Iterator

import torch


def store_weights_transposed(model: torch.nn.Module) -> int:
    """Store the float32 weights of ``model``'s linear layers on a CPU transposed in memory; how many changed.

    The parameters stay the same objects (tied weights stay tied: an embedding that shares the output
    layer's weight reads it transposed too, a lookup that is slower but small beside a forward pass),
    with their shape and values; memory is not duplicated beyond one layer's weight at a time. Weights
    of other dtypes or devices, and weights that are not plain parameters (quantised or wrapped
    tensors), are left as they are.
    """
    changed = 0
    for weight in _linear_weights(model):
        if weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.is_contiguous() \
                and min(weight.shape) > 1:  # (a tied weight seen before is transposed already)
            weight.data = weight.data.t().contiguous().t()
            changed += 1
    return changed


def store_weights_as_transformers(model: torch.nn.Module) -> None:
    """Undo :func:`store_weights_transposed`: ``model``'s linear weights contiguous, as transformers stores them."""
    for weight in _linear_weights(model):
        weight.data = weight.data.contiguous()


def _linear_weights(model: torch.nn.Module) -> Iterator[torch.nn.Parameter]:
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and type(module.weight) is torch.nn.Parameter:
            yield module.weight
