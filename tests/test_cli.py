"""The `reasonrank demo` command."""
import os
import subprocess
import sys

import pytest

from pyterrier_reasonrank.cli import main


def test_demo_prints_the_experiment_table_and_explanations(tiny_model, capfd):
    assert main(["demo", "--model", str(tiny_model), "--max-new-tokens", "8", "--explanations", "2"]) == 0
    out, err = capfd.readouterr()  # what PISA's C++ code writes too
    # The results first: PISA's indexing log and counters are held back without --verbose, and the
    # only progress bar is the ranker's.
    assert out.startswith("\nbundled demo collection: ")
    assert "[info]" not in out + err and "Storing terms statistics" not in err and "Loading weights" not in err
    assert err.count("\n") <= 1 and "ReasonRank explain (" in err  # the progress bar, by the ranker's short name
    header, baseline, reranked = [line.split() for line in out.split("docs/s).\n\n")[1].splitlines()[:3]]
    assert header == ["name", "nDCG@10", "AP"] or header == ["name", "AP", "nDCG@10"]
    assert baseline[0] == "BM25" and f"\nBM25 >> ReasonRank explain, top 10 ({tiny_model.name}) " in out
    assert "bundled demo collection: 6 queries, top 10 from BM25" in out
    assert "Query q1: why do leaves change colour in autumn" in out
    assert out.count("  label ") == 2


def test_demo_on_an_irds_dataset(tiny_model, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("REASONRANK_CACHE", str(tmp_path))
    argv = ["demo", "--model", str(tiny_model), "--dataset", "irds:vaswani", "--num-queries", "3", "--k", "5",
            "--mode", "direct"]
    assert main(argv) == 0
    assert "irds:vaswani: 3 queries, top 5 from BM25" in capsys.readouterr().out
    assert (tmp_path / "indexes" / "irds-vaswani.pisa").is_dir()  # the index is cached for the next run


@pytest.mark.parametrize("model, reason", [
    ("/no/such/model", "there is no directory '/no/such/model'"),
    ("no-such-org/no-such-model", "'no-such-org/no-such-model' is not a local directory, not in the Hugging Face "
                                  "cache, and could not be fetched from the Hub (offline, gated, or no such repository)"),
])
def test_demo_without_a_model_fails_with_one_sentence(model, reason):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "pyterrier_reasonrank.cli", "demo", "--model", model],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"reasonrank demo: Could not load the model: {reason}; pass --model / model= a local directory or a Hub id "
        "you can download."]
    assert run.stdout == ""
