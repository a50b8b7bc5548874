"""CPU matmuls of a decoding step: PyTorch's ``F.linear`` against oneDNN with the weights prepared once.

A decoding step of a small model on a CPU is its linear layers reading their weights. The
transformers backend runs them through ``F.linear``; vLLM's CPU engine through oneDNN matmuls set
up once per layer (its ``create_onednn_mm``), and decodes a few pairs 2.3x faster on one thread
than the backend on two (README.md, ``test_time_compute.py --part floor``). This times one layer
shape of Qwen2.5-0.5B (its MLP's up projection, 896 -> 4,864) for a batch of rows as a decoding step
has (1 to 20: one per pair) and as reading prompts has (thousands), three ways:

* ``F.linear``: the weight as ``nn.Linear`` keeps it (out x in);
* ``x @ W.T`` with the transpose stored (in x out, contiguous);
* oneDNN: ``torch.utils.mkldnn.MkldnnLinear``, the weight converted to oneDNN's layout once.

Forty copies of the weight (700 MB, far beyond the caches) are cycled through, as a model's layers
are; each figure is the fastest of three passes, in milliseconds per layer.

    python benchmarks/cpu_linear.py --output cpu_linear.md
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

FULL = {"rows": (1, 4, 20, 4000), "layers": 40, "in": 896, "out": 4864, "passes": 3}
QUICK = {"rows": (1, 4), "layers": 2, "in": 64, "out": 128, "passes": 1}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Time the three ways for each batch of rows; print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks that the script runs")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    report = _report(measure(setup), setup)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")


def measure(setup: dict) -> list[dict]:
    """Per batch of rows: milliseconds per layer for each way, and oneDNN's largest difference from ``F.linear``."""
    import torch
    from torch.utils.mkldnn import MkldnnLinear

    layers = [torch.nn.Linear(setup["in"], setup["out"], bias=False) for _ in range(setup["layers"])]
    ways: dict[str, list[Callable]] = {
        "F.linear": layers,
        "x @ W.T stored": [lambda x, w=layer.weight.t().contiguous(): x @ w for layer in layers],
        "oneDNN": [MkldnnLinear(layer, torch.float32) for layer in layers],
    }
    rows = []
    with torch.inference_mode():
        for n in setup["rows"]:
            x = torch.randn(n, setup["in"])
            row = {"rows": n, "difference": float((ways["oneDNN"][0](x) - layers[0](x)).abs().max())}
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
             f"{setup['in']} -> {setup['out']} float32, {setup['layers']} copies cycled; ms per layer, the fastest "
             f"of {setup['passes']} passes.", "",
             "| rows | F.linear | x @ W.T stored | oneDNN | F.linear / oneDNN | oneDNN's largest difference |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['rows']} | {row['F.linear']:.2f} | {row['x @ W.T stored']:.2f} | {row['oneDNN']:.2f} | "
                     f"{row['F.linear'] / row['oneDNN']:.2f}x | {row['difference']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
