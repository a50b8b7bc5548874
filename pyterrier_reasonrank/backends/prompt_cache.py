"""Key/value caches of prompts the transformers backend has read, so that a prompt is read once.

In prompt format version 2 every mode shares a pair's prompt up to the response's start, so the
direct judgement, the explanation it is escalated to (adaptive mode), the samples drawn and a
cascade's next ranker of the same student all continue from the same cache: the prompt (most of a
pair's cost, on long documents) is read once. vLLM's engine does the same with its prefix cache.
"""
from __future__ import annotations

import collections
import threading
from typing import Optional

import torch

Layers = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""One prompt's cache: per layer, keys and values of shape ``(heads, tokens, head_dim)``."""


class PromptCache:
    """The caches of the prompts read last, up to ``max_tokens`` tokens in all (least recently used dropped first).

    Attributes:
        max_tokens: The most prompt tokens kept; 0 keeps none.
        tokens: The prompt tokens kept now.
    """

    def __init__(self, max_tokens: int):
        """Keep at most ``max_tokens`` prompt tokens' keys and values."""
        self.max_tokens = max_tokens
        self.tokens = 0
        self._entries: collections.OrderedDict[tuple, Layers] = collections.OrderedDict()
        self._lock = threading.Lock()  # rankers of one student may judge in threads

    def get(self, prompt: tuple) -> Optional[Layers]:
        """The cache of ``prompt`` (its token ids), or ``None``."""
        with self._lock:
            layers = self._entries.get(prompt)
            if layers is not None:
                self._entries.move_to_end(prompt)
            return layers

    def put(self, prompt: tuple, layers: Layers) -> None:
        """Keep the cache of ``prompt``, dropping the least recently used ones past the budget."""
        if len(prompt) > self.max_tokens:
            return
        with self._lock:
            if prompt in self._entries:
                return
            self._entries[prompt] = layers
            self.tokens += len(prompt)
            while self.tokens > self.max_tokens:
                dropped, _ = self._entries.popitem(last=False)
                self.tokens -= len(dropped)

    def clear(self) -> None:
        """Drop every cache (the memory is given back)."""
        with self._lock:
            self._entries.clear()
            self.tokens = 0

    def __len__(self) -> int:
        return len(self._entries)
