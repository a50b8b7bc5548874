"""The student model: which one, how it is adapted (LoRA, QLoRA or full fine-tuning), and loading it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

import torch
from trl import ModelConfig, get_quantization_config

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.loading import base_model, clear_load_errors, tokenizer_source

from .packages import require_packages

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class StudentConfig(ModelConfig):
    """trl's ``ModelConfig`` with LoRA on by default, plus an adapter to continue from.

    ``use_peft: true`` trains a LoRA adapter (``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``); adding ``load_in_4bit: true`` makes it QLoRA (needs a CUDA GPU and
    bitsandbytes); ``use_peft: false`` fine-tunes every weight.
    """

    use_peft: bool = field(default=True, metadata={"help": "train a LoRA adapter (false: full fine-tuning)"})
    adapter: Optional[str] = field(default=None, metadata={
        "help": "a trained adapter to continue from (refinement starts from the distilled one)"})

    def __post_init__(self):
        super().__post_init__()
        if self.model_name_or_path is None and self.adapter is None:
            raise InputError("no student model: set `model_name_or_path` (or `adapter`, whose base model is used)")

    def base_model_name(self) -> str:
        """The model the student is built on: ``model_name_or_path``, else the adapter's base model."""
        return self.model_name_or_path or base_model(self.adapter)


def load_student(config: StudentConfig, *, trust_remote_code: bool = False, gradient_checkpointing: bool = True,
                 ) -> tuple[Union[PreTrainedModel, PeftModel], PreTrainedTokenizerBase]:
    """The student model (with its adapter, trainable, when one is given) and its tokenizer.

    Args:
        config: Which model and adapter.
        trust_remote_code: Allow the model's own code to run (the trainer configuration's setting).
        gradient_checkpointing: Whether the trainer checkpoints activations (its setting of that name).

    A quantized (QLoRA) model is prepared for k-bit training as the paper's code does (peft's
    ``prepare_model_for_kbit_training``: norms in float32, input gradients for checkpointing).

    Raises:
        InputError: QLoRA / 8-bit loading was asked for without a CUDA GPU or bitsandbytes.
        ModelNotFoundError: The model or adapter could not be found.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantization = None
    if config.load_in_4bit or config.load_in_8bit:
        if not torch.cuda.is_available():
            raise InputError("QLoRA (load_in_4bit / load_in_8bit) needs a CUDA GPU, and none is available; "
                               "train LoRA in full precision instead (load_in_4bit: false).")
        require_packages(config)
        quantization = get_quantization_config(config)
    name = config.base_model_name()
    with clear_load_errors("model", name):
        model = AutoModelForCausalLM.from_pretrained(
            name, revision=config.model_revision, dtype=config.dtype, trust_remote_code=trust_remote_code,
            attn_implementation=config.attn_implementation, quantization_config=quantization,
            device_map=_local_gpu() if quantization is not None else None, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(name, config.adapter),
                                                  trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need one; masked, so its value does not matter
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if config.adapter is not None:
        from peft import PeftModel

        with clear_load_errors("adapter", config.adapter):
            model = PeftModel.from_pretrained(model, config.adapter, is_trainable=True)
    return model, tokenizer


def _local_gpu() -> dict:
    """Quantized weights load straight onto this process's GPU (one per process under accelerate)."""
    from accelerate import PartialState

    return {"": PartialState().local_process_index}
