"""Staff sign-in details found by attacking the console: what the cookie, the audit trail and
the database keep, and what cannot be done twice or without a password."""

from __future__ import annotations

import base64
import threading

import pyotp
import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import AuditEvent, StaffUser
from cardbridge.staff import accounts as staff_service
from tests.support.staff_helpers import (
    FAST_HASH,
    create_staff,
    post,
    sign_in,
    staff_row,
    token_of,
)


@pytest.fixture
def app_2fa(make_app):
    return make_app(STAFF_REQUIRE_2FA=True, STAFF_PASSWORD_METHOD=FAST_HASH)


def _cookie_text(client, app) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    payload = cookie.value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if cookie.value.startswith("."):
        import zlib

        raw = zlib.decompress(raw)
    return raw.decode()


def _password_step(client, staff):
    return client.post("/support/login", data={"email": staff.email, "password": staff.password,
                                               "csrf_token": token_of(client)})


def test_the_password_step_cookie_holds_a_random_marker_not_the_session_key(app_2fa):
    staff = create_staff(app_2fa, "coded@example.com", totp=True)
    client = app_2fa.test_client()
    assert _password_step(client, staff).status_code == 303
    session_key = staff_row(app_2fa, staff.id).session_key
    assert session_key not in _cookie_text(client, app_2fa)
    # and the marker is single-use: after signing in, replaying the old cookie leads nowhere
    with client.session_transaction() as sess:
        pending = dict(sess["staff_pending"])
    done = client.post("/support/login/code", data={
        "code": staff.code(), "csrf_token": token_of(client, "/support/login/code")})
    assert done.status_code == 303
    replay = app_2fa.test_client()
    with replay.session_transaction() as sess:
        sess["staff_pending"] = pending
    assert replay.get("/support/login/code").status_code == 303  # back to sign-in


@pytest.mark.parametrize("typed, stored", [
    ("Someone@Example.com", "someone@example.com"),
    ("correct horse battery staple", None),  # a password typed in the wrong field
])
def test_a_failed_sign_in_keeps_an_address_or_a_hash_never_what_was_typed(make_app, typed,
                                                                          stored):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH)
    client = app.test_client()
    client.post("/support/login", data={"email": typed, "password": "x" * 12,
                                         "csrf_token": token_of(client)})
    with app.app_context():
        row = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "staff.login_failed")).scalar_one()
    if stored:
        assert row.target == stored
    else:
        assert typed not in (row.target or "") and row.target.startswith("sha256:")


def test_the_current_password_check_is_rate_limited(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_PASSWORD_CHECK_LIMIT="3 per minute")
    staff = create_staff(app, "pw@example.com")
    client = app.test_client()
    sign_in(client, staff)
    statuses = [post(client, "/support/account/password", {
        "current_password": f"guess number {n}", "new_password": "x" * 14,
        "new_password_again": "x" * 14}).status_code for n in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_enrolling_two_step_from_the_console_needs_the_current_password(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH)
    staff = create_staff(app, "enrol@example.com")
    client = app.test_client()
    sign_in(client, staff)
    page = client.get("/support/account/two-step").get_data(as_text=True)
    secret = page.split('data-copy="')[1].split('"')[0]
    code = pyotp.TOTP(secret).now()
    refused = post(client, "/support/account/two-step", {"code": code, "password": "wrong"},
                   token_page="/support/account/two-step")
    assert "current password is not right" in refused.get_data(as_text=True)
    assert staff_row(app, staff.id).totp_secret is None
    done = post(client, "/support/account/two-step", {"code": code, "password": staff.password},
                token_page="/support/account/two-step")
    assert done.status_code == 303
    assert staff_row(app, staff.id).totp_secret is not None


def test_the_unknown_email_dummy_hash_is_made_when_the_app_starts(make_app):
    staff_service._dummy_hashes.clear()
    app = make_app(STAFF_PASSWORD_METHOD="scrypt:2048:8:1")
    assert "scrypt:2048:8:1" in staff_service._dummy_hashes
    assert app is not None


def test_one_code_posted_twice_at_once_passes_once(app_2fa):
    staff = create_staff(app_2fa, "race@example.com", totp=True)
    code, results, barrier = staff.code(), [], threading.Barrier(2)

    def verify():
        with app_2fa.app_context():
            user = db.session.get(StaffUser, staff.id)
            barrier.wait()
            ok = staff_service.verify_totp(user, code)
            db.session.commit()
            results.append(ok)

    threads = [threading.Thread(target=verify) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]


def test_totp_secrets_are_encrypted_at_rest_and_rotate_to_a_new_key(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   TOTP_ENCRYPTION_KEYS=["old-key"])
    staff = create_staff(app, "rot@example.com")
    secret = pyotp.random_base32()
    with app.app_context():
        user = db.session.get(StaffUser, staff.id)
        assert staff_service.enrol_totp(user, secret, pyotp.TOTP(secret).now())
        db.session.commit()
        stored = user.totp_secret
    assert secret not in stored
    app.config["TOTP_ENCRYPTION_KEYS"] = ["old-key", "new-key"]
    result = app.test_cli_runner().invoke(args=["staff", "rotate-totp-key"])
    assert result.exit_code == 0 and "re-encrypted 1 TOTP secret" in result.output
    app.config["TOTP_ENCRYPTION_KEYS"] = ["new-key"]  # the old key can go now
    with app.app_context():
        user = db.session.get(StaffUser, staff.id)
        assert user.totp_secret != stored
        assert staff_service.totp_secret_of(user) == secret


def test_a_secret_stored_in_clear_before_encryption_is_sealed_by_the_rotation(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH)
    staff = create_staff(app, "legacy@example.com", totp=True)  # stored in clear, as before
    assert staff_row(app, staff.id).totp_secret == staff.totp_secret
    assert app.test_cli_runner().invoke(args=["staff", "rotate-totp-key"]).exit_code == 0
    with app.app_context():
        user = db.session.get(StaffUser, staff.id)
        assert user.totp_secret != staff.totp_secret
        assert staff_service.totp_secret_of(user) == staff.totp_secret


def test_signing_in_again_brings_no_new_code_tries(make_app):
    app = make_app(STAFF_REQUIRE_2FA=True, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_LOGIN_LIMIT_PER_ACCOUNT="3 per minute",
                   STAFF_LOGIN_LIMIT_PER_IP="100 per minute")
    staff = create_staff(app, "coded@example.com", totp=True)
    statuses = []
    for _ in range(2):  # a fresh password step each round, from a fresh browser
        client = app.test_client()
        _password_step(client, staff)
        for _ in range(2):
            statuses.append(client.post("/support/login/code", data={
                "code": "000000", "csrf_token": token_of(client, "/support/login/code")})
                .status_code)
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
