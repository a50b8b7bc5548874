"""The prompt and response format, in one place.

Inference (:class:`~pyterrier_reasonrank.ReasonRanker`) and training (teacher
annotation, distillation, refinement) all build their prompts here, because a
mismatch between the format a model was trained on and the one it is queried
with silently ruins it.

A response in ``"explain"`` mode reads::

    Explanation: <why the document does or does not help answer the query>
    Relevance: <0|1|2>

and in ``"direct"`` mode only the last line. The relevance label is read from
the probabilities of the label tokens at the position after ``Relevance:``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import jinja2

Mode = Literal["explain", "direct"]
MODES: tuple[str, ...] = ("explain", "direct")

LABELS: tuple[int, ...] = (0, 1, 2)
LABEL_NAMES = {0: "irrelevant", 1: "partially relevant", 2: "relevant"}

EXPLANATION_PREFIX = "Explanation:"
LABEL_MARKER = "Relevance:"

_SCALE = "0 (irrelevant), 1 (partially relevant) or 2 (relevant)"
INSTRUCTIONS = {
    "explain": (
        "You judge whether a document helps answer a search query. First write a short explanation "
        "of why the document does or does not help answer the query, then give a relevance label: "
        f"{_SCALE}.\nAnswer in exactly this format:\n"
        f"{EXPLANATION_PREFIX} <one to three sentences>\n{LABEL_MARKER} <0, 1 or 2>"
    ),
    "direct": (
        "You judge whether a document helps answer a search query. Give a relevance label: "
        f"{_SCALE}.\nAnswer in exactly this format:\n{LABEL_MARKER} <0, 1 or 2>"
    ),
}

# Placeholders for the user's text while the chat template is rendered; the
# rendered string is cut at them so that query and document are tokenized on
# their own (truncated by tokens, and never parsed for special tokens).
_QUERY_SLOT = "[[REASONRANK_QUERY]]"
_DOCUMENT_SLOT = "[[REASONRANK_DOCUMENT]]"


def user_message(query: str, document: str) -> str:
    """The user turn. The query comes first, so all documents of a query share a prompt prefix.

    Query and document each start a line, so that they tokenize the same on their own as in context.
    """
    return f"Query:\n{query}\n\nDocument:\n{document}"


def messages(query: str, document: str, mode: Mode = "explain") -> list[dict[str, str]]:
    """The chat messages (system, user) for one query-document pair."""
    _check_mode(mode)
    return [
        {"role": "system", "content": INSTRUCTIONS[mode]},
        {"role": "user", "content": user_message(query, document)},
    ]


def response_prefix(mode: Mode = "explain") -> str:
    """The start of the assistant's response, written into the prompt rather than generated."""
    _check_mode(mode)
    return EXPLANATION_PREFIX if mode == "explain" else LABEL_MARKER


def format_response(explanation: str, label: int, mode: Mode = "explain") -> str:
    """The full response text for an explanation and a label (what a teacher writes)."""
    _check_label(label)
    if mode == "direct":
        return f"{LABEL_MARKER} {label}"
    _check_mode(mode)
    return f"{EXPLANATION_PREFIX} {' '.join(explanation.split())}\n{LABEL_MARKER} {label}"


@dataclass(frozen=True)
class ParsedResponse:
    """A response text split into its parts.

    Attributes:
        explanation: The explanation (everything before the label marker, without the prefix).
        label: The label, or ``None`` when the response has none.
        error: Why the response is not in the format, or ``None`` when it is.
    """

    explanation: str
    label: Optional[int]
    error: Optional[str] = None


_LABEL_LINE = re.compile(rf"{re.escape(LABEL_MARKER)}\s*(\S+)", re.IGNORECASE)


def parse_response(text: str) -> ParsedResponse:
    """Split a response text into explanation and label.

    The last ``Relevance:`` line counts. A response without one, or whose label is not 0, 1 or 2,
    comes back with ``label=None`` and an ``error`` saying why; it is never read as label 0.
    """
    matches = list(_LABEL_LINE.finditer(text))
    head = text[: matches[-1].start()] if matches else text
    explanation = head.strip()
    if explanation.lower().startswith(EXPLANATION_PREFIX.lower()):
        explanation = explanation[len(EXPLANATION_PREFIX):].strip()
    if not matches:
        return ParsedResponse(explanation, None, f"no '{LABEL_MARKER}' line in the response")
    raw = matches[-1].group(1).strip(".,;:*_)(\"'")
    if raw not in {str(label) for label in LABELS}:
        return ParsedResponse(explanation, None, f"label {raw!r} is not one of {list(LABELS)}")
    return ParsedResponse(explanation, int(raw))


