"""Response headers (CSP with nonces, HSTS, …) and per-blueprint bounds on request bodies."""

from __future__ import annotations

import secrets
from functools import lru_cache, wraps
from urllib.parse import urlsplit

from flask import Flask, abort, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

STRIPE_JS_HOSTS = ("https://js.stripe.com", "https://*.js.stripe.com")
STRIPE_FRAME_HOSTS = STRIPE_JS_HOSTS + ("https://hooks.stripe.com",)
STRIPE_API_HOST = "https://api.stripe.com"
STRIPE_CHECKOUT_HOST = "https://checkout.stripe.com"
_NONCE = "__nonce__"


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def stripe_page(kind: str):
    """Mark a view as showing Stripe (`elements` or `checkout`): only those get Stripe hosts."""

    def decorator(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            g.csp_stripe = kind
            return view(*args, **kwargs)

        return wrapped

    return decorator


def link_page(view):
    """A page reached through a customer link: no caching, no token in the Referer."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        g.link_page = True
        return view(*args, **kwargs)

    return wrapped


def build_csp(app: Flask, nonce: str, stripe: str | None) -> str:
    """The policy for one response: the same few shapes every time, but a fresh nonce."""
    shape = _csp_shape(stripe, app.config["STRIPE_JS_URL"], app.config["STRIPE_API_BASE"],
                       app.config.get("LOGO_URL") or "")
    return shape.replace(_NONCE, nonce)


@lru_cache(maxsize=32)
def _csp_shape(stripe: str | None, js_url: str, api_base: str, logo_url: str) -> str:
    script = ["'self'", f"'nonce-{_NONCE}'"]
    style = ["'self'", f"'nonce-{_NONCE}'"]
    connect = ["'self'"]
    frame = []
    img = ["'self'", "data:"]
    form_action = ["'self'"]
    if stripe:
        offline = [o for o in (_origin(js_url), _origin(api_base)) if o]
        offline = [o for o in dict.fromkeys(offline) if "stripe.com" not in o]
        script += [*STRIPE_JS_HOSTS, *offline]
        frame += [*STRIPE_FRAME_HOSTS, *offline]
        connect += [STRIPE_API_HOST, *offline]
        img.append("https://*.stripe.com")
        if stripe == "checkout":
            form_action += [STRIPE_CHECKOUT_HOST, *offline]
    if logo_url:
        logo = _origin(logo_url)
        if logo:
            img.append(logo)
    directives = [
        "default-src 'self'",
        "script-src " + " ".join(dict.fromkeys(script)),
        "style-src " + " ".join(style),
        "img-src " + " ".join(dict.fromkeys(img)),
        "connect-src " + " ".join(dict.fromkeys(connect)),
        "frame-src " + (" ".join(dict.fromkeys(frame)) if frame else "'none'"),
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action " + " ".join(dict.fromkeys(form_action)),
        "frame-ancestors 'none'",
        "report-uri /csp-report",
    ]
    return "; ".join(directives)


def bound_request_bodies(app: Flask) -> None:
    """Each blueprint's own body bound (BODY_LIMITS), before any hook reads a body: a customer
    page POST is a few hundred bytes and must not be able to send 64 MB. Registered before
    Flask-WTF's CSRF check, which reads the form."""
    limits = app.config.get("BODY_LIMITS") or {}

    @app.before_request
    def _bound_body() -> None:
        limit = limits.get(request.blueprint or "")
        if limit is None:
            return
        request.max_content_length = limit  # werkzeug enforces it on a streamed body too
        if request.content_length is not None and request.content_length > limit:
            abort(413)


def init_app(app: Flask) -> None:
    hops = app.config.get("TRUSTED_PROXY_HOPS", 0)
    if hops:
        # Exactly the configured hops: more would let clients spoof X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    @app.before_request
    def _nonce() -> None:
        g.csp_nonce = secrets.token_urlsafe(18)

    @app.after_request
    def _headers(response):
        nonce = g.get("csp_nonce") or secrets.token_urlsafe(18)
        response.headers["Content-Security-Policy"] = build_csp(app, nonce, g.get("csp_stripe"))
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if app.config.get("HSTS"):
            response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        if g.get("link_page") or request.path.startswith("/u/"):
            # strict-origin, not no-referrer: Flask-WTF's HTTPS check needs the origin on POSTs.
            response.headers["Referrer-Policy"] = "strict-origin"
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response
