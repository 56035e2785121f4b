"""Response headers (CSP with nonces, HSTS, …), per-blueprint body bounds and signing helpers."""

from __future__ import annotations

import hashlib
import os
import secrets
from functools import lru_cache, partial, wraps
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import Serializer, TimestampSigner, URLSafeTimedSerializer, want_bytes
from itsdangerous.encoding import base64_encode

STRIPE_JS_HOSTS = ("https://js.stripe.com", "https://*.js.stripe.com")
STRIPE_FRAME_HOSTS = STRIPE_JS_HOSTS + ("https://hooks.stripe.com",)
STRIPE_API_HOST = "https://api.stripe.com"
STRIPE_CHECKOUT_HOST = "https://checkout.stripe.com"

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


def unmetered(view):
    """Mark a view that carries no rate limit, so Flask-Limiter skips it entirely.

    With no default limits the check would find nothing anyway; skipping it takes a
    measurable slice off the hottest routes (tests/test_app.py proves none of the
    marked views has a limit).
    """
    view.unmetered = True
    return view


def _is_unmetered() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "unmetered", False)


_NONCE = "__nonce__"


def _limiter_hooks_skip_unmetered(app: Flask, limiter) -> None:
    """For an unmetered view, skip Flask-Limiter's own before/after hooks altogether: they do
    their bookkeeping before a request filter would even be asked. Decorated limits are
    checked by their decorators, not these hooks, so they are untouched."""
    def owned(hook) -> bool:
        return getattr(hook, "__self__", None) is limiter or (
            isinstance(hook, partial) and hook.args[:1] == (limiter,))

    for hooks in (app.before_request_funcs.get(None, []), app.after_request_funcs.get(None, [])):
        for at, hook in enumerate(hooks):
            if owned(hook) and not getattr(hook, "skips_unmetered", False):
                hooks[at] = _metered_only(hook)


def _metered_only(hook):
    @wraps(hook)
    def run(*args):
        if _is_unmetered():
            return args[0] if args else None  # after_request hooks hand the response on
        return hook(*args)

    run.skips_unmetered = True
    return run


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


# -- signing: itsdangerous' formats, minus work that never changes the result ---------------------
class KeyCachingSigner(TimestampSigner):
    """itsdangerous' timestamp signer, remembering the keys it derives (one hash per key,
    not one per signature and verification)."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        return _derived_key(key, self.salt, self.key_derivation, self.digest_method)


@lru_cache(maxsize=64)
def _derived_key(key: bytes, salt: bytes, derivation: str, digest) -> bytes:
    return TimestampSigner(key, salt=salt, key_derivation=derivation,
                           digest_method=digest).derive_key()


class PlainTimedSerializer(URLSafeTimedSerializer):
    """URLSafeTimedSerializer that never tries zlib on what it signs.

    What it signs is short and random: a link id (which zlib never shortens), a CSRF value, a
    session of random values (where zlib saves up to a dozen characters of a ~200-character
    cookie). The stock serializer pays ~20 µs a signature for that; this one signs the
    uncompressed form, and both forms load either way (tests/test_security.py).
    """

    default_signer = KeyCachingSigner

    def dump_payload(self, obj) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per key set.

    Flask builds a new one for every open and every save; it holds nothing per request.
    """

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        keys = (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.secret_key)
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0] != keys:
            serializer = PlainTimedSerializer(
                list(keys), salt=self.salt, serializer=self.serializer,
                signer_kwargs={"key_derivation": self.key_derivation,
                               "digest_method": self.digest_method})
            cached = self._cached = (keys, serializer)
        return cached[1]


_CSRF_SALT = "wtf-csrf-token"  # Flask-WTF's


def csrf_token() -> str:
    """Flask-WTF's `generate_csrf()`, the same token in the same place, for less work.

    The same raw value in `session["csrf_token"]` and the same signed form in `g.csrf_token`,
    so Flask-WTF's own check and any later `generate_csrf()` in the request agree with it; the
    serializer is built once per key and skips the zlib attempt. Only with Flask-WTF's default
    field name and key settings; anything else goes to Flask-WTF itself.
    """
    config = current_app.config
    if config.get("WTF_CSRF_FIELD_NAME", "csrf_token") != "csrf_token" \
            or "WTF_CSRF_SECRET_KEY" in config:  # any value, even "" or None, is Flask-WTF's
        from flask_wtf.csrf import generate_csrf

        return generate_csrf()
    token = g.get("csrf_token")
    if token is None:
        raw = session.get("csrf_token")
        if not isinstance(raw, str):
            raw = session["csrf_token"] = hashlib.sha1(os.urandom(64)).hexdigest()
        token = g.csrf_token = _csrf_serializer(current_app.secret_key).dumps(raw)
    return token


@lru_cache(maxsize=8)
def _csrf_serializer(secret_key: str | bytes) -> PlainTimedSerializer:
    return PlainTimedSerializer(secret_key, salt=_CSRF_SALT)


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
    app.session_interface = SessionCookies()
    from extensions import limiter

    _limiter_hooks_skip_unmetered(app, limiter)
    hops = app.config.get("TRUSTED_PROXY_HOPS", 0)
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

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
