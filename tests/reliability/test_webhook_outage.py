"""The webhook endpoint unreachable while customers finish with the tab closed (issue 16,
point 3): the fake Stripe records each delivery as failed, `flask stripe replay` records each
customer exactly once, a second replay changes nothing, and a replay racing a webhook endpoint
that delivers again still gives one record each (the unique event id decides)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
import requests
from sqlalchemy import func, select
from stripe_helpers import customer as stripe_customer
from stripe_helpers import ls

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, SavedPaymentMethod, StripeEvent
from tests.testlib import WEBHOOK_SECRET, csrf_from, free_port

pytestmark = pytest.mark.localstripe
HOOK = "cardbridge"


def register_webhook(stripe_url: str, target: str) -> None:
    """Registering the same id again points Stripe's endpoint somewhere else."""
    response = requests.post(f"{stripe_url}/_config/webhooks/{HOOK}", timeout=5,
                             data={"url": target, "secret": WEBHOOK_SECRET})
    assert response.ok


def events(stripe_url: str, **params) -> list[dict]:
    found, after = [], None
    while True:
        page = ls(stripe_url, "GET", "/v1/events?" + requests.compat.urlencode(
            {**params, "limit": 100, **({"starting_after": after} if after else {})},
            doseq=True))
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


def wait_for(check, seconds: float = 10):
    deadline = time.time() + seconds
    while not (found := check()):
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)
    return found


def finish_with_tab_closed(app, stripe_url: str, customer_id: int) -> str:
    """The customer opens the link, the page asks the app for a SetupIntent, Stripe.js confirms
    it at Stripe, and the tab closes: the app's /complete is never called."""
    with app.app_context():
        token = issue_link(db.session.get(Customer, customer_id), created_by="test").token
        db.session.commit()
    client = app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    body = client.post(f"/u/{token}/intent", json={}, headers=headers).get_json()
    seti = body["client_secret"].split("_secret_")[0]
    confirmed = requests.post(f"{stripe_url}/v1/setup_intents/{seti}/confirm", timeout=5, data={
        "key": "pk_test_cardbridge", "client_secret": body["client_secret"],
        "payment_method": "pm_card_visa"}).json()
    assert confirmed["status"] == "succeeded"
    return seti


def replay(app, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["stripe", "replay", *args])
    assert result.exit_code == 0, result.output
    return result.output


def state(app) -> dict:
    """Per customer: status, saved card rows, the default on Stripe; and the event rows."""
    with app.app_context():
        customers = db.session.execute(select(Customer).order_by(Customer.id)).scalars().all()
        saved = dict(db.session.execute(
            select(SavedPaymentMethod.customer_id, func.count())
            .group_by(SavedPaymentMethod.customer_id)).all())
        pms = dict(db.session.execute(select(SavedPaymentMethod.customer_id,
                                             SavedPaymentMethod.stripe_payment_method_id)).all())
        rows = db.session.execute(select(func.count(StripeEvent.id))).scalar()
        return {"customers": [(c.id, c.status, saved.get(c.id, 0), c.stripe_customer_id,
                               pms.get(c.id)) for c in customers],
                "event_rows": rows}


def assert_each_recorded_once(app, stripe_url: str, ids: list[int]) -> None:
    now = state(app)
    by_id = {c[0]: c for c in now["customers"]}
    for customer_id in ids:
        _, status, saved, stripe_id, pm = by_id[customer_id]
        assert (status, saved) == ("updated", 1)
        assert stripe_customer(stripe_url, stripe_id)[
            "invoice_settings"]["default_payment_method"] == pm


class SlowWebhook:
    """In front of the app: every second `setup_intent.succeeded` delivery waits a second
    before the app sees it, so a replay running beside it gets there first; the others go
    straight in, before any replay. Keeps what the app answered each delivery."""

    def __init__(self, wsgi_app):
        self.wsgi_app, self.answers, self._succeeded = wsgi_app, [], 0
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/webhooks/stripe":
            return self.wsgi_app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        kind = json.loads(body).get("type")
        if kind == "setup_intent.succeeded":
            with self._lock:
                self._succeeded += 1
                slow = self._succeeded % 2 == 0
            if slow:
                time.sleep(1)
        answer = b"".join(self.wsgi_app(environ, start_response))
        self.answers.append((kind, json.loads(answer)))
        return [answer]


