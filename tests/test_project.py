"""The project itself: the code passes the linter CI runs, and the test suite starts from a clone
that has no ../shared folder (ir_datasets then downloads the collections, as for any user)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_code_passes_the_linter():
    ruff = Path(sys.executable).parent / "ruff"
    run = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout[-5000:]


def test_the_suite_starts_without_the_shared_folder(tmp_path):
    env = {**os.environ, "REASONRANK_SHARED": str(tmp_path / "no-shared-folder")}
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "tests"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert " tests collected" in collected.stdout
    # the collections' home is fresh and empty: ir_datasets fills it when a test asks for a dataset
    home = subprocess.run([sys.executable, "-c", "import conftest, os; print(os.listdir(os.environ['IR_DATASETS_HOME']))"],
                          cwd=ROOT / "tests", env=env, capture_output=True, text=True, timeout=300)
    assert home.returncode == 0 and home.stdout.strip() == "[]", home.stderr[-3000:]
