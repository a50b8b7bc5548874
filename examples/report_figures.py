"""The README's pictures: an explanation report and a reliability diagram, from a real run of a tiny student.

A tiny student is distilled on the synthetic task of the tests (tests/synthetic.py), as
benchmarks/test_time_compute.py distils it, but for 3 epochs rather than 6 (explain mode is near
perfect by then, direct mode is not, and the run stays short), then re-ranks held-out queries (nine
documents each, in a shuffled first-stage order, graded 0-2) in explain and in direct mode. The
script writes the explain run's report with the judgements (some of its queries), a screenshot of
it (headless Chromium), and the reliability diagram of both modes on all the held-out pairs.

    python examples/report_figures.py                                # distils, then writes examples/figures/
    python examples/report_figures.py --adapter DIR --output /tmp/f  # a student trained before: no distillation
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "tests")]  # the benchmark's student, the tests' task
from synthetic import Vocabulary, ranking_task  # noqa: E402
from test_time_compute import FULL, distil_student  # noqa: E402


def main() -> None:
    """Distil (unless given a student), re-rank, and write the report, its screenshot and the reliability diagram."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(REPO / "examples" / "figures"), help="folder for the pictures")
    parser.add_argument("--model", default=None, help="a model to use as it is (no distillation)")
    parser.add_argument("--adapter", default=None, help="a trained adapter to use (no distillation)")
    parser.add_argument("--queries-per-topic", type=int, default=20, help="held-out queries per topic (3 topics)")
    parser.add_argument("--report-queries", type=int, default=6, help="queries in the report (evenly spread)")
    parser.add_argument("--epochs", type=float, default=3, help="distillation epochs (the benchmark's: 6)")
    args = parser.parse_args()

    import numpy as np
    import pyterrier as pt
    from transformers import AutoTokenizer

    from pyterrier_reasonrank import Student, write_report
    from pyterrier_reasonrank.calibration import calibration_table, reliability_diagram
    from pyterrier_reasonrank.qrels import judged_labels
    from pyterrier_reasonrank.testing import build_tiny_model

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="reasonrank-figures-"))
    model, adapter = args.model, args.adapter
    if model is None and adapter is None:
        base = build_tiny_model(work / "tiny")
        setup = {**FULL, "epochs": args.epochs}
        adapter, accuracy = distil_student(work, base, Vocabulary.of(AutoTokenizer.from_pretrained(base)), setup)
        model, adapter = None, str(adapter)
        print(f"distilled: held-out label accuracy {accuracy}", file=sys.stderr)
    vocabulary = Vocabulary.of(AutoTokenizer.from_pretrained(adapter or model))
    candidates, qrels = ranking_task(vocabulary, seed=2, queries_per_topic=args.queries_per_topic)

    student = Student(model, adapter=adapter)
    rankers = {"explain": student.ranker(max_new_tokens=24), "direct": student.ranker(mode="direct")}
    runs = {mode: ranker(candidates) for mode, ranker in rankers.items()}
    for mode, run in runs.items():
        print(f"{mode}: nDCG@10 {pt.Evaluate(run, qrels, [pt.measures.nDCG @ 10])['nDCG@10']:.3f}")

    qids = list(dict.fromkeys(runs["explain"]["qid"]))
    shown = qids[::max(1, len(qids) // args.report_queries)][:args.report_queries]
    # The header names the models as this script made them, not by their temporary folders.
    about = {"model": "a tiny random model (pyterrier_reasonrank.testing.build_tiny_model)"} if args.model is None \
        else {}
    if args.adapter is None and args.model is None:
        about["adapter"] = f"LoRA distilled on {FULL['pairs']} pairs for {args.epochs:g} epochs (report_figures.py)"
    report = write_report(runs["explain"][runs["explain"]["qid"].isin(shown)], output / "report.html", qrels=qrels,
                          ranker=rankers["explain"], dataset="the synthetic task (tests/synthetic.py), held-out "
                          "queries", k=9, title="Explanations of a tiny student on the synthetic task", about=about)
    screenshot(report, output / "report.png")

    labels = judged_labels(qrels)
    tables = {}
    for mode, run in runs.items():
        judged = run.merge(labels, on=["qid", "docno"], suffixes=("_predicted", ""))
        tables[mode] = calibration_table(np.stack(judged["probabilities"].to_numpy()), judged["label"].to_numpy())
    reliability_diagram(tables, output / "reliability.png",
                        dataset=f"the synthetic task ({candidates['qid'].nunique()} held-out queries)")
    print("\n".join(str(output / name) for name in ("report.html", "report.png", "reliability.png")))


def screenshot(page: Path, picture: Path, width: int = 1000, height: int = 1400) -> None:
    """The top of a page as headless Chromium shows it (Debian's chromium, from scripts/setup.sh)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("the screenshot needs Chromium: scripts/setup.sh installs Debian's package chromium (as root)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={picture.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


if __name__ == "__main__":
    main()
