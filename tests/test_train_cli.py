"""`reasonrank-train`: the tiny recipe runs annotate, distill and refine on irds:cranfield offline,
and the result re-ranks through ReasonRanker; recipe errors are clear."""
import json
import shutil
from importlib import resources

import numpy as np
import pyterrier as pt
import pytest

from pyterrier_reasonrank import ReasonRanker
from pyterrier_reasonrank.indexing import bm25
from pyterrier_reasonrank.training.cli import main
from pyterrier_reasonrank.training.records import read_jsonl
from synthetic import printed_result

RECIPES = resources.files("pyterrier_reasonrank.training") / "configs"


def result(captured) -> dict:
    return printed_result(captured.out)


def test_the_tiny_recipe_runs_the_whole_loop_on_cranfield(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, "runs/tiny/model")
    recipe = str(RECIPES / "tiny-cpu.yaml")

    assert main(["annotate", "--config", recipe, "--num_queries", "6"]) == 0
    summary = result(capsys.readouterr())
    assert summary["records"] == summary["usable"] == 30 and summary["new"] == 30
    assert len(read_jsonl("runs/tiny/annotations.jsonl")) == 30

    assert main(["distill", "--config", recipe, "--num_train_epochs", "1"]) == 0
    assert result(capsys.readouterr())["steps"] == 4  # 30 pairs, batches of 8
    assert main(["refine", "--config", recipe]) == 0
    assert result(capsys.readouterr())["sampling"]["pairs"] == 30
    assert main(["refine", "--config", recipe, "--algorithm", "grpo", "--output_dir", "runs/tiny/grpo",
                 "--max_steps", "2"]) == 0
    assert result(capsys.readouterr())["steps"] == 2

    for stage in ("distill", "refine", "grpo"):
        folder = tmp_path / "runs" / "tiny" / stage
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "run_card.json",
                "curves.png"} <= {p.name for p in folder.iterdir()}
    card = json.loads((tmp_path / "runs/tiny/distill/run_card.json").read_text())
    assert card["stage"] == "distill" and len(card["data"]["train_sha256"]) == 64
    assert card["config"]["StudentConfig"]["model_name_or_path"] == "runs/tiny/model"

    dataset = pt.get_dataset("irds:cranfield")
    topics = dataset.get_topics().head(3)
    pipeline = bm25(dataset, name="irds:cranfield", num_results=5) >> pt.text.get_text(dataset, "text") \
        >> ReasonRanker(adapter="runs/tiny/refine", max_new_tokens=8)
    reranked = pipeline(topics)
    assert len(reranked) == 15 and np.isfinite(reranked.score).all() and reranked.score.between(0, 2).all()


def test_unknown_recipe_keys_are_one_clear_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("distill:\n  model_name_or_path: m\n  learning_rat: 0.1\n")
    assert main(["distill", "--config", str(recipe)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("reasonrank-train distill: unknown key(s) in the 'distill:' section of "
                            f"{recipe}: learning_rat (did you mean learning_rate?). Valid keys: ")
    assert len(error.splitlines()) == 1


def test_a_missing_section_or_file_is_an_error(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("annotate:\n  dataset: irds:cranfield\n")
    assert main(["refine", "--config", str(recipe)]) == 1
    assert "has no 'refine:' section" in capsys.readouterr().err
    assert main(["distill", "--config", str(tmp_path / "none.yaml")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_usage(capsys):
    assert main([]) == 2
    assert "reasonrank-train {annotate,distill,refine}" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "refine" in capsys.readouterr().out


@pytest.mark.parametrize("recipe", ["tiny-cpu.yaml", "paper-3b.yaml"])
def test_shipped_recipes_parse(recipe):
    from pyterrier_reasonrank.training.annotation import AnnotateConfig
    from pyterrier_reasonrank.training.distillation import DistillConfig
    from pyterrier_reasonrank.training.recipes import parse_configs, recipe_section
    from pyterrier_reasonrank.training.refinement import RefineConfig
    from pyterrier_reasonrank.training.student import StudentConfig

    path = str(RECIPES / recipe)
    parse_configs((AnnotateConfig,), recipe_section(path, "annotate"), [])
    configs = {}
    for section, config_type in (("distill", DistillConfig), ("refine", RefineConfig)):
        options = recipe_section(path, section)
        if options.get("bf16"):  # the paper recipe is for a GPU: parse it as such here
            options = dict(options, bf16=False)
        configs[section] = parse_configs((config_type, StudentConfig), options, [])
        assert configs[section][0].output_dir.startswith("runs/")
    if recipe == "paper-3b.yaml":
        distill, student = configs["distill"]
        assert (student.lora_r, student.lora_alpha, student.lora_dropout, student.load_in_4bit) == (64, 16, 0.1, True)
        assert (distill.learning_rate, distill.per_device_train_batch_size * distill.gradient_accumulation_steps,
                distill.max_grad_norm) == (2e-4, 16, 0.3)
        refine = configs["refine"][0]
        assert refine.algorithm == "rwsft" and refine.num_generations == 8 and refine.keep_threshold == 0.85
