"""An OpenAI-compatible chat-completions server on loopback, for tests of the HTTP teacher.

It speaks the real wire protocol (``POST /v1/chat/completions`` with a bearer key, OpenAI's JSON
response and error shapes, ``retry-after-ms`` on 429), so the real ``openai`` client talks to it.
What it answers is up to the test: a function from the request's messages to the reply text.
"""
from __future__ import annotations

from typing import Callable

from loopback import LoopbackServer, Reply


class OpenAICompatibleServer(LoopbackServer):
    """Serves ``answer(messages) -> str`` until closed.

    Args:
        answer: The reply text for a request's messages.
        api_key: The bearer key requests must carry (401 otherwise).
        fail_first: The first N requests get ``fail_status`` (429: rate limited).
        fail_status: Status of those failures.
        fail_after: Every request after the first N gets ``fail_status`` (a server going down).
    """

    def __init__(self, answer: Callable[[list[dict]], str], *, api_key: str = "test-key", fail_first: int = 0,
                 fail_status: int = 429, fail_after: int | None = None):
        self.answer = answer
        self.fail_first, self.fail_status, self.fail_after = fail_first, fail_status, fail_after
        super().__init__(api_key)

    def respond(self, path: str, headers, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            count = len(self.requests)
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}, {}
        refused = self.refuse_key(headers)
        if refused:
            return refused
        if count <= self.fail_first or (self.fail_after is not None and count > self.fail_after):
            return self.fail_status, {"error": {"message": "try again", "type": "rate_limit"}}, {"retry-after-ms": "10"}
        text = self.answer(body["messages"])
        return 200, {
            "id": f"chatcmpl-{count}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}, {}
