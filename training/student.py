"""The student model: which one, how it is adapted (LoRA, QLoRA or full fine-tuning), and loading it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

import torch
from trl import ModelConfig, get_peft_config, get_quantization_config

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.loading import (
    base_model,
    load_adapter,
    load_model,
    load_tokenizer,
    model_source,
    resolve_device,
    resolve_dtype,
    tokenizer_source,
)

from .packages import require_packages

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
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

    def base_model_revision(self) -> Optional[str]:
        """The base model's revision.

        That is ``model_revision`` when set (other than trl's default, ``main``), else the one the
        adapter was trained on; ``None``: the default branch.
        """
        pinned = None if self.model_revision == "main" else self.model_revision
        return model_source(self.model_name_or_path, self.adapter, pinned)[1]

    def peft_config(self) -> LoraConfig:
        """The new adapter's LoRA configuration (trl's), with the base model's revision recorded.

        The student is then served on the base it was trained on (:func:`~pyterrier_reasonrank.loading.model_source`).
        """
        config = get_peft_config(self)
        config.revision = self.base_model_revision()
        return config


def load_student(config: StudentConfig, *, trust_remote_code: bool = False, gradient_checkpointing: bool = True,
                 ) -> tuple[Union[PreTrainedModel, PeftModel], PreTrainedTokenizerBase]:
    """The student model (with its adapter, trainable, when one is given) and its tokenizer.

    They load as everywhere in the library (:mod:`pyterrier_reasonrank.loading`): safetensors
    weights only, one clear error for a model or adapter that cannot be found, the tokenizer the
    adapter saved (else the model's). On top of that, training needs the model quantized for QLoRA
    (on this process's GPU), prepared for k-bit training as the paper's code does (peft's
    ``prepare_model_for_kbit_training``: norms in float32, input gradients for checkpointing), and
    the adapter's weights trainable.

    Args:
        config: Which model and adapter, its dtype (``auto``: the checkpoint's), revision, attention
            and quantization.
        trust_remote_code: Allow the model's own code to run (the trainer configuration's setting).
        gradient_checkpointing: Whether the trainer checkpoints activations (its setting of that name).

    Raises:
        InputError: QLoRA / 8-bit loading was asked for without a CUDA GPU or bitsandbytes, or the
            dtype is not a torch dtype name.
        ModelNotFoundError: The model or adapter could not be found.
        PickleCheckpointError: Its weights are pickle files only.
    """
    quantization = None
    if config.load_in_4bit or config.load_in_8bit:
        if not torch.cuda.is_available():
            raise InputError("QLoRA (load_in_4bit / load_in_8bit) needs a CUDA GPU, and none is available; "
                             "train LoRA in full precision instead (load_in_4bit: false).")
        require_packages(config)
        quantization = get_quantization_config(config)
    name = config.base_model_name()
    dtype = "auto" if config.dtype == "auto" else resolve_dtype(config.dtype, resolve_device(None))
    revision = config.base_model_revision()
    model = load_model(name, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision,
                       attn_implementation=config.attn_implementation, quantization_config=quantization,
                       device_map=_local_gpu() if quantization is not None else None)
    tokenizer = load_tokenizer(*tokenizer_source(name, config.adapter, revision), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need one; masked, so its value does not matter
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if config.adapter is not None:
        model = load_adapter(model, config.adapter, trainable=True)
    return model, tokenizer


def _local_gpu() -> dict:
    """Quantized weights load straight onto this process's GPU (one per process under accelerate)."""
    from accelerate import PartialState

    return {"": PartialState().local_process_index}
