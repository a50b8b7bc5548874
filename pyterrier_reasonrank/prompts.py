"""The prompt and response formats, in one place.

Inference (:class:`~pyterrier_reasonrank.ReasonRanker`) and training (teacher annotation,
distillation, refinement) all build their prompts here, because a mismatch between the format a
model was trained on and the one it is queried with silently ruins it.

A relevance response in ``"explain"`` mode reads::

    Explanation: <why the document does or does not help answer the query>
    Relevance: <0|1|2>

and in ``"direct"`` mode only the last line. The relevance label is read from the probabilities of
the label tokens at the position after ``Relevance:``.

The second task, query generation, turns a long question into search queries::

    Queries:
    1. <query>
    2. <query>
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Mapping, Optional, Sequence

import jinja2

from .errors import InputError
from .tokenization import TextTokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FORMAT_VERSION = 2
"""The version of the prompt and response format that students are trained with now. A trained
student records the version it was trained with (see :mod:`pyterrier_reasonrank.settings`) and is
served with it; a version this library does not know is refused rather than served with another.

- Version 2: one prompt for every mode — the same instructions and user turn — and the mode chosen
  by how the response starts: ``Explanation:`` (explain) or ``Relevance:`` (direct), after the
  template's (empty) think block where it has one. A pair's prompt is then read once for all of its
  judgements: the direct one, the explanation it is escalated to, the samples drawn.
- Version 1: explain and direct modes had instructions of their own (the explain prompt is the same
  as version 2's)."""
FORMAT_VERSIONS: tuple[int, ...] = (1, 2)
"""The prompt format versions this library serves."""

Mode = Literal["explain", "direct"]
MODES: tuple[str, ...] = ("explain", "direct")
TASKS: tuple[str, ...] = (*MODES, "queries")
"""What a student can be trained for: judging in explain or direct mode, and query generation."""

DEFAULT_MAX_QUERY_TOKENS = 512
DEFAULT_MAX_DOC_TOKENS = 1024
DEFAULT_MAX_QUESTION_TOKENS = 1024

TEMPLATE_VARIABLES: Mapping[str, object] = {"date_string": "26 Jul 2024", "enable_thinking": False}
"""Chat-template variables that are not the conversation, pinned so that every prompt is the same.

The date: Llama 3.x templates write "Today Date: ..." into the system block from ``date_string``,
or from ``strftime_now`` when it is not given (it then answers with this date too); the date is the
one Llama 3.x templates fall back to. Thinking off: Qwen3-family and SmolLM3 templates let the model
"think" (write a ``<think>`` block before its answer) unless ``enable_thinking`` is false, and then
end the generation prompt with an empty think block, after which the response starts. A template
that does not use a variable ignores it, so these change no other template's prompts. The same
variables go to a server that renders the template itself (a teacher's chat requests)."""

THINK_TOKENS = ("<think>", "</think>")
"""The delimiters of a reasoning ("think") block: single tokens in the tokenizers of models that think
(Qwen3, DeepSeek-R1's distillations...), added tokens but not special ones. Thinking is switched off
(:data:`TEMPLATE_VARIABLES`); a model that writes a think block anyway has left the format: its
explanation is cut there and forced (:mod:`pyterrier_reasonrank.backends.base`), and a response
text with one is an error (:func:`parse_response`, :func:`parse_queries`), never read as an answer."""

LABELS: tuple[int, ...] = (0, 1, 2)
LABEL_NAMES = {0: "irrelevant", 1: "partially relevant", 2: "relevant"}

EXPLANATION_PREFIX = "Explanation:"
LABEL_MARKER = "Relevance:"
QUERIES_PREFIX = "Queries:"
MAX_QUERIES = 10

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
QUERY_INSTRUCTIONS = (
    f"You help a search engine answer a long question. Write up to {MAX_QUERIES} short search queries "
    "that together would find the documents needed to answer it, one per line.\n"
    f"Answer in exactly this format:\n{QUERIES_PREFIX}\n1. <query>\n2. <query>"
)

# Placeholders for the user's text while a chat template is rendered; the rendered string is cut
# at them so that user text is tokenized on its own (truncated by tokens, never parsed for special
# tokens).
_QUERY_SLOT = "[[REASONRANK_QUERY]]"
_DOCUMENT_SLOT = "[[REASONRANK_DOCUMENT]]"
_QUESTION_SLOT = "[[REASONRANK_QUESTION]]"
_RESPONSE_SLOT = "[[REASONRANK_RESPONSE]]"
# Characters kept per wanted token before a long text is tokenized: tokens average about four
# characters, so the cut keeps about twice the tokens wanted, and the tokens before the cut word
# are those of the whole text.
_CHARS_PER_TOKEN = 8

Prompt = tuple[tuple[int, ...], tuple[int, ...]]
"""A prompt as (prefix, suffix) token ids: the prefix is shared by the documents of a query."""


def user_message(query: str, document: str, hint: Optional[str] = None) -> str:
    """The user turn of a relevance judgement.

    The query comes first, so all documents of a query share a prompt prefix. Query and document
    each start a line, so that they tokenize the same on their own as in context. A teacher may be
    given a ``hint`` (see :func:`hint_text`) after the document.
    """
    message = f"Query:\n{query}\n\nDocument:\n{document}"
    return message if hint is None else f"{message}\n\n{hint}"


def hint_text(label: int) -> str:
    """The gold-label hint given to a teacher: what human assessors judged."""
    _check_label(label)
    return f"Hint: human assessors judged this document {label} ({LABEL_NAMES[label]})."


def messages(query: str, document: str, mode: Mode = "explain", hint: Optional[str] = None, *,
             format_version: int = FORMAT_VERSION) -> list[dict[str, str]]:
    """The chat messages (system, user) for one query-document pair.

    In format version 2 they are the same for every mode (the response's start chooses it); in
    version 1 each mode had its own instructions.
    """
    _check_mode(mode)
    _check_format_version(format_version)
    instructions = INSTRUCTIONS["explain" if format_version >= 2 else mode]
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": user_message(query, document, hint)},
    ]


