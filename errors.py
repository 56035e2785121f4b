"""Friendly error pages (HTML for people, JSON for scripts and tools); never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    return (
        request.path.startswith(("/api/", "/webhooks/"))
        or request.is_json
        or request.accept_mimetypes.best == "application/json"
    )


def _render(status: int, title: str, message: str, code: str):
    if _wants_json():
        return jsonify(error=code, message=message), status
    return render_template("errors/error.html", status=status, title=title,
                           message=message), status


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(err):
        return _render(400, "Please try again",
                       "Your session timed out or the form was sent twice. Go back, reload "
                       "the page and try again.", "csrf")

    @app.errorhandler(429)
    def too_many(err):
        response = _render(429, "Slow down a little",
                           "Too many attempts from here. Please wait a while and try again.",
                           "rate_limited")
        return response

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        titles = {404: "Page not found", 405: "Not allowed", 410: "This page is gone"}
        return _render(err.code or 500, titles.get(err.code, err.name),
                       err.description if err.code != 404 else
                       "We could not find that page. Check the link in your email.",
                       (err.name or "error").lower().replace(" ", "_"))

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        if isinstance(err, HTTPException):
            return http_error(err)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, "Something went wrong",
                       "Something went wrong on our side. Nothing was changed; please try "
                       "again in a few minutes.", "internal")
