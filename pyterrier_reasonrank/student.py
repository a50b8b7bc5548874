"""The student: one model (with its adapter, backend, settings and identity), loaded once, handing out transformers.

As a pyterrier_dr model hands out its encoders, a :class:`Student` hands out rankers and a query
generator. Everything it hands out shares its one loaded copy of the weights (or engine, or
server connection), so a cascade's weight sharing is explicit:

.. code-block:: python

    student = Student(adapter="runs/paper-3b/refine")
    pipeline = bm25 >> text >> student.ranker(mode="direct") % 50 >> student.ranker()
    rewrite = student.query_generator()

Two students of the same model load it twice; nothing is shared behind their back. (vLLM's
engines are the exception the engine imposes: one process keeps one engine per model and options
for its life, because vLLM cannot tear an engine down while others run.)
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch

from .backends import BACKENDS, load_local, openai
from .contracts import parameters, signature_repr
from .errors import InputError
from .identity import student_identity
from .loading import DEFAULT_MODEL, resolve_device
from .numeric import non_negative_int, positive_int, switch
from .settings import StudentSettings, serving_settings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .backends import Backend
    from .query_generator import QueryGenerator
    from .ranker import ReasonRanker


class Student:
    """A (trained) model as this library serves it: model, adapter, backend, engine and settings, loaded once.

    The model is loaded on first use (or by :meth:`load`), not on construction.
    """

    def __init__(self, model: Optional[str] = None, *, adapter: Optional[str] = None, backend: str = "transformers",
                 engine_options: Optional[dict] = None, device: Union[str, torch.device, None] = None,
                 dtype: Union[str, torch.dtype, None] = None, base_url: Optional[str] = None,
                 tokenizer: Optional[str] = None, concurrency: int = 32, trust_remote_code: bool = False,
                 prompt_cache_tokens: Optional[int] = None):
        """Check and keep the settings; nothing is loaded yet.

        Args:
            model: Hugging Face Hub id or local directory of a causal LM with a chat template. Default:
                the adapter's base model when ``adapter`` is given, else :data:`DEFAULT_MODEL`. With
                ``backend="openai"``: the name the server serves it under.
            adapter: A PEFT adapter (Hub id or directory), e.g. one made by ``reasonrank-train``.
            backend: ``"transformers"`` (the model runs here, the adapter merged), ``"vllm"`` (vLLM's
                engine runs here: paged attention, continuous batching, prefix caching, the adapter
                applied per request) or ``"openai"``: the model is served by an OpenAI-compatible
                server with vLLM's completions API (``vllm serve <model> --enable-prefix-caching``);
                the key, if the server needs one, comes from ``$OPENAI_API_KEY``.
            engine_options: For ``backend="vllm"``: options of ``vllm.LLM``, e.g.
                ``{"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": 4096}``.
            device: ``"cuda"``, ``"cpu"``, ... Default: CUDA when available.
            dtype: ``torch.dtype`` or its name. Default: bfloat16 on a GPU, float32 on CPU.
            base_url: The server for ``backend="openai"``, e.g. ``"http://localhost:8000/v1"``
                (default: ``$OPENAI_BASE_URL``).
            tokenizer: For ``backend="openai"``: where the model's tokenizer is (default: ``model``);
                the student's settings are read from there too.
            concurrency: For ``backend="openai"``: requests in flight.
            trust_remote_code: Allow the model's own code from its repository to run. Off unless you
                trust the repository.
            prompt_cache_tokens: For ``backend="transformers"``: the most prompt tokens whose keys and
                values are kept, so that a prompt read once serves every judgement of its pair (direct,
                the explanation it is escalated to, the samples, a cascade's next ranker); 0 keeps none.
                Adaptive mode escalates a group of queries at a time, as many as their prompts fit in it.
                Default: 32768 (see :data:`~pyterrier_reasonrank.backends.hf.DEFAULT_PROMPT_CACHE_TOKENS`).
                vLLM's engine and server keep their own prefix caches.

        Raises:
            InputError: An unknown backend, or an option the backend does not take.
        """
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if engine_options and backend != "vllm":
            raise InputError(f"engine_options are options of the vllm backend; the {backend} backend takes none")
        self.model = model
        self.adapter = adapter
        self.backend = backend
        self.engine_options = engine_options
        self.device = device
        if device is not None:
            resolve_device(device)  # an unknown device is refused here, not when the model loads
        self.dtype = dtype
        self.base_url = base_url
        self.tokenizer = tokenizer
        self.concurrency = positive_int("concurrency", concurrency)
        self.trust_remote_code = switch("trust_remote_code", trust_remote_code)
        if prompt_cache_tokens is not None and backend != "transformers":
            raise InputError(f"prompt_cache_tokens is an option of the transformers backend; the {backend} backend "
                             "keeps its own prefix cache")
        self.prompt_cache_tokens = non_negative_int("prompt_cache_tokens", prompt_cache_tokens, optional=True)
        self._engine: Optional[Backend] = None
        self._identity: Optional[dict] = None
        self._loading = threading.Lock()

    @property
    def source(self) -> str:
        """Where the student's settings are read from (and ``reasonrank calibrate`` writes them).

        The adapter, else the model; with ``backend="openai"``, the tokenizer, else the served name.
        """
        if self.backend == "openai":
            return self.tokenizer or self.model or DEFAULT_MODEL
        return self.adapter or self.model or DEFAULT_MODEL

    @property
    def loaded(self) -> bool:
        """Whether the model (engine, or server connection) is loaded."""
        return self._engine is not None

    def load(self) -> Student:
        """Load the model now (it is otherwise loaded on first use) and return this student.

        Raises:
            ModelNotFoundError: The model, adapter or tokenizer could not be found.
        """
        with self._loading:  # rankers of one student in threads load it once
            if self._engine is None:
                if self.backend == "openai":
                    self._engine = openai.load(self.model or DEFAULT_MODEL, tokenizer=self.tokenizer,
                                               base_url=self.base_url, concurrency=self.concurrency,
                                               trust_remote_code=self.trust_remote_code)
                else:
                    self._engine = load_local(self.backend, self.model, adapter=self.adapter, device=self.device,
                                              dtype=self.dtype, engine_options=self.engine_options,
                                              trust_remote_code=self.trust_remote_code,
                                              prompt_cache_tokens=self.prompt_cache_tokens)
        return self

    @property
    def engine(self) -> Backend:
        """The loaded backend that judges and samples (loads the model)."""
        return self.load()._engine

    @property
    def identity(self) -> dict:
        """What identifies its judgements in a judgement store (see :mod:`~pyterrier_reasonrank.identity`)."""
        if self._identity is None:
            self._identity = student_identity(self)
        return self._identity

    def settings(self, tokenizer: PreTrainedTokenizerBase, *, who: str, tasks: Sequence[str],
                 **options: object) -> StudentSettings:
        """The prompt settings to serve the student with: those it was trained with, the options given in place.

        See :func:`~pyterrier_reasonrank.settings.serving_settings`.
        """
        return serving_settings(self.source, tokenizer, who=who, tasks=tasks, **options)

    def ranker(self, **options: Any) -> ReasonRanker:
        """A :class:`~pyterrier_reasonrank.ReasonRanker` judging with this student (its options as keywords)."""
        from .ranker import ReasonRanker

        return ReasonRanker(self, **options)

    def query_generator(self, **options: Any) -> QueryGenerator:
        """A :class:`~pyterrier_reasonrank.QueryGenerator` writing queries with this student."""
        from .query_generator import QueryGenerator

        return QueryGenerator(self, **options)

    def __getstate__(self) -> dict:
        # The loaded model (and an endpoint's client, which holds locks) stays behind: an unpickled
        # student loads it again on first use, so transformers travel to other processes.
        return {**self.__dict__, "_engine": None, "_loading": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _loading=threading.Lock())

    def __repr__(self) -> str:
        return signature_repr(self, {name: getattr(self, name) for name in parameters(Student)})


def student_of(model: Union[str, Student, None], who: str, **options: Any) -> Student:
    """The student a transformer uses: ``model`` itself when it is one, else a new one from the options.

    Raises:
        InputError: ``model`` is a :class:`Student` and a student option that differs from its own is
            given too (it belongs to the student).
    """
    if isinstance(model, Student):
        # Options equal to the student's are no conflict (pt.inspect rebuilds a transformer with all of them).
        given = [name for name, value in options.items()
                 if value != Student.__init__.__kwdefaults__[name] and value != getattr(model, name)]
        if given:
            raise InputError(f"{who}: {', '.join(given)} are the student's options: give them to Student(...), "
                             "not to a transformer built from a Student")
        return model
    if model is not None and not isinstance(model, (str, Path)):
        raise InputError(f"{who}: model must be a Hub id, a directory or a Student, got {type(model).__name__}")
    if isinstance(options.get("adapter"), Student):
        raise InputError(f"{who}: adapter is given a Student; give it as the model ({who}(student, ...), or "
                         "student.ranker(...)) to judge with its loaded weights")
    return Student(None if model is None else str(model), **options)

