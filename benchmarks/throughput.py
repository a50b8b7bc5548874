"""Throughput of ReasonRanker against the model's own cost.

On ``irds:cranfield`` BM25 top-k, for each model and each mode, in one run:

* ``pipeline``: ``ReasonRanker`` as users run it (prefix reuse on);
* ``no reuse``: the same with ``prefix_reuse=False``;
* ``floor``: raw batched ``model.generate`` (direct mode: one forward pass) on the same
  pre-tokenised prompts in the same batches, generating as many tokens as the pipeline's
  worst case (the explanation budget, the forced marker, the label);
* ``one-pair``: a one-pair-at-a-time loop — generate, decode, parse, label 0 when unparsable —
  as the paper's code ran transformers inference (on a subset);
* ``engines`` (CPU preset): the same pairs through the transformers backend, vLLM's engine in
  process (``backend="vllm"``) and the OpenAI backend against a local vLLM server, prefix caching
  (prefix reuse, for transformers) on and off, interleaved, in float32 where the CPU has no
  bfloat16 arithmetic.

It reports docs/s and the ratios: the pipeline's overhead over the floor (no reuse against the
floor, like for like; target <= 10%), the speed-up over the one-pair loop (target >= 5x), the
prefill speed-up from prefix reuse on BRIGHT-length queries with short documents (target >= 1.5x,
scores equal), peak memory for 10 vs 100 queries (target: flat), and, for the larger model, the
roofline from the measured memory bandwidth and matmul rate. Each measurement runs in its own
process, so that its peak memory is its own.

    python benchmarks/throughput.py                 # CPU preset: tiny model and Qwen2.5-0.5B shape
    python benchmarks/throughput.py --preset gpu    # Llama-3.2-3B shape, bf16, 512-token docs

Models are random (the cost is the same as trained weights) and cached in
``$REASONRANK_CACHE/benchmark-models``. The data comes from ``../shared`` (``--shared``).
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from pyterrier_reasonrank.backends.hf import HFBackend
    from pyterrier_reasonrank.prompts import Prompt, PromptEncoder

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Engines:
    """What the engines are compared on."""

    model: str
    queries: int
    k: int
    max_new_tokens: int
    max_doc_tokens: int
    repeats: int
    caching: tuple = (True, False)
    eager: bool = False


@dataclasses.dataclass
class Workload:
    """What one model is measured on (``dtype`` None: bfloat16 where the CPU has bfloat16 arithmetic, else float32)."""

    dtype: Optional[str]
    queries: int
    k: int
    batch_size: int
    max_new_tokens: int
    max_doc_tokens: int
    max_batch_tokens: Optional[int]
    reference_docs: int
    repeats: int
    prefix_queries: int
    prefix_docs: int


PRESETS = {
    "cpu": {"device": "cpu", "engines": Engines(model="qwen2.5-0.5b", queries=4, k=8, max_new_tokens=32,
                                                max_doc_tokens=128, repeats=2), "models": {
        "tiny": Workload(dtype="float32", queries=20, k=20, batch_size=32, max_new_tokens=64, max_doc_tokens=256,
                         max_batch_tokens=65536, reference_docs=40, repeats=3, prefix_queries=24, prefix_docs=16),
        "qwen2.5-0.5b": Workload(dtype=None, queries=4, k=8, batch_size=16, max_new_tokens=32, max_doc_tokens=128,
                                 max_batch_tokens=65536, reference_docs=3, repeats=2, prefix_queries=2,
                                 prefix_docs=8),
    }},
    "gpu": {"device": "cuda", "models": {
        "llama-3.2-3b": Workload(dtype="bfloat16", queries=20, k=50, batch_size=256, max_new_tokens=128,
                                 max_doc_tokens=512, max_batch_tokens=256 * 1024, reference_docs=8, repeats=2,
                                 prefix_queries=20, prefix_docs=50),
    }},
}
PARTS = ("speed", "prefix", "memory", "roofline", "engines")
"""The measurements, in the order they are run."""
SCORE_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}
MEMORY_QUERIES = (10, 100)
MEMORY_DOCS = 10
QUICK = dict(queries=2, k=4, batch_size=4, max_new_tokens=4, reference_docs=2, repeats=1, prefix_queries=2,
             prefix_docs=4)
QUICK_ENGINES = dict(model="tiny-wide", queries=2, k=4, max_new_tokens=4, repeats=1, caching=(True,), eager=True)
PREFIX_DOC_TOKENS = 64


# ---------------------------------------------------------------- the parent: data, models, report

def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the benchmark (each measurement in a child process) and print the report as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="default: gpu when CUDA is available, else cpu")
    parser.add_argument("--models", default=None, help="comma-separated subset of the preset's models")
    parser.add_argument("--shared", default=os.environ.get("REASONRANK_SHARED", str(REPO.parent / "shared")),
                        help="the shared data folder (default: $REASONRANK_SHARED, else ../shared)")
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--quick", action="store_true", help="tiny workloads: checks that the script runs")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated measurements to run (default: all of {','.join(PARTS)})")
    parser.add_argument("--engine-model", default=None,
                        help="the model of the engines table (default: the preset's; tiny-wide: minutes, not an hour)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_run_child(json.loads(args.child))))
        return
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"unknown parts {sorted(parts - set(PARTS))}; choose from {','.join(PARTS)}")

    import torch

    preset_name = args.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    preset = PRESETS[preset_name]
    models = preset["models"]
    if args.models:
        models = {name: models[name] for name in args.models.split(",")}
    models = {name: dataclasses.replace(w, dtype=w.dtype or cpu_dtype()) for name, w in models.items()}
    memory_queries = MEMORY_QUERIES
    if args.quick:
        models = {name: dataclasses.replace(w, **QUICK) for name, w in models.items()}
        memory_queries = (2, 4)
    shared = Path(args.shared)
    offline_data(shared)
    work = Path(tempfile.mkdtemp(prefix="reasonrank-bench-"))
    pairs = work / "cranfield.parquet"
    most = max(max(w.queries for w in models.values()), max(memory_queries))
    _cranfield_pairs(most, max(max(w.k for w in models.values()), MEMORY_DOCS)).to_parquet(pairs)
    bright = work / "bright.json"
    bright.write_text(json.dumps(_bright_queries(shared, max(w.prefix_queries for w in models.values()))))

    common = {"device": preset["device"], "pairs": str(pairs), "bright": str(bright)}
    report = [f"# ReasonRanker throughput ({preset_name} preset, {machine(preset['device'])})", ""]
    speed, prefix, rooflines = [], [], []
    for name, workload in models.items():
        path = random_model(name, preset["device"])
        job = {**common, "model": str(path), "workload": dataclasses.asdict(workload)}
        # Quick: explain mode only, a process fewer (as the engines table's quick run has direct mode only).
        for mode in (("explain",) if args.quick else ("explain", "direct")) if "speed" in parts else ():
            speed.append({"model": name, "mode": mode, **_child({**job, "kind": "speed", "mode": mode})})
            _progress(speed[-1])
        if "prefix" in parts:
            prefix.append({"model": name, **_child({**job, "kind": "prefix"})})
            _progress(prefix[-1])
        if name != "tiny" and "roofline" in parts:
            rooflines.append({"model": name, **_child({**job, "kind": "roofline"})})
            _progress(rooflines[-1])
    tiny_workload = PRESETS["cpu"]["models"]["tiny"]
    tiny = {**common, "model": str(random_model("tiny", preset["device"])),
            "workload": dataclasses.asdict(dataclasses.replace(tiny_workload, **QUICK) if args.quick
                                           else tiny_workload)}
    memory = [{"queries": n, **_child({**tiny, "kind": "memory", "queries": n})}
              for n in (memory_queries if "memory" in parts else ())]

    engines = []
    if preset.get("engines") is not None and "engines" in parts:
        setup = dataclasses.replace(preset["engines"], **QUICK_ENGINES) if args.quick else preset["engines"]
        if args.engine_model:
            setup = dataclasses.replace(setup, model=args.engine_model)
        engine_job = {**common, "kind": "engines", "model": str(random_model(setup.model, "cpu")),
                      "engines": dataclasses.asdict(setup), "dtype": cpu_dtype()}
        for mode in ("direct",) if args.quick else ("explain", "direct"):
            for caching in setup.caching:  # a process each: three copies of the model at a time, not six
                engines.append({"model": setup.model, "mode": mode,
                                **_child({**engine_job, "mode": mode, "caching": caching})})
                _progress(engines[-1])

    report += _speed_table(speed) + _prefix_table(prefix) + _memory_table(memory) + _roofline_table(rooflines)
    report += _engines_table(engines)
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


def _cpu() -> tuple[str, list[str]]:
    """The CPU's model name and its flags that matter here (vector and bfloat16 arithmetic)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return name, sorted(f for f in flags if f.startswith(("avx", "amx")))


