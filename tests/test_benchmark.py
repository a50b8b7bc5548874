"""benchmarks/throughput.py runs (on tiny workloads) and reports its tables.

The engines table is left out: it starts vLLM's engine and a vLLM server (a minute and a half of
the suite's time), and tests/test_vllm.py runs the same backends against both for parity.
"""
import os
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def test_the_throughput_benchmark_runs(tmp_path):
    report = tmp_path / "report.md"
    run = subprocess.run([sys.executable, str(BENCHMARK), "--preset", "cpu", "--models", "tiny", "--quick",
                          "--parts", "speed,prefix,memory", "--output", str(report)],
                         capture_output=True, text=True, timeout=600, env=os.environ)
    assert run.returncode == 0, run.stderr[-3000:]
    text = report.read_text()
    for heading in ("## Docs/s", "## Prefix reuse", "## Memory"):
        assert heading in text
    assert "## Engines" not in text  # not asked for
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 3  # explain, direct, prefix reuse
    assert "| tiny | float32, sdpa | explain | 8 |" in text  # 2 queries x 4 documents
