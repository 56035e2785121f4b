"""PostgreSQL cut for ten seconds in the middle of customers' card setups (issue 16, point 3),
through a TCP proxy the test owns: every request in the window gets a clear 503 (the page says
to try again, the card form's JSON says so too, /readyz turns 503), nothing is a 500, the pool
recovers without a restart, and each customer who finishes afterwards has exactly one record."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import func, select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, SavedPaymentMethod
from tests.conftest import TEST_DATABASE_URL
from tests.reliability.proxy import Proxy
from tests.stripe_helpers import TEST_SECRET_KEY
from tests.testlib import csrf_from

pytestmark = [pytest.mark.postgres, pytest.mark.localstripe]
CUT_SECONDS = 10
# A browser sends a Secure cookie to http://127.0.0.1 (a secure context); requests does not.
LOOPBACK_COOKIES = {"SESSION_COOKIE_SECURE": False, "SESSION_COOKIE_NAME": "session"}


@pytest.fixture
def proxied_database():
    parts = urlsplit(TEST_DATABASE_URL or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    proxy = Proxy(parts.hostname, parts.port or 5432)
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0] + "@" if len(netloc) == 2 else ""
    yield proxy, urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
    proxy.close()


class Browser:
    """What the card form's script does, over HTTP: the page, the SetupIntent, Stripe.js's
    confirm at the fake Stripe, then /complete."""

    def __init__(self, base: str, stripe: str, token: str):
        self.base, self.stripe, self.token = base, stripe, token
        self.http = requests.Session()
        self.csrf = ""

    def page(self) -> requests.Response:
        response = self.http.get(f"{self.base}/u/{self.token}", timeout=15)
        if response.status_code == 200:
            self.csrf = csrf_from(response.text)
        return response

    def post(self, step: str, body: dict) -> requests.Response:
        return self.http.post(f"{self.base}/u/{self.token}/{step}", json=body, timeout=15,
                              headers={"X-CSRFToken": self.csrf})

    def confirm_at_stripe(self, secret: str) -> str:
        seti = secret.split("_secret_")[0]
        confirmed = requests.post(f"{self.stripe}/v1/setup_intents/{seti}/confirm", timeout=10,
                                  data={"key": "pk_test_cardbridge", "client_secret": secret,
                                        "payment_method": "pm_card_visa"}).json()
        assert confirmed["status"] == "succeeded"
        return seti

    def finish(self) -> None:
        intent = self.post("intent", {})
        assert intent.status_code == 200, intent.text
        seti = self.confirm_at_stripe(intent.json()["client_secret"])
        done = self.post("complete", {"setup_intent": seti})
        assert done.status_code == 200, done.text


def test_a_ten_second_database_cut_gives_503s_then_every_customer_finishes_once(
        make_app, make_customer, localstripe_url, live_server_for, proxied_database):
    proxy, url = proxied_database
    app = make_app(SQLALCHEMY_DATABASE_URI=url, STRIPE_API_BASE=localstripe_url,
                   STRIPE_SECRET_KEY=TEST_SECRET_KEY, STRIPE_MAX_RETRIES=0, **LOOPBACK_COOKIES,
                   DATABASE_POOL_TIMEOUT_SECONDS=3, DATABASE_CONNECT_TIMEOUT_SECONDS=2)
    ids = [make_customer(legacy_id=f"CUT-{n}", status="needs_update").id for n in range(3)]
    with app.app_context():
        tokens = [issue_link(db.session.get(Customer, i), created_by="test").token for i in ids]
        db.session.commit()
        db.session.remove()
    base = live_server_for(app).url
    early, mid, late = (Browser(base, localstripe_url, t) for t in tokens)
    assert early.page().status_code == 200 and mid.page().status_code == 200
    early.finish()  # one customer done before the cut
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200

    proxy.cut()
    seen, started = [], time.monotonic()
    while time.monotonic() - started < CUT_SECONDS:
        t = time.monotonic()
        page, intent = late.page(), mid.post("intent", {})
        ready = requests.get(f"{base}/readyz", timeout=10)
        seen.append((page.status_code, intent.status_code, ready.status_code,
                     time.monotonic() - t))
        assert "try again" in page.text.lower()
        assert intent.json()["error"] == "unavailable" and "try again" in intent.json()[
            "message"].lower()
        time.sleep(0.5)
    assert {s[:3] for s in seen} == {(503, 503, 503)}, seen
    assert max(s[3] for s in seen) < 8, "a customer waited too long for the retry page"
    proxy.restore()

    # The same processes, no restart: the pool throws the dead connections away and goes on.
    deadline = time.monotonic() + 15
    while requests.get(f"{base}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "/readyz did not come back"
        time.sleep(0.2)
    mid.finish()
    assert late.page().status_code == 200
    late.finish()
    with app.app_context():
        saved = dict(db.session.execute(
            select(SavedPaymentMethod.customer_id, func.count())
            .group_by(SavedPaymentMethod.customer_id)).all())
        statuses = {c.id: c.status for c in db.session.execute(select(Customer)).scalars()}
    assert saved == {i: 1 for i in ids}
    assert {statuses[i] for i in ids} == {"updated"}