def cpu_dtype() -> str:
    """bfloat16 where the CPU has bfloat16 arithmetic, else float32 (several times faster on AVX2 alone)."""
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(_cpu()[1]) else "float32"


def offline_data(shared: Path) -> None:
    """ir_datasets gets a private copy of the shared home (it writes docstores beside the data)."""
    if "IR_DATASETS_HOME" not in os.environ:
        home = Path(tempfile.mkdtemp(prefix="reasonrank-irds-"))
        shutil.copytree(shared / "irds_home", home, dirs_exist_ok=True)
        os.environ["IR_DATASETS_HOME"] = str(home)


def _cranfield_pairs(queries: int, k: int):
    """BM25 top-k on irds:cranfield for the first ``queries`` queries, with the document text."""
    import pyterrier as pt

    from pyterrier_reasonrank.indexing import bm25

    dataset = pt.get_dataset("irds:cranfield")
    pipeline = bm25(dataset, name="irds:cranfield", num_results=k) >> pt.text.get_text(dataset, "text")
    return pipeline(dataset.get_topics().head(queries))


def _bright_queries(shared: Path, n: int) -> list[str]:
    """``n`` real BRIGHT queries, taken in turn from each domain."""
    files = sorted((shared / "data" / "bright").glob("topics.bright-*-original.jsonl.gz"))
    domains = []
    for file in files:
        with gzip.open(file, "rt") as lines:
            domains.append([json.loads(line)["query"] for line in lines])
    return [domains[i % len(domains)][i // len(domains)] for i in range(n)]


def random_model(name: str, device: str) -> Path:
    """The random model for ``name``, built once into the cache."""
    from pyterrier_reasonrank.testing import build_random_model, build_tiny_model

    root = Path(os.environ.get("REASONRANK_CACHE", Path.home() / ".cache" / "pyterrier_reasonrank"))
    path = root / "benchmark-models" / name
    if not (path / "config.json").exists():
        print(f"building the random {name} model in {path}", file=sys.stderr)
        if name == "tiny":
            build_tiny_model(path)
        elif name == "tiny-wide":  # heads of width 64, which vLLM's CPU kernels take
            build_tiny_model(path, hidden_size=256, num_heads=4)
        else:
            build_random_model(path, name, device=device)
    return path


def _child(job: dict) -> dict:
    """Run one measurement in a fresh process and return what it measured."""
    output = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], check=True,
                            stdout=subprocess.PIPE, text=True, env=os.environ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _progress(result: dict) -> None:
    print("measured:", json.dumps(result), file=sys.stderr, flush=True)


def machine(device: str) -> str:
    """The GPU's name, or the CPU's model, cores, vector flags and the torch version."""
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    name, flags = _cpu()
    return f"{name}, {os.cpu_count()} cores, flags {' '.join(flags) or 'none of avx/amx'}, torch {torch.__version__}"


def _speed_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Docs/s: pipeline, floor and one-pair loop", "",
             "| model | dtype, attention | mode | docs | pipeline | no reuse | floor | one-pair | overhead vs floor "
             "| of which tokenizing | speed-up vs one-pair | peak RSS | peak GPU |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        overhead, speedup = r["floor"] / r["no_reuse"] - 1, r["pipeline"] / r["one_pair"]
        tokenizing = r["floor"] / r["tokenize"]  # tokenizing time / floor time
        target = f" {_check(speedup >= 5)}" if r["mode"] == "explain" else ""
        lines.append(
            f"| {r['model']} | {r['dtype']}, {r['attention']} | {r['mode']} | {r['docs']} | {r['pipeline']:.1f} | "
            f"{r['no_reuse']:.1f} | {r['floor']:.1f} | {r['one_pair']:.2f} | {overhead:+.1%} "
            f"{_check(overhead <= 0.10)} | {tokenizing:.1%} | {speedup:.1f}x{target} | "
            f"{r['peak_rss_mb']:.0f} MB | {r['peak_gpu_mb']:.0f} MB |")
    return lines + ["", "Columns of docs/s. Overhead: the no-reuse pipeline against the floor, like for like (target "
                        "<= 10%; negative: faster than the floor); of which tokenizing: the time to tokenize the "
                        "pairs, which the floor is spared, as a share of the floor's time. Speed-up: the pipeline "
                        "against the one-pair loop (target >= 5x in explain mode, where generation dominates; a "
                        "direct-mode pair is one forward pass either way).", ""]


def _prefix_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Prefix reuse: BRIGHT queries, short documents, direct mode", "",
             "| model | dtype | pairs | query tokens (median) | prefill tokens, reuse / no reuse | docs/s reuse | "
             "docs/s no reuse | speed-up | max score difference |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gain, equal = r["reuse"] / r["no_reuse"], r["max_difference"] <= SCORE_TOLERANCE[r["dtype"]]
        lines.append(f"| {r['model']} | {r['dtype']} | {r['docs']} | {r['query_tokens']} | {r['tokens_reuse']} / "
                     f"{r['tokens_no_reuse']} | {r['reuse']:.1f} | {r['no_reuse']:.1f} | {gain:.2f}x "
                     f"{_check(gain >= 1.5)} | {r['max_difference']:.1e} {_check(equal)} |")
    return lines + ["", f"Documents cut to {PREFIX_DOC_TOKENS} tokens; queries to 512 (the ranker's default). "
                        "Target >= 1.5x with scores equal to rounding: the prefix and the suffix are computed in "
                        f"separate matmuls, whose rounding differs (tolerance {SCORE_TOLERANCE} on the 0-2 scale).",
                    ""]


def _memory_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Memory: 10 vs 100 queries (tiny model, explain mode)", "",
             "| queries | docs | RSS after loading | peak RSS |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['queries']} | {r['docs']} | {r['loaded_rss_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB |")
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
    return lines + ["", f"Peak growth from {rows[0]['queries']} to {rows[-1]['queries']} queries: {growth:+.1%} "
                        f"{_check(growth <= 0.05)} (target: within a few percent).", ""]


