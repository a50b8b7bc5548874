"""Test-time compute: nDCG@10 against the tokens generated, for direct, explain, k samples and adaptive.

A tiny student is distilled on the synthetic task of the learning tests (tests/synthetic.py: the
label needs a two-word lookup, which an explanation breaks into small steps) in explain mode, and
in direct mode on a quarter of the pairs, so that direct mode is right on most pairs but not all
(held-out label accuracy about 0.9, explain mode's 1.0). Each way of spending compute
then re-ranks the same held-out queries (nine documents each, one per depth word, graded 0-2):

* ``direct``: one forward pass per pair, no tokens generated;
* ``explain``: one greedy explanation per pair;
* ``explain, k samples``: k explanations per pair (the greedy one and k-1 sampled), averaged;
* ``adaptive``: direct mode for every pair, explanations only where the direct label distribution's
  entropy reaches a threshold (several thresholds), and with k samples.

It reports nDCG@10, tokens generated per query, the share of pairs explained and the time, as a
Markdown table, and plots tokens against nDCG@10 (PNG).

``--part cost`` measures what the policies cost as users pay it, on long documents: BRIGHT's real
queries (../shared/data/bright) with documents of 512-1,024 tokens, a model of real shape (random
weights: Qwen2.5-0.5B's), on the transformers backend and vLLM's engine. Per policy — direct,
explain, adaptive (the pairs around a cut-off explained) and explain with k samples — the wall time
after a warm-up, and the model's work: prompt tokens computed, prompt tokens served from a cache
(the transformers backend's prompt cache, vLLM's prefix cache, by its own counters) and tokens
decoded. Each policy starts from an empty cache.

``--part floor`` times the decoding alone, from prompts already read, for the pairs adaptive
escalates and for all of them: their ratio is the least share of explain's extra time that
adaptive can cost on the machine, whatever else it saves. The transformers backend is timed twice,
interleaved: with its linear weights stored transposed, as it loads them (backends/weight_layout.py),
and as transformers stores them, which shows what that layout gains.

    python benchmarks/test_time_compute.py --output results.md --plot benchmarks/test-time-compute.png
    python benchmarks/test_time_compute.py --part cost --output cost.md --plot benchmarks/test-time-cost.png
    python benchmarks/test_time_compute.py --quick      # a minute: checks that the script runs
    python benchmarks/test_time_compute.py --part cost --quick
    python benchmarks/test_time_compute.py --part floor --output floor.md
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the learning tests' synthetic task, one copy for both
from synthetic import Vocabulary, make_pairs, ranking_task, write_annotations  # noqa: E402
from throughput import machine  # noqa: E402

# LoRA on every linear layer, with embeddings and output layer trained: a random model has no useful
# embeddings to adapt around (as in the learning tests).
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_target_modules=["all-linear"],
            lora_modules_to_save=["embed_tokens", "lm_head"])
FULL = {"pairs": 600, "epochs": 6, "direct_fraction": 0.25, "queries_per_topic": 20, "samples": 4,
        "thresholds": (0.1, 0.3, 0.5, 0.7)}
QUICK = {"pairs": 160, "epochs": 1, "direct_fraction": 1.0, "queries_per_topic": 2, "samples": 2, "thresholds": (0.5,)}
COST = {"model": "qwen2.5-0.5b", "domain": "biology", "queries": 2, "docs": 10, "doc_words": 700,
        "max_doc_tokens": 512, "max_new_tokens": 32, "batch_size": 20, "samples": 4, "cutoff": 3, "margin": 1,
        "backends": ("transformers", "vllm"), "repeats": 3}
COST_QUICK = {**COST, "model": None, "queries": 1, "docs": 4, "doc_words": 150, "max_doc_tokens": 128,
              "max_new_tokens": 8, "batch_size": 4, "samples": 2, "cutoff": 2, "backends": ("transformers",),
              "repeats": 1}
SHARED = Path(__file__).resolve().parents[2] / "shared"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Distil the student, re-rank with each policy, print (and write) the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--plot", default=None, help="write the cost-against-nDCG@10 plot (PNG) to this file")
    parser.add_argument("--epochs", type=float, default=None, help=f"distillation epochs (default: {FULL['epochs']})")
    parser.add_argument("--direct-fraction", type=float, default=None,
                        help=f"share of the pairs also trained in direct mode (default: {FULL['direct_fraction']})")
    parser.add_argument("--quick", action="store_true", help="a small student and task: checks that the script runs")
    parser.add_argument("--part", choices=("quality", "cost", "floor"), default="quality",
                        help="quality: nDCG@10 against tokens on the synthetic task; cost: time and model work on "
                             "long documents, on both backends; floor: the decoding alone, escalated pairs "
                             "against all (the least share of explain's extra time adaptive can cost)")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="cost, floor: the backends (default: transformers vllm)")
    parser.add_argument("--vllm-block-size", type=int, default=None,
                        help="cost, floor: vLLM's KV cache block size (default: the backend's; 32 on a CPU)")
    args = parser.parse_args(argv)
    if args.part in ("cost", "floor"):
        setup = dict(COST_QUICK if args.quick else COST)
        setup["backends"] = tuple(args.backends or setup["backends"])
        setup["vllm_block_size"] = args.vllm_block_size
        rows = cost(setup) if args.part == "cost" else decode_floor(setup)
        report = _cost_report(rows, setup) if args.part == "cost" else _floor_report(rows, setup)
        print(report)
        if args.output:
            Path(args.output).write_text(report + "\n")
        if args.plot and args.part == "cost":
            _cost_plot(rows, args.plot)
        return
    setup = dict(QUICK if args.quick else FULL)
    if args.epochs is not None:
        setup["epochs"] = args.epochs
    if args.direct_fraction is not None:
        setup["direct_fraction"] = args.direct_fraction

    import pyterrier as pt
    from transformers import AutoTokenizer

    from pyterrier_reasonrank import Escalation, ReasonRanker, Student
    from pyterrier_reasonrank.testing import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="reasonrank-ttc-"))
    model = build_tiny_model(work / "tiny")
    vocabulary = Vocabulary.of(AutoTokenizer.from_pretrained(model))
    student, accuracy = distil_student(work, model, vocabulary, setup)
    candidates, qrels = ranking_task(vocabulary, seed=2, queries_per_topic=setup["queries_per_topic"])

    k = setup["samples"]
    common = dict(model=Student(adapter=str(student)), max_new_tokens=24)  # one copy of the weights for all
    policies = {"direct": ReasonRanker(mode="direct", **common),
                "explain": ReasonRanker(**common),
                f"explain, {k} samples": ReasonRanker(samples=k, temperature=1.0, **common)}
    for threshold in setup["thresholds"]:
        policies[f"adaptive, entropy >= {threshold}"] = ReasonRanker(
            mode="adaptive", escalation=Escalation(entropy=threshold), **common)
    middle = setup["thresholds"][len(setup["thresholds"]) // 2]
    policies[f"adaptive, entropy >= {middle}, {k} samples"] = ReasonRanker(
        mode="adaptive", escalation=Escalation(entropy=middle), samples=k, temperature=1.0, **common)

    rows = []
    for name, ranker in policies.items():
        ranker.load()
        start = time.perf_counter()
        ranked = ranker(candidates)
        seconds = time.perf_counter() - start
        ndcg = pt.Evaluate(ranked, qrels, [pt.measures.nDCG @ 10])["nDCG@10"]
        rows.append({"policy": name, "ndcg": ndcg, "tokens": ranked["tokens"].sum() / ranked["qid"].nunique(),
                     "explained": float((ranked["samples"] > 0).mean()), "seconds": seconds})
        print("measured:", json.dumps(rows[-1]), file=sys.stderr, flush=True)

    report = _report(rows, setup, accuracy, len(candidates), candidates["qid"].nunique())
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
    if args.plot:
        _plot(rows, args.plot)


def cost(setup: dict) -> list[dict]:
    """Each policy's wall time and model work, per backend, on BRIGHT queries with long documents."""
    model, frame, options = _workload(setup)
    k = setup["samples"]
    policies = {"direct": dict(mode="direct"), "explain": {},
                "adaptive": dict(mode="adaptive", escalation=_escalation(setup)),
                f"explain, {k} samples": dict(samples=k, temperature=1.0)}
    rows = []
    # Direct, explain and adaptive are timed `repeats` times, interleaved, and the fastest kept: the
    # share of explain's extra time adaptive costs is a difference of differences of ~10 s on ~100 s,
    # which one run on a shared machine cannot resolve (single runs here gave 36% and 66%). The
    # samples, far from the others, are timed once.
    for backend in setup["backends"]:
        student, label = _student(model, backend, setup)
        student.ranker(mode="direct", **options)(frame.head(2))  # warm-up: kernels, allocations
        measured: dict[str, dict] = {}
        for repeat in range(setup["repeats"]):
            for name, policy in policies.items():
                if repeat and name not in ("direct", "explain", "adaptive"):
                    continue
                ranker = student.ranker(**options, **policy)
                _forget(student)
                before = dict(student.engine.counts)
                start = time.perf_counter()
                ranked = ranker(frame)
                seconds = time.perf_counter() - start
                spent = {key: student.engine.counts[key] - before[key] for key in before}
                row = measured.setdefault(name, {
                    "backend": label, "policy": name, "times": [], **spent,
                    "explained": int((ranked["samples"] > 0).sum()), "pairs": len(ranked),
                    "generated": int(ranked["tokens"].sum())})
                row["times"].append(seconds)
                row["seconds"] = min(row["times"])
                print("measured:", json.dumps(row), file=sys.stderr, flush=True)
        rows.extend(measured.values())
    return rows


