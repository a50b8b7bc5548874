"""The transformers backend: a causal LM (optionally with a PEFT adapter merged) judging and sampling on CPU or GPU."""
from __future__ import annotations

import collections
import warnings
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import pyterrier as pt
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from pyterrier_reasonrank.judgements import Judgements
from pyterrier_reasonrank.loading import DEFAULT_MODEL, load_causal_lm, resolve_device, resolve_dtype
from pyterrier_reasonrank.prompts import Mode, Prompt, PromptEncoder
from pyterrier_reasonrank.scoring import label_probabilities

from .attention import use_grouped_attention
from .base import Batching, Completion, end_ids, forced_ending, progress_bar, prompt_seed, stop_ids
from .prompt_cache import PromptCache
from .weight_layout import store_weights_transposed

if TYPE_CHECKING:
    from tqdm import tqdm
    from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase


DEFAULT_PROMPT_CACHE_TOKENS = 32768
"""Prompt tokens whose keys and values the transformers backend keeps for reuse, by default (a 0.5B
model in float32: ~0.8 GB; a 3B model in bfloat16: ~3.7 GB)."""


NEUTRAL_GENERATION = {"top_p": None, "top_k": None, "min_p": None, "typical_p": None, "epsilon_cutoff": None,
                      "eta_cutoff": None, "top_h": None, "repetition_penalty": None, "no_repeat_ngram_size": None}
"""``generate``'s settings that reshape the model's distribution, unset: else ``generate`` takes them from
the checkpoint's ``generation_config.json`` (Qwen2.5-Instruct ships top-k 20, top-p 0.8 and a repetition
penalty of 1.05)."""