def _roofline_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Roofline (explain mode)", "",
             "| model | measured bandwidth | measured matmul | prefill bound | decode bound | roofline docs/s | "
             "pipeline docs/s | of roofline |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['bandwidth_gbs']:.0f} GB/s | {r['matmul_tflops']:.2f} TFLOP/s | "
                     f"{r['prefill_s']:.1f} s | {r['decode_s']:.1f} s | {r['roofline']:.1f} | {r['pipeline']:.1f} | "
                     f"{r['pipeline'] / r['roofline']:.0%} |")
    return lines + ["", "Roofline: prefill FLOPs at the measured matmul rate, plus each decoding step at the larger "
                        "of its FLOPs and its bytes (weights and key/value cache) at the measured bandwidth.", ""]


def _engines_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Engines: transformers, vLLM's engine, a vLLM server", "",
             "| model | dtype | mode | docs | caching | transformers | vLLM engine | vLLM server | engine / "
             "transformers | server / transformers | engine / server |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speeds = r["docs_per_second"]
        hf, engine, server = speeds["transformers"], speeds["vllm"], speeds["server"]
        lines.append(f"| {r['model']} | {r['dtype']} | {r['mode']} | {r['docs']} | {r['caching']} | {hf:.2f} | "
                     f"{engine:.2f} | {server:.2f} | {engine / hf:.2f}x | {server / hf:.2f}x | "
                     f"{engine / server:.2f}x |")
    return lines + ["", "Docs/s, the best of the interleaved repeats (the three engines interleaved; each caching "
                        "setting in a process of its own). Caching: vLLM's prefix caching, and the transformers "
                        "backend's prefix reuse. The server is `vllm.entrypoints.openai.api_server` on loopback, with "
                        "the label reader (one request per explained pair, as the engine), reached by "
                        "`backend='openai'` (32 pairs in flight). Max score difference between the "
                        "backends: " + ", ".join(f"{r['mode']} (caching {r['caching']}) {r['max_difference']:.1e}"
                                                 for r in rows) + ".", ""]


