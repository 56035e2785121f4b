"""Staff sign-in: one failure message, session renewal, timeouts, ending sessions, two-factor,
safe next=, and an audit row for each step."""

from __future__ import annotations

import time

import pyotp
import pytest
from flask import Flask
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

FAILED = "That email and password do not match an active staff account."


def audit_rows(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
        ).scalars().all()
        db.session.expunge_all()
    return rows


def login_post(client, email: str, password: str, **extra):
    return client.post("/support/login", data={"email": email, "password": password,
                                               "csrf_token": token_of(client), **extra})


def test_sign_in_lands_on_the_dashboard_and_is_audited(app, client, agent):
    response = sign_in(client, agent)
    assert response.status_code == 303
    assert response.headers["Location"] == "/support/"
    assert client.get("/support/").status_code == 200
    [row] = audit_rows(app, "staff.login")
    assert (row.actor, row.target, row.ip) == (agent.email, agent.email, "127.0.0.1")
    assert staff_row(app, agent.id).last_login_at is not None


def test_email_is_matched_whatever_its_case_and_spaces(client, agent):
    response = login_post(client, "  AGENT@Example.COM ", agent.password)
    assert response.status_code == 303


@pytest.mark.parametrize("case", ["unknown email", "wrong password", "disabled account"])
def test_every_failure_gets_the_same_page(app, client, agent, case):
    if case == "disabled account":
        create_staff(app, "gone@example.com", active=False)
    email, password = {
        "unknown email": ("nobody@example.com", agent.password),
        "wrong password": (agent.email, "not the password at all"),
        "disabled account": ("gone@example.com", agent.password),
    }[case]
    response = login_post(client, email, password)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert FAILED in body
    assert body.count('class="form-error"') == 1
    [row] = audit_rows(app, "staff.login_failed")
    assert row.actor == "anonymous" and row.target == email and row.ip == "127.0.0.1"


def test_unknown_email_and_wrong_password_take_similar_time(app):
    """Both do exactly one scrypt check (the unknown email against a dummy hash)."""
    app.config["STAFF_PASSWORD_METHOD"] = "scrypt:16384:8:1"  # slow enough to measure
    create_staff(app, "timed@example.com")

    def timed(email: str) -> float:
        with app.app_context():
            start = time.perf_counter()
            assert staff_service.authenticate(email, "wrong password here") is None
            return time.perf_counter() - start

    timed("warm-up@example.com")  # the dummy hash is made once per method
    samples = {"unknown": [], "wrong": []}
    for _ in range(7):  # interleaved, and the fastest of each: other load only adds time
        samples["unknown"].append(timed("nobody@example.com"))
        samples["wrong"].append(timed("timed@example.com"))
    unknown, wrong = min(samples["unknown"]), min(samples["wrong"])
    # Without the dummy check an unknown email answers ~50× faster; a busy machine adds noise.
    assert 0.5 < unknown / wrong < 2.0, samples


def test_passwords_are_stored_as_werkzeug_scrypt_hashes(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False)  # the production hashing method
    made = create_staff(app, "hashed@example.com")
    stored = staff_row(app, made.id).password_hash
    assert stored.startswith("scrypt:32768:8:1$")
    assert made.password not in stored


def test_sign_in_starts_a_new_session_and_drops_what_came_before(app, client, agent):
    with client.session_transaction() as sess:
        sess["planted"] = "by an attacker"
    before = token_of(client)
    cookie_before = client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
    response = login_post(client, agent.email, agent.password)
    assert response.status_code == 303
    cookie_after = client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value
    assert cookie_after != cookie_before
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert "csrf_token" not in sess  # a new CSRF secret is made for the new session
    after = token_of(client, "/support/account")
    assert after != before
    assert post(client, "/support/logout").status_code == 303  # CSRF still works after it


def test_sign_out_ends_the_session_and_a_copied_cookie_stops_working(app, agent_client):
    name = app.config["SESSION_COOKIE_NAME"]
    stolen = agent_client.get_cookie(name).value
    assert post(agent_client, "/support/logout").status_code == 303
    assert agent_client.get("/support/").status_code == 303
    replay = app.test_client()
    replay.set_cookie(name, stolen)
    response = replay.get("/support/")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/support/login")


