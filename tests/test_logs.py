"""Nothing secret reaches a log: checked on the real stderr of a gunicorn run, and on the
redacting formatter every record crosses (tracebacks included)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import text

from app import create_app
from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer
from cardbridge.web.logs import JsonFormatter, RedactingFormatter
from tests.testlib import free_port

ROOT = Path(__file__).resolve().parent.parent
CLIENT_SECRET = "seti_1Abc_secret_Zyx987"
API_TOKEN = "cbk_" + "A1b2" * 10


def _gunicorn_env(tmp_path, port: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARDBRIDGE_", "FLASK_"))}
    env.update(SECRET_KEY="gunicorn-test-secret", STRIPE_SECRET_KEY="sk_test_gunicorn",
               STRIPE_PUBLISHABLE_KEY="pk_test_gunicorn",
               DATABASE_URL=f"sqlite:///{tmp_path / 'g.db'}",
               PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", GUNICORN_BIND=f"127.0.0.1:{port}",
               WEB_CONCURRENCY="1", STRIPE_WEBHOOK_SECRET="whsec_test")
    env.update(extra)
    return env


def _broken_link_database(env: dict) -> str:
    """A database with a real link whose row is then corrupted: the page fails with a 500."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"], "TESTING": True,
                      "SECRET_KEY": env["SECRET_KEY"], "LINK_SECRET_KEYS": [env["SECRET_KEY"]],
                      "PUBLIC_BASE_URL": env["PUBLIC_BASE_URL"]})
    with app.app_context():
        db.create_all()
        customer = Customer(legacy_id="L-1", email="ada@example.com", status="needs_update")
        db.session.add(customer)
        db.session.flush()
        token = issue_link(customer, created_by="test").token
        db.session.commit()
        # A value no datetime parser reads: a plain bug's 500, not an unreachable database
        # (a dropped table is an OperationalError, which now answers 503, blueprints/errors.py).
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE links SET expires_at = 'not a date'"))
        db.engine.dispose()
    return token


def _run_gunicorn(env: dict, port: int, requests: list[tuple[str, str, dict]]):
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
         "app:create_app()"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError("gunicorn did not start") from None
                time.sleep(0.2)
        statuses = []
        for method, path, headers in requests:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         headers=headers, data=b"{}" if method == "POST" else None)
            try:
                statuses.append(urllib.request.urlopen(req, timeout=10).status)
            except urllib.error.HTTPError as err:
                statuses.append(err.code)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    return statuses, output.decode()


def test_a_500_under_a_link_never_prints_the_token_on_gunicorns_real_output(tmp_path):
    port = free_port()
    env = _gunicorn_env(tmp_path, port)
    token = _broken_link_database(env)
    statuses, output = _run_gunicorn(env, port, [
        ("GET", f"/u/{token}", {}),
        ("POST", f"/u/{token}/opened", {"Content-Type": "application/json"}),
        ("GET", "/api/v1/customers/L-1", {"Authorization": f"Bearer {API_TOKEN}"}),
    ])
    assert statuses[0] == 500
    assert "Traceback" in output  # the error is logged, whole
    assert "customer.page" in output  # by its endpoint, not its path
    assert token not in output and token.split(".")[0] not in output
    assert API_TOKEN not in output


def test_json_logs_are_one_object_a_line_with_the_request_id(tmp_path):
    port = free_port()
    env = _gunicorn_env(tmp_path, port, LOG_FORMAT="json", TRUSTED_PROXY_HOPS="1")
    token = _broken_link_database(env)
    statuses, output = _run_gunicorn(env, port, [
        ("GET", f"/u/{token}", {"X-Request-ID": "req-abc-123"})])
    assert statuses == [500]
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    failed = [entry for entry in lines if entry.get("request_id") == "req-abc-123"]
    assert failed and failed[0]["level"] == "ERROR" and "Traceback" in failed[0]["error"]
    assert token not in output


def _format(formatter: logging.Formatter, logger: str, message: str, *args) -> str:
    try:
        raise RuntimeError(f"boom at /u/{args[0] if args else 'x' * 20} {CLIENT_SECRET}")
    except RuntimeError:
        record = logging.getLogger(logger).makeRecord(
            logger, logging.ERROR, __file__, 1, message, args, sys.exc_info())
    return formatter.format(record)


def test_every_record_and_its_traceback_is_redacted_whatever_logger_made_it():
    token = "Ik5vdEFSZWFsT25lIg.aBcDeF.0123456789abcdefghijklmnopq"
    for formatter in (RedactingFormatter("%(name)s %(message)s"), JsonFormatter()):
        out = _format(formatter, "services.some_module",
                      "opened /u/%s with %s and key sk_live_abc123 whsec_zzz9 " + API_TOKEN,
                      token, CLIENT_SECRET)
        for secret in (token, CLIENT_SECRET, "sk_live_abc123", "whsec_zzz9", API_TOKEN):
            assert secret not in out
        assert "[redacted" in out


def test_json_values_cannot_forge_a_log_line():
    out = _format(JsonFormatter(), "x", "value %s", "one\n{\"level\": \"INFO\"}")
    assert "\n" not in out
    assert json.loads(out)["message"].endswith('{"level": "INFO"}')


def test_database_errors_hide_their_parameters(app, make_customer):
    from sqlalchemy.exc import IntegrityError

    make_customer(legacy_id="dup-1", email="secret.person@example.com")
    with app.app_context():
        db.session.add(Customer(legacy_id="dup-1", email="secret.person@example.com",
                                status="needs_update"))
        try:
            db.session.flush()
        except IntegrityError as exc:
            assert "secret.person@example.com" not in str(exc)
        else:
            raise AssertionError("the duplicate was accepted")
