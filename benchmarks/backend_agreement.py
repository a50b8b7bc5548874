"""How far the backends agree where they cannot be identical: the transformers backend against vLLM's engine.

In float32 the two backends agree to 1e-3 with identical explanations (tests/test_vllm.py), so a
judgement store serves either. In bfloat16, the default on GPUs, their kernels round differently:
a near-tie between two tokens can go either way, an explanation then takes another path, and its
label with it. This benchmark measures what that does to a ranking, on two models:

* the synthetic-task student (tests/synthetic.py), distilled as ``test_time_compute.py`` distils
  it and merged into its base model (vLLM applies no LoRA to the embeddings and output layer the
  student trains): a decisive model, as a trained re-ranker is;
* the same tiny model with random weights: an undecided one (label probabilities near uniform,
  near-ties everywhere), the worst case.

For each model, dtype (float32, bfloat16) and mode (explain, direct), both backends rank the same
held-out lists; the report gives nDCG@10 of each, their difference, the mean per-query Kendall tau
between the two backends' scores, the largest score difference (on the 0-2 scale), and the shares
of pairs with the same most likely label and (explain mode) the same explanation. It prints the
CPU's model and flags: bfloat16 arithmetic is native on CPUs with AVX-512 BF16 (and on GPUs),
emulated (slower, not different) elsewhere.

    python benchmarks/backend_agreement.py --output agreement.md    # ~12 min here
    python benchmarks/backend_agreement.py --quick                  # a smaller student and task
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the learning tests' synthetic task, one copy for both
from synthetic import Vocabulary, ranking_task  # noqa: E402
from test_time_compute import FULL, QUICK, distil_student  # noqa: E402
from throughput import machine  # noqa: E402
from vllm_process import ENVIRONMENT  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

MODES = ("explain", "direct")
DTYPES = ("float32", "bfloat16")
MAX_NEW_TOKENS = 24
VLLM_SHAPE = dict(hidden_size=256, num_heads=4)
"""The test model widened to heads of 64 dimensions: vLLM's CPU attention has no kernel for the default's 16."""


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Distil and merge the student, rank with both backends in each dtype and mode, and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--quick", action="store_true", help="a smaller student and task")
    args = parser.parse_args(argv)
    os.environ.update(ENVIRONMENT)
    setup = dict(QUICK if args.quick else FULL)

    from transformers import AutoTokenizer

    from pyterrier_reasonrank.testing import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="reasonrank-agreement-"))
    base = build_tiny_model(work / "tiny", **VLLM_SHAPE)
    vocabulary = Vocabulary.of(AutoTokenizer.from_pretrained(base))
    adapter, accuracy = distil_student(work, base, vocabulary, setup)
    student = merged(base, adapter, work / "merged")
    candidates, qrels = ranking_task(vocabulary, seed=2, queries_per_topic=setup["queries_per_topic"])
    rows = []
    for name, model in (("synthetic-task student", student), ("random weights", base)):
        for dtype in DTYPES:
            runs = {backend: ranked(model, backend, dtype, candidates) for backend in ("transformers", "vllm")}
            for mode in MODES:
                rows.append({"model": name, "dtype": dtype, "mode": mode,
                             **agreement(runs["transformers"][mode], runs["vllm"][mode], qrels)})
                print("measured:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = _report(rows, accuracy, len(candidates), candidates["qid"].nunique())
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")


def merged(base: Path, adapter: Path, path: Path) -> Path:
    """The student's adapter merged into its base model, saved as a model folder both backends load."""
    import torch

    from pyterrier_reasonrank.loading import load_causal_lm

    lm, tokenizer = load_causal_lm(str(base), str(adapter), dtype=torch.float32)
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ranked(model: Path, backend: str, dtype: str, candidates: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The candidates ranked by one student (one backend, one dtype) in each mode."""
    from pyterrier_reasonrank import Student

    engine_options = {"enforce_eager": True, "max_model_len": 2048} if backend == "vllm" else None
    student = Student(str(model), backend=backend, dtype=dtype, engine_options=engine_options)
    return {mode: student.ranker(mode=mode, max_new_tokens=MAX_NEW_TOKENS)(candidates) for mode in MODES}


def agreement(first: pd.DataFrame, second: pd.DataFrame, qrels: pd.DataFrame) -> dict:
    """How two rankings of the same pairs agree: nDCG@10 of each, Kendall tau, score and label differences."""
    import numpy as np
    import pyterrier as pt
    from scipy.stats import kendalltau

    pair = ["qid", "docno"]
    joined = first.merge(second, on=pair, suffixes=("_a", "_b"))
    if len(joined) != len(first) or len(joined) != len(second):
        raise ValueError("the two rankings are not of the same pairs")
    taus = [kendalltau(group["score_a"], group["score_b"]).statistic for _, group in joined.groupby("qid")]
    labels = [np.argmax(np.stack(joined[f"probabilities_{side}"].to_numpy()), axis=1) for side in "ab"]
    ndcg = [pt.Evaluate(run, qrels, [pt.measures.nDCG @ 10])["nDCG@10"] for run in (first, second)]
    return {"ndcg_transformers": ndcg[0], "ndcg_vllm": ndcg[1], "ndcg_difference": ndcg[1] - ndcg[0],
            # a query whose scores are all equal on one side has no tau (nan): it is left out of the mean
            "kendall_tau": float(np.nanmean(taus)), "queries": len(taus),
            "max_score_difference": float(np.abs(joined["score_a"] - joined["score_b"]).max()),
            "same_label": float(np.mean(labels[0] == labels[1])),
            "same_explanation": float(np.mean(joined["explanation_a"] == joined["explanation_b"]))}


def _report(rows: list[dict], accuracy: dict, pairs: int, queries: int) -> str:
    lines = [f"# How far the backends agree: transformers against vLLM's engine ({machine('cpu')})", "",
             f"{queries} held-out queries of the synthetic task, {pairs} pairs; explanation budget "
             f"{MAX_NEW_TOKENS} tokens, greedy. The student's held-out label accuracy (float32, transformers): "
             f"explain {accuracy['explain']:.2f}, direct {accuracy['direct']:.2f}.", "",
             "| model | dtype | mode | nDCG@10 transformers | nDCG@10 vLLM | difference | Kendall tau | "
             "largest score difference | same label | same explanation |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        explanation = f"{row['same_explanation']:.1%}" if row["mode"] == "explain" else "-"
        lines.append(f"| {row['model']} | {row['dtype']} | {row['mode']} | {row['ndcg_transformers']:.4f} | "
                     f"{row['ndcg_vllm']:.4f} | {row['ndcg_difference']:+.4f} | {row['kendall_tau']:.3f} | "
                     f"{row['max_score_difference']:.2g} | {row['same_label']:.1%} | {explanation} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