def _check(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# ---------------------------------------------------------------- the children: one measurement each

def _run_child(job: dict) -> dict:
    kinds = {"speed": _speed, "prefix": _prefix, "memory": _memory, "roofline": _roofline, "engines": _engines}
    return kinds[job["kind"]](job)


def _setup(job: dict, mode: str, pairs: pd.DataFrame):
    """The ranker, its backend and the pre-tokenised prompts for ``pairs``."""
    from pyterrier_reasonrank import Student
    from pyterrier_reasonrank.prompts import PromptEncoder

    w = Workload(**job["workload"])
    options = dict(mode=mode, batch_size=w.batch_size, max_new_tokens=w.max_new_tokens,
                   max_doc_tokens=job.get("max_doc_tokens", w.max_doc_tokens), max_batch_tokens=w.max_batch_tokens)
    student = Student(job["model"], device=job["device"], dtype=w.dtype)  # one copy of the weights for all
    ranker = student.ranker(**options).load()
    backend = student.engine
    encoder = PromptEncoder(backend.tokenizer, mode, max_doc_tokens=options["max_doc_tokens"])
    prompts = encoder.prompts(pairs["query"].tolist(), pairs["text"].tolist())
    return ranker, options, backend, encoder, prompts


def _pairs(job: dict, queries: int, k: int):
    import pandas as pd

    frame = pd.read_parquet(job["pairs"])
    frame = frame[frame["qid"].isin(list(dict.fromkeys(frame["qid"]))[:queries]) & (frame["rank"] < k)]
    return frame.reset_index(drop=True)


def _speed(job: dict) -> dict:
    w = Workload(**job["workload"])
    mode = job["mode"]
    pairs = _pairs(job, w.queries, w.k)
    ranker, options, backend, encoder, prompts = _setup(job, mode, pairs)
    no_reuse = ranker.student.ranker(prefix_reuse=False, **options)
    new_tokens = 1 if mode == "direct" else w.max_new_tokens + len(encoder.forced_marker_ids) + 1
    floor = _Floor(backend, prompts, options, new_tokens)
    # Warm up: the first calls pay for kernel selection and allocations.
    ranker(pairs.head(w.batch_size))
    floor.run(limit=1)
    loaded_rss = _rss_mb()
    times = {"pipeline": [], "no_reuse": [], "floor": [], "tokenize": []}
    for _ in range(w.repeats):  # interleaved, so that drift on a shared machine hits each alike
        times["pipeline"].append(_timed(lambda: ranker(pairs), job["device"]))
        times["no_reuse"].append(_timed(lambda: no_reuse(pairs), job["device"]))
        times["floor"].append(_timed(floor.run, job["device"]))
        # the part of the pipeline the floor leaves out by taking pre-tokenised prompts
        times["tokenize"].append(_timed(lambda: encoder.prompts(pairs["query"].tolist(), pairs["text"].tolist()),
                                        job["device"]))
    reference = prompts[:w.reference_docs]
    one_pair = _timed(lambda: _one_pair_loop(backend, encoder, reference, new_tokens), job["device"])
    result = {name: len(pairs) / min(values) for name, values in times.items()}
    return {**result, "one_pair": len(reference) / one_pair, "docs": len(pairs), "loaded_rss_mb": loaded_rss,
            "attention": backend.model.config._attn_implementation, "dtype": w.dtype, **_peaks(job["device"])}


class _Floor:
    """Raw batched ``generate`` (or one forward pass) on the pipeline's prompts, in its batches."""

    def __init__(self, backend: HFBackend, prompts: list[Prompt], options: dict, new_tokens: int):
        from pyterrier_reasonrank.backends.hf import batches

        self.backend, self.new_tokens = backend, new_tokens
        budget = new_tokens - 1
        self.batches = [[list(prompts[i][0]) + list(prompts[i][1]) for i in batch]
                        for batch in batches(prompts, options["batch_size"], options["max_batch_tokens"], budget)]

    def run(self, limit: Optional[int] = None) -> None:
        import torch

        model, pad = self.backend.model, self.backend.pad_id
        for ids in self.batches[:limit]:
            input_ids, mask = self.backend.left_pad(ids, max(len(x) for x in ids))
            with torch.inference_mode():
                if self.new_tokens == 1:
                    model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1)
                else:
                    model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=self.new_tokens,
                                   min_new_tokens=self.new_tokens, do_sample=False, pad_token_id=pad)


