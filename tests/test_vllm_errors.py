"""vLLM's user errors blamed on what the user gave: an engine option vLLM refuses is named (checked
before the engine starts where it can be, else when vLLM's configuration refuses it), never reported as
a model that cannot be loaded; an adapter folder without weights is the same ModelNotFoundError, naming
the folder, from every backend. None of these tests gets an engine running (one starts an engine that
vLLM stops for want of memory)."""
import os
import time

from vllm_process import ENVIRONMENT

for _name, _value in ENVIRONMENT.items():  # before vLLM is imported in this process
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from pyterrier_reasonrank import InputError, ModelNotFoundError, QueryGenerator, ReasonRanker  # noqa: E402
from pyterrier_reasonrank.backends import vllm as engine_backend  # noqa: E402
from pyterrier_reasonrank.cli import main  # noqa: E402


def load_with(model, engine_options) -> float:
    """Load a vLLM ranker for ``model`` with ``engine_options``; the seconds until it raised."""
    started = time.monotonic()
    try:
        ReasonRanker(str(model), backend="vllm", dtype="float32", engine_options=engine_options).load()
    finally:
        elapsed = time.monotonic() - started
    return elapsed


@pytest.mark.parametrize("options, message", [
    ({"gpu_memory_utilization": 5}, r"^engine_options: vLLM refuses gpu_memory_utilization=5: Input should be less "
                                    r"than or equal to 1$"),
    ({"gpu_memory_utilisation": 0.5}, r"^engine_options: 'gpu_memory_utilisation' is not an option of vLLM's engine "
                                      r"\(did you mean 'gpu_memory_utilization'\?\)$"),
    ({"enforce_eager": True, "max_num_seqs": 0}, r"^engine_options: vLLM refuses max_num_seqs=0: Input should be "
                                                 r"greater than or equal to 1$"),
    ({"enable_prefix_caching": "sometimes"}, r"^engine_options: vLLM refuses enable_prefix_caching='sometimes': "
                                             r"Input should be a valid boolean"),
    ({"dtype": "float16"}, r"^engine_options cannot set 'dtype': pass dtype= \(--dtype\) instead$"),
    ("enforce_eager", r"^engine_options must map vllm\.LLM's argument names to values, got 'enforce_eager'$"),
])
def test_an_engine_option_vllm_would_refuse_is_named_before_the_engine_starts(tiny_model, options, message):
    engines = engine_backend.running_engines()
    with pytest.raises(InputError, match=message):
        load_with(tiny_model, options)
    assert engine_backend.running_engines() == engines  # nothing started


def test_an_option_refused_as_the_engine_starts_is_named_not_blamed_on_the_model(tiny_model):
    """A value whose fault depends on the model (longer than its positions) is found by vLLM's configuration."""
    engine_backend.check_engine_options({"max_model_len": 100_000})  # a valid value on its own
    started = time.monotonic()
    with pytest.raises(InputError) as refused:
        load_with(tiny_model, {"max_model_len": 100_000, "enforce_eager": True})
    elapsed = time.monotonic() - started
    assert str(refused.value).startswith("engine_options: vLLM refuses max_model_len=100000: ")
    assert "is greater than the derived max_model_len" in str(refused.value)
    assert "holds no loadable model" not in str(refused.value) and "pass --model" not in str(refused.value)
    assert elapsed < 60, elapsed  # refused by the configuration, before any weights load


def test_an_engine_short_of_memory_names_the_option_not_the_model(tiny_model, monkeypatch):
    """On a CPU, unless told the KV cache's size, vLLM wants gpu_memory_utilization of the machine's memory free
    as it starts: all of it never is. Its refusal names the option (as the flag --gpu-memory-utilization)."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    with pytest.raises(InputError) as refused:
        load_with(tiny_model, {"gpu_memory_utilization": 1.0, "enforce_eager": True})
    assert str(refused.value).startswith("engine_options: vLLM refuses gpu_memory_utilization=1.0: Available memory")
    assert "holds no loadable model" not in str(refused.value)


@pytest.fixture(scope="module")
def adapter_without_weights(tiny_model, tmp_path_factory):
    """A LoRA adapter's folder with its configuration but not its weights (a copy cut short)."""
    path = tmp_path_factory.mktemp("adapter-without-weights")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                   LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(path)
    (path / "adapter_model.safetensors").unlink()
    return path


def test_an_adapter_without_weights_is_the_same_error_from_every_backend(tiny_model, adapter_without_weights,
                                                                         capsys):
    expected = (f"Could not load the adapter: the directory '{adapter_without_weights}' holds no loadable adapter "
                "(no adapter_model.safetensors); pass --adapter / adapter= a local directory or a Hub id you can "
                "download.")
    engines = engine_backend.running_engines()
    said = {}
    for backend in ("transformers", "vllm"):
        for model in (str(tiny_model), None):  # the base model given, or read from the adapter
            with pytest.raises(ModelNotFoundError) as error:
                ReasonRanker(model, adapter=str(adapter_without_weights), backend=backend).load()
            said[backend, model] = str(error.value)
        with pytest.raises(ModelNotFoundError) as error:
            QueryGenerator(str(tiny_model), adapter=str(adapter_without_weights), backend=backend).load()
        said[backend, "queries"] = str(error.value)
    assert set(said.values()) == {expected}
    assert engine_backend.running_engines() == engines  # refused before an engine started
    # the command line says it in one line, without a traceback
    assert main(["demo", "--model", str(tiny_model), "--adapter", str(adapter_without_weights),
                 "--backend", "vllm"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"reasonrank demo: {expected}" and "Traceback" not in err


def test_sampling_engine_options_that_are_not_json_are_named(tmp_path):
    from pyterrier_reasonrank.training.rwsft import RwsftConfig

    with pytest.raises(InputError, match=r"^sampling_engine_options is not JSON \(Expecting property name .*\): give "
                                         r"the options of vllm\.LLM as a JSON object"):
        RwsftConfig(output_dir=str(tmp_path), train_file="train.jsonl", sampling_backend="vllm",
                    sampling_engine_options="{gpu_memory_utilization: 0.5}")
