"""The examples and notebooks run, offline, with the tiny model."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(script: str, *args: str, cwd: Path, **env: str) -> str:
    completed = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True,
                               text=True, env=dict(os.environ, **env), timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_quickstart_script(tiny_model, tmp_path):
    out = run_example("quickstart.py", cwd=tmp_path, REASONRANK_MODEL=str(tiny_model))
    assert "BM25 >> ReasonRanker" in out and "nDCG@10" in out
    assert out.count(" label ") == 3


def test_evaluate_bright_script(bright, tiny_model, tmp_path):
    out = run_example("evaluate_bright.py", "--model", str(tiny_model), "--domains", "leetcode", "biology",
                      "--k", "10", "--num-queries", "2", "--output", "results", cwd=tmp_path)
    assert "irds:bright/leetcode" in out and "average" in out
    assert (tmp_path / "results" / "results.csv").exists() and (tmp_path / "results" / "differences.png").exists()


def test_report_figures_script(tiny_model, tmp_path):
    from chromium import require_chromium

    require_chromium()  # for the screenshot
    out = run_example("report_figures.py", "--model", str(tiny_model), "--queries-per-topic", "1",
                      "--output", str(tmp_path / "figures"), cwd=tmp_path)
    assert "explain: nDCG@10 " in out and "direct: nDCG@10 " in out
    page = (tmp_path / "figures" / "report.html").read_text()
    assert page.count('<section class="q') == 3 and "judged 2 relevant" in page and "first stage #" in page
    for picture in ("report.png", "reliability.png"):
        assert (tmp_path / "figures" / picture).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("notebook", sorted(p.name for p in EXAMPLES.glob("*.ipynb")))
def test_notebook_runs_top_to_bottom(notebook, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONRANK_MODEL", str(tiny_model))  # the kernel inherits the environment
    book = nbformat.read(EXAMPLES / notebook, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors, [(e.ename, e.evalue) for e in errors]
    rendered = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs
                if "text/html" in o.get("data", {})]
    assert rendered  # tables and explanation lists rendered as HTML
    if notebook == "01_quickstart.ipynb":
        assert any('class="reasonrank"' in o["data"]["text/html"] for o in rendered)
        assert (tmp_path / "explanations.html").exists()
    else:
        assert any("image/png" in o.get("data", {}) for cell in book.cells if cell.cell_type == "code"
                   for o in cell.outputs)