@pytest.fixture
def fleet(make_app, own_localstripe, live_server_for, make_customer):
    app = make_app(STRIPE_API_BASE=own_localstripe,
                   STRIPE_JS_URL=f"{own_localstripe}/js.stripe.com/v3/",
                   STRIPE_SECRET_KEY="sk_test_cardbridge", STRIPE_MAX_RETRIES=0)
    app.wsgi_app = SlowWebhook(app.wsgi_app)
    server = live_server_for(app)
    return app, own_localstripe, server.url, make_customer


def test_replay_records_each_closed_tab_once_even_while_webhooks_resume(fleet):
    app, stripe_url, app_url, make_customer = fleet
    started = time.time()
    register_webhook(stripe_url, f"http://127.0.0.1:{free_port()}/webhooks/stripe")  # dead

    # The outage: three customers finish, every delivery fails, nothing is recorded.
    outage = [make_customer().id for _ in range(3)]
    setis = [finish_with_tab_closed(app, stripe_url, c) for c in outage]
    missed = wait_for(lambda: (found := events(stripe_url, type="setup_intent.succeeded",
                                               delivery_success="false"))
                      and len(found) == 3 and found)
    assert {e["data"]["object"]["id"] for e in missed} == set(setis)
    assert all(c[1] != "updated" and c[2] == 0 for c in state(app)["customers"])

    output = replay(app)
    assert "applied" in output and "setup_intent.succeeded: recorded: 3" in output
    assert_each_recorded_once(app, stripe_url, outage)
    after_first = state(app)

    # Twice: nothing more. (The first replay's own writes to Stripe made customer.updated
    # events; the second stores them as ignored types and records nothing.)
    output = replay(app)
    assert "applied 0," in output and "recorded" not in output
    assert state(app)["customers"] == after_first["customers"]
    settled = state(app)
    assert "applied 0," in replay(app, "--since", time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(started - 60)))
    assert state(app) == settled

    # The endpoint is back: customers keep finishing while replays run beside the deliveries.
    register_webhook(stripe_url, f"{app_url}/webhooks/stripe")
    errors: list[BaseException] = []
    outputs: list[str] = []
    stop = threading.Event()

    def replays():
        try:
            while not stop.is_set():
                outputs.append(replay(app, "--since", time.strftime(
                    "%Y-%m-%dT%H:%M:%S", time.gmtime(started - 60))))
        except BaseException as exc:  # noqa: BLE001 (reported by the test below)
            errors.append(exc)

    racing = threading.Thread(target=replays)
    racing.start()
    try:
        resumed = [make_customer().id for _ in range(4)]
        for customer_id in resumed:
            finish_with_tab_closed(app, stripe_url, customer_id)
        wait_for(lambda: len(events(stripe_url, type="setup_intent.succeeded",
                                    delivery_success="true")) == 4)
    finally:
        stop.set()
        racing.join(timeout=60)
    assert not errors, errors
    # Both orders happened: a replay stored and recorded an event whose delivery came after
    # (the app answered that delivery "duplicate"), and deliveries recorded others first.
    assert any("setup_intent.succeeded: recorded" in output for output in outputs)
    answers = [a for kind, a in app.wsgi_app.answers if kind == "setup_intent.succeeded"]
    assert len(answers) == 4
    assert 0 < sum(bool(a.get("duplicate")) for a in answers) < 4
    replay(app)
    assert_each_recorded_once(app, stripe_url, outage + resumed)
    with app.app_context():
        stored = db.session.execute(select(StripeEvent.event_id)).scalars().all()
        assert len(stored) == len(set(stored))
        succeeded = db.session.execute(select(func.count()).where(
            StripeEvent.type == "setup_intent.succeeded")).scalar()
        assert succeeded == 7
    final = state(app)
    assert replay(app) and state(app) == final
