"""A stand-in for the parts of Stripe localstripe lacks, for the browser tests: Checkout Sessions
(recorded response shape), a hosted checkout page, and Stripe.js for the Payment Element. Every
other /v1 request is forwarded to localstripe unchanged, so customers and SetupIntents stay real.

    with StripeFront(localstripe_url) as front:
        app = make_app(STRIPE_API_BASE=front.url, STRIPE_JS_URL=front.js_url, ...)
"""

from __future__ import annotations

import copy
import html
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import requests

HERE = Path(__file__).resolve().parent
SESSION_TEMPLATE = HERE.parent / "data" / "stripe" / "checkout_session.json"
STRIPE_JS = HERE / "stripe_v3.js"
FORWARDED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "Stripe-Version",
                     "Origin", "Accept")
RETURNED_HEADERS = ("Content-Type", "Access-Control-Allow-Origin",
                    "Access-Control-Allow-Headers", "Access-Control-Allow-Methods")
_KEY_PART = re.compile(r"\[([^\]]*)\]")


def unflatten(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`a[b][c]=v`) back into nested dicts."""
    out: dict = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        parts = [head, *_KEY_PART.findall(key[len(head):])]
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def stripe_error(status: int, message: str, code: str, param: str | None = None):
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    if param:
        body["error"]["param"] = param
    return status, body


class StripeFront:
    """The threaded fake server; `sessions` holds every Checkout Session it made, by id."""

    def __init__(self, localstripe_url: str):
        self.upstream = localstripe_url.rstrip("/")
        self.sessions: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request, for asserts
        self._private: dict[str, dict] = {}  # per session: secret key, setup_intent_data
        self._by_idempotency_key: dict[str, str] = {}
        self._lock = threading.Lock()
        self._template = json.loads(SESSION_TEMPLATE.read_text())
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.front = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.js_url = f"{self.url}/v3/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StripeFront:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- Checkout Sessions ----------------------------------------------------------------------
    def create_session(self, params: dict, headers) -> tuple[int, dict]:
        key = headers.get("Idempotency-Key")
        with self._lock:
            if key and key in self._by_idempotency_key:
                return 200, self.sessions[self._by_idempotency_key[key]]
        for removed in ("payment_method_types",):  # gone in API 2026-09-30.endive
            if removed in params:
                return stripe_error(400, f"Received unknown parameter: {removed}",
                                    "parameter_unknown", removed)
        if params.get("mode") != "setup":
            return stripe_error(400, "This stand-in only makes setup-mode sessions.",
                                "parameter_invalid", "mode")
        for required in ("currency", "success_url", "cancel_url"):
            if not params.get(required):
                return stripe_error(400, f"Missing required param: {required}.",
                                    "parameter_missing", required)
        customer = params.get("customer")
        if customer:
            found = requests.get(f"{self.upstream}/v1/customers/{customer}", timeout=10,
                                 headers={"Authorization": headers.get("Authorization", "")})
            if found.status_code != 200:
                return stripe_error(400, f"No such customer: '{customer}'", "resource_missing",
                                    "customer")
        now = int(time.time())
        session_id = "cs_test_" + secrets.token_hex(29)
        session = copy.deepcopy(self._template)
        session.update(
            id=session_id, created=now, expires_at=now + 86400, status="open",
            mode="setup", customer=customer, currency=params["currency"],
            success_url=params["success_url"], cancel_url=params["cancel_url"],
            client_reference_id=params.get("client_reference_id"),
            metadata=params.get("metadata") or {}, locale=params.get("locale"),
            customer_details=None, setup_intent=None, url=f"{self.url}/c/pay/{session_id}",
        )
        with self._lock:
            self.sessions[session_id] = session
            self._private[session_id] = {
                "authorization": headers.get("Authorization", ""),
                "setup_intent_data": params.get("setup_intent_data") or {},
            }
            if key:
                self._by_idempotency_key[key] = session_id
        return 200, session

    def retrieve_session(self, session_id: str) -> tuple[int, dict]:
        session = self.sessions.get(session_id)
        if session is None:
            return stripe_error(404, f"No such checkout.session: '{session_id}'",
                                "resource_missing", "id")
        return 200, session

    def pay(self, session_id: str, form: dict) -> tuple[str | None, str | None]:
        """The hosted page's Save button: a real SetupIntent in localstripe, confirmed with the
        typed card. Returns (redirect URL, None) on success or (None, Stripe's message)."""
        session = self.sessions[session_id]
        if session["status"] != "open":
            return None, "This checkout session is no longer open."
        private = self._private[session_id]
        auth = {"Authorization": private["authorization"]}
        data = {"customer": session["customer"], "usage": "off_session"}
        metadata = private["setup_intent_data"].get("metadata") or {}
        data.update({f"metadata[{k}]": v for k, v in metadata.items()})
        seti = requests.post(f"{self.upstream}/v1/setup_intents", data=data, headers=auth,
                             timeout=10).json()
        expiry = re.sub(r"\D", "", form.get("expiry", ""))
        confirmed = requests.post(
            f"{self.upstream}/v1/setup_intents/{seti['id']}/confirm", headers=auth, timeout=10,
            data={"payment_method_data[type]": "card",
                  "payment_method_data[card][number]": re.sub(r"\D", "", form.get("number", "")),
                  "payment_method_data[card][exp_month]": expiry[:2],
                  "payment_method_data[card][exp_year]": expiry[2:4],
                  "payment_method_data[card][cvc]": form.get("cvc", "")},
        ).json()
        if "error" in confirmed:
            return None, confirmed["error"].get("message") or "Your card could not be saved."
        if confirmed.get("status") != "succeeded":
            return None, "This stand-in page does not do 3-D Secure."
        with self._lock:
            session.update(status="complete", setup_intent=confirmed["id"])
        return session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id), None

    def hosted_page(self, session_id: str, error: str | None = None) -> str:
        session = self.sessions[session_id]
        if session["status"] != "open":
            body = "<h1>This checkout session is no longer open</h1>"
        else:
            alert = f'<p role="alert" id="error">{html.escape(error)}</p>' if error else ""
            body = f"""
<a id="back" href="{html.escape(session['cancel_url'])}">&larr; Back</a>
<h1>Set up a card for future payments</h1>
<form method="post" action="/c/pay/{session_id}">
  <label for="number">Card number</label>
  <input id="number" name="number" autocomplete="cc-number" placeholder="1234 1234 1234 1234">
  <label for="expiry">Expiration (MM / YY)</label>
  <input id="expiry" name="expiry" autocomplete="cc-exp" placeholder="MM / YY">
  <label for="cvc">CVC</label>
  <input id="cvc" name="cvc" autocomplete="cc-csc" placeholder="CVC">
  {alert}
  <button type="submit">Save card</button>
</form>"""
        return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f"<title>Stripe Checkout (stand-in)</title></head><body><main>{body}"
                f"</main></body></html>")

    # -- everything else -------------------------------------------------------------------------
    def forward(self, method: str, path: str, body: bytes, headers) -> tuple[int, bytes, dict]:
        sent = {h: headers[h] for h in FORWARDED_HEADERS if headers.get(h)}
        answer = requests.request(method, self.upstream + path, data=body or None,
                                  headers=sent, timeout=15)
        kept = {h: answer.headers[h] for h in RETURNED_HEADERS if h in answer.headers}
        return answer.status_code, answer.content, kept


