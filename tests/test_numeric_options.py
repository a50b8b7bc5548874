"""Numbers that would make the output meaningless are refused, named, before any work: the options of
ReasonRanker, QueryGenerator and Escalation, the student's settings file, the command lines; calibration
on judgements that cannot pin a temperature down; the training commands' checks before any work;
packages a recipe needs; and a quiet first stage."""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pyterrier_reasonrank import Escalation, QueryGenerator, ReasonRanker
from pyterrier_reasonrank.calibrating import calibrate
from pyterrier_reasonrank.calibration import MIN_PAIRS, fit_temperature, fittable
from pyterrier_reasonrank.cli import main as reasonrank
from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.parallel import RayParallel
from pyterrier_reasonrank.settings import FILENAME, StudentSettings, read_settings
from pyterrier_reasonrank.training.cli import main as reasonrank_train
from synthetic import write_annotations

INF, NAN = float("inf"), float("nan")
BAD = {"inf": INF, "-inf": -INF, "nan": NAN, "negative": -1, "string": "2", "bool": True}


def one_line(capfd, code: int, program: str) -> str:
    """The command's error: exit 1, and stderr is that one line (no traceback, no log line before it)."""
    captured = capfd.readouterr()
    assert code == 1, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: "), captured.err
    return lines[0]


def refused(check, name: str, value, requirement: str):
    with pytest.raises(InputError) as error:
        check()
    assert f"{name} must be {requirement}" in str(error.value) and f"got {value!r}" in str(error.value)


# ReasonRanker, QueryGenerator, Escalation: every numeric option; no model is loaded to check them.

POSITIVE_INT, POSITIVE = "a positive integer", "a finite number above 0"
RANKER_OPTIONS = {"samples": POSITIVE_INT, "batch_size": POSITIVE_INT, "max_new_tokens": POSITIVE_INT,
                  "concurrency": POSITIVE_INT, "max_query_tokens": POSITIVE_INT, "max_doc_tokens": POSITIVE_INT,
                  "max_batch_tokens": POSITIVE_INT, "temperature": POSITIVE, "label_temperature": POSITIVE,
                  "seed": "an integer of 0 or more"}
GENERATOR_OPTIONS = {"max_new_tokens": POSITIVE_INT, "max_question_tokens": POSITIVE_INT, "batch_size": POSITIVE_INT}
ESCALATION_OPTIONS = {"entropy": "a number from 0 to ln 3", "cutoff": POSITIVE_INT, "margin": POSITIVE_INT,
                      "token_budget": POSITIVE_INT}


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("option", RANKER_OPTIONS)
def test_every_numeric_option_of_the_ranker_is_checked(option, kind):
    refused(lambda: ReasonRanker("m", **{option: BAD[kind]}), option, BAD[kind], RANKER_OPTIONS[option])


@pytest.mark.parametrize("kind", BAD)
@pytest.mark.parametrize("option", GENERATOR_OPTIONS)
def test_every_numeric_option_of_the_query_generator_is_checked(option, kind):
    refused(lambda: QueryGenerator("m", **{option: BAD[kind]}), option, BAD[kind], GENERATOR_OPTIONS[option])


@pytest.mark.parametrize("value", ["no", "false", 0, None])
@pytest.mark.parametrize("make, option", [(ReasonRanker, "greedy_first"), (ReasonRanker, "prefix_reuse"),
                                          (ReasonRanker, "verbose"), (ReasonRanker, "trust_remote_code"),
                                          (QueryGenerator, "verbose"), (QueryGenerator, "trust_remote_code"),
                                          (RayParallel, "per_worker_stores")])
def test_every_on_off_option_is_a_bool_never_a_string_read_as_on(make, option, value):
    refused(lambda: make("m", **{option: value}), option, value, "True or False")
    assert getattr(make("m", **{option: np.False_}), option) is False


