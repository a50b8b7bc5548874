"""A server with vLLM's OpenAI-compatible completions API on loopback, backed by a transformers
model, for tests of ReasonRanker's OpenAI backend against the same model run locally.

It implements the part of the protocol the backend uses: ``POST /v1/completions`` with token-id
prompts (one or a batch), greedy decoding, ``stop`` strings with ``include_stop_str_in_output``,
``stop_token_ids`` (the stop token kept in the output, as vLLM does), ``logprobs`` with
``return_tokens_as_token_ids``, and ``allowed_token_ids`` with log-probabilities after that mask
(as ``vllm serve --logprobs-mode processed_logprobs``); OpenAI's response shape, and vLLM's
``stop_reason``. (tests/test_vllm.py runs the real server; this double is for
fault injection.)
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from loopback import LoopbackServer, Reply


class CompletionsServer(LoopbackServer):
    """Serves the model in ``path`` until closed; ``fail_first`` requests get a 503 first. With
    ``api_key``, requests must carry it (``vllm serve --api-key``); a wrong one gets a 401 that
    quotes the key it was sent, as OpenAI's does. A request with a field of ``refused_fields`` gets a
    400 that names it, as a server or proxy answers an argument it does not take."""

    def __init__(self, path: str, *, fail_first: int = 0, api_key: str | None = None,
                 refused_fields: frozenset[str] = frozenset()):
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.fail_first = fail_first
        self.refused_fields = refused_fields
        self.written = 0
        """Tokens generated in all replies."""
        super().__init__(api_key)

    def respond(self, path: str, headers, body: dict) -> Reply:
        refused = self.refuse_key(headers)
        if refused:
            return refused
        with self._lock:  # one request at a time through the model
            self.requests.append(body)
            if len(self.requests) <= self.fail_first:
                return 503, {"error": {"message": "overloaded", "type": "server_error"}}, {"retry-after-ms": "10"}
            unknown = sorted(self.refused_fields & set(body))
            if unknown:
                return 400, {"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}",
                                       "type": "invalid_request_error", "param": None, "code": None}}, {}
            return 200, self.complete(body), {}

    @torch.inference_mode()
    def complete(self, body: dict) -> dict:
        prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
        choices = [self._choice(index, ids, body) for index, ids in enumerate(prompts)]
        # vLLM's usage without --enable-prompt-tokens-details: no count of cached prompt tokens
        read, written = sum(map(len, prompts)), sum(choice.pop("written") for choice in choices)
        self.written += written
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": choices, "usage": {"prompt_tokens": read, "completion_tokens": written,
                                              "total_tokens": read + written}}

    def _choice(self, index: int, prompt: list[int], body: dict) -> dict:
        ids = list(prompt)
        logprobs, top = [], []
        generated: list[int] = []
        finish, stop_reason, text = "length", None, ""
        as_ids = body.get("return_tokens_as_token_ids", False)
        stop_ids = set(body.get("stop_token_ids") or [])
        allowed = body.get("allowed_token_ids")

        def name(token: int) -> str:
            return f"token_id:{token}" if as_ids else self.tokenizer.decode([token])

        for _ in range(body.get("max_tokens", 16)):
            logits = self.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            if allowed is not None:  # processed log-probabilities: after the mask
                logits = torch.full_like(logits, float("-inf")).index_copy(0, torch.tensor(allowed), logits[allowed])
            scores = torch.log_softmax(logits, -1)
            token = int(scores.argmax())
            ids.append(token)
            generated.append(token)
            logprobs.append(float(scores[token]))
            best = torch.topk(scores, body.get("logprobs") or 1)
            top.append({name(int(t)): float(v) for v, t in zip(best.values, best.indices)})
            if token == self.tokenizer.eos_token_id or token in stop_ids:
                finish, stop_reason = "stop", token if token in stop_ids else None
                text = self.tokenizer.decode(generated, skip_special_tokens=body.get("skip_special_tokens", True))
                break
            text = self.tokenizer.decode(generated, skip_special_tokens=body.get("skip_special_tokens", True))
            hit = next((s for s in body.get("stop") or [] if s in text), None)
            if hit is not None:
                text = text[:text.index(hit)] + (hit if body.get("include_stop_str_in_output") else "")
                finish, stop_reason = "stop", hit
                break
        else:
            text = self.tokenizer.decode(generated, skip_special_tokens=body.get("skip_special_tokens", True))
        choice = {"index": index, "text": text, "finish_reason": finish, "stop_reason": stop_reason, "logprobs": None,
                  "written": len(generated)}
        if body.get("logprobs") is not None:
            choice["logprobs"] = {"tokens": [name(t) for t in generated], "token_logprobs": logprobs,
                                  "top_logprobs": top, "text_offset": [0] * len(generated)}
        return choice
