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
    assert summary["queries"]["records"] == 6  # the same questions, for query generation
    assert len(read_jsonl("runs/tiny/annotations.jsonl")) == 30 and len(read_jsonl("runs/tiny/queries.jsonl")) == 6

    assert main(["distill", "--config", recipe, "--num_train_epochs", "1"]) == 0
    distilled = result(capsys.readouterr())
    usable_queries = len([r for r in read_jsonl("runs/tiny/queries.jsonl") if not r.get("error")])
    assert distilled["examples"] == {"explain": 30, "direct": 30, **({"queries": usable_queries} if usable_queries
                                                                    else {})}
    assert distilled["steps"] == -(-(60 + usable_queries) // 8)  # batches of 8
    assert main(["refine", "--config", recipe]) == 0
    assert result(capsys.readouterr())["sampling"]["pairs"] == 30
    assert main(["refine", "--config", recipe, "--algorithm", "grpo", "--output_dir", "runs/tiny/grpo",
                 "--max_steps", "2"]) == 0
    assert result(capsys.readouterr())["steps"] == 2

    for stage in ("distill", "refine", "grpo"):
        folder = tmp_path / "runs" / "tiny" / stage
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "run_card.json",
                "curves.png", "reasonrank_config.json", "README.md"} <= {p.name for p in folder.iterdir()}
        settings = json.loads((folder / "reasonrank_config.json").read_text())
        # the truncation distillation was given travels on through refinement
        assert settings["max_doc_tokens"] == 256 and settings["base_model"] == "runs/tiny/model"
        assert settings["stage"] == {"distill": "distill", "refine": "refine-rwsft", "grpo": "refine-grpo"}[stage]
    card = json.loads((tmp_path / "runs/tiny/distill/run_card.json").read_text())
    assert card["stage"] == "distill" and len(card["data"]["train_sha256"]) == 64
    assert card["config"]["StudentConfig"]["model_name_or_path"] == "runs/tiny/model"
    readme = (tmp_path / "runs/tiny/refine/README.md").read_text()
    assert readme.startswith("---\nbase_model: runs/tiny/model\nlibrary_name: peft\n")
    assert 'ReasonRanker(adapter="runs/tiny/refine")' in readme and '"max_doc_tokens": 256' not in readme
    assert "| `max_doc_tokens` | `256` |" in readme

    dataset = pt.get_dataset("irds:cranfield")
    topics = dataset.get_topics().head(3)
    ranker = ReasonRanker(adapter="runs/tiny/refine", max_new_tokens=8)
    pipeline = bm25(dataset, name="irds:cranfield", num_results=5) >> pt.text.get_text(dataset, "text") >> ranker
    reranked = pipeline(topics)
    assert len(reranked) == 15 and np.isfinite(reranked.score).all() and reranked.score.between(0, 2).all()
    assert ranker.encoder.max_doc_tokens == 256  # from the student, no option given


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
    assert "none.yaml: no such file, nor a bundled recipe; the bundled names: " in capsys.readouterr().err


def test_usage(capsys):
    assert main([]) == 2
    assert "reasonrank-train {annotate,distill,refine}" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "refine" in capsys.readouterr().out


def shipped(recipe: str) -> dict:
    """The configs of a shipped recipe, by section (a GPU recipe parsed with bf16 off, as on this CPU)."""
    from pyterrier_reasonrank.training.recipes import parse_command, recipe_section

    path = str(RECIPES / recipe)
    configs = {}
    for section in ("annotate", "distill", "refine"):
        options = recipe_section(path, section)
        if options.get("bf16"):
            options = dict(options, bf16=False)
        configs[section] = parse_command(section, options, [])
    return configs


@pytest.mark.parametrize("recipe", ["tiny-cpu.yaml", "paper-3b.yaml", "recommended.yaml"])
def test_shipped_recipes_parse(recipe):
    configs = shipped(recipe)
    for section in ("distill", "refine"):
        assert configs[section][0].output_dir.startswith("runs/")
    assert configs["annotate"][0].queries_output == configs["distill"][0].query_generation_file  # both tasks


def test_the_paper_recipe_is_the_papers():
    """Each value as the authors' code (algoprog/InteRank: model.py, score_outputs.py) and README have it."""
    configs = shipped("paper-3b.yaml")
    annotate, (distill, student), (refine, refined) = configs["annotate"][0], configs["distill"], configs["refine"]
    assert (annotate.teacher_model, annotate.temperature, annotate.gold_hint) == \
        ("meta-llama/Llama-3.3-70B-Instruct", 0.0, False)
    assert annotate.dataset.startswith("irds:lotte/") and annotate.dataset.endswith("/forum")  # StackExchange
    assert student.model_name_or_path == "meta-llama/Llama-3.2-3B-Instruct"
    assert (student.load_in_4bit, student.bnb_4bit_quant_type, student.use_bnb_nested_quant) == (True, "nf4", False)
    assert (student.lora_r, student.lora_alpha, student.lora_dropout) == (64, 16, 0.1)
    assert student.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"]
    for config in (distill, refine):
        assert (config.optim, config.learning_rate, config.weight_decay, config.max_grad_norm) == \
            ("adamw_8bit", 2e-4, 0.001, 0.3)
        assert (config.lr_scheduler_type, config.warmup_steps, config.num_train_epochs) == ("constant", 0.03, 1)
        assert config.per_device_train_batch_size * config.gradient_accumulation_steps == 16
        assert config.train_sampling_strategy == "group_by_length" and config.gradient_checkpointing
    assert (distill.max_length, distill.explain_fraction, distill.direct_fraction) == (4096, 1.0, 0.0)
    assert (refine.algorithm, refine.rewards, refine.reward_model) == \
        ("rwsft", ["reward_model"], "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2")
    assert (refine.num_generations, refine.temperature, refine.keep_threshold, refine.weight_power) == (8, 1.0, 0.85, 3)
    assert refine.include_teacher and refine.keep_ties and refined.load_in_4bit


def test_the_recommended_recipe_differs_where_it_says():
    paper, recommended = shipped("paper-3b.yaml"), shipped("recommended.yaml")
    distill, paper_distill = recommended["distill"][0], paper["distill"][0]
    assert recommended["annotate"][0].gold_hint and distill.direct_fraction == 1.0
    assert distill.lr_scheduler_type == "cosine"
    assert distill.per_device_train_batch_size * distill.gradient_accumulation_steps == 16
    assert (distill.learning_rate, distill.max_length) == (paper_distill.learning_rate, paper_distill.max_length)
    refine = recommended["refine"][0]
    assert (refine.algorithm, refine.rewards, refine.reward_weights) == ("grpo", ["label", "format"], [1.0, 0.5])
    assert (refine.learning_rate, refine.beta) == (1e-6, 0.04)
    assert recommended["distill"][1].lora_r == paper["distill"][1].lora_r == 64
