"""Logging for every process: one handler on the root logger whose formatter redacts secrets.

Redaction sits in the formatter, the one place every record crosses whatever logger made it,
after the message, its arguments, the exception's traceback and the stack are all one string.
`configure()` installs it with `logging.config.dictConfig` before the app starts (create_app,
`flask` commands); gunicorn gets the same through `gunicorn_logconfig()` in gunicorn.conf.py.
`LOG_FORMAT=json` writes one JSON object a line, each with the request's id.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import secrets
from datetime import UTC, datetime

from flask import Flask, g, has_request_context, request

from cardbridge import correlation

# Anything that looks like a customer link token, a client secret, a key or an API token.
_SECRET_PATTERNS = [
    (re.compile(r"(/u/)[A-Za-z0-9_\-\.]{16,}"), r"\1[redacted]"),
    (re.compile(r"\b(seti|pi|cs)_[A-Za-z0-9_]+_secret_[A-Za-z0-9]+"), r"\1_[redacted-secret]"),
    (re.compile(r"\b(sk|rk|pk)_(test|live)_[A-Za-z0-9_]+"), r"\1_\2_[redacted]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9_]+"), "whsec_[redacted]"),
    (re.compile(r"\bcbk_[A-Za-z0-9_\-]+"), "cbk_[redacted]"),
    (re.compile(r"(setup_intent_client_secret=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(authorization:?\s*bearer\s+)[^\s\"']+"), r"\1[redacted]"),
]
REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    """A plain formatter whose whole output (message, traceback, stack) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, error; redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            entry["request_id"] = g.get("request_id")
            entry["endpoint"] = request.endpoint
        task_id = correlation.current_task_id()
        if task_id:
            entry["task_id"] = task_id
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines, so no value can start a forged line of its own.
        return redact(json.dumps(entry, default=str))


def _dict_config(fmt: str) -> dict:
    formatter = {"()": JsonFormatter} if fmt == "json" else {
        "()": RedactingFormatter, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"redacting": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "redacting",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        # gunicorn's and werkzeug's loggers hand their records to the root's one handler.
        # gunicorn's access lines stay off (as `accesslog = None` had them): a request line
        # is a path, and a customer's path is their link.
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            "werkzeug": {"level": "INFO", "handlers": [], "propagate": True},
            "alembic": {"level": "WARNING", "handlers": [], "propagate": True},
            # Flask-Limiter's INFO line names the limit's key: for the fresh-link form, an
            # email address. Its warnings (storage errors) still come through.
            "flask-limiter": {"level": "WARNING", "handlers": [], "propagate": True},
            "stripe": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def configure(fmt: str = "text") -> None:
    """Install the redacting handler on the root logger (once per process and format)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, (RedactingFormatter, JsonFormatter)) for h in root.handlers):
        return
    logging.config.dictConfig(_dict_config(fmt))


def gunicorn_logconfig(fmt: str = "text") -> dict:
    """gunicorn's `logconfig_dict`: its own loggers through the same redacting handler."""
    return _dict_config(fmt)


def init_app(app: Flask) -> None:
    """Request ids for the logs: the trusted proxy's X-Request-ID, else a new one."""
    if not app.testing:
        configure(app.config.get("LOG_FORMAT", "text"))
    trust_header = bool(app.config.get("TRUSTED_PROXY_HOPS"))

    @app.before_request
    def _request_id() -> None:
        given = request.headers.get("X-Request-ID", "") if trust_header else ""
        g.request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response
