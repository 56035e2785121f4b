"""POST /webhooks/stripe: signatures, dedupe, ordering, foreign objects (research §7 14–20)."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from sqlalchemy import func, select
from stripe_helpers import confirm_setup_intent, ls

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, CustomerEvent, SavedPaymentMethod, StripeEvent
from cardbridge.payments import card_setup
from tests.testlib import WEBHOOK_SECRET


def event(type_: str, obj: dict, event_id: str = "evt_test_1") -> bytes:
    body = {"id": event_id, "object": "event", "api_version": "2026-10-28.endive",
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": type_,
            "data": {"object": obj}}
    return json.dumps(body).encode()


def post(client, payload: bytes, *, secret=WEBHOOK_SECRET, timestamp=None, header=None):
    if header is None:
        header = stripe.WebhookSignature.generate_signature_header(
            payload.decode(), secret, timestamp=timestamp or int(time.time()))
    headers = {"Stripe-Signature": header} if header else {}
    return client.post("/webhooks/stripe", data=payload, headers=headers,
                       content_type="application/json")


def outcome(app, payload: bytes) -> str | None:
    """What the worker made of a posted event (in tests the queue runs each task at once)."""
    with app.app_context():
        return db.session.execute(select(StripeEvent.outcome).where(
            StripeEvent.event_id == json.loads(payload)["id"])).scalar_one_or_none()


def posted(app, client, payload: bytes) -> str | None:
    assert post(client, payload).status_code == 200
    return outcome(app, payload)


def stored_events(app) -> int:
    with app.app_context():
        return db.session.execute(select(func.count(StripeEvent.id))).scalar()


UNKNOWN = event("plan.created", {"id": "price_1", "object": "plan"})


def test_without_a_configured_secret_the_webhook_answers_503(make_app):
    app = make_app(STRIPE_WEBHOOK_SECRET=None)
    response = post(app.test_client(), UNKNOWN)
    assert response.status_code == 503
    assert stored_events(app) == 0


@pytest.mark.parametrize("header", ["", "t=123", "garbage", "v1=abc", "t=abc,v1=def",
                                    "t=-5,v1=00"])
def test_missing_or_malformed_signature_is_400(app, client, header):
    response = client.post("/webhooks/stripe", data=UNKNOWN,
                           headers={"Stripe-Signature": header} if header else {})
    assert response.status_code == 400
    assert stored_events(app) == 0


def test_wrong_secret_is_400(app, client):
    assert post(client, UNKNOWN, secret="whsec_other").status_code == 400
    assert stored_events(app) == 0


def test_changed_body_is_400(app, client):
    header = stripe.WebhookSignature.generate_signature_header(UNKNOWN.decode(), WEBHOOK_SECRET)
    reserialized = json.dumps(json.loads(UNKNOWN), indent=2).encode()
    assert post(client, reserialized, header=header).status_code == 400
    assert stored_events(app) == 0


def test_stale_signature_is_400(app, client):
    assert post(client, UNKNOWN, timestamp=int(time.time()) - 301).status_code == 400


def test_future_signature_is_400(app, client):
    assert post(client, UNKNOWN, timestamp=int(time.time()) + 3600).status_code == 400


def test_two_v1_signatures_one_good_is_accepted(app, client):
    good = stripe.WebhookSignature.generate_signature_header(UNKNOWN.decode(), WEBHOOK_SECRET)
    header = good + ",v1=" + "0" * 64
    assert post(client, UNKNOWN, header=header).status_code == 200


def test_unknown_event_type_gets_2xx_and_is_remembered(app, client):
    assert posted(app, client, UNKNOWN) == "ignored"
    assert stored_events(app) == 1


def test_oversized_body_is_refused(app, client):
    big = event("plan.created", {"id": "x", "pad": "a" * 2_000_000})
    assert post(client, big).status_code == 413


def test_webhook_needs_no_csrf_token_but_other_posts_do(app, client):
    assert post(client, UNKNOWN).status_code == 200
    assert client.post("/u/fresh", data={"email": "a@b.c"}).status_code == 400


# -- with localstripe ------------------------------------------------------------------------
@pytest.fixture
def confirmed(stripe_app, make_customer, localstripe_url):
    """A customer whose card was confirmed in Stripe, but nothing recorded yet (tab closed)."""
    gateway = stripe_app.extensions["stripe_gateway"]
    with stripe_app.app_context():
        customer = db.session.get(Customer, make_customer().id)
        link = issue_link(customer, created_by="test").link
        seti = card_setup.open_setup_intent(link, gateway)
        db.session.commit()
        confirm_setup_intent(localstripe_url, seti["id"])
        yield {"app": stripe_app, "seti": seti["id"], "customer_id": customer.id,
               "stripe_customer": customer.stripe_customer_id}


def saved_rows(app) -> int:
    with app.app_context():
        return db.session.execute(select(func.count(SavedPaymentMethod.id))).scalar()


def customer_status(app, customer_id) -> str:
    with app.app_context():
        return db.session.get(Customer, customer_id).status


@pytest.mark.localstripe
def test_setup_intent_succeeded_records_the_card_when_the_tab_was_closed(confirmed):
    app, client = confirmed["app"], confirmed["app"].test_client()
    # The snapshot in the event is stale on purpose: the handler must re-read Stripe.
    payload = event("setup_intent.succeeded",
                    {"id": confirmed["seti"], "object": "setup_intent",
                     "status": "requires_payment_method"})
    assert posted(app, client, payload) == "recorded"
    assert customer_status(app, confirmed["customer_id"]) == "updated"
    assert saved_rows(app) == 1


@pytest.mark.localstripe
def test_duplicate_event_changes_state_once(confirmed):
    app, client = confirmed["app"], confirmed["app"].test_client()
    payload = event("setup_intent.succeeded", {"id": confirmed["seti"], "object": "setup_intent"})
    assert posted(app, client, payload) == "recorded"
    second = post(client, payload)
    assert second.status_code == 200
    assert second.get_json()["duplicate"] is True
    assert saved_rows(app) == 1


@pytest.mark.localstripe
def test_out_of_order_and_distinct_events_for_one_setup_end_in_one_record(confirmed):
    app, client = confirmed["app"], confirmed["app"].test_client()
    failed_first = event("setup_intent.setup_failed",
                         {"id": confirmed["seti"], "object": "setup_intent"}, "evt_a")
    succeeded = event("setup_intent.succeeded",
                      {"id": confirmed["seti"], "object": "setup_intent"}, "evt_b")
    again = event("setup_intent.succeeded",
                  {"id": confirmed["seti"], "object": "setup_intent"}, "evt_c")
    assert posted(app, client, succeeded) == "recorded"
    assert post(client, failed_first).status_code == 200  # late, older news
    assert posted(app, client, again) == "already_recorded"
    assert saved_rows(app) == 1
    assert customer_status(app, confirmed["customer_id"]) == "updated"


@pytest.mark.localstripe
def test_setup_failed_is_recorded_for_the_funnel(stripe_app, make_customer, localstripe_url):
    gateway = stripe_app.extensions["stripe_gateway"]
    with stripe_app.app_context():
        customer_id = make_customer().id
        customer = db.session.get(Customer, customer_id)
        link = issue_link(customer, created_by="test").link
        seti = card_setup.open_setup_intent(link, gateway)
        db.session.commit()
    with pytest.raises(AssertionError):  # localstripe answers 402 for the declined card
        confirm_setup_intent(localstripe_url, seti["id"], "pm_card_visa_chargeDeclined")
    payload = event("setup_intent.setup_failed", {"id": seti["id"], "object": "setup_intent"})
    assert posted(stripe_app, stripe_app.test_client(), payload) == "failure_recorded"
    with stripe_app.app_context():
        kinds = db.session.execute(select(CustomerEvent.kind)).scalars().all()
        assert "setup_failed" in kinds
        assert db.session.get(Customer, customer_id).status == "invited"


@pytest.mark.localstripe
def test_event_for_an_object_that_is_not_ours_changes_nothing(stripe_app, localstripe_url):
    stranger = ls(localstripe_url, "POST", "/v1/customers", {"email": "z@example.com"})
    foreign = ls(localstripe_url, "POST", "/v1/setup_intents", {"customer": stranger["id"]})
    confirm_setup_intent(localstripe_url, foreign["id"])
    client = stripe_app.test_client()
    assert posted(stripe_app, client, event(
        "setup_intent.succeeded", {"id": foreign["id"], "object": "setup_intent"})) == "not_ours"
    assert posted(stripe_app, client, event(
        "setup_intent.succeeded", {"id": "seti_doesnotexist", "object": "setup_intent"},
        "evt_2")) == "not_ours"
    assert saved_rows(stripe_app) == 0


def test_a_stripe_outage_leaves_the_event_stored_for_the_worker_to_retry(app, client):
    payload = event("setup_intent.succeeded", {"id": "seti_x", "object": "setup_intent"})
    response = post(client, payload)  # STRIPE_API_BASE points at a closed port
    assert response.status_code == 200  # Stripe needs no retry: we have the event
    assert outcome(app, payload) == "queued"  # and the worker tries again later
    with app.app_context():
        row = db.session.execute(select(StripeEvent)).scalar_one()
        assert row.processed_at is None and row.payload["id"] == "evt_test_1"


def test_a_non_utf8_body_with_a_signature_header_is_400(app, client):
    body = b'{"id": "evt_1", "object": "event", "type": "x\xff\xfe"}'
    response = client.post("/webhooks/stripe", data=body,
                           headers={"Stripe-Signature": "t=1,v1=" + "0" * 64})
    assert response.status_code == 400
    assert stored_events(app) == 0


def test_a_second_timestamp_cannot_hide_a_future_one(app, client):
    future = int(time.time()) + 3600
    good = stripe.WebhookSignature.generate_signature_header(UNKNOWN.decode(), WEBHOOK_SECRET,
                                                             timestamp=future)
    for header in (good + f",t={int(time.time())}", f"t={int(time.time())}," + good):
        assert post(client, UNKNOWN, header=header).status_code == 400
    assert stored_events(app) == 0


@pytest.mark.parametrize("body", [
    {"object": "event", "type": "setup_intent.succeeded", "data": {"object": {}}},  # no id
    {"id": "evt_1", "object": "event", "data": {"object": {}}},  # no type
    {"id": "evt_1", "object": "event", "type": "setup_intent.succeeded", "data": "x"},
    {"id": 5, "object": "event", "type": "setup_intent.succeeded", "data": {"object": {}}},
    {"id": "evt_1", "object": "event", "type": ["a"], "data": {"object": {}}},
    [1, 2, 3],
    "just a string",
])
def test_signed_but_malformed_events_are_400_never_500(app, client, body):
    response = post(client, json.dumps(body).encode())
    assert response.status_code == 400
    assert stored_events(app) == 0


def test_the_webhook_answers_within_a_second_when_stripe_takes_ten(make_app, fault):
    fault.then(200, {"id": "seti_slow", "object": "setup_intent", "status": "succeeded",
                     "metadata": {}}, delay=10)
    app = make_app(STRIPE_API_BASE=fault.url, QUEUE_IMMEDIATE=False)
    payload = event("setup_intent.succeeded", {"id": "seti_slow", "object": "setup_intent"})
    started = time.perf_counter()
    response = post(app.test_client(), payload)
    assert response.status_code == 200
    assert time.perf_counter() - started < 1.0
    assert outcome(app, payload) == "queued"
    assert fault.requests == []  # the request never called Stripe
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert outcome(app, payload) == "not_ours"  # the SetupIntent names no link of ours
    assert len(fault.requests) == 1  # the worker, not the request, waited the ten seconds


def test_a_stripe_refusal_keeps_the_event_for_another_try(make_app, fault):
    """A refusal can be ours to fix (a revoked key): the event is kept, not dropped."""
    fault.then(401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key"}})
    app = make_app(STRIPE_API_BASE=fault.url)
    payload = event("setup_intent.succeeded", {"id": "seti_refused", "object": "setup_intent"})
    assert post(app.test_client(), payload).status_code == 200
    assert outcome(app, payload) == "queued"
    with app.app_context():
        assert db.session.execute(select(StripeEvent)).scalar_one().processed_at is None
