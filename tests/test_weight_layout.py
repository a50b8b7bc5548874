"""The transformers backend's linear layers on a CPU in float32: weights stored transposed in memory, tied
weights still tied, and the judgements those of the weights as transformers stores them."""
import json
import shutil

import pytest
import torch
from test_ranker import pairs
from transformers import AutoModelForCausalLM

from pyterrier_reasonrank import Student
from pyterrier_reasonrank.backends.weight_layout import store_weights_as_transformers, store_weights_transposed


@pytest.fixture(scope="module")
def tied_model(tiny_model, tmp_path_factory):
    """The tiny model with its output layer tied to its embeddings, as Qwen2.5's small models are."""
    path = tmp_path_factory.mktemp("tied") / "model"
    shutil.copytree(tiny_model, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    model = AutoModelForCausalLM.from_pretrained(path)  # (the checkpoint's two matrices differ: not tied yet)
    model.tie_weights()
    model.save_pretrained(path)
    return path


def test_float32_weights_are_stored_transposed_and_judge_as_stored_by_transformers(tied_model):
    inp = pairs(2, 4)
    student = Student(str(tied_model), dtype="float32", device="cpu", prompt_cache_tokens=0)
    rankers = {"explain": student.ranker(max_new_tokens=8, batch_size=4), "direct": student.ranker(mode="direct")}
    transposed = {mode: ranker(inp) for mode, ranker in rankers.items()}
    model = student.engine.model
    weights = {id(module.weight): module.weight for module in model.modules() if isinstance(module, torch.nn.Linear)}
    assert weights and all(weight.t().is_contiguous() and not weight.is_contiguous() for weight in weights.values())
    output, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert output is embedding and not embedding.is_contiguous()  # tied, and the lookup reads it transposed
    store_weights_as_transformers(model)
    assert all(weight.is_contiguous() for weight in weights.values()) and output is embedding
    for mode, ranker in rankers.items():
        stored = ranker(inp)
        assert list(stored.docno) == list(transposed[mode].docno), mode
        assert list(stored.explanation) == list(transposed[mode].explanation), mode
        assert stored.score.to_numpy() == pytest.approx(transposed[mode].score.to_numpy(), abs=1e-5), mode
    assert store_weights_transposed(model) == len(weights) and store_weights_transposed(model) == 0


def test_other_dtypes_keep_transformers_layout(tiny_model):
    model = Student(str(tiny_model), dtype="bfloat16", device="cpu").engine.model
    assert store_weights_transposed(model) == 0
    assert all(module.weight.is_contiguous() for module in model.modules() if isinstance(module, torch.nn.Linear))
