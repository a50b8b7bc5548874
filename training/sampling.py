"""Drawing the student's responses for refinement: with the model being trained, or with vLLM's engine.

rwsft samples ``num_generations`` responses per pair before it trains (the paper drew 8 per pair
with vLLM; transformers' ``generate`` over 100K pairs x 8 takes days). With ``sampling_backend:
vllm`` the draw runs in vLLM's engine, from the adapter refinement starts from, in a process of its
own, so that the engine's memory is given back before training starts.
"""
from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING, Optional

from pyterrier_reasonrank.backends import Completion, load_local
from pyterrier_reasonrank.backends.hf import HFBackend

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .rwsft import RwsftConfig
    from .student import StudentConfig

SAMPLING_BACKENDS = ("transformers", "vllm")


def draw(prompts: list[list[int]], config: RwsftConfig, student: StudentConfig, model: PreTrainedModel,
         tokenizer: PreTrainedTokenizerBase) -> list[list[Completion]]:
    """``config.num_generations`` responses per prompt, at ``config.temperature``, from the student.

    Args:
        prompts: The prompts, as token ids.
        config: The refinement's config (its sampling options and ``sampling_backend``).
        student: The student (for vLLM: its base model and the adapter refinement starts from).
        model: The model being trained (for transformers).
        tokenizer: Its tokenizer.
    """
    options = {"num_samples": config.num_generations, "temperature": config.temperature,
               "max_new_tokens": config.max_completion_length}
    if config.sampling_backend == "transformers":
        return HFBackend(model, tokenizer).sample(prompts, batch_size=config.per_device_train_batch_size,
                                                  verbose=not config.disable_tqdm, **options)
    dtype = None if student.dtype in (None, "auto") else student.dtype
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(sample_with_vllm, (student.base_model_name(), student.base_model_revision(), student.adapter,
                                             dtype, config.sampling_engine_options, config.trust_remote_code, prompts),
                          options)


def sample_with_vllm(model: str, revision: Optional[str], adapter: Optional[str], dtype: Optional[str],
                     engine_options: Optional[dict], trust_remote_code: bool, prompts: list[list[int]],
                     **options: object) -> list[list[Completion]]:
    """Responses to the prompts from vLLM's engine (run in the process that calls it), the model at ``revision``."""
    backend = load_local("vllm", model, adapter=adapter, dtype=dtype, engine_options=engine_options,
                         trust_remote_code=trust_remote_code, revision=revision)
    return backend.sample(prompts, **options)
