"""A server with vLLM's OpenAI-compatible completions API on loopback, backed by a transformers
model, for tests of ReasonRanker's OpenAI backend against the same model run locally.

It implements the part of the protocol the backend uses: ``POST /v1/completions`` with token-id
prompts (one or a batch), greedy decoding, ``stop`` strings with ``include_stop_str_in_output``,
``logprobs`` with ``return_tokens_as_token_ids``, and ``echo`` with the prompt's log-probabilities;
OpenAI's response shape, and vLLM's ``stop_reason``.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from loopback import LoopbackServer, Reply


class CompletionsServer(LoopbackServer):
    """Serves the model in ``path`` until closed; ``fail_first`` requests get a 503 first. With
    ``api_key``, requests must carry it (``vllm serve --api-key``); a wrong one gets a 401 that
    quotes the key it was sent, as OpenAI's does."""

    def __init__(self, path: str, *, fail_first: int = 0, api_key: str | None = None):
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.fail_first = fail_first
        super().__init__(api_key)

    def respond(self, path: str, headers, body: dict) -> Reply:
        refused = self.refuse_key(headers)
        if refused:
            return refused
        with self._lock:  # one request at a time through the model
            self.requests.append(body)
            if len(self.requests) <= self.fail_first:
                return 503, {"error": {"message": "overloaded", "type": "server_error"}}, {"retry-after-ms": "10"}
            return 200, self.complete(body), {}

    @torch.inference_mode()
    def complete(self, body: dict) -> dict:
        prompts = body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]
        choices = [self._choice(index, ids, body) for index, ids in enumerate(prompts)]
        return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": choices, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}

    def _choice(self, index: int, prompt: list[int], body: dict) -> dict:
        ids = list(prompt)
        logprobs = []
        generated: list[int] = []
        finish, stop_reason, text = "length", None, ""
        as_ids = body.get("return_tokens_as_token_ids", False)
        for _ in range(body.get("max_tokens", 16)):
            scores = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
            token = int(scores.argmax())
            ids.append(token)
            generated.append(token)
            logprobs.append(float(scores[token]))
            if token == self.tokenizer.eos_token_id:
                finish = "stop"
                break
            text = self.tokenizer.decode(generated, skip_special_tokens=body.get("skip_special_tokens", True))
            hit = next((s for s in body.get("stop") or [] if s in text), None)
            if hit is not None:
                text = text[:text.index(hit)] + (hit if body.get("include_stop_str_in_output") else "")
                finish, stop_reason = "stop", hit
                break
        else:
            text = self.tokenizer.decode(generated, skip_special_tokens=body.get("skip_special_tokens", True))
        tokens = [f"token_id:{t}" if as_ids else self.tokenizer.decode([t]) for t in generated]
        if body.get("echo"):
            scores = torch.log_softmax(self.model(input_ids=torch.tensor([prompt])).logits[0].float(), -1)
            prompt_logprobs = [None] + [float(scores[j - 1, prompt[j]]) for j in range(1, len(prompt))]
            tokens = [f"token_id:{t}" if as_ids else self.tokenizer.decode([t]) for t in prompt] + tokens
            logprobs = prompt_logprobs + logprobs
            text = self.tokenizer.decode(prompt) + text
        choice = {"index": index, "text": text, "finish_reason": finish, "stop_reason": stop_reason, "logprobs": None}
        if body.get("logprobs") is not None:
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None,
                                  "text_offset": [0] * len(tokens)}
        return choice