def _escalation(setup: dict):
    """Adaptive's policy here: the pairs within ``margin`` of rank ``cutoff`` explained, the entropy test off."""
    from pyterrier_reasonrank import Escalation

    return Escalation(entropy=None, cutoff=setup["cutoff"], margin=setup["margin"])


def _workload(setup: dict):
    """The model (built here, random weights), the frame of BRIGHT queries and long documents, the ranker options."""
    import gzip
    import random

    import pandas as pd

    from pyterrier_reasonrank.testing import build_random_model, build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="reasonrank-cost-"))
    model = build_tiny_model(work / "model") if setup["model"] is None else \
        build_random_model(work / "model", setup["model"], dtype="float32")
    topics = SHARED / "data" / "bright" / f"topics.bright-{setup['domain']}-original.jsonl.gz"
    with gzip.open(topics, "rt") as file:
        queries = [json.loads(line) for line in file][:setup["queries"]]
    words = "moon ocean tide gravity cell protein gene enzyme river glacier climate orbit energy mass".split()
    draw = random.Random(0)
    frame = pd.DataFrame([{"qid": str(q["id"]), "query": q["query"], "docno": f"{q['id']}-{d}",
                           "text": " ".join(draw.choice(words) for _ in range(setup["doc_words"]))}
                          for q in queries for d in range(setup["docs"])])
    options = dict(max_new_tokens=setup["max_new_tokens"], max_doc_tokens=setup["max_doc_tokens"],
                   batch_size=setup["batch_size"])
    return model, frame, options


