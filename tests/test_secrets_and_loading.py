"""Secrets stay secret; weights load from safetensors only; a model's own code runs only when asked."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import openai
import pandas as pd
import pytest
import torch

from openai_server import OpenAICompatibleServer
from pyterrier_reasonrank import ModelNotFoundError, PickleCheckpointError, ReasonRanker
from pyterrier_reasonrank.training.annotation import AnnotateConfig, annotate
from synthetic import make_pairs, printed_result, teacher_answer

SECRET = "sk-reasonrank-test-0123456789abcdefSECRET"


def judgement(messages) -> str:
    return "Explanation: it is about the question.\nRelevance: 1"


def run_cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "pyterrier_reasonrank.training.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def everything_written(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_an_api_key_is_never_written_printed_or_raised(vocabulary, tmp_path):
    pairs = make_pairs(vocabulary, 12, seed=11)
    args = ["annotate", "--dataset", "irds:cranfield", "--num_queries", "3", "--teacher", "openai",
            "--teacher_model", "rule-teacher", "--output", "out/annotations.jsonl", "--concurrency", "2",
            "--max_retries", "0"]
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    with OpenAICompatibleServer(judgement, api_key=SECRET) as server:
        ok = run_cli([*args, "--base_url", server.base_url], env, tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert printed_result(ok.stdout)["records"] == 15
    # The server wants another key: it answers 401 quoting the key it was sent.
    with OpenAICompatibleServer(judgement, api_key="another") as server:
        refused = run_cli([*args, "--base_url", server.base_url, "--output", "out/refused.jsonl"], env, tmp_path)
        # the key given as an argument rather than from the environment
        argument = run_cli([*args, "--base_url", server.base_url, "--output", "out/argument.jsonl",
                            "--api_key", SECRET], {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}, tmp_path)
    for run in (refused, argument):
        assert run.returncode == 1
        assert "Incorrect API key provided: ***" in run.stderr and "Traceback" not in run.stderr
    printed = "".join(run.stdout + run.stderr for run in (ok, refused, argument))
    assert SECRET not in printed and SECRET not in everything_written(tmp_path)

    # in the library, the exception carries no key either
    config = AnnotateConfig(output=str(tmp_path / "lib.jsonl"), teacher="openai", teacher_model="rule-teacher",
                            api_key=SECRET, max_retries=0)
    with OpenAICompatibleServer(lambda m: teacher_answer(vocabulary, m), api_key="another") as server:
        config.base_url = server.base_url
        with pytest.raises(openai.AuthenticationError) as raised:
            annotate(config, pairs=pairs)
    assert SECRET not in str(raised.value) and SECRET not in json.dumps(raised.value.body)
    assert SECRET not in repr(config)


def test_no_secret_reaches_any_file_or_output(tiny_model, tmp_path):
    """Each known secret is planted where a run could write it — a teacher that repeats every key it
    knows (a server that echoes, a prompt-injected document), a Hub token on the command line,
    one in an error message — and every file written and every line printed is searched."""
    secrets = {"argument": "sk-reasonrank-argument-0123456789", "OPENAI_API_KEY": "sk-reasonrank-environment-012345",
               "HF_TOKEN": "hf_reasonrankEnvironmentToken0123", "hub_token": "hf_reasonrankCommandLineToken012"}
    env = {**os.environ, "OPENAI_API_KEY": secrets["OPENAI_API_KEY"], "HF_TOKEN": secrets["HF_TOKEN"]}

    def leaky(messages) -> str:  # every secret the annotating process knows (the Hub token is distillation's)
        known = [secrets[name] for name in ("argument", "OPENAI_API_KEY", "HF_TOKEN")]
        return f"Explanation: my keys are {' and '.join(known)}.\nRelevance: 1"

    common = ["--hub_token", secrets["hub_token"], "--model_name_or_path", str(tiny_model), "--max_steps", "2",
              "--save_strategy", "steps", "--save_steps", "1", "--per_device_train_batch_size", "4",
              "--max_doc_tokens", "32", "--disable_tqdm", "true"]
    with OpenAICompatibleServer(leaky, api_key=secrets["argument"]) as server:
        runs = [run_cli(["annotate", "--dataset", "irds:cranfield", "--num_queries", "2", "--teacher_model", "leaky",
                         "--base_url", server.base_url, "--api_key", secrets["argument"], "--output", "a.jsonl"],
                        env, tmp_path)]
    runs.append(run_cli(["distill", *common, "--train_file", "a.jsonl", "--output_dir", "distill"], env, tmp_path))
    runs.append(run_cli(["refine", *common, "--train_file", "a.jsonl", "--output_dir", "refine",
                         "--num_generations", "2", "--max_completion_length", "4"], env, tmp_path))
    assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr[-2000:] for run in runs]
    # an error that would quote a secret
    runs.append(run_cli(["distill", *common, "--learning_rate", secrets["hub_token"]], env, tmp_path))
    assert runs[-1].returncode == 1 and "invalid float value: '***'" in runs[-1].stderr

    written = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert {"a.jsonl", "a.jsonl.summary.json", "run_card.json", "training_args.bin", "trainer_state.json",
            "adapter_config.json"} <= {path.name for path in written}
    assert "***" in json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])["explanation"]
    for name, secret in secrets.items():
        assert not [str(path) for path, data in written.items() if secret.encode() in data], name
        assert not [run.args for run in runs if secret in run.stdout + run.stderr], name


def test_the_ranker_redacts_the_key_of_its_server(tiny_model, monkeypatch):
    from vllm_server import CompletionsServer

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    inp = pd.DataFrame([{"qid": "1", "query": "tides", "docno": "d", "text": "the moon"}])
    with CompletionsServer(str(tiny_model), api_key="another") as server:
        ranker = ReasonRanker("tiny", backend="openai", base_url=server.base_url, tokenizer=str(tiny_model))
        with pytest.raises(openai.AuthenticationError) as raised:
            ranker(inp)
    assert SECRET not in str(raised.value)


def pickle_checkpoint(tiny_model, folder: Path) -> Path:
    """The tiny model with its weights as a pickle (pytorch_model.bin) instead of safetensors."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_model, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_pickle_weights_are_refused(tiny_model, tmp_path):
    folder = pickle_checkpoint(tiny_model, tmp_path / "pickled")
    inp = pd.DataFrame([{"qid": "1", "query": "tides", "docno": "d", "text": "the moon"}])
    with pytest.raises(PickleCheckpointError, match=r"pickle files \(pytorch_model.bin\)"):
        ReasonRanker(str(folder))(inp)
    assert issubclass(PickleCheckpointError, ModelNotFoundError)  # the CLIs print it as one sentence


