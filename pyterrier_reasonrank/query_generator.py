"""QueryGenerator: the student's second task, a long question turned into search queries."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import pandas as pd
import pyterrier as pt
import torch

from .backends import LOCAL_BACKENDS
from .contracts import StudentTransformer
from .errors import InputError
from .numeric import positive_int, switch
from .prompts import QUERIES_PREFIX, QueryPromptEncoder, parse_queries
from .student import Student, student_of
from .validation import as_text, require_text

COMBINATIONS = ("join", "question+join")


class QueryGenerator(StudentTransformer):
    r"""Rewrites each query (a long question) into the search queries the model writes for it.

    It follows PyTerrier's query-rewriting convention: the original query moves to ``query_0``
    and ``query`` holds the rewrite, so a first stage retrieves with the generated queries and
    ``pt.rewrite.reset()`` brings the question back for a re-ranker:

    .. code-block:: python

        student = Student(adapter="runs/paper-3b/refine")   # one copy of the weights for both
        pipeline = student.query_generator() >> bm25 >> pt.rewrite.reset() \
            >> pt.text.get_text(dataset, "text") >> student.ranker()

    The output keeps every input column, moves the question to ``query_0``, and adds
    ``generated_queries`` (the list the model wrote). A question for which the model writes no
    query keeps the question as its query, with a warning.
    """

    def __init__(self, model: Union[str, Student, None] = None, *, adapter: Optional[str] = None, combine: str = "join",
                 max_new_tokens: int = 128, max_question_tokens: Optional[int] = None, batch_size: int = 8,
                 device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None,
                 backend: str = "transformers", engine_options: Optional[dict] = None, verbose: bool = False,
                 trust_remote_code: bool = False):
        """Check and store the settings; the model is loaded when queries are rewritten, not here.

        Args:
            model: A :class:`~pyterrier_reasonrank.student.Student` (whose other transformers share its
                loaded weights; any backend, an OpenAI-compatible server too), or a Hub id or local
                directory. Default: the adapter's base model, or :data:`~pyterrier_reasonrank.DEFAULT_MODEL`.
                With a Student, its options (``adapter``, ``backend``...) are not given here.
            adapter: A PEFT adapter trained on query generation (``reasonrank-train distill`` with a
                ``query_generation_file``).
            combine: How the generated queries become the new ``query``: ``"join"`` (all of them,
                joined into one bag-of-words query) or ``"question+join"`` (the question, then them).
            max_new_tokens: Budget for the list of queries.
            max_question_tokens: The question is cut to this many tokens. Default: what the student
                was trained with (its ``reasonrank_config.json``), else 1024.
            batch_size: Questions generated for at once.
            device: ``"cuda"``, ``"cpu"``, ... Default: CUDA when available.
            dtype: ``torch.dtype`` or its name. Default: bfloat16 on a GPU, float32 on CPU.
            backend: ``"transformers"`` or ``"vllm"`` (vLLM's engine, shared with rankers of the same model).
            engine_options: For ``backend="vllm"``: options of ``vllm.LLM``.
            verbose: Show a progress bar.
            trust_remote_code: Allow the model's own code from its repository to run.

        Raises:
            InputError: An unknown ``combine`` or ``backend``, or a size that is not a positive integer.
        """
        if combine not in COMBINATIONS:
            raise InputError(f"combine must be one of {COMBINATIONS}, got {combine!r}")
        if backend not in LOCAL_BACKENDS:  # a served student comes as a Student, with its server's address
            raise InputError(f"backend must be one of {LOCAL_BACKENDS}, got {backend!r}")
        student = student_of(model, "QueryGenerator", adapter=adapter, backend=backend, engine_options=engine_options,
                             device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        self.model = model
        self.adapter = adapter
        self.combine = combine
        self.max_new_tokens = positive_int("max_new_tokens", max_new_tokens)
        self.max_question_tokens = positive_int("max_question_tokens", max_question_tokens, optional=True)
        self.batch_size = positive_int("batch_size", batch_size)
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.engine_options = engine_options
        self.verbose = switch("verbose", verbose)
        self.trust_remote_code = switch("trust_remote_code", trust_remote_code)
        self._student = student
        self._encoder: Optional[QueryPromptEncoder] = None

    def load(self) -> "QueryGenerator":
        """Load the model now (it is otherwise loaded on first use) and return this generator.

        The prompt settings are those the student was trained with, ``max_question_tokens`` in place
        when given.

        Raises:
            ModelNotFoundError: The model or adapter could not be found.
        """
        if self._encoder is None:
            tokenizer = self._student.engine.tokenizer
            settings = self._student.settings(tokenizer, who="QueryGenerator", tasks=["queries"],
                                              max_question_tokens=self.max_question_tokens)
            self._encoder = settings.query_encoder(tokenizer)
        return self

    @property
    def student(self) -> Student:
        """The :class:`~pyterrier_reasonrank.student.Student` this generator writes with (``model``, or one made)."""
        return self._student

    def __getstate__(self) -> dict:
        # Without the loaded model: an unpickled generator loads it again on first use.
        return {**self.__dict__, "_encoder": None}

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Rewrite the queries of a query frame (``qid``, ``query``)."""
        pt.validate.query_frame(inp, extra_columns=["query"])
        frame = pt.model.push_queries(inp.reset_index(drop=True))
        if len(frame) == 0:
            return frame.assign(query=pd.Series(dtype=object), generated_queries=pd.Series(dtype=object))
        require_text(frame, "query_0", who="QueryGenerator", what="question")
        questions = as_text(frame["query_0"])
        self.load()
        completions = self._student.engine.sample([self._encoder.encode(q) for q in questions], temperature=0.0,
                                                  max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                                  verbose=self.verbose)
        generated = [parse_queries(QUERIES_PREFIX + c[0].text).queries for c in completions]
        empty = [str(qid) for qid, queries in zip(frame["qid"], generated) if not queries]
        if empty:
            warnings.warn(f"QueryGenerator: the model wrote no search query for qid(s) {empty[:10]}"
                          f"{' ...' if len(empty) > 10 else ''}; their question is used as the query.", stacklevel=2)
        frame["query"] = [self._combined(q, g) for q, g in zip(questions, generated)]
        frame["generated_queries"] = generated
        return frame

    def _combined(self, question: str, queries: list[str]) -> str:
        if not queries:
            return question
        joined = " ".join(queries)
        return joined if self.combine == "join" else f"{question} {joined}"

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """The output columns for these input columns, without loading the model (``pt.inspect``)."""
        pt.validate.query_frame(input_columns, extra_columns=["query"])
        pushed = list(pt.model.push_queries(pd.DataFrame(columns=input_columns)).columns)
        return pushed + [column for column in ("query", "generated_queries") if column not in pushed]

    def schematic(self, *, input_columns: Optional[list[str]] = None) -> dict[str, Any]:
        """How PyTerrier draws this stage in a pipeline: a plain label, with no help link."""
        # help_url given, so that drawing a pipeline does not look the class up online.
        return {"label": "QueryGenerator", "help_url": None}
