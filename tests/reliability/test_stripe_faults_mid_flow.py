"""Stripe failing in the middle of a customer's card setup (issue 16, point 3): 500s, 429s, or
answers slower than STRIPE_TIMEOUT_SECONDS, between the SetupIntent and the app's check of it.
The customer sees a message saying to try again (never a 500), can finish afterwards, and has
exactly one record; the fake Stripe holds one default card for them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, SavedPaymentMethod
from tests.reliability.stripe_faults import StripeFaults
from tests.reliability.test_database_cut import LOOPBACK_COOKIES, Browser
from tests.stripe_helpers import TEST_SECRET_KEY
from tests.stripe_helpers import customer as stripe_customer

pytestmark = pytest.mark.localstripe


@pytest.fixture
def faults(localstripe_url):
    proxy = StripeFaults(localstripe_url)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("fault", [500, 429, 2.5], ids=["500", "429", "too-slow"])
def test_a_stripe_fault_mid_flow_says_try_again_and_the_retry_records_once(
        fault, faults, make_app, make_customer, localstripe_url, live_server_for):
    app = make_app(STRIPE_API_BASE=faults.url, STRIPE_SECRET_KEY=TEST_SECRET_KEY,
                   STRIPE_MAX_RETRIES=0, STRIPE_TIMEOUT_SECONDS=1, **LOOPBACK_COOKIES)
    c = make_customer(legacy_id="FAULT-1", status="needs_update")
    with app.app_context():
        token = issue_link(db.session.get(Customer, c.id), created_by="test").token
        db.session.commit()
    base = live_server_for(app).url
    customer = Browser(base, localstripe_url, token)
    assert customer.page().status_code == 200

    faults.mode = fault  # Stripe fails before the SetupIntent exists…
    refused = customer.post("intent", {})
    assert refused.status_code == 503, refused.text
    assert "try again" in refused.json()["message"].lower()
    faults.mode = None
    intent = customer.post("intent", {})
    assert intent.status_code == 200
    seti = customer.confirm_at_stripe(intent.json()["client_secret"])

    faults.mode = fault  # …and again after Stripe.js confirmed the card, as the app checks it
    refused = customer.post("complete", {"setup_intent": seti})
    assert refused.status_code == 503
    assert "try again" in refused.json()["message"].lower()
    assert faults.faulted >= 2
    faults.mode = None
    done = customer.post("complete", {"setup_intent": seti})
    assert done.status_code == 200, done.text
    again = customer.post("complete", {"setup_intent": seti})  # a double click, a reload
    assert again.status_code == 200

    with app.app_context():
        saved = db.session.execute(select(SavedPaymentMethod)).scalars().all()
        row = db.session.get(Customer, c.id)
        assert [s.customer_id for s in saved] == [c.id] and row.status == "updated"
        stripe_id, pm = row.stripe_customer_id, saved[0].stripe_payment_method_id
    assert stripe_customer(localstripe_url, stripe_id)[
        "invoice_settings"]["default_payment_method"] == pm
