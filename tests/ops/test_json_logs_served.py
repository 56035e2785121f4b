"""LOG_FORMAT=json on what a real gunicorn and a real `flask worker` print while a customer
opens their link and saves a card: every line one JSON object, every line a request causes
carrying its request id, every line a queue task causes carrying the task's id, and no token,
client secret, payment method or card number anywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from gunicorn_run import ROOT, Gunicorn, app_spec, base_env
from stripe_helpers import confirm_setup_intent

from app import create_app
from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer
from tests.testlib import csrf_from, free_port

pytestmark = pytest.mark.localstripe
CARD_NUMBER = "4242424242424242"


def _customer_with_link(env: dict, instance) -> str:
    app = create_app({"SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"], "TESTING": True,
                      "INSTANCE_PATH": str(instance), "SECRET_KEY": env["SECRET_KEY"],
                      "LINK_SECRET_KEYS": [env["LINK_SECRET_KEYS"]],
                      "PUBLIC_BASE_URL": env["PUBLIC_BASE_URL"]})
    with app.app_context():
        db.create_all()
        customer = Customer(legacy_id="L-77", email="grace@example.com", name="Grace",
                            status="needs_update", card_last4="4242", card_brand="visa")
        db.session.add(customer)
        db.session.flush()
        token = issue_link(customer, created_by="test").token
        db.session.commit()
        db.engine.dispose()
    return token


def _lines(output: str) -> list[dict]:
    parsed = []
    for line in output.splitlines():
        if line.strip():
            parsed.append(json.loads(line))  # any line that is not one object fails here
    return parsed


def _assert_nothing_secret(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output, secret


def test_json_logs_of_a_served_card_setup_and_its_email(tmp_path, localstripe_url):
    port, instance = free_port(), tmp_path / "instance"
    env = base_env(tmp_path, port, LOG_FORMAT="json", STRIPE_API_BASE=localstripe_url,
                   STRIPE_JS_URL=f"{localstripe_url}/js.stripe.com/v3/")
    token = _customer_with_link(env, instance)
    browser = requests.Session()
    with Gunicorn(env, instance) as server:
        server.wait_ready()
        page = browser.get(f"{server.url}/u/{token}", timeout=10)
        assert page.status_code == 200
        headers = {"X-CSRFToken": csrf_from(page.text)}
        answer = browser.post(f"{server.url}/u/{token}/intent", json={}, headers=headers,
                              timeout=20).json()
        secret, seti = answer["client_secret"], answer["client_secret"].split("_secret_")[0]
        confirmed = confirm_setup_intent(localstripe_url, seti)
        done = browser.post(f"{server.url}/u/{token}/complete", json={"setup_intent": seti},
                            headers=headers, timeout=20)
        assert done.status_code == 200, done.text
        # Stripe's redirect back carries the client secret in the URL: a second finish.
        back = browser.get(f"{server.url}/u/return?setup_intent={seti}"
                           f"&setup_intent_client_secret={secret}&redirect_status=succeeded",
                           timeout=20, allow_redirects=False)
        assert back.status_code in (302, 303), back.status_code
        # The same link again, by someone who guessed a token: refused, and logged as such.
        assert browser.get(f"{server.url}/u/{token[:-4]}AAAA", timeout=10).status_code >= 400
        output = server.stop()

    lines = _lines(output)
    pm = confirmed["payment_method"]
    pm = pm["id"] if isinstance(pm, dict) else pm
    _assert_nothing_secret(output, token, token.split(".")[0], secret, pm, CARD_NUMBER,
                           env["SECRET_KEY"], env["STRIPE_SECRET_KEY"])
    caused = [line for line in lines if line.get("endpoint") or "request_id" in line]
    assert any("card recorded" in line["message"] for line in caused), output
    for line in lines:
        if not line["logger"].startswith("gunicorn"):
            assert line.get("request_id"), line  # the app logs nothing outside a request
    for line in caused:
        assert line.get("request_id"), line

    # The confirmation email, sent by a real worker: each of its lines names its task.
    worker = subprocess.run(
        [sys.executable, "-m", "flask", "--app", app_spec(instance), "worker", "--burst"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stderr
    lines = _lines(worker.stderr)
    _assert_nothing_secret(worker.stderr + worker.stdout, token, token.split(".")[0], secret,
                           pm, CARD_NUMBER)
    tasks = [line for line in lines if line["logger"].startswith(("huey", "cardbridge.delivery"))
             and "xecut" in line["message"]]
    assert tasks, worker.stderr
    assert all(line.get("task_id") for line in tasks), tasks
    assert len(list((instance / "outbox").glob("*.eml"))) == 1