def test_disabling_a_user_ends_their_session_on_the_next_request(app, agent_client, agent):
    assert agent_client.get("/support/").status_code == 200
    with app.app_context():
        user = db.session.get(StaffUser, agent.id)
        staff_service.set_active(user, False)
        db.session.commit()
    assert agent_client.get("/support/").status_code == 303


def test_disabled_user_keeps_no_session_even_with_an_old_key(app, agent_client, agent):
    """A disabled account whose session key somehow survived is still refused."""
    with app.app_context():
        db.session.get(StaffUser, agent.id).active = False
        db.session.commit()
    assert agent_client.get("/support/").status_code == 303


def _age_session(client, *, seen: int = 0, auth: int = 0) -> None:
    with client.session_transaction() as sess:
        sess["staff_seen_at"] -= seen
        sess["staff_auth_at"] -= auth


def test_idle_session_expires(app, agent_client):
    _age_session(agent_client, seen=30 * 60 + 5, auth=30 * 60 + 5)
    response = agent_client.get("/support/")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/support/login")
    assert "inactivity" in agent_client.get("/support/login").get_data(as_text=True)
    assert len(audit_rows(app, "staff.session_expired")) == 1


def test_activity_keeps_the_session_alive_until_the_absolute_limit(app, agent_client):
    _age_session(agent_client, seen=29 * 60, auth=11 * 3600)
    assert agent_client.get("/support/").status_code == 200  # active recently: still fine
    _age_session(agent_client, auth=3600 + 5)  # now past 12 hours since sign-in
    assert agent_client.get("/support/").status_code == 303


def test_timeouts_come_from_config(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_IDLE_TIMEOUT_SECONDS=60)
    staff = create_staff(app, "short@example.com")
    client = app.test_client()
    sign_in(client, staff)
    _age_session(client, seen=61)
    assert client.get("/support/").status_code == 303


