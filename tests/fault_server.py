"""A scripted HTTP server that stands where api.stripe.com would: 5xx, 429, slow answers.

Used only for faults no real part can produce on demand; it records every request it got.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self):
        self.script: list[tuple[int, dict, dict, float]] = []
        self.requests: list[dict] = []
        self.default = (200, {}, {}, 0.0)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers), "body": body})
                status, headers, payload, delay = (
                    server.script.pop(0) if server.script else server.default)
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def then(self, status: int, payload: dict | None = None, *, headers: dict | None = None,
             delay: float = 0.0) -> FaultServer:
        self.script.append((status, headers or {}, payload or {}, delay))
        return self

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()
