"""What identifies a judgement: the student that made it, the prompt it read, how it was drawn — in one place.

A :class:`~pyterrier_reasonrank.store.JudgementStore` keys each judgement by its *provenance* and
the exact query and document text, so that a change of any of them is a miss, never a stale hit:

- the student (:func:`student_identity`): the model and a fingerprint of its weights, the
  adapter and its fingerprint, the dtype, the backend, and vLLM engine options that may change
  the numbers (quantization, say; not those that set capacity). A served model
  (``backend="openai"``) is known by the name it is served under and its tokenizer: the server's
  weights are not seen from here;
- the prompt (:func:`provenance`): the format version, the mode, the truncation, the chat-template
  variables and the template's hash;
- the draw: the explanation budget, the samples and their temperatures and seeds.

The backend is not part of the provenance of greedy judgements in float32: every backend encodes
the same token ids and ends an explanation by the same rule, and the parity tests
(tests/test_vllm.py) show that they agree (to 1e-3, with identical explanations), so a store
filled by the transformers backend serves vLLM's engine. Sampled explanations depend on the
engine's sampler, and in half precision the engines' kernels round differently (and split
near-ties apart), so for those it is.
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Optional

from .loading import fingerprint, model_source, resolve_device, resolve_dtype
from .prompts import Mode, PromptEncoder, chat_template_sha256

if TYPE_CHECKING:
    from .judging import Sampling
    from .student import Student

CAPACITY_OPTIONS = frozenset({"enable_prefix_caching", "gpu_memory_utilization", "max_model_len", "enforce_eager",
                              "max_num_seqs", "max_num_batched_tokens", "swap_space", "cpu_offload_gb",
                              "disable_log_stats", "max_logprobs", "enable_lora", "max_lora_rank", "max_loras",
                              "block_size"})
"""vLLM engine options that change how much runs at once, or how fast, and not the numbers computed."""


def numeric_engine_options(engine_options: Optional[dict]) -> dict:
    """The engine options that may change the numbers computed (quantization, a key/value cache dtype...).

    A judgement's provenance holds them, and not :data:`CAPACITY_OPTIONS`.
    """
    return {name: value for name, value in sorted((engine_options or {}).items()) if name not in CAPACITY_OPTIONS}


def student_identity(student: Student) -> dict:
    """What identifies a student's judgements: its model and weights, adapter, dtype, backend (and engine options)."""
    if student.backend == "openai":
        return {"model": student.model, "served": True, "tokenizer_fingerprint": fingerprint(student.source),
                "dtype": "server", "backend": student.backend}
    name, revision = model_source(student.model, student.adapter)
    dtype = resolve_dtype(student.dtype, resolve_device(student.device if student.backend == "transformers" else None))
    identity = {"model": name, "model_fingerprint": fingerprint(name, revision), "adapter": student.adapter,
                "adapter_fingerprint": fingerprint(student.adapter) if student.adapter else None, "dtype": str(dtype),
                "backend": student.backend}
    if student.backend == "vllm" and numeric_engine_options(student.engine_options):
        identity["engine"] = numeric_engine_options(student.engine_options)  # quantization...: other numbers
    return identity


def provenance(identity: dict, encoder: PromptEncoder, mode: Mode, sampling: Sampling, max_new_tokens: int) -> dict:
    """What makes a judgement in ``mode``: the student's identity, the prompt settings, the generation settings."""
    draws = [(temperature, seed if temperature > 0 else None) for temperature, seed in sampling.draws()]
    sampled = mode == "explain" and any(temperature > 0 for temperature, _ in draws)
    shared = not sampled and identity.get("dtype") == "torch.float32"  # backends agree: see the module docstring
    fields = {name: value for name, value in identity.items() if name != "backend" or not shared}
    fields.update(format_version=encoder.format_version, mode=mode, max_query_tokens=encoder.max_query_tokens,
                  max_doc_tokens=encoder.max_doc_tokens, template_variables=encoder.template_variables,
                  chat_template_sha256=chat_template_sha256(encoder.tokenizer))
    if mode == "explain":
        fields.update(max_new_tokens=max_new_tokens, samples=sampling.samples, draws=draws)
    return fields


def provenance_id(provenance: dict) -> str:
    """The id of a provenance: the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()


def judgement_key(provenance: str, query: str, document: str) -> str:
    """The key of a judgement: its provenance id and the exact query and document text, hashed.

    Each text is preceded by its length, so that no two (query, document) pairs run together alike.
    """
    digest = hashlib.sha256(provenance.encode())
    for text in (query, document):
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.hexdigest()


def document_sha256(document: str) -> str:
    """The SHA-256 of a document's exact text (as the store records it)."""
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()
