"""The transformers backend's attention on a CPU: grouped key/value heads are passed to SDPA as they are, never
copied once per query head, and the judgements are those of transformers' own SDPA attention."""
import pytest
import transformers.integrations.sdpa_attention as sdpa_attention
from test_ranker import pairs

from pyterrier_reasonrank import Student
from pyterrier_reasonrank.backends import attention


def test_grouped_heads_are_not_copied_and_judge_as_transformers_sdpa(tiny_model, monkeypatch):
    copies = []
    original = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda *args: copies.append(1) or original(*args))
    inp = pairs(3, 4)
    inp["text"] = [text * (1 + i % 3) for i, text in enumerate(inp["text"])]  # lengths differ: padded batches
    student = Student(str(tiny_model), prompt_cache_tokens=0)
    grouped = student.ranker(max_new_tokens=8, batch_size=4)(inp)
    model = student.engine.model
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # the tiny model groups its heads
    assert model.config._attn_implementation == attention.NAME and not copies
    model.set_attn_implementation("sdpa")
    copied = student.ranker(max_new_tokens=8, batch_size=4)(inp)
    assert copies  # transformers' own SDPA copies them whenever there is a mask
    assert list(grouped.docno) == list(copied.docno) and list(grouped.explanation) == list(copied.explanation)
    assert grouped.score.to_numpy() == pytest.approx(copied.score.to_numpy(), abs=1e-5)