def _student(model: Path, backend: str, setup: dict):
    """The student on ``backend`` (float32; vLLM eager, with the block size asked for) and its label in the tables."""
    from pyterrier_reasonrank import Student

    engine_options = None
    if backend == "vllm":
        # A KV cache of its own size: else the engine wants 92% of the machine's memory free at its start,
        # which the transformers backend's model, measured before it in this process, does not leave.
        engine_options = {"enforce_eager": True, "max_model_len": 4096, "kv_cache_memory_bytes": 2 << 30}
        if setup["vllm_block_size"]:  # the unit of prefix caching: a prompt's last partial block is recomputed
            engine_options["block_size"] = setup["vllm_block_size"]
    label = f"{backend}, blocks of {setup['vllm_block_size']}" \
        if backend == "vllm" and setup["vllm_block_size"] else backend
    return Student(str(model), backend=backend, dtype="float32", engine_options=engine_options), label


def decode_floor(setup: dict) -> list[dict]:
    """What decoding the explanations alone costs for the pairs adaptive escalates against all the pairs.

    Adaptive's time beyond direct mode is decoding its escalated pairs' explanations, from prompts
    already read; explain's is decoding every pair's. Their ratio here is the least share of
    explain's extra time that adaptive can cost on this machine, whatever else is saved: per backend,
    ``max_new_tokens`` greedy steps for the escalated pairs and for all of them, from cached prompts
    of the workload's length, timed ``repeats`` times interleaved (the fastest kept).
    """
    import numpy as np

    from pyterrier_reasonrank.adaptive import escalated as escalated_pairs
    from pyterrier_reasonrank.prompts import LABELS

    model, frame, options = _workload(setup)
    # How many pairs adaptive explains: its cut-off rule picks ranks, whatever the scores.
    uniform = np.full((len(frame), len(LABELS)), 1 / len(LABELS))
    escalated = int(escalated_pairs(frame["qid"].tolist(), uniform, _escalation(setup), cost=1).sum())
    rows = []
    for backend in setup["backends"]:
        student, label = _student(model, backend, setup)
        ranker = student.ranker(**options).load()
        prompts = [list(prefix) + list(suffix) for prefix, suffix in
                   ranker.encoder.prompts(frame["query"].tolist(), frame["text"].tolist())]
        decode = _hf_decode if backend == "transformers" else _vllm_decode
        decode(student.engine, prompts, setup["max_new_tokens"])  # warm-up (and vLLM: the prompts cached)
        # The transformers backend also with the weights as transformers stores them: what its layout gains.
        layouts = [None, "as transformers stores them"] if backend == "transformers" else [None]
        times = {layout: {escalated: [], len(prompts): []} for layout in layouts}
        for _ in range(setup["repeats"]):
            for layout in layouts:
                with _transformers_layout(student.engine.model if layout else None):
                    for n in times[layout]:
                        times[layout][n].append(decode(student.engine, prompts[:n], setup["max_new_tokens"]))
        for layout in layouts:
            rows.append({"backend": f"{label}, weights {layout}" if layout else label, "pairs": len(prompts),
                         "escalated": escalated, "prompt_tokens": round(sum(map(len, prompts)) / len(prompts)),
                         "times": times[layout],
                         "share": min(times[layout][escalated]) / min(times[layout][len(prompts)])})
            print("measured:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


@contextlib.contextmanager
def _transformers_layout(model: Optional[object]) -> Iterator[None]:
    """Inside, ``model``'s linear weights as transformers stores them (out x in in memory); after, as the backend."""
    if model is None:
        yield
        return
    from pyterrier_reasonrank.backends.weight_layout import store_weights_as_transformers, store_weights_transposed

    store_weights_as_transformers(model)
    try:
        yield
    finally:
        store_weights_transposed(model)


def _hf_decode(engine: object, prompts: list[list[int]], steps: int) -> float:
    """Seconds for ``steps`` greedy decoding steps of the prompts' batch, from a key/value cache of their length.

    The cache holds random keys and values (a step's cost does not depend on them), so the prompts
    need not be read first; the batch is left-padded and masked, as the backend's own batches are.
    """
    import torch
    from transformers import DynamicCache

    config = engine.model.config
    width = max(map(len, prompts))
    heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shape = (len(prompts), heads, width, head_dim)
    cache = DynamicCache([(torch.randn(shape), torch.randn(shape)) for _ in range(config.num_hidden_layers)])
    _, mask = engine.left_pad(prompts, width)
    position = mask.sum(-1, keepdim=True) - 1
    token = torch.tensor([[prompt[-1]] for prompt in prompts])
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones((len(prompts), 1))], dim=1)
            position = position + 1
            out = engine.model(input_ids=token, attention_mask=mask, position_ids=position, past_key_values=cache,
                               use_cache=True)
            token, cache = out.logits[:, -1].argmax(-1, keepdim=True), out.past_key_values
    return time.perf_counter() - start