def test_the_demo_refuses_pickle_weights_in_one_sentence(tiny_model, tmp_path):
    folder = pickle_checkpoint(tiny_model, tmp_path / "pickled")
    run = subprocess.run([sys.executable, "-m", "pyterrier_reasonrank.cli", "demo", "--model", str(folder)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "Refusing to load the model" in run.stderr and "safetensors" in run.stderr


def test_a_pickled_adapter_is_refused(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter", safe_serialization=False)
    assert (tmp_path / "adapter" / "adapter_model.bin").exists()
    with pytest.raises(PickleCheckpointError, match="adapter"):
        ReasonRanker(str(tiny_model), adapter=str(tmp_path / "adapter")).load()


def test_a_models_own_code_runs_only_when_asked(tiny_model, tmp_path):
    # A checkpoint whose config asks for its own Python code (auto_map), which would write a file.
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "code-ran"
    (folder / "custom_model.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'custom-llama'\n"
        "class CustomModel(LlamaForCausalLM):\n    config_class = CustomConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom_model.CustomConfig", "AutoModelForCausalLM": "custom_model.CustomModel"}
    config["model_type"] = "custom-llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises((ModelNotFoundError, ValueError)):
        ReasonRanker(str(folder)).load()
    assert not marker.exists()
    ReasonRanker(str(folder), trust_remote_code=True).load()
    assert marker.exists()
