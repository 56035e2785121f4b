"""Holes found by attacking the customer routes: anonymous Stripe calls, revoked links that could
still save a card, ids that cannot go into a header, and the link token in the session cookie."""

from __future__ import annotations

import base64
import zlib

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link, revoke_links
from cardbridge.models import Customer, Link, SavedPaymentMethod
from tests.testlib import csrf_from


def link_for(app, customer_id):
    with app.app_context():
        issued = issue_link(db.session.get(Customer, customer_id), created_by="test")
        db.session.commit()
        return issued.token, issued.link.public_id


def _session_payload(cookie_value: str) -> str:
    payload = cookie_value.split(".")[0 if not cookie_value.startswith(".") else 1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if cookie_value.startswith(".") else raw).decode()


# -- 1: nobody makes us call Stripe with made-up ids ----------------------------------------------
@pytest.mark.parametrize("path", [
    "/u/return?setup_intent=seti_",
    "/u/return?setup_intent=seti_../../v1/customers",
    "/u/return?setup_intent=seti_" + "a" * 300,
    "/u/checkout/return?session_id=cs_%0Aevil",
    "/u/checkout/return?session_id=cs_" + "b" * 300,
])
def test_return_routes_refuse_ids_of_the_wrong_shape_without_calling_stripe(app, fault, path):
    app.config["STRIPE_API_BASE"] = fault.url
    response = app.test_client().get(path)
    assert response.status_code == 404
    assert fault.requests == []


def test_return_with_an_unknown_setup_intent_shows_the_friendly_page_not_a_500(make_app, fault):
    app = make_app(STRIPE_API_BASE=fault.url)
    fault.then(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                               "message": "No such setupintent: 'seti_nope'"}})
    response = app.test_client().get("/u/return?setup_intent=seti_nope123")
    assert response.status_code == 404
    assert "Traceback" not in response.get_data(as_text=True)
    assert "fresh link" in response.get_data(as_text=True)


def test_checkout_return_with_a_refused_session_shows_the_friendly_page(make_app, fault):
    app = make_app(STRIPE_API_BASE=fault.url)
    fault.then(400, {"error": {"type": "invalid_request_error", "message": "Invalid id"}})
    response = app.test_client().get("/u/checkout/return?session_id=cs_test_abc123")
    assert response.status_code == 404
    assert "fresh link" in response.get_data(as_text=True)


def test_return_when_stripe_is_down_shows_the_retry_page(make_app, fault):
    app = make_app(STRIPE_API_BASE=fault.url)
    fault.then(503, {"error": {"type": "api_error", "message": "down"}})
    response = app.test_client().get("/u/return?setup_intent=seti_abc123")
    assert response.status_code == 503


def test_return_routes_are_limited_per_address(make_app, fault):
    app = make_app(STRIPE_API_BASE=fault.url)
    for _ in range(40):
        fault.then(404, {"error": {"type": "invalid_request_error", "message": "No such"}})
    client = app.test_client()
    statuses = [client.get(f"/u/return?setup_intent=seti_x{n}").status_code for n in range(40)]
    assert statuses[:5] == [404] * 5
    assert 429 in statuses
    assert len(fault.requests) < 40


