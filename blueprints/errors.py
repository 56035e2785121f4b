"""Friendly error pages (HTML for people, JSON for scripts and tools); never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from blueprints.customer import i18n

log = logging.getLogger(__name__)


def N_(message: str) -> str:
    """Marks a message for the catalogue (babel.cfg); it is translated as the page renders."""
    return message


def _wants_json() -> bool:
    return (
        request.path.startswith(("/api/", "/webhooks/"))
        or request.is_json
        or request.accept_mimetypes.best == "application/json"
    )


def _render(status: int, title: str, message: str, code: str):
    if _wants_json():
        return jsonify(error=code, message=message), status
    if request.blueprint == "support" or request.path.startswith("/support"):
        # The console is for staff and stays in English (babel.cfg).
        return render_template("errors/error.html", status=status, title=title,
                               message=message), status
    # Customers read it in their language: their own on their link's pages, else their
    # browser's. A message the catalogue lacks (a rare HTTP error's own text) stays English.

    lang = i18n.current()
    return i18n.render("errors/error.html", status=status, title=lang.gettext(title),
                       message=lang.gettext(message)), status


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(err):
        return _render(400, N_("Please try again"),
                       N_("Your session timed out or the form was sent twice. Go back, reload "
                          "the page and try again."), "csrf")

    @app.errorhandler(429)
    def too_many(err):
        response = _render(429, N_("Slow down a little"),
                           N_("Too many attempts from here. Please wait a while and try again."),
                           "rate_limited")
        return response

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        titles = {404: N_("Page not found"), 405: N_("Not allowed"),
                  410: N_("This page is gone")}
        messages = {404: N_("We could not find that page. Check the link in your email."),
                    405: N_("This page cannot be used that way. Go back and try again."),
                    410: N_("This page is no longer available.")}
        return _render(err.code or 500, titles.get(err.code, err.name),
                       messages.get(err.code, err.description),
                       (err.name or "error").lower().replace(" ", "_"))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def database_unavailable(err: Exception):
        # The database is down, restarting or out of connections: a retry page, never a 500.
        # Nothing was half-done: the request's transaction never committed.
        log.warning("database unavailable on %s %s: %s", request.method, request.endpoint,
                    type(getattr(err, "orig", err) or err).__name__)
        body, status = _render(503, N_("Please try again in a minute"),
                               N_("We cannot reach our records just now. Nothing was changed; "
                                  "please try again in a minute."), "unavailable")
        response = app.make_response((body, status))
        response.headers["Retry-After"] = "30"
        return response

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        if isinstance(err, HTTPException):
            return http_error(err)
        # The endpoint, never the path: a customer's path is their link token.
        log.exception("unhandled error on %s %s", request.method, request.endpoint)
        return _render(500, N_("Something went wrong"),
                       N_("Something went wrong on our side. Nothing was changed; please try "
                          "again in a few minutes."), "internal")
