"""An HTTP proxy in front of the fake Stripe that the test can make fail the way Stripe does:
answer 500 (Stripe's api_error shape), 429 (rate limited), or too slowly for the app's timeout.
Between faults every request goes through to the real fake unchanged."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from tests.testlib import free_port

ERRORS = {500: {"type": "api_error", "message": "An unknown error occurred"},
          429: {"type": "invalid_request_error", "code": "rate_limit",
                "message": "Request rate limit exceeded."}}


class StripeFaults:
    def __init__(self, upstream: str):
        self.upstream = upstream
        self.mode: int | float | None = None  # 500, 429, or seconds to stall
        self.faulted = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                mode = proxy.mode
                if isinstance(mode, float):
                    proxy.faulted += 1
                    time.sleep(mode)  # past the app's timeout: it has given up by now
                elif mode in ERRORS:
                    proxy.faulted += 1
                    return self._send(mode, {"error": ERRORS[mode]})
                answer = requests.request(self.command, proxy.upstream + self.path, data=body,
                                          headers={k: v for k, v in self.headers.items()
                                                   if k.lower() != "host"}, timeout=30)
                self._send(answer.status_code, answer.content, answer.headers)

            def _send(self, status, payload, headers=None):
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in (headers or {"Content-Type": "application/json"}).items():
                        if key.lower() not in ("content-length", "transfer-encoding",
                                               "connection", "content-encoding"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the app timed out and hung up

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