def _one_pair_loop(backend: HFBackend, encoder: PromptEncoder, prompts: list[Prompt], new_tokens: int) -> list[int]:
    """One pair at a time: generate, decode, parse; label 0 when the output cannot be parsed."""
    import torch

    from pyterrier_reasonrank.prompts import EXPLANATION_PREFIX, LABEL_MARKER, parse_response

    labels = []
    start = EXPLANATION_PREFIX if encoder.mode == "explain" else LABEL_MARKER
    for prefix, suffix in prompts:
        ids = torch.tensor([list(prefix) + list(suffix)], device=backend.device)
        with torch.inference_mode():
            output = backend.model.generate(input_ids=ids, max_new_tokens=new_tokens, do_sample=False,
                                            pad_token_id=backend.pad_id)
        parsed = parse_response(start + backend.tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True))
        labels.append(parsed.label if parsed.label is not None else 0)
    return labels


def _prefix(job: dict) -> dict:
    """Direct mode on BRIGHT queries with short documents, with and without prefix reuse."""
    import numpy as np
    import pandas as pd

    from pyterrier_reasonrank import ReasonRanker

    w = Workload(**job["workload"])
    queries = json.loads(Path(job["bright"]).read_text())[:w.prefix_queries]
    texts = _pairs(job, 1, w.prefix_docs)["text"].tolist()
    pairs = pd.DataFrame([{"qid": f"q{i}", "query": q, "docno": f"d{j}", "text": t}
                          for i, q in enumerate(queries) for j, t in enumerate(texts)])
    job = {**job, "max_doc_tokens": PREFIX_DOC_TOKENS}
    ranker, options, backend, encoder, prompts = _setup(job, "direct", pairs)
    no_reuse = ReasonRanker(job["model"], prefix_reuse=False, **options)
    ranker(pairs.head(w.batch_size))
    times = {"reuse": [], "no_reuse": []}
    for _ in range(w.repeats):
        times["reuse"].append(_timed(lambda: ranker(pairs), job["device"]))
        times["no_reuse"].append(_timed(lambda: no_reuse(pairs), job["device"]))
    scores = [r(pairs).sort_values(["qid", "docno"])["score"].to_numpy() for r in (ranker, no_reuse)]
    prefixes = {p for p, _ in prompts}
    return {**{name: len(pairs) / min(values) for name, values in times.items()}, "docs": len(pairs), "dtype": w.dtype,
            "query_tokens": int(np.median([len(p) for p in prefixes])),
            "tokens_reuse": _prefill_tokens(prompts, options, reuse=True),
            "tokens_no_reuse": _prefill_tokens(prompts, options, reuse=False),
            "max_difference": float(np.abs(scores[0] - scores[1]).max())}


