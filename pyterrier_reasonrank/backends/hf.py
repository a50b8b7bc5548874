"""The transformers backend: a causal LM (optionally with a PEFT adapter) on CPU or GPU."""
from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Optional, Sequence, Union

import numpy as np
import pyterrier as pt
import torch

from ..prompts import Mode, PromptEncoder
from ..scoring import label_probabilities
from .base import Judgements


class ModelNotFoundError(OSError):
    """The model (or adapter) could not be loaded: no such local path, and not on the Hub or in its cache."""


class HFBackend:
    """Judges prompts with a Hugging Face causal language model.

    Explain mode decodes greedily, many prompts at once (across queries), and each sequence stops
    when it has written the label marker; the label distribution is the next-token distribution
    there. A sequence that runs out of budget, or writes an end-of-turn or other special token
    before the marker, gets the marker appended and is marked ``forced``. Direct mode is one
    forward pass per prompt.

    Args:
        model: A loaded ``PreTrainedModel`` (causal LM), in eval mode on its device.
        tokenizer: Its tokenizer.
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        # Any special token (end of turn, end of text, padding...) ends the explanation early.
        self.stop_ids = frozenset(tokenizer.all_special_ids) | frozenset(eos)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (eos[0] if eos else 0)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def judge(self, prompts: Sequence[list[int]], encoder: PromptEncoder, *, mode: Mode, batch_size: int,
              max_new_tokens: int, verbose: bool = False) -> Judgements:
        n = len(prompts)
        explanations = [""] * n
        probabilities = np.zeros((n, len(encoder.label_ids)))
        forced = np.zeros(n, dtype=bool)
        # Longest first, so that batches hold prompts of similar length (little padding) and the
        # first batch shows the peak memory.
        order = sorted(range(n), key=lambda i: -len(prompts[i]))
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        progress = pt.tqdm(total=n, desc="ReasonRanker", unit="doc", disable=not verbose)
        for batch in batches:
            ids = [prompts[i] for i in batch]
            if mode == "direct":
                label_logits = self._label_logits(ids, encoder)
                batch_explanations, batch_forced = [""] * len(batch), [False] * len(batch)
            else:
                batch_explanations, label_logits, batch_forced = self._explain(ids, encoder, max_new_tokens)
            probabilities[batch] = label_probabilities(label_logits)
            forced[batch] = batch_forced
            for i, text in zip(batch, batch_explanations):
                explanations[i] = text
            progress.update(len(batch))
        progress.close()
        return Judgements(explanations, probabilities, forced)

    def _prefill(self, ids: list[list[int]]):
        """One forward pass over left-padded prompts; returns last-position logits, cache, mask, positions."""
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x):] = torch.tensor(x)
            mask[row, width - len(x):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        # Explicit positions, so that left padding does not shift them.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1].float(), out.past_key_values, mask, positions[:, -1]

    @torch.inference_mode()
    def _label_logits(self, ids: list[list[int]], encoder: PromptEncoder) -> torch.Tensor:
        logits, _, _, _ = self._prefill(ids)
        return logits[:, encoder.label_ids]

    @torch.inference_mode()
    def _explain(self, ids: list[list[int]], encoder: PromptEncoder, max_new_tokens: int):
        logits, cache, mask, last_position = self._prefill(ids)
        n = len(ids)
        marker = encoder.marker_ids
        generated: list[list[int]] = [[] for _ in range(n)]
        to_append: list[list[int]] = [[] for _ in range(n)]  # marker tokens still to feed, when forced
        explanation_end = [0] * n
        forced = [False] * n
        label_logits = torch.empty((n, len(encoder.label_ids)), dtype=torch.float32)
        rows = list(range(n))  # prompt index of each row still in the batch
        while rows:
            step = []
            for i, token in zip(rows, logits.argmax(-1).tolist()):
                if not to_append[i]:
                    if token not in self.stop_ids and len(generated[i]) < max_new_tokens:
                        generated[i].append(token)
                        step.append(token)
                        continue
                    forced[i] = True
                    started = _marker_started(generated[i], marker)
                    explanation_end[i] = len(generated[i]) - started
                    to_append[i] = marker[started:] if started else list(encoder.forced_marker_ids)
                token = to_append[i].pop(0)
                generated[i].append(token)
                step.append(token)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            last_position = last_position + 1
            out = self.model(input_ids=torch.tensor(step, device=self.device)[:, None], attention_mask=mask,
                             position_ids=last_position[:, None], past_key_values=cache, use_cache=True)
            logits, cache = out.logits[:, -1].float(), out.past_key_values
            keep = []
            for b, i in enumerate(rows):
                if not to_append[i] and generated[i][-len(marker):] == marker:
                    label_logits[i] = logits[b, encoder.label_ids].cpu()
                    if not forced[i]:
                        explanation_end[i] = len(generated[i]) - len(marker)
                else:
                    keep.append(b)
            if keep and len(keep) < len(rows):
                # Finished sequences leave the batch, so the others decode without them.
                index = torch.tensor(keep, dtype=torch.long, device=self.device)
                cache.batch_select_indices(index)
                logits, mask, last_position = logits[index], mask[index], last_position[index]
            rows = [rows[b] for b in keep]
        explanations = [self.tokenizer.decode(g[:end], skip_special_tokens=True).strip()
                        for g, end in zip(generated, explanation_end)]
        return explanations, label_logits, forced


def _marker_started(generated: list[int], marker: list[int]) -> int:
    """How many leading tokens of the marker ``generated`` ends with (0 if it ends with none)."""
    for k in range(len(marker) - 1, 0, -1):
        if generated[-k:] == marker[:k]:
            return k
    return 0


_LOADED: "weakref.WeakValueDictionary[tuple, HFBackend]" = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def load(model: Optional[str], *, adapter: Optional[str] = None, device: Union[str, torch.device, None] = None,
         dtype: Union[str, torch.dtype, None] = None, trust_remote_code: bool = False) -> HFBackend:
    """Load (or reuse) a model and tokenizer as an :class:`HFBackend`.

    Rankers that ask for the same model, adapter, device and dtype share one copy of the weights
    while any of them is alive, so a cascade of a direct and an explain ranker loads it once.

    Args:
        model: Hugging Face Hub id or local directory. ``None`` with an ``adapter``: the adapter's base model.
        adapter: A PEFT adapter (Hub id or directory), merged into the model after loading.
        device: ``"cuda"``, ``"cpu"``, ... Default: CUDA when available, else CPU.
        dtype: ``torch.dtype`` or its name (``"bfloat16"``). Default: bfloat16 on a GPU that supports
            it, float32 otherwise.
        trust_remote_code: Allow a model's own Python code from its repository to run.

    Raises:
        ModelNotFoundError: The model or adapter could not be found (locally, in the cache or on the Hub).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    key = (model, adapter, str(device), str(dtype), trust_remote_code)
    with _LOADING:
        backend = _LOADED.get(key)
        if backend is None:
            backend = _LOADED[key] = _load(model, adapter, device, dtype, trust_remote_code)
    return backend


