"""Tokenizing user text as text: a special-token string in it never becomes a special token.

A fast tokenizer decides whether special-token strings in text become special tokens by a flag on
its Rust backend, which every call sets anew (``split_special_tokens``). Rankers and trainers of one
model share one tokenizer object, so a thread that encodes a template (flag off) can switch the flag
under a thread that encodes a document (flag on), and ``<|im_end|>`` in the document becomes a real
end of turn. :class:`TextTokenizer` owns private copies of the backend with the flag fixed at
creation, which no other code can switch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

_SLICE = 256
"""Texts tokenized per call: the tokenizer's own output (tokens, offsets) is many times the size of the ids."""


class TextTokenizer:
    """Encodes text with a tokenizer, without state that another thread can change."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        """Make the private copies of a fast tokenizer's backend, one for text and one for templates.

        Args:
            tokenizer: A Hugging Face tokenizer. A fast one is copied twice (about a quarter of a second
                for a 150K vocabulary); a Python one takes the choice per call, which is already safe.
        """
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._tokenizer = tokenizer
        self._as_text = None if backend is None else _private_copy(backend, encode_special_tokens=True)
        self._as_template = None if backend is None else _private_copy(backend, encode_special_tokens=False)

    def text(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of user text: special-token strings stay plain text."""
        return self._encode(texts, self._as_text, split_special_tokens=True)

    def template(self, text: str) -> list[int]:
        """Token ids of template text (a rendered chat template): special-token strings are special tokens."""
        return self._encode([text], self._as_template, split_special_tokens=False)[0]

    def _encode(self, texts: Sequence[str], backend: Optional[Tokenizer], *,
                split_special_tokens: bool) -> list[list[int]]:
        ids: list[list[int]] = []
        for start in range(0, len(texts), _SLICE):
            batch = [_encodable(text) for text in texts[start:start + _SLICE]]
            if backend is not None:
                ids += [encoding.ids for encoding in backend.encode_batch(batch, add_special_tokens=False)]
            else:
                ids += self._tokenizer(batch, add_special_tokens=False,
                                       split_special_tokens=split_special_tokens)["input_ids"]
        return ids


def _private_copy(backend: Tokenizer, *, encode_special_tokens: bool) -> Tokenizer:
    """A copy of a Rust tokenizer that nothing else holds, with the special-token choice fixed.

    The copy has no truncation or padding (which the Python wrapper also sets per call).
    """
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    copy.encode_special_tokens = encode_special_tokens
    return copy


def _encodable(text: str) -> str:
    """The text with lone surrogates (from broken JSON escapes, say), which no tokenizer accepts, as "?"."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")