def test_complete_with_a_made_up_setup_intent_answers_json_not_a_500(make_app, fault,
                                                                    make_customer):
    app = make_app(STRIPE_API_BASE=fault.url)
    customer = make_customer()
    token, _ = link_for(app, customer.id)
    client = app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    fault.then(404, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                               "message": "No such setupintent"}})
    response = client.post(f"/u/{token}/complete", json={"setup_intent": "seti_madeup1"},
                           headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "mismatch"
    bad = client.post(f"/u/{token}/complete", json={"setup_intent": "seti_a/b"}, headers=headers)
    assert bad.status_code == 400
    assert len(fault.requests) == 1


# -- 4: a revoked link saves nothing ---------------------------------------------------------------
def _open_intent(app, token):
    client = app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    body = client.post(f"/u/{token}/intent", json={}, headers=headers).get_json()
    return client, headers, body["client_secret"].split("_secret_")[0]


@pytest.mark.localstripe
def test_revoking_a_link_cancels_its_open_setup_intent_and_complete_records_nothing(
        stripe_app, make_customer, localstripe_url):
    from stripe_helpers import confirm_setup_intent, ls

    customer = make_customer()
    token, _ = link_for(stripe_app, customer.id)
    client, headers, seti = _open_intent(stripe_app, token)
    with stripe_app.app_context():
        revoke_links(db.session.get(Customer, customer.id), by="staff@example.com")
        db.session.commit()
    assert ls(localstripe_url, "GET", f"/v1/setup_intents/{seti}")["status"] == "canceled"
    # localstripe (unlike Stripe) would still confirm a canceled SetupIntent: the app must not
    # take its word either way.
    confirm_setup_intent(localstripe_url, seti)
    response = client.post(f"/u/{token}/complete", json={"setup_intent": seti}, headers=headers)
    assert response.status_code in (400, 404, 410)
    with stripe_app.app_context():
        assert db.session.get(Customer, customer.id).status != "updated"
        assert db.session.execute(select(SavedPaymentMethod)).first() is None


@pytest.mark.localstripe
def test_webhook_for_a_setup_confirmed_after_revoke_records_nothing(
        stripe_app, make_customer, localstripe_url):
    from stripe_helpers import confirm_setup_intent

    from tests.blueprints.test_webhooks import event, post

    customer = make_customer()
    token, _ = link_for(stripe_app, customer.id)
    _, _, seti = _open_intent(stripe_app, token)
    with stripe_app.app_context():
        revoke_links(db.session.get(Customer, customer.id), by="staff@example.com")
        db.session.commit()
    confirmed = confirm_setup_intent(localstripe_url, seti)
    response = post(stripe_app.test_client(),
                    event("setup_intent.succeeded", confirmed, "evt_after_revoke"))
    assert response.status_code < 300
    with stripe_app.app_context():
        assert db.session.get(Customer, customer.id).status != "updated"
        assert db.session.execute(select(SavedPaymentMethod)).first() is None


@pytest.mark.localstripe
def test_a_superseded_link_has_its_setup_intent_cancelled(stripe_app, make_customer,
                                                           localstripe_url):
    from stripe_helpers import ls

    customer = make_customer()
    token, _ = link_for(stripe_app, customer.id)
    _, _, seti = _open_intent(stripe_app, token)
    link_for(stripe_app, customer.id)  # a new link replaces the old one
    assert ls(localstripe_url, "GET", f"/v1/setup_intents/{seti}")["status"] == "canceled"


def test_revoking_a_checkout_link_expires_its_session(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="checkout")
    customer = make_customer(stripe_customer_id="cus_known")
    _, public_id = link_for(app, customer.id)
    with app.app_context():
        link = db.session.execute(select(Link).where(Link.public_id == public_id)).scalar_one()
        link.checkout_session_id = "cs_test_open1"
        db.session.commit()
        fault.then(200, {"id": "cs_test_open1", "object": "checkout.session",
                         "status": "expired"})
        revoke_links(db.session.get(Customer, customer.id), by="staff@example.com")
        db.session.commit()
    assert [r["path"] for r in fault.requests] == ["/v1/checkout/sessions/cs_test_open1/expire"]


# -- 12: a legacy id no header can carry -----------------------------------------------------------
@pytest.mark.localstripe
def test_a_legacy_id_outside_latin1_gets_a_stripe_customer_and_a_setup_intent(
        stripe_app, make_customer):
    customer = make_customer(legacy_id="客户-1")
    token, _ = link_for(stripe_app, customer.id)
    client = stripe_app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    response = client.post(f"/u/{token}/intent", json={}, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["client_secret"].startswith("seti_")
    with stripe_app.app_context():
        assert db.session.get(Customer, customer.id).stripe_customer_id.startswith("cus_")


# -- the session cookie holds the link's public id, not its token ----------------------------------
def test_session_cookie_carries_the_public_id_not_the_token(app, make_customer):
    customer = make_customer()
    token, public_id = link_for(app, customer.id)
    client = app.test_client()
    client.get(f"/u/{token}")
    cookie = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    decoded = _session_payload(cookie.value)
    assert token not in decoded and token.split(".")[0] not in decoded
    assert public_id in decoded
    # and the cancel page still brings the customer back to their page
    resumed = client.get("/u/resume")
    assert resumed.status_code == 302 and resumed.headers["Location"].startswith("/u/")
    assert client.get(resumed.headers["Location"]).status_code == 200


def test_resume_after_the_link_is_revoked_shows_no_form(app, make_customer):
    customer = make_customer()
    token, _ = link_for(app, customer.id)
    client = app.test_client()
    client.get(f"/u/{token}")
    with app.app_context():
        revoke_links(db.session.get(Customer, customer.id), by="staff@example.com")
        db.session.commit()
    resumed = client.get("/u/resume", follow_redirects=True)
    assert 'id="card-form"' not in resumed.get_data(as_text=True)


# -- bodies are bounded per route ------------------------------------------------------------------
@pytest.mark.parametrize("path,size", [
    ("/u/sometoken/intent", 64 * 1024),
    ("/api/v1/links", 64 * 1024),
    ("/csp-report", 64 * 1024),
    ("/webhooks/stripe", 2 * 1024 * 1024),
])
def test_oversize_bodies_answer_413(app, path, size):
    response = app.test_client().post(path, data=b"x" * size,
                                      headers={"Content-Type": "application/json"})
    assert response.status_code == 413, (path, response.status_code)


def test_a_campaign_batch_superseding_a_link_closes_its_open_setup(make_app, fault,
                                                                   make_customer):
    from cardbridge.links.service import issue_links
    from cardbridge.models.types import utcnow

    app = make_app(STRIPE_API_BASE=fault.url)
    customer = make_customer(stripe_customer_id="cus_known")
    _, public_id = link_for(app, customer.id)
    with app.app_context():
        link = db.session.execute(select(Link).where(Link.public_id == public_id)).scalar_one()
        link.setup_intent_id = "seti_open2"
        db.session.commit()
        fault.then(200, {"id": "seti_open2", "object": "setup_intent", "status": "canceled"})
        issue_links({customer.id: "campaign"}, now=utcnow())  # a reminder's new link
        db.session.commit()
        assert db.session.get(Link, link.id).revoked_at is not None
    assert [r["path"] for r in fault.requests] == ["/v1/setup_intents/seti_open2/cancel"]
