"""The transformers backend's linear layers on a CPU in float32: each weight stored transposed.

``nn.Linear`` keeps its weight as (out, in), and ``F.linear`` multiplies by its transpose. On a CPU in
float32, PyTorch's product is faster when the weight's memory holds (in, out) row by row: the same
values, the same shape, only the strides differ. Per layer of Qwen2.5-0.5B's shape on 2 cores, for
the 1-20 rows a decoding step has (one per pair), 1.1-1.7x faster (a decoding step 1.22x); for the
thousands of rows of reading prompts, 0.98-1.07x (benchmarks/cpu_linear.py). In bfloat16 it is
slower (the CPU's bfloat16 kernels want the weight as it is), and a GPU gains nothing, so only
float32 weights on a CPU change.

:func:`store_weights_transposed` changes a loaded model in place.
"""
from __future__ import annotations

import torch


def store_weights_transposed(model: torch.nn.Module) -> int:
    """Store the float32 weights of ``model``'s linear layers on a CPU transposed in memory; how many changed.

    The parameters stay the same objects (tied weights stay tied, an embedding that shares the output
    layer's weight reads it as before), with their shape and values; memory is not duplicated beyond one
    layer's weight at a time. Layers of other types (quantised layers are ``nn.Linear`` subclasses with
    other weights) and other dtypes or devices are left as they are.
    """
    changed = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 2 \
                or not weight.is_contiguous():  # (a tied weight seen before is transposed already)
            continue
        with torch.no_grad():
            weight.data = weight.data.t().contiguous().t()
        changed += 1
    return changed