class PromptEncoder:
    """Turns (query, document) pairs into token ids for one tokenizer.

    It checks that the three labels are single tokens after the marker in this tokenizer (a
    ``ValueError`` names the tokenizer otherwise), and it exposes the token ids that the scoring
    reads: ``marker_ids`` (the marker as the model writes it), ``forced_marker_ids`` (a line break
    and the marker, appended when the model did not write it) and ``label_ids`` (for 0, 1, 2).

    Args:
        tokenizer: A Hugging Face tokenizer. Its chat template is used when it has one.
        mode: ``"explain"`` or ``"direct"``.
        max_query_tokens: The query is cut to this many tokens.
        max_doc_tokens: The document is cut to this many tokens.
    """

    def __init__(self, tokenizer, mode: Mode = "explain", *, max_query_tokens: int = 512,
                 max_doc_tokens: int = 1024):
        _check_mode(mode)
        for name, value in (("max_query_tokens", max_query_tokens), ("max_doc_tokens", max_doc_tokens)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self.tokenizer = tokenizer
        self.mode = mode
        self.max_query_tokens = max_query_tokens
        self.max_doc_tokens = max_doc_tokens
        self.marker_ids, self.forced_marker_ids, self.label_ids = self._label_tokens()
        head, middle, tail = self._template_pieces()
        self._head = self._encode_template(head)
        self._middle = self._encode_template(middle)
        tail_ids = self._encode_template(tail)
        # The explain prompt ends with the explanation prefix; the direct prompt with the marker,
        # exactly as the model writes it before a label.
        self._tail = tail_ids + (self._encode_template(EXPLANATION_PREFIX) if mode == "explain" else self.marker_ids)

    def encode(self, query: str, document: str) -> list[int]:
        """Token ids of the prompt for one pair: instructions, truncated query and document, response start."""
        return self._head + self.encode_text(query, self.max_query_tokens) + self._middle \
            + self.encode_text(document, self.max_doc_tokens) + self._tail

    def encode_text(self, text: str, max_tokens: int) -> list[int]:
        """Token ids of user text, cut to ``max_tokens``; special-token strings in it stay plain text."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"][:max_tokens]

    @property
    def prefix_length(self) -> int:
        """Number of prompt tokens before the query (the same for every pair)."""
        return len(self._head)

    def _encode_template(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _template_pieces(self) -> tuple[str, str, str]:
        turns = messages(_QUERY_SLOT, _DOCUMENT_SLOT, self.mode)
        if self.tokenizer.chat_template is None:
            bos = self.tokenizer.bos_token if getattr(self.tokenizer, "add_bos_token", False) else None
            rendered = f"{bos or ''}{turns[0]['content']}\n\n{turns[1]['content']}\n\n"
        else:
            try:
                rendered = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            except jinja2.TemplateError:
                # Some templates (e.g. Gemma's) have no system role: put the instructions in the user turn.
                turns = [{"role": "user", "content": f"{turns[0]['content']}\n\n{turns[1]['content']}"}]
                rendered = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        head, rest = rendered.split(_QUERY_SLOT)
        middle, tail = rest.split(_DOCUMENT_SLOT)
        return head, middle, tail

    def _label_tokens(self) -> tuple[list[int], list[int], list[int]]:
        # Tokenize whole responses, so that the marker and labels are split as they are in context.
        # A word ends the explanation: a full stop would merge with the line break in some tokenizers.
        tokenize = self.tokenizer.__call__
        name = getattr(self.tokenizer, "name_or_path", type(self.tokenizer).__name__)
        responses = [tokenize(format_response("x", label), add_special_tokens=False)["input_ids"]
                     for label in LABELS]
        common = _common_prefix(responses)
        tails = [ids[len(common):] for ids in responses]
        decoded = [self.tokenizer.decode(tail).strip() for tail in tails]
        if any(len(tail) != 1 for tail in tails) or decoded != [str(label) for label in LABELS]:
            raise ValueError(
                f"The labels {list(LABELS)} are not single tokens after {LABEL_MARKER!r} for the tokenizer "
                f"{name!r} (got {[self.tokenizer.convert_ids_to_tokens(t) for t in tails]}); "
                "pyterrier_reasonrank needs a tokenizer that writes each label as one token.")

        def tail_spelling(text: str) -> list[int]:
            start = max(j for j in range(len(common)) if text in self.tokenizer.decode(common[j:]))
            return common[start:]

        return tail_spelling(LABEL_MARKER), tail_spelling("\n" + LABEL_MARKER), [t[0] for t in tails]


def _common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    first = sequences[0]
    n = 0
    while n < len(first) and all(len(s) > n and s[n] == first[n] for s in sequences):
        n += 1
    return list(first[:n])


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_label(label: int) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be one of {list(LABELS)}, got {label!r}")
