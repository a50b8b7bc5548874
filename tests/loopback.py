"""A JSON-over-HTTP server on 127.0.0.1 for the test doubles of OpenAI-compatible endpoints."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

Reply = tuple[int, "dict | bytes", dict]
"""(status, JSON payload — or the raw bytes of a body, to send a malformed one — extra headers)."""


class LoopbackServer:
    """Serves ``POST`` requests with :meth:`respond` until closed; ``base_url`` ends in ``/v1``.

    Args:
        api_key: The bearer key requests must carry (see :meth:`refuse_key`); ``None``: any.
    """

    def __init__(self, api_key: Optional[str] = None):
        self.api_key = api_key
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload, headers = server.respond(self.path, self.headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def respond(self, path: str, headers, body: dict) -> Reply:
        raise NotImplementedError

    def refuse_key(self, headers) -> Optional[Reply]:
        """A 401 when the request lacks the key. Like OpenAI's own message, it quotes the key it was
        sent (OpenAI masks the middle), so that tests can check it is redacted."""
        sent = headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is None or sent == self.api_key:
            return None
        return 401, {"error": {"message": f"Incorrect API key provided: {sent}.", "type": "invalid_request_error",
                               "code": "invalid_api_key"}}, {}

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
