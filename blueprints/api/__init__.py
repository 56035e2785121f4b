"""/api/v1 — JSON for staff tools: bearer tokens only (never cookies), so CSRF-exempt;
rate-limited per token; every error is JSON with a stable `error` code."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from blueprints.api import auth, views  # noqa: E402,F401  (hooks and routes register on import)
