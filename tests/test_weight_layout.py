"""The transformers backend's linear layers on a CPU in float32: weights stored transposed in memory, tied
weights still tied, and the judgements those of the weights as transformers stores them."""
import pytest
import torch
from test_ranker import pairs

from pyterrier_reasonrank import Student
from pyterrier_reasonrank.backends.weight_layout import store_weights_transposed


def test_float32_weights_are_stored_transposed_and_judge_as_stored_by_transformers(tiny_model):
    inp = pairs(2, 4)
    student = Student(str(tiny_model), dtype="float32", prompt_cache_tokens=0)
    rankers = {"explain": student.ranker(max_new_tokens=8, batch_size=4), "direct": student.ranker(mode="direct")}
    transposed = {mode: ranker(inp) for mode, ranker in rankers.items()}
    model = student.engine.model
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    assert linears and all(layer.weight.t().is_contiguous() and not layer.weight.is_contiguous() for layer in linears)
    if model.config.tie_word_embeddings:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    for layer in linears:  # back to transformers' layout
        layer.weight.data = layer.weight.data.contiguous()
    for mode, ranker in rankers.items():
        stored = ranker(inp)
        assert list(stored.docno) == list(transposed[mode].docno), mode
        assert list(stored.explanation) == list(transposed[mode].explanation), mode
        assert stored.score.to_numpy() == pytest.approx(transposed[mode].score.to_numpy(), abs=1e-5), mode
    assert store_weights_transposed(model) == len({id(layer.weight) for layer in linears})


def test_other_dtypes_keep_transformers_layout(tiny_model):
    model = Student(str(tiny_model), dtype="bfloat16").engine.model
    assert store_weights_transposed(model) == 0
    assert all(module.weight.is_contiguous() for module in model.modules() if isinstance(module, torch.nn.Linear))
