"""`accelerate launch --num_processes 2` runs distillation and GRPO refinement (CPU, gloo)."""
import json
import socket
import subprocess
import sys

import pandas as pd
import pytest

from pyterrier_reasonrank import ReasonRanker
from synthetic import printed_result, training_recipe, write_annotations



def launch(port: int) -> list:
    """accelerate's multi-process launcher (torchrun) for two processes; the stages' ``--use_cpu true``
    then makes them one CPU group over gloo (accelerate's ``--cpu`` alone would start one process)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
            "--dynamo_backend", "no", "-m", "pyterrier_reasonrank.training.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Two processes share each step: 2 epochs of 24 pairs in global batches of 2 x 4; GRPO's max_steps.
@pytest.mark.parametrize("stage, steps", [("distill", 2 * 24 // 8), ("refine", 4)])
def test_two_processes_train_one_model(vocabulary, tiny_model, tmp_path, stage, steps):
    recipe = training_recipe(tmp_path, tiny_model, write_annotations(vocabulary, tmp_path / "a.jsonl", 24))
    output = tmp_path / ("distill" if stage == "distill" else "grpo")
    run = subprocess.run([*launch(free_port()), stage, "--config", str(recipe), "--save_strategy", "no", "--use_cpu",
                          "true"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert printed_result(run.stdout)["steps"] == steps
    card = json.loads((output / "run_card.json").read_text())  # written once, by the main process
    assert card["metrics"]["steps"] == steps and card["processes"] == 2
    inp = pd.DataFrame([{"qid": "1", "query": "about tides", "docno": "d", "text": "the moon"}])
    assert ReasonRanker(adapter=str(output), max_new_tokens=4)(inp).score.between(0, 2).all()


@pytest.mark.parametrize("name", ["ddp", "zero3", "fsdp"])
def test_shipped_accelerate_configs_load(name):
    from importlib import resources

    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(resources.files("pyterrier_reasonrank.training") / "configs" /
                                              "accelerate" / f"{name}.yaml"))
    assert config.num_processes == 4 and config.mixed_precision == "bf16"
    assert str(config.distributed_type).endswith({"ddp": "MULTI_GPU", "zero3": "DEEPSPEED", "fsdp": "FSDP"}[name])
