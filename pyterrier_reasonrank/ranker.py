"""ReasonRanker: a generative model that explains, then grades, each retrieved document."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyterrier as pt
import torch

from . import scoring
from .adaptive import Escalation, escalated, reuse_groups
from .backends import Batching
from .contracts import StudentTransformer
from .display import ReasonRankResults
from .errors import InputError
from .judgements import Judgements
from .judging import Judge, Sampling
from .numeric import non_negative_int, positive_int, positive_number, switch
from .prompts import PromptEncoder
from .store import JudgementStore
from .student import Student, student_of
from .validation import as_text, is_blank, require_pairs, require_text

OUTPUT_COLUMNS = ["explanation", "label", "score", "probabilities", "forced", "tokens", "samples", "rank"]
RANKER_MODES = ("explain", "direct", "adaptive")
RankerMode = Literal["explain", "direct", "adaptive"]


def first_stage_columns(columns: Sequence[str]) -> list[tuple[str, str]]:
    """The input's ``score`` and ``rank`` that a ranker keeps as ``first_stage_score``/``first_stage_rank``.

    Those of the earliest stage that had them: a column already kept is not replaced.
    """
    return [(column, f"first_stage_{column}") for column in ("score", "rank")
            if column in columns and f"first_stage_{column}" not in columns]


class ReasonRanker(StudentTransformer):
    """Re-ranks documents by a small generative model's graded, explained relevance judgement.

    For each (query, document) pair the model writes a short explanation, then a label
    (0 irrelevant, 1 partially relevant, 2 relevant). The score is the expected label
    ``sum_l l * p(l)`` read from the label-token probabilities after the explanation, in ``[0, 2]``.

    .. code-block:: python

        bm25 = pyterrier_pisa.PisaIndex("index").bm25(num_results=20)
        pipeline = bm25 >> pt.text.get_text(dataset, "text") >> ReasonRanker()

    The model is loaded on first use, not on construction. It prints as its constructor call (every
    setting that is not the default); :meth:`display_name` is the short name for a results table.
    """

    def __init__(self, model: Union[str, Student, None] = None, *, adapter: Optional[str] = None,
                 mode: RankerMode = "explain",
                 samples: int = 1, temperature: float = 0.7, greedy_first: bool = True, seed: int = 0,
                 escalation: Optional[Escalation] = None, store: Union[JudgementStore, str, Path, None] = None,
                 label_temperature: Optional[float] = None, batch_size: int = 16, max_new_tokens: int = 128,
                 max_query_tokens: Optional[int] = None, max_doc_tokens: Optional[int] = None,
                 text_field: str = "text", max_batch_tokens: Optional[int] = 65536, prefix_reuse: bool = True,
                 device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None,
                 backend: str = "transformers", engine_options: Optional[dict] = None,
                 base_url: Optional[str] = None, tokenizer: Optional[str] = None, concurrency: int = 32,
                 verbose: bool = False, trust_remote_code: bool = False):
        """Check and store the settings; the model (or the endpoint's tokenizer) is loaded on first use.

        Args:
            model: A :class:`~pyterrier_reasonrank.student.Student` (whose other transformers share its
                loaded weights), or a Hugging Face Hub id or local directory of a causal LM with a chat
                template. Default: the adapter's base model when ``adapter`` is given, else
                :data:`DEFAULT_MODEL`. The options from ``adapter`` to ``trust_remote_code`` that are
                also a student's (``backend``, ``device``...) are given to the Student instead when
                ``model`` is one.
            adapter: A PEFT adapter (Hub id or directory), e.g. one made by ``reasonrank-train``.
            mode: ``"explain"`` (explanation, then label), ``"direct"`` (label only: one forward pass,
                no generation; faster, for a first cut in a cascade) or ``"adaptive"`` (direct mode
                for every pair, explanations only where ``escalation`` says they matter).
            samples: Explanations per pair (explain and adaptive modes); their label distributions
                are averaged (self-consistency). 1: one explanation (greedy, unless ``greedy_first``
                is off).
            temperature: The temperature of sampled explanations.
            greedy_first: With ``samples`` > 1, the first explanation is the greedy one (the one shown),
                the others sampled; off, all are sampled.
            seed: The seed of the first sampled explanation (each next one adds 1).
            escalation: Adaptive mode's policy (see :class:`~pyterrier_reasonrank.adaptive.Escalation`).
            store: A :class:`~pyterrier_reasonrank.store.JudgementStore` (or its file): pairs judged
                before with the same provenance are read from it, the others judged and added (not
                added, with a warning, when the store is read-only).
            label_temperature: Divides the label logits before the score is read (calibration), in
                every mode; with ``samples`` > 1, those of the averaged distribution. Default: the
                student's for the mode that judged the pair (``reasonrank calibrate``), else 1.
            batch_size: Number of pairs judged at once, across queries.
            max_new_tokens: Explanation budget in tokens. A model that has not written the label marker
                by then gets it appended, and the row is marked ``forced``.
            max_query_tokens: The query is cut to this many tokens. Default: what the student was
                trained with (its ``reasonrank_config.json``), else 512.
            max_doc_tokens: The document is cut to this many tokens; instructions and the response
                marker are never cut. Default: what the student was trained with, else 1024. A value
                that differs from training is used, with a warning.
            text_field: The input column holding the document text.
            max_batch_tokens: Most tokens in a batch, counted as pairs x (longest prompt + explanation
                budget), so that long documents make smaller batches. ``None``: only ``batch_size`` limits.
            prefix_reuse: Compute the prompt prefix that the documents of a query share (instructions
                and query) once per batch rather than once per document. Scores are the same either way.
            device: ``"cuda"``, ``"cpu"``, ... Default: CUDA when available.
            dtype: ``torch.dtype`` or its name. Default: bfloat16 on a GPU, float32 on CPU.
            backend: ``"transformers"`` (the model runs here, the adapter merged), ``"vllm"`` (vLLM's
                engine runs here: paged attention, continuous batching, prefix caching, the adapter
                applied per request) or ``"openai"``: the model is served by an OpenAI-compatible
                server with vLLM's completions API (``vllm serve <model> --enable-prefix-caching``);
                ``model`` is then the name it is served under, and the key, if the server needs one,
                comes from ``$OPENAI_API_KEY``. Every backend follows the same rule for where an
                explanation ends, so their judgements agree.
            engine_options: For ``backend="vllm"``: options of ``vllm.LLM``, e.g.
                ``{"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": 4096,
                "enforce_eager": True}``.
            base_url: The server for ``backend="openai"``, e.g. ``"http://localhost:8000/v1"``
                (default: ``$OPENAI_BASE_URL``).
            tokenizer: For ``backend="openai"``: where the model's tokenizer is (default: ``model``).
            concurrency: For ``backend="openai"``: pairs in flight.
            verbose: Show a progress bar.
            trust_remote_code: Allow the model's own code from its repository to run. Off unless you
                trust the repository.

        Raises:
            InputError: An unknown mode or backend, or a number out of its range (a size that is not
                a positive integer, a temperature that is not finite and above 0...), named.
        """
        if mode not in RANKER_MODES:
            raise InputError(f"mode must be one of {RANKER_MODES}, got {mode!r}")
        student = student_of(model, "ReasonRanker", adapter=adapter, backend=backend, engine_options=engine_options,
                             device=device, dtype=dtype, base_url=base_url, tokenizer=tokenizer,
                             concurrency=concurrency, trust_remote_code=trust_remote_code)
        if escalation is not None and not isinstance(escalation, Escalation):
            raise InputError(f"escalation must be an Escalation (or None), got {escalation!r}")
        samples = positive_int("samples", samples)
        batch_size = positive_int("batch_size", batch_size)
        max_new_tokens = positive_int("max_new_tokens", max_new_tokens)
        # None: the student's truncation; no limit on a batch's tokens.
        max_query_tokens = positive_int("max_query_tokens", max_query_tokens, optional=True)
        max_doc_tokens = positive_int("max_doc_tokens", max_doc_tokens, optional=True)
        max_batch_tokens = positive_int("max_batch_tokens", max_batch_tokens, optional=True)
        temperature = positive_number("temperature", temperature)
        label_temperature = positive_number("label_temperature", label_temperature, optional=True)
        seed = non_negative_int("seed", seed)
        greedy_first, prefix_reuse, verbose = (switch(name, value) for name, value in (
            ("greedy_first", greedy_first), ("prefix_reuse", prefix_reuse), ("verbose", verbose)))
        _warn_of_unused(mode, {"samples": samples, "temperature": temperature, "greedy_first": greedy_first,
                               "seed": seed, "escalation": escalation})
        self.model = model
        self.adapter = adapter
        self.mode = mode
        self.samples = samples
        self.temperature = temperature
        self.greedy_first = greedy_first
        self.seed = seed
        self.escalation = escalation
        self.store = store
        self.label_temperature = label_temperature
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_query_tokens = max_query_tokens
        self.max_doc_tokens = max_doc_tokens
        self.text_field = text_field
        self.max_batch_tokens = max_batch_tokens
        self.prefix_reuse = prefix_reuse
        self.device = device
        self.dtype = dtype
        self.backend = backend
        self.engine_options = engine_options
        self.base_url = base_url
        self.tokenizer = tokenizer
        self.concurrency = concurrency
        self.verbose = verbose
        self.trust_remote_code = switch("trust_remote_code", trust_remote_code)
        self._student = student
        self._judge: Optional[Judge] = None

    def load(self) -> "ReasonRanker":
        """Load the model now (it is otherwise loaded on first use) and return this ranker.

        The prompt settings (truncation, chat-template variables) and the label temperature are
        those the student was trained and calibrated with (its ``reasonrank_config.json``), the
        options given in place.

        Raises:
            ModelNotFoundError: The model or adapter could not be found.
            InputError: The tokenizer does not write each label as a single token, or the student was
                trained with a prompt format this library does not know.
            StoreError: The store is not a judgement store this version can use (see
                :class:`~pyterrier_reasonrank.store.JudgementStore`).
        """
        if self._judge is None:
            # The store first: a file that is no store is refused before the model loads.
            store = self.store if self.store is None or isinstance(self.store, JudgementStore) \
                else JudgementStore(self.store)
            engine = self._student.engine
            modes = ("direct", "explain") if self.mode == "adaptive" else (self.mode,)
            settings = self._student.settings(engine.tokenizer, who="ReasonRanker", tasks=modes,
                                              max_query_tokens=self.max_query_tokens,
                                              max_doc_tokens=self.max_doc_tokens)
            self._label_temperatures = self._temperatures(settings.label_temperature, modes)
            self._judge = Judge(engine, {mode: settings.encoder(engine.tokenizer, mode) for mode in modes},
                                max_new_tokens=self.max_new_tokens,
                                batching=Batching(self.batch_size, self.max_batch_tokens, self.prefix_reuse),
                                store=store, identity=self._student.identity if store is not None else None)
        return self

    def _temperatures(self, calibrated: dict, modes: Sequence[str]) -> dict[str, float]:
        """The label temperature of each mode: the one given, else the student's calibration."""
        if self.label_temperature is None:
            return {mode: calibrated.get(mode, 1.0) for mode in modes}
        differing = {mode: calibrated[mode] for mode in modes
                     if calibrated.get(mode, self.label_temperature) != self.label_temperature}
        if differing:
            warnings.warn(f"ReasonRanker: the student was calibrated with label_temperature {differing}; serving it "
                          f"with label_temperature={self.label_temperature} as asked", stacklevel=3)
        return dict.fromkeys(modes, self.label_temperature)

    def _tempered(self, judged: Judgements) -> np.ndarray:
        """The label distributions with the temperature of the mode that judged each pair."""
        temperatures = [self._label_temperatures.get(mode, 1.0) for mode in judged.modes]
        return scoring.tempered(judged.probabilities, np.asarray(temperatures, dtype=np.float64))

    @property
    def student(self) -> Student:
        """The :class:`~pyterrier_reasonrank.student.Student` this ranker judges with.

        That is ``model`` when it is one, else the one made from the options. The student's other
        rankers share its loaded weights: ``ranker.student.ranker(mode="direct")``.
        """
        return self._student

    @property
    def encoder(self) -> PromptEncoder:
        """The prompt encoder the ranker judges with (explain mode's in adaptive mode); loads the model.

        It is what the model is fed, token for token: ``ranker.encoder.encode(query, document)``.
        """
        return self.load()._judge.encoders["direct" if self.mode == "direct" else "explain"]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Score and rank the documents of each query.

        Args:
            inp: A result frame with ``qid``, ``query``, ``docno`` and the text field.

        Returns:
            The input columns (a previous score and rank replaced, the first stage's kept as
            ``first_stage_score`` and ``first_stage_rank``) plus ``explanation``, ``label``, ``score``,
            ``probabilities`` (of the labels 0, 1, 2), ``forced``, ``tokens`` (decoded for the pair:
            explanations and markers), ``samples`` (explanations drawn) and ``rank``, sorted by qid,
            then rank. Ties keep the input order. The
            frame is a :class:`~pyterrier_reasonrank.display.ReasonRankResults`: a DataFrame that
            Jupyter shows as a readable list of explanations per query.

        Raises:
            pyterrier.validate.InputValidationError: A column is missing (it is named).
            ValueError: A query is missing or empty, or one qid has two query texts (the qids are named).
        """
        pt.validate.result_frame(inp, extra_columns=["query", self.text_field])
        # A previous stage's judgement (score, rank, or a whole ReasonRanker's output) is replaced; the
        # first stage's score and rank stay as first_stage_score and first_stage_rank (kept from the
        # earliest stage that had them), so that a report can say where each document came from.
        frame = inp.drop(columns=OUTPUT_COLUMNS, errors="ignore")
        for column, kept in first_stage_columns(inp.columns):
            frame[kept] = inp[column]
        frame = frame.reset_index(drop=True)
        if len(frame) == 0:
            empty = frame.assign(explanation=pd.Series(dtype=object), label=pd.Series(dtype="int64"),
                                 score=pd.Series(dtype="float64"), probabilities=pd.Series(dtype=object),
                                 forced=pd.Series(dtype=bool), tokens=pd.Series(dtype="int64"),
                                 samples=pd.Series(dtype="int64"))
            return ReasonRankResults(pt.model.add_ranks(empty))
        require_pairs(frame, who="ReasonRanker")
        require_text(frame, "query", who="ReasonRanker", what="query")
        texts_per_qid = frame.groupby(frame["qid"].astype(str), sort=False)["query"].nunique()
        if (texts_per_qid > 1).any():
            qids = texts_per_qid.index[texts_per_qid > 1].tolist()
            raise ValueError(f"ReasonRanker: qid(s) {qids[:10]} have more than one query text; each qid's documents "
                             "are ranked against one query, so give each query its own qid")
        blank_text = is_blank(frame[self.text_field])
        if blank_text.any():
            warnings.warn(f"ReasonRanker: {int(blank_text.sum())} of {len(frame)} documents have no text (NaN, None "
                          f"or empty) in column {self.text_field!r} and are judged as empty documents; load the "
                          "text first, e.g. with pt.text.get_text(dataset, 'text').", stacklevel=2)
        self.load()
        documents = np.array(as_text(frame[self.text_field]), dtype=object)
        documents[blank_text.to_numpy()] = ""
        judged = self._judged(np.array(as_text(frame["query"]), dtype=object), documents, frame)
        probabilities = self._tempered(judged)
        frame = frame.assign(explanation=judged.explanations.tolist(),
                             label=scoring.most_probable_label(probabilities),
                             score=scoring.expected_label(probabilities), probabilities=list(map(tuple, probabilities)),
                             forced=judged.forced, tokens=judged.tokens, samples=judged.samples)
        # add_ranks breaks ties by frame order, which is still the input order here.
        frame = pt.model.add_ranks(frame)
        return ReasonRankResults(frame.sort_values(["qid", "rank"], kind="stable", ignore_index=True))

    def _judged(self, queries: np.ndarray, documents: np.ndarray, frame: pd.DataFrame) -> Judgements:
        """The judgements of the pairs in this ranker's mode; adaptive mode escalates some to explanations."""
        sampling = Sampling(self.samples, self.temperature, self.greedy_first, self.seed)
        qids, docnos = frame["qid"].to_numpy(dtype=object), frame["docno"].to_numpy(dtype=object)
        first = "direct" if self.mode == "adaptive" else self.mode
        with pt.tqdm(total=len(queries), desc=self.display_name(), unit="doc", disable=not self.verbose) as progress:
            if self.mode != "adaptive":
                return self._judge.judge(queries, documents, mode=first, sampling=sampling, progress=progress,
                                         qids=qids, docnos=docnos)
            escalation = self.escalation or Escalation()
            # A pair's explanations at their longest: each its budget, then the marker appended.
            cost = self.samples * (self.max_new_tokens + len(self._judge.encoders["explain"].forced_marker_ids))
            if escalation.token_budget is not None and escalation.token_budget < cost:
                raise InputError(f"ReasonRanker: Escalation(token_budget={escalation.token_budget}) is less than one "
                                 f"pair's explanations at their longest ({cost} tokens: samples x (max_new_tokens + "
                                 "the marker)), so no pair would be explained; raise the budget or lower "
                                 "max_new_tokens")
            judged = Judgements.empty(len(queries))
            for rows in self._reuse_groups(queries, documents, qids):
                group = self._judge.judge(queries[rows], documents[rows], mode="direct", sampling=sampling,
                                          progress=progress, qids=qids[rows], docnos=docnos[rows])
                chosen = np.flatnonzero(escalated(qids[rows], self._tempered(group), escalation, cost))
                picked = rows[chosen]
                with pt.tqdm(total=len(chosen), desc=f"{self.display_name()}: explaining", unit="doc",
                             disable=not self.verbose) as explaining:
                    group.put(chosen, self._judge.judge(queries[picked], documents[picked], mode="explain",
                                                        sampling=sampling, progress=explaining, qids=qids[picked],
                                                        docnos=docnos[picked]))
                judged.put(rows, group)
            return judged

    def _reuse_groups(self, queries: np.ndarray, documents: np.ndarray, qids: np.ndarray) -> list[np.ndarray]:
        """Adaptive mode's groups of whole queries: their prompts fit in what the backend keeps for reuse.

        Only where an explanation can continue from a direct judgement's prompt (the modes share it,
        prompt format 2), the backend says how much it keeps, and the frame's prompts may outgrow it
        (they are tokenized once more to count them); else one group, so that all escalated pairs
        decode together.
        """
        direct, explain = self._judge.encoders["direct"], self._judge.encoders["explain"]
        capacity = self._judge.engine.reusable_prompt_tokens if direct.shares_prompt_with(explain) else None
        if not capacity or len(queries) * direct.most_tokens <= capacity:  # all fit, however long: not tokenized
            return reuse_groups(qids, [], None)
        return reuse_groups(qids, [len(prefix) + len(suffix) for prefix, suffix in direct.prompts(queries, documents)],
                            capacity)

    def __getstate__(self) -> dict:
        # The loaded model (and an endpoint's client, which holds locks) stays behind: an unpickled
        # ranker loads it again on first use, so rankers travel to other processes (pt.parallel, joblib).
        return {**self.__dict__, "_judge": None}

    def display_name(self, depth: Optional[int] = None) -> str:
        """A short name for results tables and progress bars: mode, re-ranking depth (when given) and student.

        ``"ReasonRank explain, top 10 (refine)"``. Unlike ``repr``, it leaves most settings out, so
        name systems that differ only in those by their repr (``pt.Experiment`` does, without ``names``).
        """
        return self._named(f"ReasonRank {self.mode}", depth)

    def transform_outputs(self, input_columns: list[str]) -> list[str]:
        """The output columns for these input columns, without loading the model (``pt.inspect``)."""
        pt.validate.result_frame(input_columns, extra_columns=["query", self.text_field])
        return [column for column in input_columns if column not in OUTPUT_COLUMNS] + \
            [kept for _, kept in first_stage_columns(input_columns)] + OUTPUT_COLUMNS

    def schematic(self, *, input_columns: Optional[list[str]] = None) -> dict[str, Any]:
        """How PyTerrier draws this ranker in a pipeline: labelled with its mode, with no help link."""
        # help_url given, so that drawing a pipeline does not look the class up online.
        return {"label": f"ReasonRank {self.mode}", "help_url": None}


SAMPLING_OPTIONS = ("samples", "temperature", "greedy_first", "seed")
"""How a ranker draws explanations: unused in direct mode, which writes none."""


def _warn_of_unused(mode: str, given: dict[str, Any]) -> None:
    """Warn of options given other than their default that the mode does not use.

    They change how the ranker prints, not what it judges (as transformers' ``generate`` warns of
    sampling settings without sampling). The explanation budget, shared by a pipeline's rankers, is
    not warned of.
    """
    defaults = ReasonRanker.__init__.__kwdefaults__
    unused = [name for name in (SAMPLING_OPTIONS if mode == "direct" else ()) if given[name] != defaults[name]]
    if mode != "adaptive" and given["escalation"] is not None:
        unused.append("escalation")
    if unused:
        warnings.warn(f"ReasonRanker: {', '.join(f'{name}={given[name]!r}' for name in unused)} "
                      f"{'has' if len(unused) == 1 else 'have'} no effect in {mode} mode, only on how the ranker "
                      "prints (pt.Experiment names systems so)", stacklevel=3)