class HFBackend:
    """Judges prompts with a Hugging Face causal language model.

    Explain mode decodes greedily, many prompts at once (across queries), and each sequence stops
    when it has written the label marker; the label distribution is the next-token distribution
    there. A sequence that runs out of budget, or writes an end-of-turn or other special token
    before the marker, gets the marker appended and is marked ``forced``. Direct mode is one
    forward pass per prompt.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 prompt_cache_tokens: int = DEFAULT_PROMPT_CACHE_TOKENS):
        """Wrap a loaded model and its tokenizer, and work out the token ids that end an explanation.

        Args:
            model: A loaded ``PreTrainedModel`` (causal LM), in eval mode on its device.
            tokenizer: Its tokenizer.
            prompt_cache_tokens: The most prompt tokens whose keys and values are kept for reuse (by an
                escalated pair's explanation, the samples drawn, a cascade's next ranker); 0: none.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = end_ids(model.generation_config, tokenizer)
        self.stop_ids = stop_ids(tokenizer, self.eos_ids)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self.most_rows: Optional[int] = None
        """The most pairs per batch, once a larger batch ran out of memory."""
        self.prompt_cache = PromptCache(prompt_cache_tokens)
        """The key/value caches of the prompts read last (see :mod:`.prompt_cache`)."""
        self._cacheable = True  # a model with sliding-window layers keeps no prompt cache
        self.counts = {"computed": 0, "cached": 0, "decoded": 0}
        """Tokens the model has computed a prompt's keys and values for (the response's start too), prompt
        tokens served from the prompt cache instead, and tokens decoded (explanations and markers)."""

    @property
    def reusable_prompt_tokens(self) -> int:
        """The most prompt tokens the prompt cache keeps (0 once the model is found to have sliding-window layers)."""
        return self.prompt_cache.max_tokens if self._cacheable else 0

    @property
    def device(self) -> torch.device:
        """The device the model's weights are on (where the batches are sent)."""
        return self.model.device

    def judge(self, prompts: Sequence[Prompt], encoder: PromptEncoder, *, mode: Mode, max_new_tokens: int,
              batching: Batching = Batching(), temperature: float = 0.0, seed: int = 0, verbose: bool = False,
              progress: Optional[tqdm] = None) -> Judgements:
        """Judge each prompt, given as (prefix, suffix) token ids.

        The prefix is shared by the documents of a query (see :meth:`PromptEncoder.prefix`).

        Args:
            prompts: The prompts, in the order the judgements are returned.
            encoder: The encoder that made them (marker and label tokens).
            mode: ``"explain"`` or ``"direct"``.
            max_new_tokens: Explanation budget.
            batching: Batch sizes, and whether a query's shared prefix is computed once for all of
                its documents in a batch.
            temperature: 0 decodes the explanation greedily; above, samples it at that temperature.
            seed: Seeds the sampling (each prompt by :func:`~.base.prompt_seed`, whatever its batch).
            verbose: Show a progress bar.
            progress: A bar to advance instead (the ranker's, over all of its chunks).
        """
        n = len(prompts)
        explanations = [""] * n
        probabilities = np.zeros((n, len(encoder.label_ids)))
        forced = np.zeros(n, dtype=bool)
        tokens = np.zeros(n, dtype=np.int64)
        budget = 0 if mode == "direct" else max_new_tokens + len(encoder.forced_marker_ids)
        queue = collections.deque(batches(prompts, batching.batch_size, batching.max_batch_tokens, budget))
        most_rows = min(batching.batch_size, self.most_rows or batching.batch_size)
        out_of_memory = 0  # the batch size that first ran out of memory
        with progress_bar(progress, n, verbose) as progress:
            while queue:
                batch = queue.popleft()
                if len(batch) > most_rows:
                    queue.extendleft(reversed([batch[k:k + most_rows] for k in range(0, len(batch), most_rows)]))
                    continue
                try:
                    batch_explanations, label_logits, batch_forced, batch_tokens = self._judge_batch(
                        [prompts[i] for i in batch], encoder, mode, max_new_tokens, batching.prefix_reuse, temperature,
                        seed)
                except torch.OutOfMemoryError:
                    if len(batch) == 1:
                        raise
                    # Halve the batch, for this call and later ones (until it fits), and say so once.
                    out_of_memory = out_of_memory or len(batch)
                    most_rows = self.most_rows = len(batch) // 2
                    _release_memory()
                    queue.appendleft(batch)
                    continue
                for i, text, was_forced, spent in zip(batch, batch_explanations, batch_forced, batch_tokens):
                    explanations[i], forced[i], tokens[i] = text, was_forced, spent
                probabilities[batch] = label_probabilities(label_logits)
                progress.update(len(batch))
        if out_of_memory:
            warnings.warn(f"ReasonRanker: out of memory with {out_of_memory} pairs in a batch; halved the batch until "
                          f"it fit, at most {most_rows} pairs (a smaller batch_size or max_batch_tokens avoids the "
                          "retries)", ResourceWarning, stacklevel=3)
        return Judgements.of(explanations, probabilities, forced, tokens, [int(mode == "explain")] * n)

    @torch.inference_mode()
    def _judge_batch(self, prompts: list[Prompt], encoder: PromptEncoder, mode: Mode, max_new_tokens: int,
                     prefix_reuse: bool, temperature: float, seed: int):
        """Explanations, label logits, forced flags and tokens decoded for one batch.

        The prompt up to the response's start (which every mode shares in prompt format 2) is read
        from the prompt cache where it is there, else computed and kept there; the response's start
        (``Explanation:`` or ``Relevance:``) follows.
        """
        start = len(encoder.response_start_ids)
        shared = [(prefix, suffix[:len(suffix) - start]) for prefix, suffix in prompts]
        cache, mask, last_position = self._read(shared, prefix_reuse)
        logits, cache, mask, last_position = self._forward([encoder.response_start_ids] * len(prompts), cache=cache,
                                                           past_mask=mask)
        if mode == "direct":
            return [""] * len(prompts), logits[:, encoder.label_ids], [False] * len(prompts), [0] * len(prompts)
        sampler = _Sampler(temperature, [prompt_seed(seed, prefix + suffix) for prefix, suffix in prompts])
        return self._explain(logits, cache, mask, last_position, encoder, max_new_tokens, sampler)

    @torch.inference_mode()
    def _read(self, prompts: list[Prompt], prefix_reuse: bool):
        """The key/value cache of a batch of prompts, its mask and last positions: from the prompt cache, or computed.

        Prompts not in the prompt cache are computed (see :meth:`_prefill`) and kept there; the batch's
        cache is then assembled from each prompt's, left-padded.
        """
        if not self.prompt_cache.max_tokens or not self._cacheable:
            _, cache, mask, last_position = self._prefill(prompts, prefix_reuse)
            return cache, mask, last_position
        keys = [prefix + suffix for prefix, suffix in prompts]
        found = [self.prompt_cache.get(key) for key in keys]
        missing = [i for i, layers in enumerate(found) if layers is None]
        self.counts["cached"] += sum(len(keys[i]) for i in range(len(keys)) if found[i] is not None)
        if missing:
            _, cache, mask, _ = self._prefill([prompts[i] for i in missing], prefix_reuse)
            if not all(type(layer) is DynamicLayer for layer in cache.layers):  # sliding windows...: not kept
                self._cacheable = False
                return self._read(prompts, prefix_reuse)
            for row, i in enumerate(missing):
                real = mask[row].bool()
                found[i] = tuple((layer.keys[row][:, real], layer.values[row][:, real]) for layer in cache.layers)
                self.prompt_cache.put(keys[i], found[i])
        return _batched(found, self.device)

    @torch.inference_mode()
    def _prefill(self, prompts: list[Prompt], prefix_reuse: bool):
        """The forward pass over a batch of prompts: last-position logits, cache, mask and positions.

        With prefix reuse, and when some rows share a prefix, each distinct prefix is computed once
        and its key/value cache copied to the rows that share it; their suffixes then follow, each
        left-padded within the suffix block (the mask hides the padding, the positions skip it).
        """
        prefixes = list(dict.fromkeys(prefix for prefix, _ in prompts))
        if not prefix_reuse or len(prefixes) == len(prompts):
            return self._forward([list(prefix) + list(suffix) for prefix, suffix in prompts])
        _, cache, prefix_mask, _ = self._forward([list(prefix) for prefix in prefixes])
        index = {prefix: k for k, prefix in enumerate(prefixes)}
        row_prefix = torch.tensor([index[prefix] for prefix, _ in prompts], device=self.device)
        cache.batch_select_indices(row_prefix)
        return self._forward([list(suffix) for _, suffix in prompts], cache=cache, past_mask=prefix_mask[row_prefix])

    def _forward(self, ids: list[list[int]], *, cache: Optional[Cache] = None,
                 past_mask: Optional[torch.Tensor] = None):
        input_ids, mask = self.left_pad(ids, max(len(x) for x in ids))
        self.counts["computed"] += int(mask.sum())
        if past_mask is not None:
            mask = torch.cat([past_mask, mask], dim=1)
        # Explicit positions, so that padding does not shift them.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float(), out.past_key_values, mask, positions[:, -1]

    def left_pad(self, ids: Sequence[Sequence[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids padded on the left to ``width``, on the model's device, and their attention mask."""
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, width - len(x):] = torch.tensor(x)
            mask[row, width - len(x):] = 1
        return input_ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def _explain(self, logits: torch.Tensor, cache: Cache, mask: torch.Tensor, last_position: torch.Tensor,
                 encoder: PromptEncoder, max_new_tokens: int, sampler: _Sampler):
        """Decoding from a prefilled batch until each row has written (or been given) the marker."""
        n = len(logits)
        marker = encoder.marker_ids
        generated: list[list[int]] = [[] for _ in range(n)]
        to_append: list[list[int]] = [[] for _ in range(n)]  # marker tokens still to feed, when forced
        explanation_end = [0] * n
        forced = [False] * n
        label_logits = torch.empty((n, len(encoder.label_ids)), dtype=torch.float32)
        rows = list(range(n))  # prompt index of each row still in the batch
        while rows:
            step = []
            for i, token in zip(rows, sampler.next_tokens(logits, rows)):
                if not to_append[i]:
                    if token not in self.stop_ids and len(generated[i]) < max_new_tokens:
                        generated[i].append(token)
                        step.append(token)
                        continue
                    forced[i] = True
                    explanation_end[i], to_append[i] = forced_ending(generated[i], encoder)
                token = to_append[i].pop(0)
                generated[i].append(token)
                step.append(token)
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            last_position = last_position + 1
            self.counts["decoded"] += len(rows)
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
        return explanations, label_logits, forced, [len(g) for g in generated]


    @torch.inference_mode()
    def sample(self, prompts: Sequence[list[int]], *, num_samples: int = 1, temperature: float = 1.0,
               max_new_tokens: int = 128, batch_size: int = 8, verbose: bool = False) -> list[list[Completion]]:
        """Free-text responses: ``num_samples`` per prompt, sampled at ``temperature`` (0: greedy).

        Sampling is plain sampling from the model's distribution: a checkpoint's own generation
        settings (:data:`NEUTRAL_GENERATION`: top-p, top-k, min-p, repetition penalty...) are
        overridden, so that the samples are the policy's (what refinement needs).
        """
        eos = sorted(self.eos_ids) or None
        options = {"do_sample": temperature > 0, "temperature": temperature if temperature > 0 else None,
                   **NEUTRAL_GENERATION}
        # Greedy decoding has one answer per prompt: decode it once and repeat it.
        copies = num_samples if temperature > 0 else 1
        was_training = self.model.training
        self.model.eval()
        results: list[list[Completion]] = []
        for start in pt.tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not verbose):
            batch = prompts[start:start + batch_size]
            width = max(len(p) for p in batch)
            input_ids, mask = self.left_pad(batch, width)
            output = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                         num_return_sequences=copies, pad_token_id=self.pad_id, eos_token_id=eos,
                                         **options)
            output = output[:, width:].repeat_interleave(num_samples // copies, dim=0).tolist()
            for i in range(len(batch)):
                samples = []
                for row in output[i * num_samples:(i + 1) * num_samples]:
                    ids = next((row[:j + 1] for j, token in enumerate(row) if token in self.eos_ids), row)
                    samples.append(Completion(self.tokenizer.decode(ids, skip_special_tokens=True), ids))
                results.append(samples)
        self.model.train(was_training)
        return results


class _Sampler:
    """Chooses the next token of each row: the likeliest, or one sampled at a temperature.

    Each prompt samples from a generator of its own (seeded by :func:`~.base.prompt_seed`), so its
    explanation does not depend on the rows it is batched with.
    """

    def __init__(self, temperature: float, seeds: list[int]):
        self.temperature = temperature
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds] if temperature > 0 else None

    def next_tokens(self, logits: torch.Tensor, rows: list[int]) -> list[int]:
        """The next token of each row of ``logits``; ``rows``: the prompt of each row."""
        if self.generators is None:
            return logits.argmax(-1).tolist()
        probabilities = torch.softmax(logits.float().cpu() / self.temperature, -1)
        return [int(torch.multinomial(p, 1, generator=self.generators[i])) for p, i in zip(probabilities, rows)]


