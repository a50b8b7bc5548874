"""Attention for the transformers backend: PyTorch's SDPA with grouped key/value heads as they are, on a CPU.

Most small chat models share each key/value head among several query heads (grouped-query
attention: Qwen2.5-0.5B has 14 query heads and 2 key/value heads). transformers' SDPA attention
passes the groups to PyTorch as they are (``enable_gqa``) only without an attention mask, and
otherwise first copies each key/value head once per query head. The backend always has a mask (its
batches are left-padded), so every decode step copied the whole key/value cache 7 times: on 2
CPU cores, 20 pairs with 800-token prompts, attention took 1.1 s of each 1.7 s step, against 0.05 s
with the groups passed as they are (identical outputs). On a CPU PyTorch's SDPA takes a mask with
``enable_gqa``; on CUDA it would then fall back to its slowest kernel, so there (and for anything
but grouped heads) this is transformers' own SDPA attention.

:func:`use_grouped_attention` switches a loaded model to it.
"""
from __future__ import annotations

from typing import Optional

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "reasonrank_sdpa"
"""The attention implementation's name, as transformers knows it once registered."""


def grouped_sdpa_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                                   value: torch.Tensor, attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                                   scaling: Optional[float] = None, is_causal: Optional[bool] = None,
                                   **kwargs: object) -> tuple[torch.Tensor, None]:
    """SDPA attention as transformers has it, with grouped key/value heads passed as they are on a CPU.

    Arguments and result as transformers' ``sdpa_attention_forward``.
    """
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    special = kwargs.get("position_bias") is not None or kwargs.get("cache") is not None \
        or kwargs.get("output_attentions")
    if not grouped or attention_mask is None or query.device.type != "cpu" or special:
        # (without a mask transformers passes the groups as they are already)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                              dropout_p=dropout, scale=scaling, enable_gqa=True)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, grouped_sdpa_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as SDPA


def use_grouped_attention(model: PreTrainedModel) -> bool:
    """Switch ``model`` to :func:`grouped_sdpa_attention_forward` where it uses SDPA; whether it did.

    A model on another attention implementation (eager, flash attention, its own code) is left
    as it is.
    """
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, ImportError):  # a model whose attention takes no registered implementation
        return False
    return True
