"""Sampling responses from a causal LM for prompts that are already token ids."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pyterrier as pt
import torch


@dataclass
class Completion:
    """One sampled response: its text (special tokens removed) and its token ids up to and
    including the end-of-turn token, if it wrote one."""

    text: str
    ids: list[int]


@torch.inference_mode()
def sample_completions(model, tokenizer, prompts: Sequence[list[int]], *, num_samples: int = 1,
                       temperature: float = 1.0, max_new_tokens: int = 128, batch_size: int = 8,
                       verbose: bool = False) -> list[list[Completion]]:
    """``num_samples`` responses per prompt; ``temperature=0`` decodes greedily (one distinct response).

    Args:
        model: A causal LM (a PEFT model too).
        tokenizer: Its tokenizer.
        prompts: Token ids of each prompt.
        num_samples: Responses per prompt.
        temperature: Sampling temperature; 0 for greedy decoding.
        max_new_tokens: Longest response.
        batch_size: Prompts per ``generate`` call.
        verbose: Show a progress bar.

    Returns:
        For each prompt, its ``num_samples`` completions.
    """
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        (eos[0] if isinstance(eos, list) else eos)
    stop = set(eos) if isinstance(eos, list) else {eos}
    # Plain sampling from the model's distribution: a checkpoint's own generation settings (top-p,
    # top-k, repetition penalty) would make the samples something other than the policy's.
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0 \
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    sampling["repetition_penalty"] = 1.0
    was_training = model.training
    model.eval()
    results: list[list[Completion]] = []
    for start in pt.tqdm(range(0, len(prompts), batch_size), desc="sampling", disable=not verbose):
        batch = prompts[start:start + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        # Greedy decoding has one answer per prompt: decode it once and repeat it.
        copies = num_samples if temperature > 0 else 1
        output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                num_return_sequences=copies, pad_token_id=pad, eos_token_id=eos, **sampling)
        output = output.repeat_interleave(num_samples // copies, dim=0)
        for i in range(len(batch)):
            samples = []
            for row in output[i * num_samples:(i + 1) * num_samples, width:].tolist():
                ids = next((row[:j + 1] for j, token in enumerate(row) if token in stop), row)
                samples.append(Completion(tokenizer.decode(ids, skip_special_tokens=True), ids))
            results.append(samples)
    model.train(was_training)
    return results