def _batched(layers: list, device: torch.device) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """One batch's cache from each prompt's (left-padded), its attention mask, and each row's last position."""
    lengths = [one[0][0].shape[1] for one in layers]
    width = max(lengths)
    mask = torch.zeros((len(layers), width), dtype=torch.long, device=device)
    for row, length in enumerate(lengths):
        mask[row, width - length:] = 1
    data = []
    for layer in range(len(layers[0])):
        heads, _, dim = layers[0][layer][0].shape
        keys = layers[0][layer][0].new_zeros((len(layers), heads, width, dim))
        values = torch.zeros_like(keys)
        for row, length in enumerate(lengths):
            keys[row, :, width - length:] = layers[row][layer][0]
            values[row, :, width - length:] = layers[row][layer][1]
        data.append((keys, values))
    return DynamicCache(data), mask, torch.tensor(lengths, device=device) - 1


def _release_memory() -> None:
    """Give cached GPU memory back after an out-of-memory error, so that smaller batches fit."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def batches(prompts: Sequence[Prompt], batch_size: int, max_batch_tokens: Optional[int],
             budget: int) -> list[list[int]]:
    """Batches of prompt indices, each at most ``batch_size`` rows and ``max_batch_tokens`` tokens.

    A query's documents go together (so their prefix can be shared), queries and documents longest
    first (so a batch pads little, and the first shows the peak memory).
    """
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i][0]), prompts[i][0], -len(prompts[i][1])))
    grouped: list[list[int]] = []
    width = 0
    for i in order:
        length = len(prompts[i][0]) + len(prompts[i][1]) + budget
        if grouped and len(grouped[-1]) < batch_size and \
                (max_batch_tokens is None or (len(grouped[-1]) + 1) * max(width, length) <= max_batch_tokens):
            grouped[-1].append(i)
            width = max(width, length)
        else:
            grouped.append([i])
            width = length
    return grouped


def load(model: Optional[str], *, adapter: Optional[str] = None, device: Union[str, torch.device, None] = None,
         dtype: Union[str, torch.dtype, None] = None, trust_remote_code: bool = False,
         prompt_cache_tokens: int = DEFAULT_PROMPT_CACHE_TOKENS, revision: Optional[str] = None) -> HFBackend:
    """Load a model and tokenizer as an :class:`HFBackend` (each call loads a copy of the weights).

    Rankers share a loaded model by sharing the :class:`~pyterrier_reasonrank.student.Student`
    that loaded it. On a CPU in float32 its linear weights are stored transposed in memory, which
    decodes faster (:mod:`.weight_layout`; :func:`~.weight_layout.store_weights_as_transformers`
    undoes it for code that needs contiguous weights).

    Args:
        model: Hugging Face Hub id or local directory. ``None``: the adapter's base model, or
            :data:`DEFAULT_MODEL` without an adapter.
        adapter: A PEFT adapter (Hub id or directory), merged into the model after loading.
        device: ``"cuda"``, ``"cpu"``, ... Default: CUDA when available, else CPU.
        dtype: ``torch.dtype`` or its name (``"bfloat16"``). Default: bfloat16 on a GPU that supports
            it, float32 otherwise.
        trust_remote_code: Allow a model's own Python code from its repository to run.
        prompt_cache_tokens: The most prompt tokens whose keys and values are kept for reuse.
        revision: The model's revision on the Hub (default: the one the adapter was trained on, else the
            default branch).

    Raises:
        ModelNotFoundError: The model or adapter could not be found (locally, in the cache or on the Hub).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if model is None and adapter is None:
        model = DEFAULT_MODEL
    lm, tokenizer = load_causal_lm(model, adapter, dtype=dtype, trust_remote_code=trust_remote_code, revision=revision)
    lm = lm.to(device).eval()
    use_grouped_attention(lm)  # on a CPU, grouped key/value heads are not copied per query head
    store_weights_transposed(lm)  # on a CPU in float32: decoding's small products are faster
    return HFBackend(lm, tokenizer, prompt_cache_tokens=prompt_cache_tokens)
