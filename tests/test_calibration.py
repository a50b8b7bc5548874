"""Calibration: the label temperature on a model whose logits the test controls, the calibration
error by hand, a fitted temperature that recovers the one labels were drawn at, and
`reasonrank evaluate --calibration` and `reasonrank calibrate` on real collections."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pyterrier_reasonrank import Escalation, JudgementStore, ReasonRanker
from pyterrier_reasonrank.calibration import calibration_table, expected_calibration_error, fit_temperature
from pyterrier_reasonrank.cli import main
from pyterrier_reasonrank.evaluation import evaluate
from pyterrier_reasonrank.prompts import MODES
from pyterrier_reasonrank.scoring import tempered
from pyterrier_reasonrank.settings import StudentSettings, read_settings
from test_ranker import EXPLAINS, LABEL_LOGITS, pairs
from test_store import judged_with_count

LOGITS = np.asarray(LABEL_LOGITS)


def softmax(logits):
    p = np.exp(np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def explaining(script_model):
    return script_model(EXPLAINS, LABEL_LOGITS)


@pytest.mark.parametrize("mode", MODES)
def test_the_label_temperature_divides_the_label_logits(explaining, mode):
    out = ReasonRanker(str(explaining), mode=mode, label_temperature=2.0, max_new_tokens=16)(pairs(1, 3))
    expected = softmax(LOGITS / 2.0)
    assert np.stack(out.probabilities.to_numpy()) == pytest.approx(np.tile(expected, (3, 1)), abs=1e-6)
    assert out.score.tolist() == pytest.approx([expected @ [0, 1, 2]] * 3, abs=1e-6)
    assert out.label.tolist() == [2, 2, 2]


def test_the_students_temperature_is_used_unless_overridden(explaining, tmp_path):
    student = shutil.copytree(explaining, tmp_path / "student")
    StudentSettings(tasks=MODES, label_temperature={"direct": 0.5}).save(student)
    out = ReasonRanker(str(student), mode="direct")(pairs(1, 2))
    assert np.stack(out.probabilities.to_numpy()) == pytest.approx(np.tile(softmax(LOGITS / 0.5), (2, 1)), abs=1e-6)
    with pytest.warns(UserWarning, match=r"calibrated with label_temperature \{'direct': 0.5\}; serving it with "
                                         r"label_temperature=1.0"):
        out = ReasonRanker(str(student), mode="direct", label_temperature=1.0)(pairs(1, 2))
    assert np.stack(out.probabilities.to_numpy()) == pytest.approx(np.tile(softmax(LOGITS), (2, 1)), abs=1e-6)


def test_each_mode_has_its_own_temperature(explaining, tmp_path):
    student = shutil.copytree(explaining, tmp_path / "student")
    StudentSettings(tasks=MODES, label_temperature={"direct": 0.5, "explain": 2.0}).save(student)
    # Every pair is uncertain enough; the budget (26 tokens, a pair reserves 16 and the marker) explains one.
    adaptive = ReasonRanker(str(student), mode="adaptive", max_new_tokens=16,
                            escalation=Escalation(entropy=0.0, token_budget=26))
    out = adaptive(pairs(2, 3))
    explained = (out.samples > 0).to_numpy()
    assert explained.sum() == 2  # one per query
    probabilities = np.stack(out.probabilities.to_numpy())
    assert probabilities[explained] == pytest.approx(np.tile(softmax(LOGITS / 2.0), (2, 1)), abs=1e-6)
    assert probabilities[~explained] == pytest.approx(np.tile(softmax(LOGITS / 0.5), (4, 1)), abs=1e-6)


def test_tempering_is_dividing_the_logits():
    logits = np.array([[0.5, 1.25, 2.0], [3.0, -1.0, 0.0]])
    for temperature in (0.25, 1.0, 3.0):
        assert tempered(softmax(logits), temperature) == pytest.approx(softmax(logits / temperature), abs=1e-12)


def test_calibration_error_by_hand():
    probabilities = np.array([[0, 0, 1], [0, 0, 1], [1, 0, 0], [0.5, 0.5, 0]])
    labels = np.array([2, 0, 0, 1])
    table = calibration_table(probabilities, labels)
    # Expected label / 2: 1, 1, 0, 0.25 against the labels / 2: 1, 0, 0, 0.5.
    rows = table[table.measure == "expected label"]
    assert rows[["bin", "pairs", "predicted", "observed"]].to_numpy() == \
        pytest.approx(np.array([[0.1, 1, 0.0, 0.0], [0.3, 1, 0.25, 0.5], [1.0, 2, 1.0, 0.5]]))
    # Confidence: 1, 1, 1, 0.5; the most probable label (2, 2, 0, 0) is right for the first and third.
    rows = table[table.measure == "confidence"]
    assert rows[["bin", "pairs", "predicted", "observed"]].to_numpy() == \
        pytest.approx(np.array([[0.6, 1, 0.5, 0.0], [1.0, 3, 1.0, 2 / 3]]))
    errors = expected_calibration_error(table)
    assert errors == pytest.approx({"expected label": (0 + 0.25 + 2 * 0.5) / 4, "confidence": (0.5 + 3 / 3) / 4})


def test_the_fitted_temperature_is_the_one_labels_were_drawn_at():
    rng = np.random.default_rng(0)
    logits = 3 * rng.normal(size=(4000, 3))
    for truth in (0.5, 2.5):
        drawn = softmax(logits / truth)
        labels = np.array([rng.choice(3, p=p) for p in drawn])
        fitted = fit_temperature(softmax(logits), labels)
        assert fitted == pytest.approx(truth, rel=0.08)
        before = expected_calibration_error(calibration_table(softmax(logits), labels))
        after = expected_calibration_error(calibration_table(tempered(softmax(logits), fitted), labels))
        assert after["confidence"] < before["confidence"] / 2


def test_evaluate_writes_the_calibration_per_dataset(explaining, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["evaluate", "--dataset", "irds:vaswani", "--model", str(explaining), "--modes", "direct",
                 "--k", "10", "--num-queries", "5", "--calibration", "--output", str(output)]) == 0
    table = pd.read_csv(output / "calibration.csv")
    assert list(table.columns) == ["dataset", "name", "measure", "ece", "pairs"]
    assert table[["dataset", "name", "measure"]].values.tolist() == [
        ["irds:vaswani", "BM25 >> direct", "expected label"], ["irds:vaswani", "BM25 >> direct", "confidence"]]
    # vaswani judges relevant documents only (label 2), and every pair gets the same distribution p.
    run = pd.read_csv(next((output / "runs").glob("*direct*.run")), sep=r"\s+", header=None,
                      names=["qid", "q0", "docno", "rank", "score", "name"], dtype={"qid": str, "docno": str})
    from pyterrier_reasonrank.dataset import get_dataset

    qrels = get_dataset("irds:vaswani").get_qrels()
    judged = run.merge(qrels.astype({"qid": str, "docno": str}), on=["qid", "docno"])
    assert len(judged) > 0 and (table.pairs == len(judged)).all()
    p = softmax(LOGITS)
    assert table.ece.tolist() == pytest.approx([1 - (p @ [0, 1, 2]) / 2, 1 - p[2]], abs=1e-6)
    assert (output / "reliability-irds-vaswani.png").stat().st_size > 5000
    assert "calibration: " in capsys.readouterr().out


def test_calibrate_fits_the_temperature_and_the_ranker_uses_it(explaining, tmp_path, capsys):
    student = shutil.copytree(explaining, tmp_path / "student")
    store = JudgementStore(tmp_path / "judgements.sqlite")
    judged_with_count(ReasonRanker(str(student), mode="direct", store=store), pairs(1, 2))
    argv = ["calibrate", "--dataset", "irds:cranfield", "--model", str(student), "--mode", "direct", "--k", "10",
            "--num-queries", "12"]  # at least MIN_PAIRS judged pairs
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    saved = read_settings(str(student)).label_temperature["direct"]
    assert set(result) == {"direct", "settings"} and result["settings"] == str(student / "reasonrank_config.json")
    assert result["direct"]["temperature"] == saved
    # The labels of the judged pairs it ranked: the fitted temperature is where their likelihood peaks.
    with pytest.warns(UserWarning, match="label_temperature"):
        raw = ReasonRanker(str(student), mode="direct", label_temperature=1.0)
        evaluation = evaluate(["irds:cranfield"], {"direct": raw}, k=10, num_queries=12)
    labels = evaluation.judged_runs()[("irds:cranfield", "BM25 >> direct")]["label"].to_numpy()
    assert result["direct"]["pairs"] == len(labels) and len(set(labels)) > 1
    frequencies = np.bincount(labels, minlength=3) / len(labels)

    def nll(temperature):
        return -(frequencies * np.log(softmax(LOGITS / temperature))).sum()

    assert nll(saved) < nll(1.0) and nll(saved) < min(nll(saved * 1.02), nll(saved / 1.02))
    out, judged = judged_with_count(ReasonRanker(str(student), mode="direct", store=store), pairs(1, 2))
    assert np.stack(out.probabilities.to_numpy()) == pytest.approx(np.tile(softmax(LOGITS / saved), (2, 1)),
                                                                   abs=1e-6)
    assert judged == 0  # calibrating changed the student's settings, not its judgements: the store still serves


@pytest.mark.parametrize("temperature, message", [
    (1.5, "label_temperature must map modes"), ({"rerank": 2.0}, "label_temperature must map modes"),
    ({"explain": 0}, r"label_temperature\['explain'\] must be a finite number above 0, got 0")])
def test_a_malformed_temperature_in_the_settings_is_named(temperature, message):
    from pyterrier_reasonrank.errors import InputError

    with pytest.raises(InputError, match=message):
        StudentSettings.from_dict({**StudentSettings().to_dict(), "label_temperature": temperature})