class _Handler(BaseHTTPRequestHandler):
    server_version = "stripe-front/1"

    @property
    def front(self) -> StripeFront:
        return self.server.front  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:  # tests read `front.calls` instead
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, content_type: str,
              extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            if name != "Content-Type":
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _html(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        self.front.calls.append((method, path))
        body = self._body() if method in ("POST", "DELETE") else b""
        if method == "GET" and path in ("/v3", "/v3/"):
            return self._send(200, STRIPE_JS.read_bytes(), "application/javascript")
        if path == "/v1/checkout/sessions" and method == "POST":
            params = unflatten(parse_qsl(body.decode(), keep_blank_values=True))
            return self._json(*self.front.create_session(params, self.headers))
        found = re.fullmatch(r"/v1/checkout/sessions/([A-Za-z0-9_]+)", path)
        if found and method == "GET":
            return self._json(*self.front.retrieve_session(found.group(1)))
        found = re.fullmatch(r"/c/pay/([A-Za-z0-9_]+)", path)
        if found and found.group(1) in self.front.sessions:
            session_id = found.group(1)
            if method == "GET":
                return self._html(200, self.front.hosted_page(session_id))
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            target, error = self.front.pay(session_id, form)
            if error:
                return self._html(402, self.front.hosted_page(session_id, error))
            self.send_response(303)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path.startswith("/v1/"):
            full = path + (f"?{parts.query}" if parts.query else "")
            status, payload, headers = self.front.forward(method, full, body, self.headers)
            return self._send(status, payload, headers.get("Content-Type", "application/json"),
                              headers)
        return self._json(404, {"error": {"type": "invalid_request_error",
                                          "message": f"Unrecognized request URL ({path})."}})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")