def _prefill_tokens(prompts: list[Prompt], options: dict, *, reuse: bool) -> int:
    """Tokens the prefill computes, counting each batch's distinct prefixes once when reusing."""
    from pyterrier_reasonrank.backends.hf import batches

    total = 0
    for batch in batches(prompts, options["batch_size"], options["max_batch_tokens"], 0):
        if reuse:
            total += sum(len(p) for p in {prompts[i][0] for i in batch}) + sum(len(prompts[i][1]) for i in batch)
        else:
            total += sum(len(prompts[i][0]) + len(prompts[i][1]) for i in batch)
    return total


def _memory(job: dict) -> dict:
    """Peak RSS of the pipeline (explain mode) over ``queries`` queries."""
    pairs = _pairs(job, job["queries"], MEMORY_DOCS)
    ranker, *_ = _setup(job, "explain", pairs)
    ranker(pairs.head(8))
    loaded = _rss_mb()
    ranker(pairs)
    return {"docs": len(pairs), "loaded_rss_mb": loaded, **_peaks(job["device"])}


def _roofline(job: dict) -> dict:
    """The fastest the hardware could judge the explain workload, and the pipeline's docs/s on it."""
    import torch

    from pyterrier_reasonrank.backends.hf import batches

    w = Workload(**job["workload"])
    pairs = _pairs(job, w.queries, w.k)
    ranker, options, backend, encoder, prompts = _setup(job, "explain", pairs)
    bandwidth, matmul = _measure_hardware(job["device"], getattr(torch, w.dtype))
    config, model = backend.model.config, backend.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = config.vocab_size * config.hidden_size
    body = sum(p.numel() for p in model.parameters()) - embedding * (1 if config.tie_word_embeddings else 2)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * model.dtype.itemsize
    attention = 2 * config.num_hidden_layers * config.num_attention_heads * head_dim  # FLOPs per query-key pair / 2
    steps = w.max_new_tokens + len(encoder.forced_marker_ids)
    prefill = decode = 0.0
    for batch in batches(prompts, w.batch_size, w.max_batch_tokens, steps):
        lengths = [len(prompts[i][0]) + len(prompts[i][1]) for i in batch]
        prefill += sum(2 * body * n + attention * n * n for n in lengths) / matmul
        for step in range(steps):
            flops = len(batch) * (2 * (body + embedding)) + attention * 2 * sum(n + step for n in lengths)
            cache = kv_per_token * sum(n + step for n in lengths)
            decode += max(flops / matmul, (weight_bytes + cache) / bandwidth)
    ranker(pairs.head(w.batch_size))
    elapsed = min(_timed(lambda: ranker(pairs), job["device"]) for _ in range(w.repeats))
    return {"bandwidth_gbs": bandwidth / 1e9, "matmul_tflops": matmul / 1e12, "prefill_s": prefill,
            "decode_s": decode, "roofline": len(pairs) / (prefill + decode), "pipeline": len(pairs) / elapsed}


