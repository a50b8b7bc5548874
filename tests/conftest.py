"""Shared fixtures: tiny local models (random, or scripted so that their output is known) and the
real collections from ../shared, copied to a temporary ir_datasets home — or, from a clone without
../shared, downloaded into that home by ir_datasets, as for any user. With ../shared, no network is used."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("REASONRANK_SHARED", Path(__file__).resolve().parents[2] / "shared"))

# ir_datasets writes docstores beside the data, so it gets a private home (a copy of the shared
# one, when there is one), set before anything imports ir_datasets.
_IRDS_HOME = Path(tempfile.mkdtemp(prefix="reasonrank-irds-"))
if (SHARED / "irds_home").is_dir():
    shutil.copytree(SHARED / "irds_home", _IRDS_HOME, dirs_exist_ok=True)
os.environ["IR_DATASETS_HOME"] = str(_IRDS_HOME)
os.environ["REASONRANK_CACHE"] = tempfile.mkdtemp(prefix="reasonrank-cache-")  # indexes, not in ~/.cache

# Under pytest-xdist each worker gets its share of the cores, and so do the processes it starts
# (the variable is inherited): two workers with torch's default threads on two cores run many
# times slower than one thread each (OpenMP oversubscription).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402

if WORKERS > 1:
    torch.set_num_threads(THREADS)
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from pyterrier_reasonrank.prompts import PromptEncoder  # noqa: E402
from pyterrier_reasonrank.testing import build_tiny_model  # noqa: E402

from synthetic import Vocabulary  # noqa: E402


# The slowest test files first (measured: tests/README.md), so that two workers finish together
# rather than one waiting on a long file it was handed last.
SLOWEST_FIRST = ["test_learning.py", "test_project.py", "test_vllm.py", "test_secrets_and_loading.py",
                 "test_benchmark.py", "test_crash_safety.py", "test_distributed.py", "test_pipeline.py",
                 "test_examples.py", "test_user_errors.py", "test_pyterrier_contracts.py", "test_numeric_options.py",
                 "test_store_faults.py", "test_train_cli.py", "test_store.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama-style model with a locally trained tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def script_model(tiny_model, tmp_path_factory):
    """Make a copy of the tiny model whose next token depends only on the current token, as scripted.

    ``transitions`` maps a token to the token that follows it (greedy); ``label_logits`` are the
    logits of the label tokens 0, 1, 2 after the label marker; ``base`` is the model to copy
    (default: the tiny model). Every layer's output projection is zeroed, so the last hidden state
    is the current token's embedding; scripted tokens get one-hot embeddings and their own column in
    the output matrix.
    """
    def make(transitions: dict[str, str], label_logits=(0.0, 0.0, 0.0), base: Path = tiny_model) -> Path:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base)
        encoder = PromptEncoder(tokenizer)
        marker_end = tokenizer.convert_ids_to_tokens(encoder.marker_ids[-1])
        ids = tokenizer.convert_tokens_to_ids
        hidden = model.config.hidden_size
        scripted = list(dict.fromkeys([marker_end, *transitions]))
        assert len(scripted) <= hidden
        model.config.rms_norm_eps = 1e-12
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            model.model.norm.weight.fill_(1.0)
            scale = hidden ** 0.5  # the final RMS norm turns a one-hot embedding into sqrt(hidden) * one-hot
            for k, token in enumerate(scripted):
                model.model.embed_tokens.weight[ids(token)] = torch.nn.functional.one_hot(torch.tensor(k), hidden)
                column = torch.zeros(model.config.vocab_size)
                if token in transitions:
                    column[ids(transitions[token])] = 20.0
                if token == marker_end:
                    column[encoder.label_ids] = torch.tensor(label_logits, dtype=torch.float32)
                model.lm_head.weight[:, k] = column / scale
        path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp(), prefix="scripted-"))
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    return make


@pytest.fixture(scope="session")
def vocabulary(tiny_model) -> Vocabulary:
    """The words of the synthetic task, in the tiny model's tokenizer."""
    return Vocabulary.of(AutoTokenizer.from_pretrained(tiny_model))


@pytest.fixture(scope="session")
def bright():
    """irds:bright/leetcode and irds:bright/biology with their real queries and judgements, and
    placeholder documents (see bright_home.py); returns leetcode."""
    import pyterrier as pt

    import bright_home

    for domain in ("leetcode", "biology"):
        bright_home.build(_IRDS_HOME, SHARED, domain, queries_with_documents=3)
    return pt.get_dataset("irds:bright/leetcode")