@pytest.mark.parametrize("target", [
    "//evil.example/support/", "https://evil.example/support/", "/\\evil.example",
    "javascript:alert(1)", "/support/../../evil", "http:/evil.example", "/u/some-token",
    "\\\\evil.example", "/support/login?next=//evil", " //evil.example",
    "/support/%2e%2e/%2e%2e/evil", "/support/\t/evil", "https:/support/",
])
def test_unsafe_next_is_ignored(client, agent, target):
    response = sign_in(client, agent, next_url=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/support/"


def test_safe_next_is_followed(client, agent):
    response = sign_in(client, agent, next_url="/support/customers?q=abc")
    assert response.headers["Location"] == "/support/customers?q=abc"


# -- two-factor ------------------------------------------------------------------------------------
@pytest.fixture
def app_2fa(make_app) -> Flask:
    return make_app(STAFF_REQUIRE_2FA=True, STAFF_PASSWORD_METHOD=FAST_HASH)


def test_required_two_factor_makes_a_new_user_enrol_before_anything_else(app_2fa):
    staff = create_staff(app_2fa, "new@example.com")
    client = app_2fa.test_client()
    response = login_post(client, staff.email, staff.password)
    assert response.headers["Location"] == "/support/login/enrol"
    assert client.get("/support/").status_code == 303  # not signed in yet
    page = client.get("/support/login/enrol").get_data(as_text=True)
    secret = page.split('data-copy="')[1].split('"')[0]
    with client.session_transaction() as sess:
        assert secret not in str(dict(sess))  # the secret is derived, never in the cookie
    wrong = client.post("/support/login/enrol", data={
        "code": "000000", "csrf_token": token_of(client, "/support/login/enrol")})
    assert wrong.status_code == 200 and "That code did not work" in wrong.get_data(as_text=True)
    done = client.post("/support/login/enrol", data={
        "code": pyotp.TOTP(secret).now(),
        "csrf_token": token_of(client, "/support/login/enrol")})
    assert done.status_code == 303 and done.headers["Location"] == "/support/"
    assert client.get("/support/").status_code == 200
    stored = staff_row(app_2fa, staff.id).totp_secret
    assert stored != secret and secret not in stored  # encrypted at rest
    with app_2fa.app_context():
        assert staff_service.totp_secret_of(staff_row(app_2fa, staff.id)) == secret
    assert len(audit_rows(app_2fa, "staff.2fa_enrolled")) == 1


def test_enrolled_user_needs_a_code_and_the_password_alone_is_not_enough(app_2fa):
    staff = create_staff(app_2fa, "coded@example.com", totp=True)
    client = app_2fa.test_client()
    response = login_post(client, staff.email, staff.password)
    assert response.headers["Location"] == "/support/login/code"
    assert client.get("/support/").status_code == 303
    bad = client.post("/support/login/code", data={
        "code": "123456", "csrf_token": token_of(client, "/support/login/code")})
    assert "That code did not work" in bad.get_data(as_text=True)
    good = client.post("/support/login/code", data={
        "code": staff.code(), "csrf_token": token_of(client, "/support/login/code")})
    assert good.status_code == 303
    assert client.get("/support/").status_code == 200


def test_a_code_works_only_once(app_2fa):
    staff = create_staff(app_2fa, "replay@example.com", totp=True)
    first = app_2fa.test_client()
    code = staff.code()
    assert sign_in(first, staff, code=code).headers["Location"] == "/support/"
    second = app_2fa.test_client()
    response = sign_in(second, staff, code=code)
    assert response.status_code == 200
    assert second.get("/support/").status_code == 303


def test_code_step_without_a_password_step_goes_back_to_sign_in(app_2fa):
    client = app_2fa.test_client()
    response = client.get("/support/login/code")
    assert response.status_code == 303
    assert response.headers["Location"] == "/support/login"


def test_the_pending_step_expires(app_2fa):
    staff = create_staff(app_2fa, "slow@example.com", totp=True)
    client = app_2fa.test_client()
    login_post(client, staff.email, staff.password)
    with client.session_transaction() as sess:
        pending = sess["staff_pending"]
        pending["at"] -= 6 * 60
        sess["staff_pending"] = pending
    assert client.get("/support/login/code").status_code == 303


def test_signed_in_user_without_two_factor_is_sent_to_set_it_up_when_required(app_2fa):
    """STAFF_REQUIRE_2FA turned on while someone without a second factor is signed in."""
    staff = create_staff(app_2fa, "before@example.com")
    app_2fa.config["STAFF_REQUIRE_2FA"] = False
    client = app_2fa.test_client()
    assert sign_in(client, staff).status_code == 303
    app_2fa.config["STAFF_REQUIRE_2FA"] = True
    response = client.get("/support/customers")
    assert response.status_code == 303
    assert response.headers["Location"] == "/support/account/two-step"
    page = client.get("/support/account/two-step").get_data(as_text=True)
    secret = page.split('data-copy="')[1].split('"')[0]
    response = post(client, "/support/account/two-step",
                    {"code": pyotp.TOTP(secret).now(), "password": staff.password},
                    token_page="/support/account/two-step")
    assert response.status_code == 303
    assert client.get("/support/customers").status_code == 200


def test_enrolling_from_the_console_ends_other_sessions(app, agent):
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop, agent)
    sign_in(phone, agent)
    page = laptop.get("/support/account/two-step").get_data(as_text=True)
    secret = page.split('data-copy="')[1].split('"')[0]
    post(laptop, "/support/account/two-step",
         {"code": pyotp.TOTP(secret).now(), "password": agent.password},
         token_page="/support/account/two-step")
    assert laptop.get("/support/").status_code == 200
    assert phone.get("/support/").status_code == 303


def test_changing_the_password_needs_the_current_one(app, agent_client, agent):
    bad = post(agent_client, "/support/account/password", {
        "current_password": "wrong", "new_password": "a brand new passphrase",
        "new_password_again": "a brand new passphrase"})
    assert "current password is not right" in bad.get_data(as_text=True)
    good = post(agent_client, "/support/account/password", {
        "current_password": agent.password, "new_password": "a brand new passphrase",
        "new_password_again": "a brand new passphrase"})
    assert good.status_code == 303
    assert agent_client.get("/support/").status_code == 200  # this session carries on
    with app.app_context():
        assert staff_service.authenticate(agent.email, "a brand new passphrase") is not None