def _engines(job: dict) -> dict:
    """The transformers backend, vLLM's engine and a vLLM server on the same pairs, interleaved."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from vllm_process import ENVIRONMENT, VLLMServer

    os.environ.update(ENVIRONMENT)
    from pyterrier_reasonrank import ReasonRanker

    setup = Engines(**job["engines"])
    pairs = _pairs(job, setup.queries, setup.k)
    options = dict(mode=job["mode"], max_new_tokens=setup.max_new_tokens, max_doc_tokens=setup.max_doc_tokens,
                   dtype=job["dtype"])
    caching = job["caching"]
    server = VLLMServer(Path(job["model"]), Path(tempfile.mkdtemp()) / "vllm.log", caching=caching,
                        dtype=job["dtype"], eager=setup.eager, worker_in_engine=False, label_reader=True)
    try:
        rankers = {
            "transformers": ReasonRanker(job["model"], prefix_reuse=caching, device="cpu", **options),
            "vllm": ReasonRanker(job["model"], backend="vllm", **options, engine_options={
                "enable_prefix_caching": caching, "enforce_eager": setup.eager, "max_model_len": 2048}),
            "server": ReasonRanker("base", backend="openai", base_url=server.base_url, tokenizer=job["model"],
                                   **options)}
        for ranker in rankers.values():
            ranker(pairs.head(4))  # warm up
        times, scores = {name: [] for name in rankers}, {}
        for _ in range(setup.repeats):  # interleaved, so that drift on a shared machine hits each alike
            for name, ranker in rankers.items():
                start = time.perf_counter()
                result = ranker(pairs)
                times[name].append(time.perf_counter() - start)
                scores[name] = result.sort_values(["qid", "docno"])["score"].to_numpy()
    finally:
        server.close()
    reference = scores["transformers"]
    return {"docs": len(pairs), "dtype": job["dtype"], "caching": "on" if caching else "off",
            "max_difference": float(max(np.abs(s - reference).max() for s in scores.values())),
            "docs_per_second": {name: len(pairs) / min(values) for name, values in times.items()}}


def _measure_hardware(device: str, dtype: torch.dtype) -> tuple[float, float]:
    """Measured memory bandwidth (bytes/s, a large copy reads and writes) and matmul rate (FLOP/s)."""
    import torch

    source = torch.empty(256 * 2 ** 20, dtype=torch.float32, device=device)  # 1 GiB
    target = torch.empty_like(source)
    copy = min(_timed(lambda: target.copy_(source), device) for _ in range(5))
    n = 8192 if device == "cuda" else 2048
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    matmul = min(_timed(lambda: a @ b, device) for _ in range(5))
    return 2 * source.numel() * source.element_size() / copy, 2 * n ** 3 / matmul


def _timed(function: Callable[[], object], device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peaks(device: str) -> dict:
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda" else 0.0
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_gpu_mb": gpu}


if __name__ == "__main__":
    main()
