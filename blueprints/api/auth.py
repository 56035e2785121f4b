"""Bearer-token authentication, rate limits and JSON errors for every /api/v1 route."""

from __future__ import annotations

import hashlib

from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from blueprints.api import bp
from extensions import csrf, db, limiter
from services import api_tokens

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


def _rate_key() -> str:
    # Keyed by the presented credential (hashed: keys may be stored in Redis), else the IP.
    secret = _presented_secret()
    if secret:
        return "api:" + hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()[:32]
    return "api-ip:" + (request.remote_addr or "unknown")


def _api_limit() -> str:
    return current_app.config.get("API_RATE_LIMIT", "120 per minute;5000 per hour")


limiter.limit(_api_limit, key_func=_rate_key)(bp)


@bp.before_request
def authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    secret = _presented_secret()
    if secret is None:
        raise ApiError(401, "missing_token", "Send an API token: Authorization: Bearer <token>.")
    token = api_tokens.lookup(secret)
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