def format_response(explanation: str, label: int, mode: Mode = "explain") -> str:
    """The full response text for an explanation and a label (what a teacher writes)."""
    _check_label(label)
    if mode == "direct":
        return f"{LABEL_MARKER} {label}"
    _check_mode(mode)
    return f"{EXPLANATION_PREFIX} {' '.join(explanation.split())}\n{LABEL_MARKER} {label}"


@dataclass(frozen=True)
class ParsedResponse:
    """A relevance response split into its parts.

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
    """Split a relevance response into explanation and label.

    The last ``Relevance:`` line counts. A response without one, whose label is not 0, 1 or 2, or
    with a think block (:data:`THINK_TOKENS`), comes back with ``label=None`` and an ``error`` saying
    why; it is never read as label 0.
    """
    matches = list(_LABEL_LINE.finditer(text))
    head = text[: matches[-1].start()] if matches else text
    explanation = _strip_prefix(head, EXPLANATION_PREFIX)
    if _thinks(text):
        return ParsedResponse(explanation, None, _THOUGHT)
    if not matches:
        return ParsedResponse(explanation, None, f"no '{LABEL_MARKER}' line in the response")
    raw = matches[-1].group(1).strip(".,;:*_)(\"'")
    if raw not in {str(label) for label in LABELS}:
        return ParsedResponse(explanation, None, f"label {raw!r} is not one of {list(LABELS)}")
    return ParsedResponse(explanation, int(raw))


def read_label(response: str) -> Optional[int]:
    """The label of a student's response as the ranker reads it: the one right after the first ``Relevance:``.

    The ranker stops an explanation at the first label marker, written exactly so, and reads the
    label after it; a think delimiter before the marker cuts the explanation short. So a reward
    that reads a sampled response must read it so too (:func:`parse_response` reads a teacher's
    answer, which may restate its label). ``None``: no marker, a think block before it, or no
    label 0-2 right after it (``02`` is none: the ranker reads ``0`` and the model wrote more).
    """
    head, marker, tail = response.partition(LABEL_MARKER)
    label = re.match(rf" ?([{LABELS[0]}-{LABELS[-1]}])(?![0-9])", tail)  # one label token: not "02", not "20"
    return None if not marker or _thinks(head) or label is None else int(label.group(1))


def query_messages(question: str) -> list[dict[str, str]]:
    """The chat messages (system, user) asking for search queries for a long question."""
    return [{"role": "system", "content": QUERY_INSTRUCTIONS}, {"role": "user", "content": f"Question:\n{question}"}]


def format_queries(queries: Sequence[str]) -> str:
    """The response text listing search queries (at most :data:`MAX_QUERIES`)."""
    if not 1 <= len(queries) <= MAX_QUERIES:
        raise ValueError(f"a response lists 1 to {MAX_QUERIES} queries, got {len(queries)}")
    lines = [f"{i}. {' '.join(query.split())}" for i, query in enumerate(queries, start=1)]
    return "\n".join([QUERIES_PREFIX, *lines])


@dataclass(frozen=True)
class ParsedQueries:
    """A query-generation response: the queries, or an error saying why there are none."""

    queries: list[str]
    error: Optional[str] = None


_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*")


def parse_queries(text: str) -> ParsedQueries:
    """Read the search queries from a response: one per line, numbering or bullets removed.

    At most :data:`MAX_QUERIES` are kept, duplicates dropped. No query at all is an error, and so is
    a think block (:data:`THINK_TOKENS`): its lines are not queries.
    """
    if _thinks(text):
        return ParsedQueries([], _THOUGHT)
    lines = _strip_prefix(text, QUERIES_PREFIX).splitlines()
    queries = [_NUMBERING.sub("", line).strip().strip('"') for line in lines]
    queries = list(dict.fromkeys(q for q in queries if q))[:MAX_QUERIES]
    return ParsedQueries(queries) if queries else ParsedQueries([], "no queries in the response")


def template_context(variables: Mapping[str, object]) -> dict:
    """What a chat template is rendered with besides the conversation.

    That is the pinned ``variables``, and, when they pin a date (``date_string``), ``strftime_now``
    (which templates call for today's date) answering with that date.
    """
    if "date_string" not in variables:
        return dict(variables)
    date = datetime.strptime(str(variables["date_string"]), "%d %b %Y")
    return {**variables, "strftime_now": date.strftime}


def chat_template_sha256(tokenizer: PreTrainedTokenizerBase) -> Optional[str]:
    """Hex SHA-256 of the tokenizer's chat template (``None`` without one).

    A trained student records it, so that serving it with another template is noticed.
    """
    template = tokenizer.chat_template
    return None if template is None else hashlib.sha256(str(template).encode("utf-8")).hexdigest()


class _TemplateEncoder:
    """Renders a chat template around slots for user text and encodes the pieces once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], slots: Sequence[str],
                 response_start: str, template_variables: Optional[Mapping[str, object]], *,
                 add_generation_prompt: bool = True):
        self.tokenizer = tokenizer
        self.template_variables = dict(TEMPLATE_VARIABLES if template_variables is None else template_variables)
        self._tokens = TextTokenizer(tokenizer)
        pieces = _render(tokenizer, turns, slots, self.template_variables, add_generation_prompt)
        self._pieces = [self._tokens.template(piece) for piece in pieces]
        self._pieces[-1] += self._tokens.template(response_start)
        eos = tokenizer.eos_token_id
        self.end_ids: list[int] = [] if eos is None else [eos]
        """What ends a response in training: the tokenizer's end of turn (or of text)."""

    def encode_text(self, text: str, max_tokens: Optional[int] = None) -> list[int]:
        """Token ids of user text, cut to ``max_tokens``; special-token strings in it stay plain text."""
        return self.encode_texts([text], max_tokens)[0]

    def encode_texts(self, texts: Sequence[str], max_tokens: Optional[int] = None) -> list[list[int]]:
        """:meth:`encode_text` for many texts at once (the tokenizer works through a batch in parallel).

        A text far longer than ``max_tokens`` is cut to ``max_tokens * 8`` characters before
        tokenizing, so that a megabyte document costs what its opening costs; one whose cut leaves
        fewer than ``max_tokens`` tokens is tokenized whole, so nothing is lost.
        """
        if max_tokens is None:
            return self._tokens.text(texts)
        heads = [text[:max_tokens * _CHARS_PER_TOKEN] for text in texts]
        ids = self._tokens.text(heads)
        short = [i for i, (text, head) in enumerate(zip(texts, heads)) if len(head) < len(text) and
                 len(ids[i]) < max_tokens]
        for i, whole in zip(short, self._tokens.text([texts[i] for i in short])):
            ids[i] = whole
        return [x[:max_tokens] for x in ids]

    def _fill(self, *texts: list[int]) -> list[int]:
        ids = list(self._pieces[0])
        for text, piece in zip(texts, self._pieces[1:]):
            ids += text + piece
        return ids


