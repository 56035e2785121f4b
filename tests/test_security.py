"""security.py's signing shortcuts: the same tokens and cookies as the stock code, either way."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from flask import g, session
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import generate_csrf, validate_csrf
from itsdangerous import BadSignature, URLSafeTimedSerializer

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


@pytest.mark.parametrize("key", ["csrf-only-key", ""])
def test_csrf_token_signs_with_flask_wtfs_own_key_when_one_is_set(make_app, key):
    app = make_app(WTF_CSRF_SECRET_KEY=key)
    with app.test_request_context("/"):
        token = csrf_token()
        validate_csrf(token)
        assert URLSafeTimedSerializer(key, salt="wtf-csrf-token").loads(token) \
            == session["csrf_token"]


def test_session_cookies_read_and_are_read_by_flasks_own(app):
    ours = app.session_interface.get_signing_serializer(app)
    stock = SecureCookieSessionInterface().get_signing_serializer(app)
    short = {"csrf_token": secrets.token_hex(20), "link_token": secrets.token_urlsafe(56)}
    long = {"note": "a" * 500}  # the stock serializer compresses this one
    assert stock.dumps(long).startswith(".")
    for value in (short, long):
        assert stock.loads(ours.dumps(value)) == value
        assert ours.loads(stock.dumps(value)) == value
    # Never compressed, and a few characters longer at most than the stock cookie.
    assert not ours.dumps(long).startswith(".")
    assert len(ours.dumps(short)) <= len(stock.dumps(short)) + 16


def test_session_cookies_sign_with_the_newest_key_and_read_the_fallbacks(make_app):
    old_app = make_app(SECRET_KEY="old-secret")
    cookie = old_app.session_interface.get_signing_serializer(old_app).dumps({"a": "b"})
    app = make_app(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"])
    ours = app.session_interface.get_signing_serializer(app)
    assert ours.loads(cookie) == {"a": "b"}
    fresh = ours.dumps({"a": "c"})
    assert URLSafeTimedSerializer("new-secret", salt="cookie-session",
                                  serializer=app.session_interface.serializer,
                                  signer_kwargs={"key_derivation": "hmac",
                                                 "digest_method": hashlib.sha1}) \
        .loads(fresh) == {"a": "c"}
    app.config["SECRET_KEY_FALLBACKS"] = []  # rotation finished: the old cookie dies
    refused = app.session_interface.get_signing_serializer(app)
    assert refused is not ours
    with pytest.raises(BadSignature):
        refused.loads(cookie)


def test_no_secret_key_means_no_session_serializer(app):
    app.secret_key = None
    assert app.session_interface.get_signing_serializer(app) is None
