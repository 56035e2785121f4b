"""security.py's signing shortcuts: the same tokens and cookies as the stock code, either way."""

from __future__ import annotations

import secrets

from flask import g, session
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import generate_csrf, validate_csrf
from itsdangerous import URLSafeTimedSerializer

from security import csrf_token


def test_csrf_token_is_flask_wtfs_token_in_flask_wtfs_places(app):
    with app.test_request_context("/"):
        token = csrf_token()
        raw = session["csrf_token"]
        assert g.csrf_token == token
        assert generate_csrf() == token  # a later call in the request agrees
        validate_csrf(token)  # raises if Flask-WTF would refuse it
        stock = URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token")
        assert stock.loads(token) == raw
        assert csrf_token() == token  # once per request
    with app.test_request_context("/"):
        session["csrf_token"] = raw  # the same session, a later request
        assert URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token") \
            .loads(csrf_token()) == raw


def test_csrf_token_replaces_a_session_value_that_is_not_a_string(app):
    with app.test_request_context("/"):
        session["csrf_token"] = 12
        validate_csrf(csrf_token())
        assert isinstance(session["csrf_token"], str)


def test_csrf_token_leaves_other_settings_to_flask_wtf(make_app):
    app = make_app(WTF_CSRF_FIELD_NAME="xsrf")
    with app.test_request_context("/"):
        token = csrf_token()
        assert "xsrf" in session and "csrf_token" not in session
        assert g.xsrf == token


def test_session_cookies_read_and_are_read_by_flasks_own(app):
    ours = app.session_interface.get_signing_serializer(app)
    stock = SecureCookieSessionInterface().get_signing_serializer(app)
    short = {"csrf_token": secrets.token_hex(20), "link_token": secrets.token_urlsafe(56)}
    long = {"note": "a" * 500}  # the stock serializer compresses this one
    assert stock.dumps(long).startswith(".")
    for value in (short, long):
        assert stock.loads(ours.dumps(value)) == value
        assert ours.loads(stock.dumps(value)) == value
    # Never compressed, and a few bytes longer at most than the stock cookie.
    assert not ours.dumps(short).startswith(".")
    assert len(ours.dumps(short)) <= len(stock.dumps(short)) + 8
