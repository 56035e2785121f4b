"""Sign-in attempts are limited per IP and per account (429 + Retry-After), across processes
when the limits live in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from tests.conftest import ROOT, TEST_REDIS_URL
from tests.support.staff_helpers import FAST_HASH, create_staff, sign_in, token_of


def attempt(client, email: str, password: str = "wrong password!", ip: str = "127.0.0.1"):
    token = token_of(client)
    return client.post("/support/login", data={"email": email, "password": password,
                                               "csrf_token": token},
                       environ_overrides={"REMOTE_ADDR": ip})


def assert_limited(response) -> None:
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many attempts" in response.get_data(as_text=True)


def test_too_many_attempts_from_one_ip_get_429_with_retry_after(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_LOGIN_LIMIT_PER_IP="3 per minute",
                   STAFF_LOGIN_LIMIT_PER_ACCOUNT="100 per minute")
    client = app.test_client()
    for n in range(3):
        assert attempt(client, f"user{n}@example.com").status_code == 200
    assert_limited(attempt(client, "someone-else@example.com"))
    assert attempt(client, "x@example.com", ip="10.0.0.9").status_code == 200  # other IPs fine


def test_guessing_from_one_address_does_not_lock_the_staff_member_out_elsewhere(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_LOGIN_LIMIT_PER_IP="100 per minute",
                   STAFF_LOGIN_LIMIT_PER_ACCOUNT="3 per minute")
    victim = create_staff(app, "victim@example.com")
    client = app.test_client()
    for _ in range(3):
        assert attempt(client, "VICTIM@example.com ", ip="10.0.0.66").status_code == 200
    assert_limited(attempt(client, victim.email, ip="10.0.0.66"))  # the attacker waits
    real = attempt(app.test_client(), victim.email, password=victim.password, ip="10.0.0.1")
    assert real.status_code == 303  # the staff member, from their own address, gets in


def test_a_guessing_attack_spread_over_many_addresses_meets_the_account_ceiling(make_app):
    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_LOGIN_LIMIT_PER_IP="100 per minute",
                   STAFF_LOGIN_LIMIT_PER_ACCOUNT="3 per minute",
                   STAFF_LOGIN_LIMIT_ACCOUNT_CEILING="6 per hour")
    victim = create_staff(app, "victim@example.com")
    client = app.test_client()
    for n in range(6):
        assert attempt(client, victim.email, ip=f"10.0.1.{n}").status_code == 200
    assert_limited(attempt(client, victim.email, ip="10.0.1.99"))
    assert sign_in(app.test_client(), create_staff(app, "other@example.com")).status_code == 303


def test_the_code_step_is_limited_too(make_app):
    app = make_app(STAFF_REQUIRE_2FA=True, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_LOGIN_LIMIT_PER_IP="100 per minute",
                   STAFF_LOGIN_LIMIT_PER_ACCOUNT="3 per minute")
    staff = create_staff(app, "coded@example.com", totp=True)
    client = app.test_client()
    assert attempt(client, staff.email, staff.password).status_code == 303
    for _ in range(3):
        wrong = client.post("/support/login/code", data={
            "code": "000000", "csrf_token": token_of(client, "/support/login/code")})
        assert wrong.status_code == 200
    assert_limited(client.post("/support/login/code", data={
        "code": staff.code(), "csrf_token": token_of(client, "/support/login/code")}))


# -- across processes ------------------------------------------------------------------------
OTHER_PROCESS = textwrap.dedent("""
    import json, sys
    from app import create_app
    from cardbridge.extensions import db
    from tests.conftest import csrf_from
    config = json.loads(sys.argv[1])
    app = create_app(config)
    with app.app_context():
        db.create_all()
    client = app.test_client()
    codes = []
    for _ in range(config["ATTEMPTS"]):
        token = csrf_from(client.get("/support/login").get_data(as_text=True))
        codes.append(client.post("/support/login", data={
            "email": "victim@example.com", "password": "wrong password!",
            "csrf_token": token}).status_code)
    print(json.dumps(codes))
""")


def attempts_in_another_process(tmp_path, storage: str, prefix: str, attempts: int) -> list:
    config = {
        "TESTING": True, "SECRET_KEY": "another-process", "INSTANCE_PATH": str(tmp_path / "p2"),
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'p2.db'}",
        "RATELIMIT_STORAGE_URI": storage, "RATELIMIT_KEY_PREFIX": prefix,
        "STAFF_REQUIRE_2FA": False, "STAFF_PASSWORD_METHOD": FAST_HASH,
        "STAFF_LOGIN_LIMIT_PER_IP": "100 per minute",
        "STAFF_LOGIN_LIMIT_PER_ACCOUNT": "3 per minute", "ATTEMPTS": attempts,
    }
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    done = subprocess.run([sys.executable, "-c", OTHER_PROCESS, json.dumps(config)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def limited_app(make_app, storage: str, prefix: str):
    return make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                    RATELIMIT_STORAGE_URI=storage, RATELIMIT_KEY_PREFIX=prefix,
                    STAFF_LOGIN_LIMIT_PER_IP="100 per minute",
                    STAFF_LOGIN_LIMIT_PER_ACCOUNT="3 per minute")


@pytest.mark.redis
def test_with_redis_the_account_limit_holds_across_processes(make_app, tmp_path):
    prefix = f"cardbridge-test-{uuid.uuid4().hex[:8]}"
    app = limited_app(make_app, TEST_REDIS_URL, prefix)
    assert attempts_in_another_process(tmp_path, TEST_REDIS_URL, prefix, 3) == [200, 200, 200]
    assert_limited(attempt(app.test_client(), "victim@example.com"))


def test_without_redis_each_process_counts_alone(make_app, tmp_path):
    """The control for the test above: SPEC says limits are per process without REDIS_URL."""
    app = limited_app(make_app, "memory://", "cardbridge-memory")
    assert attempts_in_another_process(tmp_path, "memory://", "cardbridge-memory", 3) \
        == [200, 200, 200]
    assert attempt(app.test_client(), "victim@example.com").status_code == 200