class PromptEncoder(_TemplateEncoder):
    """Turns (query, document) pairs into token ids for one tokenizer, and responses into training targets.

    It checks that the three labels are single tokens after the marker in this tokenizer (a
    ``ValueError`` names the tokenizer otherwise), and it exposes the token ids that the scoring
    reads: ``marker_ids`` (the marker as the model writes it), ``forced_marker_ids`` (a line break
    and the marker, appended when the model did not write it) and ``label_ids`` (for 0, 1, 2).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mode: Mode = "explain", *,
                 max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS, max_doc_tokens: int = DEFAULT_MAX_DOC_TOKENS,
                 template_variables: Optional[Mapping[str, object]] = None, format_version: int = FORMAT_VERSION):
        """Check the tokenizer's label tokens and render the prompt template for ``mode`` once.

        Args:
            tokenizer: A Hugging Face tokenizer. Its chat template is used when it has one.
            mode: ``"explain"`` or ``"direct"``.
            max_query_tokens: The query is cut to this many tokens.
            max_doc_tokens: The document is cut to this many tokens.
            template_variables: Chat-template variables besides the conversation (default:
                :data:`TEMPLATE_VARIABLES`).
            format_version: The prompt format (:data:`FORMAT_VERSION`; a student is served with the
                one it was trained with).

        Raises:
            ValueError: An unknown ``mode``.
            InputError: A limit below 1, or a tokenizer that does not write each label as one token.
        """
        _check_mode(mode)
        _check_format_version(format_version)
        for name, value in (("max_query_tokens", max_query_tokens), ("max_doc_tokens", max_doc_tokens)):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        self.mode = mode
        self.max_query_tokens = max_query_tokens
        self.max_doc_tokens = max_doc_tokens
        self.format_version = format_version
        self.marker_ids, self.forced_marker_ids, self.label_ids = _label_tokens(tokenizer)
        super().__init__(tokenizer, messages(_QUERY_SLOT, _DOCUMENT_SLOT, mode, format_version=format_version),
                         [_QUERY_SLOT, _DOCUMENT_SLOT], "", template_variables)
        # The explain prompt ends with the explanation prefix; the direct prompt with the marker,
        # as the model writes it before a label.
        self.response_start_ids: list[int] = \
            self._tokens.template(EXPLANATION_PREFIX) if mode == "explain" else list(self.marker_ids)
        """The tokens that start the response and choose the mode: what follows the prompt that every
        mode shares (in format version 2)."""
        self._pieces[-1] += self.response_start_ids

    @property
    def most_tokens(self) -> int:
        """The length of the longest prompt it makes: the query and the document at their limits."""
        return sum(map(len, self._pieces)) + self.max_query_tokens + self.max_doc_tokens

    def shares_prompt_with(self, other: PromptEncoder) -> bool:
        """Whether the two encoders give every pair the same prompt up to the response's start.

        True for the modes of one student in prompt format 2 (the mode is chosen by the response's
        start), so that one mode's judgement can continue from the prompt another read.
        """
        def shared(encoder: PromptEncoder) -> tuple:
            head, middle, tail = encoder._pieces
            return (tuple(head), tuple(middle), tuple(tail[:len(tail) - len(encoder.response_start_ids)]),
                    encoder.max_query_tokens, encoder.max_doc_tokens)
        return shared(self) == shared(other)

    def encode(self, query: str, document: str, hint: Optional[str] = None, *,
               max_doc_tokens: Optional[int] = None) -> list[int]:
        """Token ids of the prompt for one pair: instructions, truncated query and document, response start.

        Args:
            query: The query text.
            document: The document text.
            hint: Text after the document, never truncated (a teacher's gold-label hint).
            max_doc_tokens: Cut the document shorter than the encoder's limit (to fit a training example).
        """
        prefix, suffix = self.prompts([query], [document], [hint], max_doc_tokens=max_doc_tokens)[0]
        return list(prefix + suffix)

    def prefix(self, query: str) -> tuple[int, ...]:
        """The start of the prompt, up to the document: the same for every document of a query."""
        return self.prompts([query], [""])[0][0]

    def suffix(self, document: str, hint: Optional[str] = None) -> tuple[int, ...]:
        """The rest of the prompt: the truncated document (and hint), then the response start."""
        return self.prompts([""], [document], [hint])[0][1]

    def prompts(self, queries: Sequence[str], documents: Sequence[str],
                hints: Optional[Sequence[Optional[str]]] = None, *,
                max_doc_tokens: Optional[int] = None) -> list[Prompt]:
        """The prompts of many pairs as (:meth:`prefix`, :meth:`suffix`) token ids.

        The texts are tokenized in batches, each distinct query once.

        Args:
            queries: The query of each pair.
            documents: The document text of each pair.
            hints: Text after each document, never truncated (a teacher's gold-label hint), or ``None``.
            max_doc_tokens: Cut the documents shorter than the encoder's limit.
        """
        head, middle, tail = self._pieces
        distinct = list(dict.fromkeys(queries))
        prefixes = {query: tuple(head + ids + middle)
                    for query, ids in zip(distinct, self.encode_texts(distinct, self.max_query_tokens))}
        hint_ids = {hint: self.encode_text(f"\n\n{hint}") for hint in set(hints or ()) if hint is not None}
        bodies = self.encode_texts(documents, self.max_doc_tokens if max_doc_tokens is None
                                   else min(self.max_doc_tokens, max_doc_tokens))
        hints = hints if hints is not None else [None] * len(bodies)
        return [(prefixes[query], tuple(body + hint_ids.get(hint, []) + tail))
                for query, body, hint in zip(queries, bodies, hints)]

    def encode_response(self, explanation: str, label: int) -> list[int]:
        """Token ids of the response that follows :meth:`encode`'s prompt, as training targets.

        Raises:
            ValueError: The response does not end with the marker and label tokens that inference
                reads (an explanation that tokenizes into the marker).
        """
        _check_label(label)
        if self.mode == "direct":
            return [self.label_ids[label]] + self.end_ids
        text = format_response(explanation, label)[len(EXPLANATION_PREFIX):]
        # As text: an explanation that writes "<|im_end|>" must not teach a real end of turn.
        ids = self.encode_text(text)
        ending = self.marker_ids + [self.label_ids[label]]
        if ids[-len(ending):] != ending:
            raise ValueError(f"the response {text!r} does not end with the marker and label tokens that "
                             "inference reads")
        return ids + self.end_ids


class QueryPromptEncoder(_TemplateEncoder):
    """Turns a long question into the token ids of the query-generation prompt."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, max_question_tokens: int = DEFAULT_MAX_QUESTION_TOKENS,
                 template_variables: Optional[Mapping[str, object]] = None):
        """Render the query-generation prompt template for ``tokenizer`` once.

        Args:
            tokenizer: A Hugging Face tokenizer. Its chat template is used when it has one.
            max_question_tokens: The question is cut to this many tokens.
            template_variables: Chat-template variables besides the conversation (default:
                :data:`TEMPLATE_VARIABLES`).

        Raises:
            InputError: ``max_question_tokens`` is below 1.
        """
        if max_question_tokens < 1:
            raise InputError(f"max_question_tokens must be at least 1, got {max_question_tokens}")
        self.max_question_tokens = max_question_tokens
        super().__init__(tokenizer, query_messages(_QUESTION_SLOT), [_QUESTION_SLOT], QUERIES_PREFIX,
                         template_variables)

    def encode(self, question: str, *, max_question_tokens: Optional[int] = None) -> list[int]:
        """Token ids of the prompt for one question, ending with the response start.

        Args:
            question: The question.
            max_question_tokens: Cut the question shorter than the encoder's limit (to fit a training example).
        """
        limit = self.max_question_tokens if max_question_tokens is None \
            else min(self.max_question_tokens, max_question_tokens)
        return self._fill(self.encode_text(question, limit))

    def encode_response(self, queries: Sequence[str]) -> list[int]:
        """Token ids of the response listing ``queries``, as training targets."""
        text = format_queries(queries)[len(QUERIES_PREFIX):]
        return self.encode_text(text) + self.end_ids  # as text, like the judgement response


class ConversationEncoder(_TemplateEncoder):
    """Encodes a whole judgement — instructions, query, document and a response — for a model that reads it.

    A reward model reads the conversation through its own chat template. To fit ``max_length`` the
    document is cut (then the query, if it must be), never the response, so that what is judged is
    always seen.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, max_length: int,
                 template_variables: Optional[Mapping[str, object]] = None):
        """Render the conversation template for ``tokenizer`` once.

        Args:
            tokenizer: The reading model's tokenizer. Its chat template is used when it has one.
            max_length: The most tokens a conversation may have.
            template_variables: Chat-template variables besides the conversation (default:
                :data:`TEMPLATE_VARIABLES`).
        """
        self.max_length = max_length
        turns = messages(_QUERY_SLOT, _DOCUMENT_SLOT) + [
            {"role": "assistant", "content": f"{EXPLANATION_PREFIX} {_RESPONSE_SLOT}"}]
        super().__init__(tokenizer, turns, [_QUERY_SLOT, _DOCUMENT_SLOT, _RESPONSE_SLOT], "", template_variables,
                         add_generation_prompt=False)

    def encode(self, query: str, document: str, response: str) -> list[int]:
        """Token ids of the conversation, at most ``max_length`` unless the response alone is longer.

        Args:
            query: The query.
            document: The document.
            response: The response after ``Explanation:`` (what a student wrote).
        """
        response_ids = self.encode_text(response.strip())
        room = self.max_length - sum(map(len, self._pieces)) - len(response_ids)
        query_ids = self.encode_text(query, max(room, 0))
        return self._fill(query_ids, self.encode_text(document, max(room - len(query_ids), 0)), response_ids)


def _render(tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], slots: Sequence[str],
            template_variables: Mapping[str, object], add_generation_prompt: bool = True) -> list[str]:
    """The prompt text around the slots: ``len(slots) + 1`` pieces."""
    if tokenizer.chat_template is None:
        bos = tokenizer.bos_token if getattr(tokenizer, "add_bos_token", False) else None
        rendered = (bos or "") + "".join(f"{turn['content']}\n\n" for turn in turns)
    else:
        options = {"tokenize": False, "add_generation_prompt": add_generation_prompt,
                   **template_context(template_variables)}
        try:
            rendered = tokenizer.apply_chat_template(turns, **options)
        except jinja2.TemplateError:
            # Some templates (e.g. Gemma's) have no system role: put the instructions in the user turn.
            system = [turn["content"] for turn in turns if turn["role"] == "system"]
            rest = [turn for turn in turns if turn["role"] != "system"]
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": "\n\n".join([*system, rest[0]["content"]])}, *rest[1:]], **options)
    pieces = []
    for slot in slots:
        piece, rendered = rendered.split(slot)
        pieces.append(piece)
    return pieces + [rendered]


def _label_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int], list[int]]:
    """Marker, forced marker and label token ids, found by tokenizing whole responses."""
    # Whole responses, so that marker and labels are split as in context. A word ends the
    # explanation: a full stop would merge with the line break in some tokenizers.
    responses = [tokenizer(format_response("x", label), add_special_tokens=False)["input_ids"] for label in LABELS]
    common = _common_prefix(responses)
    tails = [ids[len(common):] for ids in responses]
    if any(len(tail) != 1 for tail in tails) or [tokenizer.decode(t).strip() for t in tails] != list(map(str, LABELS)):
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise InputError(
            f"The labels {list(LABELS)} are not single tokens after {LABEL_MARKER!r} for the tokenizer "
            f"{name!r} (got {[tokenizer.convert_ids_to_tokens(t) for t in tails]}); "
            "pyterrier_reasonrank needs a tokenizer that writes each label as one token.")

    def spelling(text: str) -> list[int]:
        start = max(j for j in range(len(common)) if text in tokenizer.decode(common[j:]))
        return common[start:]

    return spelling(LABEL_MARKER), spelling("\n" + LABEL_MARKER), [tail[0] for tail in tails]


_THOUGHT = "a think block (<think>) in the response, with thinking switched off"


def _thinks(text: str) -> bool:
    return any(token in text for token in THINK_TOKENS)


def _strip_prefix(text: str, prefix: str) -> str:
    text = text.strip()
    return text[len(prefix):].strip() if text.lower().startswith(prefix.lower()) else text


def _common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    first = sequences[0]
    n = 0
    while n < len(first) and all(len(s) > n and s[n] == first[n] for s in sequences):
        n += 1
    return list(first[:n])


def _check_format_version(version: object) -> None:
    if version not in FORMAT_VERSIONS:
        raise InputError(f"prompt format version {version!r} is not one this library serves: {list(FORMAT_VERSIONS)}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_label(label: int) -> None:
    if label not in LABELS:
        raise ValueError(f"label must be one of {list(LABELS)}, got {label!r}")