def _vllm_decode(engine: object, prompts: list[list[int]], steps: int) -> float:
    """Seconds for vLLM's engine to decode ``steps`` tokens for each prompt (read from its prefix cache)."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True)
    start = time.perf_counter()
    engine.engine.generate([{"prompt_token_ids": prompt} for prompt in prompts], params, use_tqdm=False)
    return time.perf_counter() - start


def _forget(student: object) -> None:
    """Empty the student's prompt (or prefix) cache, so that each policy starts as a first run would."""
    engine = student.engine
    if hasattr(engine, "prompt_cache"):
        engine.prompt_cache.clear()
    else:
        engine.engine.reset_prefix_cache()


def _cost_report(rows: list[dict], setup: dict) -> str:
    lines = [f"# What test-time compute costs on long documents ({machine('cpu')})", "",
             f"{setup['queries']} BRIGHT {setup['domain']} queries x {setup['docs']} documents of "
             f"{setup['doc_words']} words (cut at {setup['max_doc_tokens']} tokens); model: "
             f"{setup['model'] or 'tiny'} shape, random weights, float32; explanation budget "
             f"{setup['max_new_tokens']} tokens; adaptive explains the pairs within {setup['margin']} of rank "
             f"{setup['cutoff']}; each policy from an empty cache, after a warm-up; seconds: the fastest of "
             f"{setup['repeats']} interleaved runs (the samples: one run), all runs in the last column.", "",
             "| backend | policy | seconds | of explain's | prompt tokens computed | served from cache | "
             "tokens decoded | pairs explained | runs (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        explain = next(r for r in rows if r["backend"] == row["backend"] and r["policy"] == "explain")
        lines.append(f"| {row['backend']} | {row['policy']} | {row['seconds']:.1f} | "
                     f"{row['seconds'] / explain['seconds']:.0%} | {row['computed']} | {row['cached']} | "
                     f"{row['decoded']} | {row['explained']} of {row['pairs']} | "
                     f"{', '.join(f'{t:.1f}' for t in row['times'])} |")
    for backend in dict.fromkeys(row["backend"] for row in rows):
        by = {row["policy"]: row["seconds"] for row in rows if row["backend"] == backend}
        if {"direct", "explain", "adaptive"} <= set(by) and by["explain"] > by["direct"]:
            share = (by["adaptive"] - by["direct"]) / (by["explain"] - by["direct"])
            lines.append(f"\n{backend}: adaptive costs direct + {share:.0%} of explain's extra time.")
    return "\n".join(lines)


def _floor_report(rows: list[dict], setup: dict) -> str:
    lines = [f"# Decoding alone: escalated pairs against all ({machine('cpu')})", "",
             f"{setup['max_new_tokens']} greedy steps from cached prompts of the cost workload "
             f"({setup['model'] or 'tiny'} shape, float32); seconds: the fastest of {setup['repeats']} interleaved "
             "runs, all in brackets.", "",
             "| backend | prompt tokens | escalated pairs | seconds | all pairs | seconds | least share |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        few, every = (row["times"][n] for n in (row["escalated"], row["pairs"]))
        lines.append(f"| {row['backend']} | {row['prompt_tokens']} | {row['escalated']} | {min(few):.2f} "
                     f"({', '.join(f'{t:.2f}' for t in few)}) | {row['pairs']} | {min(every):.2f} "
                     f"({', '.join(f'{t:.2f}' for t in every)}) | {row['share']:.0%} |")
    return "\n".join(lines)


def _cost_plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(row["backend"] for row in rows))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for backend, offset in zip(backends, (-0.2, 0.2)):
        mine = [row for row in rows if row["backend"] == backend]
        x = [i + offset for i in range(len(mine))]
        axes[0].bar(x, [row["seconds"] for row in mine], width=0.4, label=backend)
        axes[1].bar(x, [row["computed"] for row in mine], width=0.4, label=f"{backend}: prompt computed")
        axes[1].bar(x, [row["decoded"] for row in mine], width=0.4, bottom=[row["computed"] for row in mine],
                    label=f"{backend}: decoded", alpha=0.6)
    names = [row["policy"] for row in rows if row["backend"] == backends[0]]
    for axis, title, unit in ((axes[0], "Wall time per policy", "seconds"),
                              (axes[1], "Model work per policy", "tokens")):
        axis.set_xticks(range(len(names)), names, rotation=15)
        axis.set_title(title)
        axis.set_ylabel(unit)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def distil_student(work: Path, model: Path, vocabulary: Vocabulary, setup: dict) -> tuple[Path, dict]:
    """The student: distilled in explain and direct mode on rule-annotated pairs; its held-out label accuracy."""
    from pyterrier_reasonrank.training.distillation import DistillConfig, distill
    from pyterrier_reasonrank.training.student import StudentConfig

    train = write_annotations(vocabulary, work / "train.jsonl", setup["pairs"])
    held_out = make_pairs(vocabulary, 90, seed=1, prefix="h")
    held_out.to_json(work / "held_out.jsonl", orient="records", lines=True)
    metrics = distill(DistillConfig(output_dir=str(work / "student"), train_file=str(train),
                                    direct_fraction=setup["direct_fraction"],
                                    eval_file=str(work / "held_out.jsonl"), num_train_epochs=setup["epochs"],
                                    per_device_train_batch_size=16, learning_rate=2e-3, lr_scheduler_type="constant",
                                    save_strategy="no", logging_steps=50, disable_tqdm=True, report_to="none"),
                      StudentConfig(model_name_or_path=str(model), **LORA))
    return work / "student", {mode: metrics["eval"][mode]["accuracy"] for mode in ("explain", "direct")}


def _report(rows: list[dict], setup: dict, accuracy: dict, pairs: int, queries: int) -> str:
    explain = next(row for row in rows if row["policy"] == "explain")
    lines = [f"# Test-time compute on the synthetic task (tiny student; {machine('cpu')})", "",
             f"Student: distilled for {setup['epochs']} epochs on {setup['pairs']} rule-annotated pairs in "
             f"explain mode ({setup['direct_fraction']:.0%} of them in direct mode too); held-out label accuracy "
             f"{accuracy['explain']:.2f} explain, "
             f"{accuracy['direct']:.2f} direct. Re-ranking {queries} queries x 9 documents ({pairs} pairs), "
             "explanation budget 24 tokens, samples at temperature 1.", "",
             "| policy | nDCG@10 | tokens per query | of explain's | pairs explained | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        share = row["tokens"] / explain["tokens"] if explain["tokens"] else 0.0
        lines.append(f"| {row['policy']} | {row['ndcg']:.4f} | {row['tokens']:.1f} | {share:.0%} | "
                     f"{row['explained']:.0%} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for row in rows:  # a legend, not labels by the points: policies may cost and score alike
        marker = "s" if row["policy"].startswith("adaptive") else "o"
        axis.plot(row["tokens"], row["ndcg"], marker=marker, linestyle="none", label=row["policy"])
    axis.legend(fontsize=7, loc="lower right")
    axis.set_xlabel("tokens generated per query")
    axis.set_ylabel("nDCG@10")
    axis.set_title("Test-time compute: cost against effectiveness")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
