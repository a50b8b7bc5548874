"""The judgement store: a second ``pt.Experiment`` over the same pairs, and two writers at once.

On ``irds:vaswani`` BM25 (pyterrier_pisa), one ``ReasonRanker`` (the tiny model, random weights,
explain mode) re-ranks the top 10 and the top 20 of the same queries in one ``pt.Experiment``, three
times:

* ``no store``;
* ``store, first run``: an empty store (the top 10 judged for the first system are read back for
  the second: pairs shared between systems are judged once);
* ``store, second run``: the same store, now filled.

It counts the prompts sent to the model, times each experiment, and checks that the second run's
rankings equal the first's (explanations, labels, scores). Then two processes judge overlapping
query sets (the first two thirds and the last two thirds) into one new store at the same time: the
store must hold their union, and a rerun over it must make no model calls.

    python benchmarks/judgement_store.py --output results.md
    python benchmarks/judgement_store.py --quick      # seconds: checks that the script runs
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from throughput import REPO, machine, offline_data, random_model

if TYPE_CHECKING:
    import pandas as pd

FULL = {"queries": 30, "depths": (10, 20), "max_new_tokens": 32}
QUICK = {"queries": 3, "depths": (2, 4), "max_new_tokens": 4}
RANKER = {"device": "cpu", "dtype": "float32", "max_doc_tokens": 256}
COMPARED = ["qid", "docno", "explanation", "label", "score", "forced", "tokens"]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the experiments and the two writers; print (and write) the report as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=os.environ.get("REASONRANK_SHARED", str(REPO.parent / "shared")),
                        help="the shared data folder (default: $REASONRANK_SHARED, else ../shared)")
    parser.add_argument("--output", default=None, help="also write the report (Markdown) to this file")
    parser.add_argument("--quick", action="store_true", help="a few queries and tokens: checks that the script runs")
    parser.add_argument("--writer", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        _writer(json.loads(args.writer))
        return
    setup = QUICK if args.quick else FULL
    offline_data(Path(args.shared))

    import pyterrier as pt

    from pyterrier_reasonrank import JudgementStore, ReasonRanker
    from pyterrier_reasonrank.indexing import bm25
    from pyterrier_reasonrank.testing import counting_judgements

    dataset = pt.get_dataset("irds:vaswani")
    topics, qrels = dataset.get_topics().head(setup["queries"]), dataset.get_qrels()
    first_stage = bm25(dataset, name="irds:vaswani", num_results=max(setup["depths"])) \
        >> pt.text.get_text(dataset, "text")
    model = str(random_model("tiny", "cpu"))
    work = Path(tempfile.mkdtemp(prefix="reasonrank-store-bench-"))
    deepest = max(setup["depths"])
    names = [f"BM25 top {depth} >> ReasonRanker" for depth in setup["depths"]]

    runs, rankings = [], {}
    for run, store in (("no store", None), ("store, first run", work / "experiment-judgements"),
                       ("store, second run", work / "experiment-judgements")):
        ranker = ReasonRanker(model, store=store, max_new_tokens=setup["max_new_tokens"], **RANKER)
        ranker.load()
        systems = [first_stage % depth >> ranker for depth in setup["depths"]]
        with counting_judgements(ranker) as counted:
            start = time.perf_counter()
            table = pt.Experiment(systems, topics, qrels, [pt.measures.nDCG @ 10], names=names)
            seconds = time.perf_counter() - start
        rankings[run] = _sorted((first_stage % deepest >> ranker)(topics))  # after the timing: not counted
        runs.append({"run": run, "calls": sum(counted), "seconds": seconds,
                     "ndcg": dict(zip(table["name"], table["nDCG@10"]))})
        print("measured:", json.dumps(runs[-1]), file=sys.stderr, flush=True)
    reference = rankings["no store"]
    same = {run: _difference(reference, ranking) for run, ranking in rankings.items() if run != "no store"}

    candidates = _sorted((first_stage % deepest)(topics))
    writers = _two_writers(model, work, candidates, setup["max_new_tokens"])
    store = JudgementStore(work / "writers-judgements")
    ranker = ReasonRanker(model, store=store, max_new_tokens=setup["max_new_tokens"], **RANKER)
    with counting_judgements(ranker) as counted:
        after = _sorted(ranker(candidates))
    # The key is the text, not the ids: two docnos with one text are one judgement.
    distinct = len(candidates[["query", "text"]].drop_duplicates())
    writers.update(rows=len(store), union=len(candidates), distinct=distinct, rerun_calls=sum(counted),
                   against_no_store=_difference(reference, after))

    report = _report(runs, same, writers, setup, topics, names)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["qid", "docno"]).reset_index(drop=True)


def _difference(reference: pd.DataFrame, other: pd.DataFrame) -> dict:
    """How a ranking differs from the reference: explanations and labels equal, largest score difference."""
    other = other[COMPARED]
    reference = reference[reference["qid"].isin(other["qid"])][COMPARED].reset_index(drop=True)
    return {"pairs": len(other),
            "identical": bool((reference["explanation"] == other["explanation"]).all()
                              and (reference["label"] == other["label"]).all()
                              and (reference["forced"] == other["forced"]).all()),
            "max_score_difference": float((reference["score"] - other["score"]).abs().max())}


def _two_writers(model: str, work: Path, candidates: pd.DataFrame, max_new_tokens: int) -> dict:
    """Two processes judge overlapping thirds of the queries into one store at the same time."""
    qids = list(dict.fromkeys(candidates["qid"]))
    cut = max(1, len(qids) // 3)
    shares = [qids[:len(qids) - cut], qids[cut:]]
    processes, judged = [], []
    # Each writer gets its share of the cores: torch threads spinning on cores another process
    # holds would measure oversubscription, not the store.
    environment = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}
    start = time.perf_counter()
    for k, half in enumerate(shares):
        frame = work / f"writer{k}.parquet"
        candidates[candidates["qid"].isin(half)].to_parquet(frame)
        job = {"model": model, "store": str(work / "writers-judgements"), "frame": str(frame),
               "max_new_tokens": max_new_tokens}
        processes.append(subprocess.Popen([sys.executable, __file__, "--writer", json.dumps(job)],
                                          stdout=subprocess.PIPE, text=True, env=environment))
        judged.append(int(candidates["qid"].isin(half).sum()))
    for process in processes:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a writer failed (exit {process.returncode})")
    return {"seconds": time.perf_counter() - start, "queries": [len(h) for h in shares], "judged": judged,
            "shared_queries": len(set(shares[0]) & set(shares[1]))}


def _writer(job: dict) -> None:
    import pandas as pd

    from pyterrier_reasonrank import ReasonRanker

    ReasonRanker(job["model"], store=job["store"], max_new_tokens=job["max_new_tokens"], **RANKER)(
        pd.read_parquet(job["frame"]))


def _report(runs: list[dict], same: dict, writers: dict, setup: dict, topics: pd.DataFrame,
            names: list[str]) -> str:
    first = runs[0]
    lines = [f"# The judgement store ({machine('cpu')})", "",
             f"`irds:vaswani`, {len(topics)} queries, BM25 (pyterrier_pisa) top "
             f"{' and top '.join(map(str, setup['depths']))}"
             f" re-ranked by one `ReasonRanker` (tiny model, random weights, float32, explain mode, "
             f"{setup['max_new_tokens']}-token explanations) in one `pt.Experiment`.", "",
             "## A second `pt.Experiment` over the same pairs", "",
             "| run | model calls (prompts) | seconds | of the first run's time | "
             + " | ".join(f"nDCG@10, {name}" for name in names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for run in runs:
        lines.append(f"| {run['run']} | {run['calls']} | {run['seconds']:.2f} | "
                     f"{run['seconds'] / first['seconds']:.1%} | "
                     + " | ".join(f"{run['ndcg'][name]:.4f}" for name in names) + " |")
    against = writers["against_no_store"]
    lines += ["", "Against the run without a store, over the deepest system's "
              f"{same['store, second run']['pairs']} pairs: "
              + "; ".join(f"{run}: explanations, labels and forced flags "
                          f"{'identical' if d['identical'] else 'DIFFERENT'}, largest score difference "
                          f"{d['max_score_difference']:.1e}" for run, d in same.items()) + ".", "",
              "## Two writers at once", "",
              f"Two processes judged {writers['queries'][0]} and {writers['queries'][1]} queries "
              f"({writers['shared_queries']} of them in both; {writers['judged'][0]} + {writers['judged'][1]} pairs) "
              f"into one new store at the same time, in {writers['seconds']:.1f} s.", "",
              "| pairs in the union | of them distinct (query, text) | rows stored | lost | model calls when rerun "
              "over the union | explanations against no store | largest score difference |",
              "|---:|---:|---:|---:|---:|---|---:|",
              f"| {writers['union']} | {writers['distinct']} | {writers['rows']} | "
              f"{writers['distinct'] - writers['rows']} | "
              f"{writers['rerun_calls']} | {'identical' if against['identical'] else 'DIFFERENT'} | "
              f"{against['max_score_difference']:.1e} |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
