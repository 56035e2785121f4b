"""Bearer-token authentication, rate limits and JSON errors for every /api/v1 route."""

from __future__ import annotations

from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from blueprints.api import bp
from cardbridge.extensions import csrf, db, limiter
from cardbridge.staff import api_tokens

PUBLIC_ENDPOINTS = {"api.openapi"}

# Bearer auth is not sent by browsers on their own, so a cross-site form cannot use it: no CSRF.
csrf.exempt(bp)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def _presented_secret() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _known_token():
    """The active token presented, looked up once per request (None for none or a bad one)."""
    if "api_token_checked" not in g:
        secret = _presented_secret()
        token = api_tokens.lookup(secret) if secret else None
        g.api_token_checked = token if token is not None and token.active else None
    return g.api_token_checked


def _rate_key() -> str:
    # A valid token has its own budget (hashed: keys may be stored in Redis); anything else,
    # made-up tokens included, shares its address's: inventing tokens buys no more tries.
    token = _known_token()
    if token is not None:
        return f"api-token:{token.id}"
    return "api-ip:" + (request.remote_addr or "unknown")


def _api_limit() -> str:
    return current_app.config.get("API_RATE_LIMIT", "120 per minute;5000 per hour")


def _failure_limit() -> str:
    return current_app.config.get("API_AUTH_FAILURE_LIMIT", "20 per minute;200 per hour")


def _address_key() -> str:
    return "api-auth-failures:" + (request.remote_addr or "unknown")


# Shared limits: one budget across every /api/v1 route (a per-route limit would multiply it by
# the number of routes).
limiter.shared_limit(_api_limit, scope="api", key_func=_rate_key)(bp)
# Only refused credentials count here: a script guessing tokens is stopped after a few tries.
limiter.shared_limit(_failure_limit, scope="api-auth-failures", key_func=_address_key,
                     deduct_when=lambda response: response.status_code == 401)(bp)


@bp.before_request
def authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    secret = _presented_secret()
    if secret is None:
        raise ApiError(401, "missing_token", "Send an API token: Authorization: Bearer <token>.")
    token = _known_token() or api_tokens.lookup(secret)
    if token is None:
        raise ApiError(401, "invalid_token", "That API token is not valid.")
    if not token.active:
        raise ApiError(401, "token_revoked", "That API token was revoked.")
    if api_tokens.touch(token):
        db.session.commit()
    g.api_token = token
    return None


@bp.errorhandler(ApiError)
def api_error(err: ApiError):
    response = jsonify(error=err.code, message=err.message, **err.extra)
    response.status_code = err.status
    if err.status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer realm="cardbridge", error="{err.code}"'
    return response


@bp.errorhandler(HTTPException)
def http_error(err: HTTPException):
    code = "rate_limited" if err.code == 429 else (err.name or "error").lower().replace(" ", "_")
    return jsonify(error=code, message=err.description or err.name), err.code or 500