@pytest.mark.parametrize("kind", [*BAD, "out of range"])
@pytest.mark.parametrize("option", ESCALATION_OPTIONS)
def test_every_option_of_the_escalation_is_checked(option, kind):
    value = BAD.get(kind, 2.0 if option == "entropy" else 0)  # ln 3 is the most uncertain a pair can be
    refused(lambda: Escalation(**{option: value}, cutoff=5) if option != "cutoff" else Escalation(cutoff=value),
            f"Escalation: {option}", value, ESCALATION_OPTIONS[option])


def test_sizes_and_temperatures_in_range_are_kept_as_numbers():
    ranker = ReasonRanker("m", samples=np.int64(2), temperature=1, label_temperature=np.float32(0.5), seed=0,
                          max_doc_tokens=None, max_batch_tokens=None)
    assert (ranker.samples, ranker.temperature, ranker.label_temperature) == (2, 1.0, 0.5)
    assert type(ranker.samples) is int and type(ranker.temperature) is float
    assert ranker.max_doc_tokens is None and ranker.max_batch_tokens is None  # the student's; no limit
    assert Escalation(entropy=math.log(3)).entropy == math.log(3)  # a uniform distribution is escalated


def test_a_criterion_is_switched_off_with_none():
    qids, uniform = ["a"] * 3, np.full((3, 3), 1 / 3)
    from pyterrier_reasonrank.adaptive import escalated

    assert escalated(qids, uniform, Escalation(entropy=0.0), cost=1).all()
    assert escalated(qids, uniform, Escalation(entropy=None, cutoff=1, margin=1), cost=1).tolist() == \
        [True, True, False]  # ranks 0 and 1, either side of the cut-off; none for its uncertainty alone
    with pytest.raises(InputError, match="entropy and cutoff are both None, so no pair would be explained"):
        Escalation(entropy=None)
    with pytest.raises(InputError, match="escalation must be an Escalation"):
        ReasonRanker("m", mode="adaptive", escalation={"entropy": 0.5})


# The student's settings file: JSON may hold Infinity and NaN.

@pytest.mark.parametrize("field, value, message", [
    ("label_temperature", {"explain": INF}, "label_temperature['explain'] must be a finite number above 0, got inf"),
    ("label_temperature", {"direct": NAN}, "label_temperature['direct'] must be a finite number above 0, got nan"),
    ("label_temperature", {"direct": -1.0}, "label_temperature['direct'] must be a finite number above 0, got -1.0"),
    ("label_temperature", {"explain": "1.5"}, "label_temperature['explain'] must be a finite number above 0, "
                                              "got '1.5'"),
    ("max_doc_tokens", -3, "max_doc_tokens must be a positive integer, got -3"),
    ("max_query_tokens", "512", "max_query_tokens must be a positive integer, got '512'"),
    ("max_question_tokens", 1.5, "max_question_tokens must be a positive integer, got 1.5"),
])
def test_the_settings_file_numbers_are_checked(tmp_path, field, value, message):
    (tmp_path / FILENAME).write_text(json.dumps({**StudentSettings().to_dict(), field: value}))
    with pytest.raises(InputError) as error:
        read_settings(str(tmp_path))
    assert str(error.value) == f"{tmp_path}: {message}"


def test_a_ranker_is_refused_a_student_with_an_infinite_temperature(tiny_model, tmp_path):
    student = shutil.copytree(tiny_model, tmp_path / "student")
    (student / FILENAME).write_text(json.dumps({**StudentSettings().to_dict(), "label_temperature": {"explain": INF}}))
    with pytest.raises(InputError, match=r"label_temperature\['explain'\] must be a finite number above 0, got inf"):
        ReasonRanker(str(student)).load()


# The command line: one line, the option named, before anything is loaded.

@pytest.mark.parametrize("command", ["demo", "evaluate --dataset irds:vaswani", "calibrate --dataset irds:vaswani"])
@pytest.mark.parametrize("option, value, requirement", [
    ("--k", "0", "a positive integer"), ("--num-queries", "0", "a positive integer"),
    ("--num-queries", "-1", "a positive integer"), ("--batch-size", "1.5", "a positive integer"),
    ("--samples", "nan", "a positive integer")])
