"""An OpenAI-compatible chat-completions server on loopback, for tests of the HTTP teacher.

It speaks the real wire protocol (``POST /v1/chat/completions`` with a bearer key, OpenAI's JSON
response and error shapes, ``retry-after-ms`` on 429), so the real ``openai`` client talks to it.
What it answers is up to the test: a function from the request's messages to the reply text.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class OpenAICompatibleServer:
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
        self.answer, self.api_key = answer, api_key
        self.fail_first, self.fail_status, self.fail_after = fail_first, fail_status, fail_after
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    count = len(server.requests)
                if self.path != "/v1/chat/completions":
                    return self._reply(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    # Like OpenAI's own message, it quotes the key it was sent (OpenAI masks the middle).
                    sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    return self._reply(401, {"error": {"message": f"Incorrect API key provided: {sent}.",
                                                       "type": "invalid_request_error", "code": "invalid_api_key"}})
                if count <= server.fail_first or (server.fail_after is not None and count > server.fail_after):
                    return self._reply(server.fail_status, {"error": {"message": "try again", "type": "rate_limit"}},
                                       {"retry-after-ms": "10"})
                text = server.answer(body["messages"])
                self._reply(200, {
                    "id": f"chatcmpl-{count}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

            def _reply(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "OpenAICompatibleServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