def _load(model, adapter, device, dtype, trust_remote_code) -> HFBackend:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = model or base_model(adapter)
    with clear_load_errors("model", model):
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model, adapter), trust_remote_code=trust_remote_code)
    if adapter is not None:
        from peft import PeftModel

        with clear_load_errors("adapter", adapter):
            # Merged, so that inference costs what the base model costs.
            lm = PeftModel.from_pretrained(lm, adapter).merge_and_unload()
    return HFBackend(lm.to(device).eval(), tokenizer)


def base_model(adapter: str) -> str:
    """The base model a PEFT adapter was trained on, from its configuration."""
    from peft import PeftConfig

    with clear_load_errors("adapter", adapter):
        return PeftConfig.from_pretrained(adapter).base_model_name_or_path


def tokenizer_source(model: str, adapter: Optional[str]) -> str:
    """Where the tokenizer comes from: an adapter directory that saved one (training does), else the model."""
    if adapter is not None and os.path.isfile(os.path.join(adapter, "tokenizer_config.json")):
        return adapter
    return model


@contextlib.contextmanager
def clear_load_errors(what: str, name: str):
    """Turns the loaders' errors for a missing model into one sentence that says what to do."""
    try:
        yield
    except ModelNotFoundError:
        raise
    except (OSError, ValueError) as error:
        if os.path.exists(name):
            where = f"the directory {name!r} holds no loadable {what} ({error.__class__.__name__}: {error})"
        elif name.startswith(("/", ".", "~")) or name.count("/") > 1:
            where = f"there is no directory {name!r}"
        else:
            where = (f"{name!r} is not a local directory, not in the Hugging Face cache, and could not be "
                     "fetched from the Hub (offline, gated, or no such repository)")
        option = "adapter" if what == "adapter" else "model"
        raise ModelNotFoundError(f"Could not load the {what}: {where}; pass --{option} / {option}= a local "
                                 "directory or a Hub id you can download.") from error


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """The given device, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """The given dtype (a name such as ``"bfloat16"`` is accepted), or the default for the device."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype name such as 'float32' or 'bfloat16'")
        return resolved
    return dtype