def test_command_line_numbers_are_one_line_before_any_work(capfd, command, option, value, requirement):
    program = command.split()[0]
    code = reasonrank([*command.split(), "--model", "/no/such/model", option, value])  # no model load either
    assert one_line(capfd, code, f"reasonrank {program}") == \
        f"reasonrank {program}: argument {option}: must be {requirement}, got {value!r}"


def test_other_command_line_mistakes_are_one_line_too(capfd):
    assert one_line(capfd, reasonrank(["demo", "--explanations", "-1"]), "reasonrank demo") == \
        "reasonrank demo: argument --explanations: must be an integer of 0 or more, got '-1'"
    assert one_line(capfd, reasonrank(["evaluate", "--cascade", "0", "--dataset", "x"]), "reasonrank evaluate") == \
        "reasonrank evaluate: argument --cascade: must be a positive integer, got '0'"
    assert one_line(capfd, reasonrank(["calibrate"]), "reasonrank calibrate") == \
        "reasonrank calibrate: the following arguments are required: --dataset"


@pytest.fixture()
def no_evaluation(monkeypatch):
    """Make any evaluation (BM25 indexing, the model's judgements) fail the test."""
    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation started")

    monkeypatch.setattr("pyterrier_reasonrank.evaluation.evaluate", evaluate)


@pytest.mark.parametrize("options, message", [({"num_queries": -1}, "num_queries must be a positive integer"),
                                              ({"num_queries": 0}, "num_queries must be a positive integer"),
                                              ({"k": 0}, "k must be a positive integer")])
def test_calibrate_checks_its_counts_before_any_work(tiny_model, no_evaluation, options, message):
    with pytest.raises(InputError, match=message):
        calibrate(ReasonRanker(str(tiny_model)), ["irds:vaswani"], **options)


def test_evaluate_and_the_demo_check_their_counts(tiny_model):
    from pyterrier_reasonrank.demo import run_demo
    from pyterrier_reasonrank.evaluation import cascade, evaluate

    with pytest.raises(InputError, match="num_queries must be a positive integer .*got -1"):
        evaluate(["irds:vaswani"], {}, num_queries=-1)
    with pytest.raises(InputError, match="k must be a positive integer, got 0"):
        run_demo(ReasonRanker("/no/such/model"), k=0)
    with pytest.raises(InputError, match="cascade depth must be a positive integer, got 0"):
        cascade(ReasonRanker("m", mode="direct"), ReasonRanker("m"), 0)


# Calibration on judgements that cannot calibrate.

def test_a_student_whose_settings_cannot_be_written_is_refused_before_the_evaluation(tiny_model, tmp_path, capfd,
                                                                                     no_evaluation):
    student = shutil.copytree(tiny_model, tmp_path / "student")
    (student / FILENAME).mkdir()  # as root, permissions stop nothing: a directory in the file's place does
    code = reasonrank(["calibrate", "--dataset", "irds:vaswani", "--model", str(student), "--mode", "direct"])
    assert one_line(capfd, code, "reasonrank calibrate") == \
        f"reasonrank calibrate: Is a directory: {student / FILENAME}"


def test_qrels_of_one_label_cannot_calibrate(tiny_model, tmp_path, capfd):
    student = shutil.copytree(tiny_model, tmp_path / "student")
    # vaswani judges relevant documents only: every judged pair is label 2.
    code = reasonrank(["calibrate", "--dataset", "irds:vaswani", "--model", str(student), "--mode", "direct",
                       "--k", "5", "--num-queries", "3"])
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and line.startswith("reasonrank calibrate: the direct mode's judged pairs among BM25's top 5 of "
                                         "['irds:vaswani'] all carry label 2 (")
    assert "a temperature cannot be fitted on one label" in line and "irds:cranfield" in line
    assert not (student / FILENAME).exists()  # nothing written


