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
    # One process collects the suite, then lists the files in the collections' home that conftest.py
    # made for it: none, as ir_datasets fills it when a test asks for a dataset (importing ir_datasets
    # makes empty folders there).
    collect = ("import os, pathlib, pytest; code = pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', "
               "'tests']); home = pathlib.Path(os.environ['IR_DATASETS_HOME']); "
               "print('home:', [str(path) for path in home.rglob('*') if not path.is_dir()]); raise SystemExit(code)")
    collected = subprocess.run([sys.executable, "-c", collect], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=300)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert " tests collected" in collected.stdout
    assert collected.stdout.splitlines()[-1] == "home: []", collected.stdout[-3000:]
