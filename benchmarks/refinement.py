"""Refinement rewards: does a ranking-aware reward teach a student to rank better than the label reward?

On the graded-lists task (``benchmarks/graded_lists.py``, defined before this benchmark ran: ten
candidates per query, one label 2, three label 1, six label 0) a tiny student is distilled briefly,
so that it ranks the held-out lists only partly well, then refined with GRPO from that same
adapter under each reward, with several seeds:

* ``label``: 1 for the target label, 0.5 for a label off by one (the pointwise reward);
* ``composite``: Retro*'s intra- plus inter-document reward (``alpha`` 0.75), over a whole query's
  rollouts;
* ``rr``: ERank's listwise ``r_RR`` over a whole query's rollouts.

A step holds one query's ten candidates x ``num_generations`` rollouts for the ranking rewards
(their batches are whole query groups) and ten random pairs x ``num_generations`` for ``label``
(trl's own sampler), so every arm trains on as many rollouts per step, for as many steps.
Each refined student re-ranks the held-out lists (explain mode, greedy): nDCG@10 against the
graded labels, and per-pair label accuracy. The report gives each arm's mean and spread over the
seeds, and each seed's paired difference against ``label`` (same seed, same adapter), as a
Markdown table, and plots the seeds' points (PNG).

``--part policies`` asks what the test-time policies do on a refined student. Refinement trains
explain mode only, so this part distils a student in both modes (a quarter of the pairs in direct
mode too, as ``test_time_compute.py`` does), refines it with the label reward (the reward the
rewards part supports) under each seed, and has the distilled and each refined student re-rank the
held-out lists with: direct mode; explain mode; adaptive mode (the default escalation, entropy >=
0.5) before and after calibrating direct mode's label temperature on lists of their own (an
overconfident direct mode hides its mistakes from the entropy test); and a Retro*-style cascade,
explain mode over every candidate and then ``k`` sampled explanations (the greedy one first, then
at temperature 1) over its top ``n``. nDCG@10, explanation tokens per query, the share of pairs
explained, and seconds.

    OMP_NUM_THREADS=1 python benchmarks/refinement.py --output results.md --plot benchmarks/refinement.png
    python benchmarks/refinement.py --quick       # seconds: checks that the script runs (the tests do this)
    OMP_NUM_THREADS=1 python benchmarks/refinement.py --part policies --output policies.md
    python benchmarks/refinement.py --part policies --quick
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from graded_lists import (  # noqa: E402
    DISTILL_SEED,
    HELD_OUT_SEED,
    REFINE_SEED,
    GradedLists,
    annotated,
    lists,
    write_jsonl,
)
from throughput import machine  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

# LoRA on every linear layer, with embeddings and output layer trained: a random model has no useful
# embeddings to adapt around (as in the learning tests and the test-time compute benchmark).
LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.0, lora_target_modules=["all-linear"],
            lora_modules_to_save=["embed_tokens", "lm_head"])
ARMS = ("label", "composite", "rr")
FULL = {"distill_queries": 40, "distill_epochs": 6, "refine_queries": 24, "held_out_queries": 40, "seeds": (0, 1, 2),
        "generations": 4, "steps": 24, "learning_rate": 3e-4}
QUICK = {"distill_queries": 6, "distill_epochs": 1, "refine_queries": 2, "held_out_queries": 3, "seeds": (0,),
         "generations": 2, "steps": 1, "learning_rate": 3e-4}
POLICIES = {"direct_fraction": 0.25, "calibration_queries": 20, "cascade_depth": 5, "cascade_samples": 4}
"""The policies part: the share of pairs distilled in direct mode too, the lists direct mode is calibrated on,
and the cascade's depth and samples (Retro*'s BRIGHT script samples 16 on the top 30 of 100; here 4 on the
top 5 of 10)."""
POLICIES_QUICK = {**POLICIES, "calibration_queries": 4, "cascade_depth": 2, "cascade_samples": 2}
CALIBRATION_SEED = 404
"""The calibration lists' own draw (graded_lists.py's splits are 101, 202 and 303)."""
EXPLANATION_BUDGET = 24
RESPONSE_BUDGET = EXPLANATION_BUDGET + 8
"""Refinement's rollouts are whole responses: the explanation, then the marker, the label and the end of turn
(a teacher's response on this task is 23 to 25 tokens with them; at 24, a rollout was cut before its label)."""


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Distil once, refine under each reward and seed, evaluate, and print (and write) the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--plot", default=None, help="write the per-seed plot (PNG) to this file")
    parser.add_argument("--distill-epochs", type=float, default=None,
                        help=f"distillation epochs (default: {FULL['distill_epochs']})")
    parser.add_argument("--steps", type=int, default=None, help=f"refinement steps (default: {FULL['steps']})")
    parser.add_argument("--quick", action="store_true", help="a tiny run: checks that the script runs")
    parser.add_argument("--part", choices=("rewards", "policies"), default="rewards",
                        help="rewards: refinement under each reward; policies: the test-time policies on a "
                             "refined student")
    args = parser.parse_args(argv)
    setup = dict(QUICK if args.quick else FULL)
    for key in ("distill_epochs", "steps"):
        if getattr(args, key) is not None:
            setup[key] = getattr(args, key)
    if args.part == "policies":
        setup.update(POLICIES_QUICK if args.quick else POLICIES)
        report = policies(setup)
        print(report)
        if args.output:
            Path(args.output).write_text(report + "\n")
        return

    from transformers import AutoTokenizer

    from pyterrier_reasonrank.testing import build_tiny_model

    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="reasonrank-refinement-"))
    model = build_tiny_model(work / "tiny")
    task = GradedLists.of(AutoTokenizer.from_pretrained(model))
    held_out = lists(task, setup["held_out_queries"], HELD_OUT_SEED, "h")
    write_jsonl(annotated(task, lists(task, setup["refine_queries"], REFINE_SEED, "r")), work / "refine.jsonl")
    distilled = _distil(work, model, task, setup)
    rows = [{"arm": "distilled", "seed": None, **_measure(distilled, held_out)}]
    print("measured:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for seed in setup["seeds"]:
        for arm in ARMS:
            refined = _refine(work, distilled, arm, seed, setup)
            rows.append({"arm": arm, "seed": seed, **_measure(refined, held_out)})
            print("measured:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = _report(rows, setup, len(held_out), time.perf_counter() - start)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
    if args.plot:
        _plot(rows, args.plot)


def policies(setup: dict) -> str:
    """The policies part: each policy on the distilled student and on each seed's refined one; the report."""
    from transformers import AutoTokenizer

    from pyterrier_reasonrank.testing import build_tiny_model

    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="reasonrank-policies-"))
    model = build_tiny_model(work / "tiny")
    task = GradedLists.of(AutoTokenizer.from_pretrained(model))
    held_out = lists(task, setup["held_out_queries"], HELD_OUT_SEED, "h")
    calibration = lists(task, setup["calibration_queries"], CALIBRATION_SEED, "c")
    write_jsonl(annotated(task, lists(task, setup["refine_queries"], REFINE_SEED, "r")), work / "refine.jsonl")
    distilled = _distil(work, model, task, setup)
    students = {"distilled": distilled, **{f"label, seed {seed}": _refine(work, distilled, "label", seed, setup)
                                           for seed in setup["seeds"]}}
    rows = []
    for name, adapter in students.items():
        for policy, measured in _policies(adapter, held_out, calibration, setup).items():
            rows.append({"student": name, "policy": policy, **measured})
            print("measured:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return _policies_report(rows, setup, len(held_out), time.perf_counter() - start)


def _policies(adapter: Path, held_out, calibration, setup: dict) -> dict[str, dict]:  # noqa: ANN001
    """Each policy's held-out nDCG@10, tokens decoded per query, share of pairs explained and seconds."""
    from pyterrier_reasonrank import Escalation, Student
    from pyterrier_reasonrank.calibrating import calibrate_on
    from pyterrier_reasonrank.evaluation import cascade

    qrels = _qrels(held_out)
    student = Student(adapter=str(adapter))
    options = dict(max_new_tokens=EXPLANATION_BUDGET)
    rankers = {"direct": student.ranker(mode="direct", **options),
               "explain": student.ranker(**options),
               "adaptive": student.ranker(mode="adaptive", escalation=Escalation(), **options),
               f"cascade: explain, then {setup['cascade_samples']} samples on the top {setup['cascade_depth']}":
                   cascade(student.ranker(**options),
                           student.ranker(samples=setup["cascade_samples"], temperature=1.0, **options),
                           setup["cascade_depth"])}
    measured = {name: _run(ranker, student, _candidates(held_out), qrels) for name, ranker in rankers.items()}
    # Direct mode's temperature, fitted on the calibration lists and saved with the student; a new
    # Student reads it (a loaded one keeps the settings it loaded with).
    judged = student.ranker(mode="direct", label_temperature=1.0, **options)(_candidates(calibration))
    fitted = calibrate_on(str(adapter), judged.drop(columns=["label"]).merge(_qrels(calibration), on=["qid", "docno"]),
                          what="the calibration lists")
    reloaded = Student(adapter=str(adapter))
    calibrated = reloaded.ranker(mode="adaptive", escalation=Escalation(), **options)
    measured["adaptive, direct mode calibrated"] = {
        **_run(calibrated, reloaded, _candidates(held_out), qrels),
        "direct_temperature": fitted["direct"]["temperature"]}
    return measured


def _run(ranker, student, candidates, qrels) -> dict:  # noqa: ANN001
    """One policy's held-out nDCG@10, tokens decoded per query, share of pairs explained, and seconds.

    Tokens are the student's engine's own count of what it decoded, so a cascade's are those of both
    its stages (a pair's output reports its last stage's only).
    """
    import pyterrier as pt

    decoded = student.engine.counts["decoded"]
    begin = time.perf_counter()
    ranked = ranker(candidates)
    seconds = time.perf_counter() - begin
    ndcg = pt.Evaluate(ranked, qrels, [pt.measures.nDCG @ 10])["nDCG@10"]
    return {"ndcg": float(ndcg), "tokens": (student.engine.counts["decoded"] - decoded) / ranked["qid"].nunique(),
            "explained": float((ranked["samples"] > 0).mean()), "seconds": seconds}


def _policies_report(rows: list[dict], setup: dict, pairs: int, seconds: float) -> str:
    lines = [f"# Test-time policies on a refined student, graded-lists task (tiny student; {machine('cpu')})", "",
             f"Distilled {setup['distill_epochs']} epochs on {setup['distill_queries']} queries x 10 candidates in "
             f"explain mode, {setup['direct_fraction']:.0%} of the pairs in direct mode too; refined with GRPO and "
             f"the label reward for {setup['steps']} steps, seeds {list(setup['seeds'])}; direct mode calibrated "
             f"on {setup['calibration_queries']} lists of its own; held out: {pairs // 10} queries x 10 candidates. "
             f"{seconds / 60:.1f} minutes in all.", "",
             "| student | policy | nDCG@10 | tokens decoded per query | pairs explained | seconds |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        policy = row["policy"] + (f" (T = {row['direct_temperature']:.2f})" if "direct_temperature" in row else "")
        lines.append(f"| {row['student']} | {policy} | {row['ndcg']:.4f} | {row['tokens']:.1f} | "
                     f"{row['explained']:.0%} | {row['seconds']:.1f} |")
    refined = [row for row in rows if row["student"] != "distilled"]
    if len({row["student"] for row in refined}) > 1:
        lines += ["", "Refined students, mean ± sd over the seeds:", "",
                  "| policy | nDCG@10 | tokens decoded per query | pairs explained |", "|---|---:|---:|---:|"]
        for policy in dict.fromkeys(row["policy"] for row in refined):
            same = [row for row in refined if row["policy"] == policy]
            lines.append(f"| {policy} | {_spread([row['ndcg'] for row in same])} | "
                         f"{statistics.mean(row['tokens'] for row in same):.1f} | "
                         f"{statistics.mean(row['explained'] for row in same):.0%} |")
    return "\n".join(lines)


def _distil(work: Path, model: Path, task: GradedLists, setup: dict) -> Path:
    """The student, distilled briefly on rule-annotated pairs of the task's lists.

    In explain mode, and in direct mode too for the share of pairs ``setup`` gives (none by default).
    """
    from pyterrier_reasonrank.training.distillation import DistillConfig, distill
    from pyterrier_reasonrank.training.student import StudentConfig

    train = write_jsonl(annotated(task, lists(task, setup["distill_queries"], DISTILL_SEED, "d")),
                        work / "distill.jsonl")
    distill(DistillConfig(output_dir=str(work / "distilled"), train_file=str(train),
                          direct_fraction=setup.get("direct_fraction", 0.0),
                          num_train_epochs=setup["distill_epochs"], per_device_train_batch_size=16,
                          learning_rate=2e-3, lr_scheduler_type="constant", save_strategy="no", logging_steps=50,
                          disable_tqdm=True, report_to="none", seed=0),
            StudentConfig(model_name_or_path=str(model), **LORA))
    return work / "distilled"


def _refine(work: Path, distilled: Path, arm: str, seed: int, setup: dict) -> Path:
    """The distilled student refined with GRPO under one reward and seed."""
    from pyterrier_reasonrank.training.grpo import GrpoRefineConfig
    from pyterrier_reasonrank.training.refinement import refine
    from pyterrier_reasonrank.training.student import StudentConfig

    output = work / f"{arm}-{seed}"
    generations = setup["generations"]
    refine(GrpoRefineConfig(output_dir=str(output), train_file=str(work / "refine.jsonl"), rewards=[arm],
                            num_generations=generations, temperature=1.0, max_completion_length=RESPONSE_BUDGET,
                            per_device_train_batch_size=10 * generations, max_steps=setup["steps"],
                            learning_rate=setup["learning_rate"], lr_scheduler_type="constant", save_strategy="no",
                            logging_steps=max(1, setup["steps"] // 4), disable_tqdm=True, report_to="none",
                            seed=seed),
           StudentConfig(adapter=str(distilled)))
    return output


def _measure(adapter: Path, held_out) -> dict:  # noqa: ANN001
    """nDCG@10 and per-pair label accuracy of the student re-ranking the held-out lists."""
    import pyterrier as pt

    from pyterrier_reasonrank import ReasonRanker

    qrels = _qrels(held_out)
    ranked = ReasonRanker(adapter=str(adapter), max_new_tokens=EXPLANATION_BUDGET)(_candidates(held_out))
    ndcg = pt.Evaluate(ranked, qrels, [pt.measures.nDCG @ 10])["nDCG@10"]
    joined = ranked.merge(qrels, on=["qid", "docno"], suffixes=("", "_gold"))
    return {"ndcg": float(ndcg), "accuracy": float((joined["label"] == joined["label_gold"]).mean())}


def _candidates(lists: pd.DataFrame) -> pd.DataFrame:
    """The lists as a first stage hands them to a re-ranker (no gold labels)."""
    return lists.assign(score=0.0, rank=0).drop(columns=["gold_label"])


def _qrels(lists: pd.DataFrame) -> pd.DataFrame:
    """The lists' gold labels as qrels."""
    return lists[["qid", "docno", "gold_label"]].rename(columns={"gold_label": "label"})


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _paired(differences: list[float]) -> str:
    return ", ".join(f"{d:+.4f}" for d in differences) + f" (mean {statistics.mean(differences):+.4f})"


def _report(rows: list[dict], setup: dict, pairs: int, seconds: float) -> str:
    base = next(row for row in rows if row["arm"] == "distilled")
    by_arm = {arm: {row["seed"]: row for row in rows if row["arm"] == arm} for arm in ARMS}
    seeds = list(setup["seeds"])
    lines = [f"# Refinement rewards on the graded-lists task (tiny student; {machine('cpu')})", "",
             f"Distilled {setup['distill_epochs']} epochs on {setup['distill_queries']} queries x 10 candidates; "
             f"refined with GRPO for {setup['steps']} steps of {10 * setup['generations']} rollouts "
             f"({setup['generations']} per pair, temperature 1, learning rate {setup['learning_rate']}) on "
             f"{setup['refine_queries']} queries; held out: {pairs // 10} queries x 10 candidates ({pairs} pairs). "
             f"Seeds {seeds}; {seconds / 60:.1f} minutes in all.", "",
             "| student | nDCG@10 (mean ± sd) | label accuracy | nDCG@10 minus label's, per seed | "
             "accuracy minus label's, per seed |",
             "|---|---:|---:|---|---|",
             f"| distilled (before refinement) | {base['ndcg']:.4f} | {base['accuracy']:.4f} | | |"]
    for arm in ARMS:
        ndcg = [by_arm[arm][s]["ndcg"] for s in seeds]
        accuracy = [by_arm[arm][s]["accuracy"] for s in seeds]
        if arm == "label":
            paired = ("", "")
        else:
            paired = tuple(_paired([by_arm[arm][s][key] - by_arm["label"][s][key] for s in seeds])
                           for key in ("ndcg", "accuracy"))
        lines.append(f"| {arm} | {_spread(ndcg)} | {_spread(accuracy)} | {paired[0]} | {paired[1]} |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(row for row in rows if row["arm"] == "distilled")
    figure, axes = plt.subplots(1, 2, figsize=(8.5, 3.6))
    for axis, key, title in ((axes[0], "ndcg", "held-out nDCG@10"), (axes[1], "accuracy", "held-out label accuracy")):
        for k, arm in enumerate(ARMS):
            values = [row[key] for row in rows if row["arm"] == arm]
            axis.plot([k] * len(values), values, "o", alpha=0.7)
            axis.plot([k - 0.2, k + 0.2], [statistics.mean(values)] * 2, color="black")
        axis.axhline(base[key], linestyle="--", color="grey", label="distilled")
        axis.set_xticks(range(len(ARMS)))
        axis.set_xticklabels(ARMS)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("GRPO refinement by reward: each seed, and the mean")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