def test_too_few_pairs_or_one_label_are_refused():
    fittable(np.array([0, 2] * (MIN_PAIRS // 2)), what="pairs")
    with pytest.raises(InputError, match=f"pairs are only {MIN_PAIRS - 1} \\(at least {MIN_PAIRS} are needed"):
        fittable(np.array([0, 1] * MIN_PAIRS)[:MIN_PAIRS - 1], what="pairs")
    with pytest.raises(InputError, match=r"pairs all carry label 2 \(100 pairs\)"):
        fittable(np.full(100, 2), what="pairs")


def test_a_temperature_at_the_search_bound_is_never_returned():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # Labels that disagree with the model's most probable label as much as they can: the flattest
    # distribution (the highest temperature) is best, and the search ends at its bound.
    labels = np.argmin(probabilities, axis=1)
    with pytest.raises(InputError, match=r"keeps improving up to the temperature search's bound \(20\)"):
        fit_temperature(probabilities, labels)
    # Labels that always agree: the sharpest (the lowest temperature) is best.
    with pytest.raises(InputError, match=r"search's bound \(0.05\)"):
        fit_temperature(probabilities, np.argmax(probabilities, axis=1))


# The training commands: checked before any work, one line.

@pytest.fixture()
def no_model(monkeypatch):
    """Make loading the student fail the test."""
    def load_student(*args, **kwargs):
        raise AssertionError("the model was loaded")

    for module in ("distillation", "refinement"):
        monkeypatch.setattr(f"pyterrier_reasonrank.training.{module}.load_student", load_student)


@pytest.mark.parametrize("stage", ["distill", "refine"])
def test_a_missing_checkpoint_is_one_line_before_the_model_is_loaded(vocabulary, tmp_path, capfd, no_model, stage):
    data = write_annotations(vocabulary, tmp_path / "train.jsonl", 3)
    code = reasonrank_train([stage, "--model_name_or_path", "m", "--train_file", str(data),
                             "--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint", "/missing"])
    assert one_line(capfd, code, f"reasonrank-train {stage}") == (
        f"reasonrank-train {stage}: resume_from_checkpoint: /missing is not a checkpoint folder with its trainer "
        "state (trainer_state.json); name a checkpoint-N folder of an earlier run, or 'no'")
    code = reasonrank_train([stage, "--model_name_or_path", "m", "--train_file", str(data),
                             "--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint", "true"])
    assert one_line(capfd, code, f"reasonrank-train {stage}") == (
        f"reasonrank-train {stage}: resume_from_checkpoint true: there is no complete checkpoint in {tmp_path / 'out'}")


def test_a_broken_annotation_file_is_reported_before_the_index_is_built(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("REASONRANK_CACHE", str(tmp_path / "cache"))
    output = tmp_path / "annotations.jsonl"
    output.write_text('{"qid": "1", "docno": "d", "query": "q", "text": "t", "label": 1, "explanation": "e"}\n'
                      "not json\n" + '{"qid": "2"}\n')
    code = reasonrank_train(["annotate", "--dataset", "irds:cranfield", "--output", str(output), "--teacher", "local"])
    assert f"{output}, line 2: not a JSON record" in one_line(capfd, code, "reasonrank-train annotate")
    assert not (tmp_path / "cache").exists()  # no BM25 index was built


def test_grpo_with_one_generation_is_one_line_and_nothing_else(tmp_path):
    # A process of its own: the warning it printed came from importing vLLM, which a session imports once.
    run = subprocess.run([sys.executable, "-m", "pyterrier_reasonrank.training.cli", "refine", "--algorithm", "grpo",
                          "--num_generations", "1", "--model_name_or_path", "m", "--output_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "reasonrank-train refine: the GrpoRefineConfig + StudentConfig configuration: num_generations must be at least "
        "2 with algorithm grpo (its advantages compare the responses to one prompt), got 1"]


@pytest.mark.parametrize("stage, options, module, message", [
    ("distill", ["--optim", "adamw_8bit"], "bitsandbytes",
     "optim adamw_8bit needs bitsandbytes, which is not installed: pip install 'pyterrier-reasonrank[gpu]'"),
    ("distill", ["--optim", "paged_adamw_8bit"], "bitsandbytes", "optim paged_adamw_8bit needs bitsandbytes"),
    ("distill", ["--load_in_4bit", "true"], "bitsandbytes",
     "load_in_4bit (QLoRA) needs bitsandbytes, which is not installed: pip install 'pyterrier-reasonrank[gpu]'"),
    ("refine", ["--sampling_backend", "vllm"], "vllm",
     "sampling_backend vllm needs vllm, which is not installed: pip install 'pyterrier-reasonrank[vllm]'"),
])
def test_a_package_a_recipe_needs_is_named_with_its_extra_before_any_work(vocabulary, tmp_path, capfd, monkeypatch,
                                                                          no_model, stage, options, module, message):
    monkeypatch.setitem(sys.modules, module, None)  # not installed (bitsandbytes is not, here; on a GPU it may be)
    data = write_annotations(vocabulary, tmp_path / "train.jsonl", 3)
    code = reasonrank_train([stage, "--model_name_or_path", "m", "--train_file", str(data),
                             "--output_dir", str(tmp_path / "out"), *options])
    assert one_line(capfd, code, f"reasonrank-train {stage}").startswith(f"reasonrank-train {stage}: {message}")
    assert not (tmp_path / "out").exists()


def test_the_paper_recipe_names_the_gpu_extra_without_bitsandbytes(monkeypatch):
    from pyterrier_reasonrank.training.packages import require_packages
    from test_train_cli import shipped

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    for section in ("distill", "refine"):
        with pytest.raises(InputError, match=r"^optim adamw_8bit needs bitsandbytes, which is not installed: pip "
                                             r"install 'pyterrier-reasonrank\[gpu\]'$"):
            require_packages(*shipped("paper-3b.yaml")[section])


@pytest.mark.parametrize("options, message", [
    (["--concurrency", "0"], "concurrency must be a positive integer, got 0"),
    (["--timeout", "inf"], "timeout must be a finite number above 0, got inf"),
    (["--temperature", "nan"], "temperature must be a finite number of 0 or more, got nan"),
    (["--bm25_depth", "-1"], "bm25_depth must be a positive integer, got -1"),
    (["--num_queries", "0"], "num_queries must be a positive integer (or None), got 0"),
])
def test_the_annotation_numbers_are_checked(tmp_path, capfd, options, message):
    code = reasonrank_train(["annotate", "--dataset", "irds:cranfield", "--output", str(tmp_path / "a.jsonl"),
                             *options])
    assert one_line(capfd, code, "reasonrank-train annotate").endswith(message)
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("stage, option, value, message", [
    ("refine", "--keep_threshold", "1.5", "keep_threshold must be a number from 0 to 1, got 1.5"),
    ("refine", "--eval_samples", "0", "eval_samples must be a positive integer, got 0"),
    ("distill", "--direct_fraction", "nan", "direct_fraction must be a number from 0 to 1, got nan"),
    ("distill", "--max_doc_tokens", "0", "max_doc_tokens must be a positive integer (or None), got 0"),
])
def test_the_trainer_numbers_are_checked(capfd, stage, option, value, message):
    code = reasonrank_train([stage, "--model_name_or_path", "m", option, value])
    assert one_line(capfd, code, f"reasonrank-train {stage}").endswith(message)


# A quiet first stage.

def test_indexing_is_quiet_unless_verbose(tmp_path, capfd):
    from pyterrier_reasonrank.demo import DemoCollection
    from pyterrier_reasonrank.indexing import bm25

    capfd.readouterr()
    bm25(DemoCollection(), name=None, num_results=5)
    quiet = capfd.readouterr()
    assert quiet.out == "" and quiet.err == ""
    bm25(DemoCollection(), name=None, num_results=5, verbose=True)
    verbose = capfd.readouterr()
    assert "[info]" in verbose.out + verbose.err  # PISA's log, when asked for


def test_what_indexingheld_back_is_shown_when_it_fails(capfd):
    from pyterrier_reasonrank.indexing import held_back

    with pytest.raises(RuntimeError, match="disk full"):
        with held_back():
            os.write(1, b"[info] Processing documents\n")
            os.write(2, b"[error] no space left\n")
            raise RuntimeError("disk full")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == "[info] Processing documents\n[error] no space left\n"
