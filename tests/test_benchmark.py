"""The benchmarks run (on tiny workloads) and report their tables: each script's ``main`` in this
process (a process of its own would spend seconds importing what this one has), its children (the
throughput benchmark's measurements, the store benchmark's writers) in processes of their own as always.

throughput.py's engines table is left out: it starts vLLM's engine and a vLLM server (a minute and a half of
the suite's time), and tests/test_vllm.py runs the same backends against both for parity.
"""
import importlib
import re
from pathlib import Path

import pytest

from pyterrier_reasonrank.backends import attention

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def run(monkeypatch):
    """``run(script, *arguments)``: the benchmark's ``main(arguments)``, here."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def run(script: str, *arguments: str) -> None:
        importlib.import_module(script.removesuffix(".py")).main(list(arguments))

    return run


def test_the_throughput_benchmark_runs(run, tmp_path):
    report = tmp_path / "report.md"
    run("throughput.py", "--preset", "cpu", "--models", "tiny", "--quick", "--parts", "speed,prefix,memory",
        "--output", str(report))
    text = report.read_text()
    for heading in ("## Docs/s", "## Prefix reuse", "## Memory"):
        assert heading in text
    assert "## Engines" not in text  # not asked for
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 2  # explain (quick: explain mode only), prefix reuse
    # 2 queries x 4 documents; on a CPU, SDPA with grouped key/value heads (backends/attention.py)
    assert f"| tiny | float32, {attention.NAME} | explain | 8 |" in text


def test_the_store_benchmark_runs(run, tmp_path):
    run("judgement_store.py", "--quick", "--output", str(tmp_path / "report.md"))
    text = (tmp_path / "report.md").read_text()
    assert re.search(r"\| no store \| 18 \|", text)  # 3 queries: top 2 and top 4
    assert re.search(r"\| store, first run \| 12 \|", text)  # the top 2 judged once for both
    assert re.search(r"\| store, second run \| 0 \|", text)
    assert "DIFFERENT" not in text
    union, distinct, rows, lost, calls = re.search(r"\n\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \| identical \|",
                                                   text).groups()
    assert union == "12" and rows == distinct and lost == "0" and calls == "0"


def test_the_test_time_compute_benchmark_runs(run, tmp_path):
    run("test_time_compute.py", "--quick", "--output", str(tmp_path / "report.md"), "--plot", str(tmp_path / "plot.png"))
    rows = [line.split(" | ") for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith(("| direct", "| explain", "| adaptive"))]
    assert [row[0] for row in rows] == ["| direct", "| explain", "| explain, 2 samples", "| adaptive, entropy >= 0.5",
                                        "| adaptive, entropy >= 0.5, 2 samples"]
    tokens = {row[0]: float(row[2]) for row in rows}
    assert tokens["| direct"] == 0 and 0 < tokens["| adaptive, entropy >= 0.5"] <= tokens["| explain"]
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_refinement_benchmark_runs(run, tmp_path):
    run("refinement.py", "--quick", "--output", str(tmp_path / "report.md"), "--plot", str(tmp_path / "plot.png"))
    rows = [line.split(" | ") for line in (tmp_path / "report.md").read_text().splitlines()
            if line.startswith(("| distilled", "| label", "| composite", "| rr"))]
    assert [row[0] for row in rows] == ["| distilled (before refinement)", "| label", "| composite", "| rr"]
    for row in rows:
        assert 0 <= float(row[1]) <= 1 and 0 <= float(row[2]) <= 1  # nDCG@10 and label accuracy, one seed
    # the ranking rewards' paired differences against the label reward
    assert all(row[3].endswith(")") and "(mean " in row[3] for row in rows[2:])
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_decoding_floor_is_measured_in_process(monkeypatch):
    """test_time_compute.py --part floor, quick (the tiny model, transformers): run here, not in a process of its own."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import test_time_compute

    setup = {**test_time_compute.COST_QUICK, "vllm_block_size": None}
    rows = test_time_compute.decode_floor(setup)
    # the backend's own weight layout, then transformers' (what the backend's layout gains)
    assert [row["backend"] for row in rows] == ["transformers", "transformers, weights as transformers stores them"]
    for row in rows:
        assert (row["pairs"], row["escalated"]) == (4, 2)  # within 1 of rank 2
        assert all(len(times) == 1 and times[0] > 0 for times in row["times"].values())
        assert row["share"] == min(row["times"][2]) / min(row["times"][4])
    report = test_time_compute._floor_report(rows, setup)
    for backend in ("transformers", "transformers, weights as transformers stores them"):
        assert re.search(rf"\n\| {backend} \| \d+ \| 2 \| [\d.]+ \([\d.]+\) \| 4 \| [\d.]+ \([\d.]+\) \| \d+% \|", report)


def test_the_cpu_linear_benchmark_runs_in_process(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cpu_linear

    cpu_linear.main(["--quick", "--output", str(tmp_path / "report.md")])
    rows = re.findall(r"\n\| 64 -> 128 \| (\d+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+x \| [\d.]+x \| ([\d.e+-]+) \|",
                      (tmp_path / "report.md").read_text())
    assert [int(n) for n, _ in rows] == list(cpu_linear.QUICK["rows"])
    assert all(float(difference) < 1e-4 for _, difference in rows)  # the same products, rounded differently
