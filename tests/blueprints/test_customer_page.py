"""/u/<token>: what the page shows, what it never changes, its headers, and its POSTs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, CustomerEvent, Link, MigratedCard
from tests.testlib import csrf_from


def link_for(app, customer_id, **kw):
    with app.app_context():
        customer = db.session.get(Customer, customer_id)
        issued = issue_link(customer, created_by="test", **kw)
        db.session.commit()
        return issued.token, issued.link.public_id


def snapshot(app):
    with app.app_context():
        rows = {}
        for model in (Customer, Link, CustomerEvent):
            rows[model.__tablename__] = [
                tuple(getattr(r, c.key) for c in model.__table__.columns)
                for r in db.session.execute(select(model).order_by(model.id)).scalars()
            ]
        return rows


@pytest.fixture
def watched(make_app, fault, make_customer):
    """An app whose 'Stripe' records every request it receives."""
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    customer = make_customer(card_brand="Visa", card_last4="4242", card_exp_month=1,
                             card_exp_year=2025, name="Ada Lovelace")
    token, _ = link_for(app, customer.id)
    return app, token, customer


def test_page_shows_who_asks_why_the_card_on_file_and_the_deadline(watched):
    app, token, customer = watched
    html = app.test_client().get(f"/u/{token}").get_data(as_text=True)
    assert "moving its payments to" in html and "Stripe" in html
    assert "Visa ending 4242" in html and "01/2025" in html
    assert "Please update by" in html
    assert customer.legacy_id in html
    assert 'id="card-form"' in html


def test_migrated_card_is_preferred_over_the_roster_card(watched):
    app, token, customer = watched
    with app.app_context():
        db.session.add(MigratedCard(customer_id=customer.id, old_card_id="c1", stripe_id="card_1",
                                    brand="Mastercard", last4="5555", exp_month=2,
                                    exp_year=2026))
        db.session.commit()
    html = app.test_client().get(f"/u/{token}").get_data(as_text=True)
    assert "Mastercard ending 5555" in html


def test_get_and_head_change_nothing_and_call_stripe_never(watched, fault):
    app, token, _ = watched
    before = snapshot(app)
    client = app.test_client()
    for _ in range(2):  # two scanner GETs, a HEAD, then the person
        assert client.get(f"/u/{token}").status_code == 200
    assert client.head(f"/u/{token}").status_code == 200
    assert client.get(f"/u/{token}").status_code == 200
    assert snapshot(app) == before
    assert fault.requests == []


def test_link_page_headers(watched):
    app, token, _ = watched
    response = app.test_client().get(f"/u/{token}")
    csp = response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "strict-origin"
    assert "no-store" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for directive in ("frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
        assert directive in csp
    assert "https://js.stripe.com" in csp and "https://hooks.stripe.com" in csp
    assert "https://api.stripe.com" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'nonce="{nonce}"' in response.get_data(as_text=True)
    assert "unsafe-inline" not in csp


def test_nonce_changes_per_response(watched):
    app, token, _ = watched
    client = app.test_client()
    first = client.get(f"/u/{token}").headers["Content-Security-Policy"]
    second = client.get(f"/u/{token}").headers["Content-Security-Policy"]
    assert first != second


def test_pages_without_stripe_allow_no_stripe_hosts(app, client):
    for path in ("/healthz", "/u/not-a-token", "/nowhere"):
        csp = client.get(path).headers["Content-Security-Policy"]
        assert "stripe.com" not in csp, path
        assert "frame-src 'none'" in csp


def test_hsts_and_secure_cookies_outside_debug(watched):
    app, token, _ = watched
    response = app.test_client().get(f"/u/{token}", base_url="https://cards.example.test")
    assert "max-age=63072000" in response.headers["Strict-Transport-Security"]
    cookie = response.headers.get("Set-Cookie", "")
    assert "__Host-session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_tampered_link_gets_the_friendly_page_with_404(client, app):
    response = client.get("/u/abc.def.ghi")
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "Email me a fresh link" in html
    assert 'id="card-form"' not in html and "Traceback" not in html


@pytest.mark.parametrize("state", ["used", "revoked", "expired"])
def test_dead_links_get_410_and_no_form(watched, state):
    app, token, customer = watched
    with app.app_context():
        link = db.session.execute(select(Link)).scalars().first()
        from cardbridge.models.types import utcnow
        if state == "used":
            link.used_at = utcnow()
        elif state == "revoked":
            link.revoked_at = utcnow()
        else:
            link.expires_at = utcnow()
        db.session.commit()
    response = app.test_client().get(f"/u/{token}")
    assert response.status_code == 410
    html = response.get_data(as_text=True)
    assert 'id="card-form"' not in html
    assert "Email me a fresh link" in html


def test_intent_post_without_csrf_is_refused(watched, fault):
    app, token, _ = watched
    response = app.test_client().post(f"/u/{token}/intent", json={})
    assert response.status_code == 400
    assert fault.requests == []


def test_intent_when_stripe_is_down_says_try_again(watched, fault):
    app, token, _ = watched
    fault.default = (503, {}, {"error": {"type": "api_error", "message": "down"}}, 0.0)
    client = app.test_client()
    token_csrf = csrf_from(client.get(f"/u/{token}").get_data(as_text=True))
    response = client.post(f"/u/{token}/intent", json={}, headers={"X-CSRFToken": token_csrf})
    assert response.status_code == 503
    body = response.get_json()
    assert body["retry"] is True and "try again" in body["message"]


@pytest.mark.localstripe
def test_intent_returns_client_secret_and_reuses_the_open_setup_intent(stripe_app,
                                                                       make_customer):
    customer = make_customer()
    token, public_id = link_for(stripe_app, customer.id)
    client = stripe_app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    first = client.post(f"/u/{token}/intent", json={}, headers=headers).get_json()
    second = client.post(f"/u/{token}/intent", json={}, headers=headers).get_json()
    assert first["client_secret"].startswith("seti_")
    assert first["client_secret"] == second["client_secret"]
    with stripe_app.app_context():
        link = db.session.execute(select(Link).where(Link.public_id == public_id)).scalar_one()
        assert first["client_secret"].startswith(link.setup_intent_id + "_secret_")


def test_complete_refuses_a_foreign_setup_intent(watched, fault):
    app, token, _ = watched
    fault.then(200, {"id": "seti_x", "object": "setup_intent", "status": "succeeded",
                     "customer": "cus_other", "metadata": {"cardbridge_link": "someone-else"},
                     "payment_method": "pm_1"})
    client = app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    response = client.post(f"/u/{token}/complete", json={"setup_intent": "seti_x"},
                           headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "mismatch"


def test_checkout_post_redirects_to_the_session_url(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="checkout")
    customer = make_customer(stripe_customer_id="cus_known")
    token, public_id = link_for(app, customer.id)
    session = json.loads(Path("/work/shared/data/stripe-api-fixtures.json").read_text()
                         if Path("/work/shared/data/stripe-api-fixtures.json").exists()
                         else "{}").get("checkout.session", {})
    session.update({"id": "cs_test_1", "mode": "setup", "status": "open",
                    "url": "https://checkout.stripe.com/c/pay/cs_test_1",
                    "metadata": {"cardbridge_link": public_id}})
    fault.then(200, session)
    client = app.test_client()
    page = client.get(f"/u/{token}")
    assert "https://checkout.stripe.com" in page.headers["Content-Security-Policy"]
    form_token = csrf_from(page.get_data(as_text=True))
    response = client.post(f"/u/{token}/checkout", data={"csrf_token": form_token})
    assert response.status_code == 303
    assert response.headers["Location"] == "https://checkout.stripe.com/c/pay/cs_test_1"
    sent = fault.requests[0]["body"].replace("%5B", "[").replace("%5D", "]")
    assert "mode=setup" in sent and "customer=cus_known" in sent
    assert "setup_intent_data[metadata][cardbridge_link]=" + public_id in sent
    assert "payment_method_types" not in sent
    assert "success_url=" in sent and token not in sent  # the token never goes to Stripe


def test_checkout_when_stripe_is_down_shows_the_retry_page(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="checkout")
    fault.default = (500, {}, {"error": {"type": "api_error"}}, 0.0)
    customer = make_customer(stripe_customer_id="cus_known")
    token, _ = link_for(app, customer.id)
    client = app.test_client()
    form_token = csrf_from(client.get(f"/u/{token}").get_data(as_text=True))
    response = client.post(f"/u/{token}/checkout", data={"csrf_token": form_token})
    assert response.status_code == 503
    assert "Try again" in response.get_data(as_text=True)


# -- "email me a fresh link" ----------------------------------------------------------------
def outbox(app):
    return sorted((Path(app.instance_path) / "outbox").glob("*.eml"))


def ask_fresh(client, email, token=""):
    page = client.get("/u/expired.token.here")
    return client.post("/u/fresh", data={"email": email, "token": token,
                                         "csrf_token": csrf_from(page.get_data(as_text=True))})


def _variable_free(response) -> str:
    """The page minus per-response values (nonce, CSRF token)."""
    return re.sub(r'nonce="[^"]+"|content="[^"]+"|value="[^"]+"', "",
                  response.get_data(as_text=True))


def test_fresh_link_answer_is_the_same_for_known_and_unknown_addresses(app, make_customer):
    customer = make_customer(email="known@example.com")
    known = ask_fresh(app.test_client(), "  Known@Example.com ")
    unknown = ask_fresh(app.test_client(), "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert _variable_free(known) == _variable_free(unknown)
    mails = outbox(app)
    assert len(mails) == 1
    text = mails[0].read_text()
    assert "To: known@example.com" in text
    assert "https://cards.example.test/u/" in text
    with app.app_context():
        assert db.session.get(Customer, customer.id).status == "invited"


def test_fresh_link_is_sent_only_to_the_address_on_file(watched):
    app, token, customer = watched
    ask_fresh(app.test_client(), "attacker@example.com", token=token)
    assert outbox(app) == []


def test_fresh_link_ignores_the_request_host(app, make_customer):
    make_customer(email="host@example.com")
    client = app.test_client()
    page = client.get("/u/x.y.z", headers={"Host": "evil.example",
                                           "X-Forwarded-Host": "evil.example"})
    client.post("/u/fresh", data={"email": "host@example.com",
                                  "csrf_token": csrf_from(page.get_data(as_text=True))},
                headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    text = outbox(app)[0].read_text()
    assert "evil.example" not in text and "https://cards.example.test/u/" in text


def test_fresh_link_requests_are_rate_limited(app, make_customer):
    client = app.test_client()
    statuses = [ask_fresh(client, f"person{i}@example.com").status_code for i in range(7)]
    assert statuses[:5] == [200] * 5
    assert statuses[5] == 429
    limited = ask_fresh(client, "later@example.com")
    assert "Retry-After" in limited.headers


def test_fresh_link_rate_limit_per_address(app, make_customer):
    make_customer(email="target@example.com")
    statuses = [ask_fresh(app.test_client(), "target@example.com").status_code
                for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert len(outbox(app)) == 3


@pytest.mark.localstripe
def test_saving_again_after_a_lost_answer_finishes_the_confirmed_setup(stripe_app,
                                                                      make_customer,
                                                                      localstripe_url):
    from stripe_helpers import confirm_setup_intent

    customer = make_customer()
    token, public_id = link_for(stripe_app, customer.id)
    client = stripe_app.test_client()
    headers = {"X-CSRFToken": csrf_from(client.get(f"/u/{token}").get_data(as_text=True))}
    first = client.post(f"/u/{token}/intent", json={}, headers=headers).get_json()
    confirm_setup_intent(localstripe_url, first["client_secret"].split("_secret_")[0])
    again = client.post(f"/u/{token}/intent", json={}, headers=headers)
    assert again.status_code == 200
    assert again.get_json()["redirect"] == "/u/done"
    with stripe_app.app_context():
        assert db.session.get(Customer, customer.id).status == "updated"
