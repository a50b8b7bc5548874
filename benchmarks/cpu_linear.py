"""CPU matmuls of a decoding step: ``F.linear`` on weights as transformers stores them and stored transposed; oneDNN.

A decoding step of a small model on a CPU is its linear layers reading their weights. vLLM's CPU
engine runs them through oneDNN matmuls set up once per layer (its ``create_onednn_mm``); the
transformers backend through ``F.linear``, with float32 weights stored transposed in memory
(``backends/weight_layout.py``). This times two layer shapes of Qwen2.5-0.5B, float32 (or
``--dtype bfloat16``: why the backend leaves bfloat16 weights as they are; its MLP's up projection,
896 -> 4,864, and its output layer, 896 -> 151,936: a quarter of its weights), for a batch of rows as
a decoding step has (1 to 20: one per pair) and as reading prompts has (thousands), three ways:

* ``F.linear``: the weight as ``nn.Linear`` keeps it (out x in in memory), as transformers loads it;
* ``F.linear``, stored transposed: the same layers after the backend's ``store_weights_transposed``
  (same shape and values, in x out in memory; in bfloat16, converted after it, which keeps the layout);
* oneDNN: ``torch.utils.mkldnn.MkldnnLinear``, the weight converted to oneDNN's layout once.

Copies of the weight far beyond the caches (40 of the up projection: 700 MB; 2 of the output layer:
1.1 GB) are cycled through, as a model's layers are; each figure is the fastest of three passes, in
milliseconds per layer.

    python benchmarks/cpu_linear.py --output cpu_linear.md
    python benchmarks/cpu_linear.py --dtype bfloat16 --output cpu_linear_bf16.md
    python benchmarks/cpu_linear.py --quick     # a second: checks that the script runs
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import machine  # noqa: E402

FULL = {"rows": (1, 4, 20, 4000), "shapes": ((896, 4864, 40), (896, 151936, 2)), "passes": 3}
"""Rows per product; layer shapes as (in, out, copies cycled)."""
QUICK = {"rows": (1, 4), "shapes": ((64, 128, 2),), "passes": 1}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Time the three ways for each batch of rows; print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks that the script runs")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the weights' dtype")
    args = parser.parse_args(argv)
    setup = {**(QUICK if args.quick else FULL), "dtype": args.dtype}
    report = _report(measure(setup), setup)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")


def measure(setup: dict) -> list[dict]:
    """Per shape and batch of rows: ms per layer for each way, and the others' largest difference from ``F.linear``."""
    import copy

    import torch
    from torch.utils.mkldnn import MkldnnLinear

    from pyterrier_reasonrank.backends.weight_layout import store_weights_transposed

    dtype = getattr(torch, setup["dtype"])
    rows = []
    for inputs, outputs, copies in setup["shapes"]:
        layers = torch.nn.ModuleList(torch.nn.Linear(inputs, outputs, bias=False) for _ in range(copies))
        transposed = copy.deepcopy(layers)
        store_weights_transposed(transposed)
        layers, transposed = layers.to(dtype), transposed.to(dtype)
        assert not any(layer.weight.is_contiguous() for layer in transposed)  # the conversion kept the layout
        ways: dict[str, list[Callable]] = {
            "F.linear": list(layers),
            "stored transposed": list(transposed),
            "oneDNN": [MkldnnLinear(layer, dtype) for layer in layers],
        }
        with torch.inference_mode():
            for n in setup["rows"]:
                x = torch.randn(n, inputs, dtype=dtype)
                row = {"shape": f"{inputs} -> {outputs}", "rows": n,
                       "difference": max(float((ways[way][0](x) - layers[0](x)).abs().max())
                                         for way in ("stored transposed", "oneDNN"))}
                for name, functions in ways.items():
                    row[name] = min(_pass(functions, x) for _ in range(setup["passes"])) * 1000 / len(functions)
                rows.append(row)
    return rows


def _pass(functions: list[Callable], x: object) -> float:
    start = time.perf_counter()
    for function in functions:
        function(x)
    return time.perf_counter() - start


def _report(rows: list[dict], setup: dict) -> str:
    lines = [f"# Linear layers on a CPU ({machine('cpu')})", "",
             f"{setup['dtype']}; ms per layer, the fastest of {setup['passes']} passes, copies of each weight cycled "
             f"({', '.join(f'{i} -> {o}: {c}' for i, o, c in setup['shapes'])}).", "",
             "| shape | rows | F.linear | F.linear, stored transposed | oneDNN | F.linear / stored transposed | "
             "F.linear / oneDNN | largest difference from F.linear |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        linear, transposed, onednn = row["F.linear"], row["stored transposed"], row["oneDNN"]
        lines.append(f"| {row['shape']} | {row['rows']} | {linear:.2f} | {transposed:.2f} | {onednn:.2f} | "
                     f"{linear / transposed:.2f}x | {linear / onednn:.2f}x | {row['difference']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
