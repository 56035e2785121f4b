"""The Payment Element and Checkout forms in chromium, against recorded Stripe responses and a
stand-in Stripe.js (tests/fakes/stripe_front.py) in front of a real localstripe."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import Customer, Link, SavedPaymentMethod
from tests.e2e.conftest import assert_page_clean, ls, make_link, shoot
from tests.fakes.stripe_front import StripeFront

pytestmark = [pytest.mark.e2e, pytest.mark.localstripe]


@pytest.fixture(scope="session")
def stripe_front(localstripe_url):
    with StripeFront(localstripe_url) as front:
        yield front


def front_app(make_app, live_server_for, front: StripeFront, card_form: str):
    app = make_app(STRIPE_API_BASE=front.url, STRIPE_JS_URL=front.js_url,
                   STRIPE_SECRET_KEY="sk_test_cardbridge",
                   STRIPE_PUBLISHABLE_KEY="pk_test_cardbridge", CARD_FORM=card_form)
    live_server_for(app)
    return app


@pytest.fixture
def element_app(make_app, live_server_for, stripe_front):
    return front_app(make_app, live_server_for, stripe_front, "payment_element")


@pytest.fixture
def checkout_app(make_app, live_server_for, stripe_front):
    return front_app(make_app, live_server_for, stripe_front, "checkout")


def fill_payment_element(page: Page, number: str) -> None:
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiration date").fill("12 / 30")
    page.get_by_label("Security code").fill("123")


def link_public_id(app) -> str:
    with app.app_context():
        found = db.session.execute(select(Link.public_id)).scalar_one()
        db.session.remove()
    return found


def recorded(app, customer_id: int) -> tuple[Customer, list[SavedPaymentMethod]]:
    with app.app_context():
        customer = db.session.get(Customer, customer_id)
        saved = list(db.session.execute(
            select(SavedPaymentMethod).where(SavedPaymentMethod.customer_id == customer_id)
        ).scalars())
        db.session.expunge_all()
        db.session.remove()
    return customer, saved


def assert_done(page: Page, app, link, localstripe_url: str, via: str) -> None:
    page.wait_for_url("**/u/done")
    expect(page.locator("h1")).to_have_text("Thank you, your card is saved")
    expect(page.locator(".lead")).to_contain_text("Visa ending 4242")
    customer, saved = recorded(app, link.customer_id)
    assert customer.status == "updated"
    assert [s.recorded_via for s in saved] == [via]
    stripe_customer = ls(localstripe_url, "GET", f"/v1/customers/{customer.stripe_customer_id}")
    assert stripe_customer["invoice_settings"]["default_payment_method"] == \
        saved[0].stripe_payment_method_id


# -- Payment Element -----------------------------------------------------------------------------
def test_payment_element_saves_4242_without_leaving_the_page(page, browser_log, element_app,
                                                             localstripe_url):
    link = make_link(element_app)
    assert page.goto(link.url).status == 200
    expect(page.locator("#submit")).to_be_enabled()  # the Element said "ready"
    shoot(page, "payment-element-update")
    fill_payment_element(page, "4242 4242 4242 4242")
    page.locator("#submit").click()
    assert_done(page, element_app, link, localstripe_url, via="browser")
    assert_page_clean(page, browser_log)


def test_payment_element_decline_shows_message_then_4242_succeeds(page, browser_log,
                                                                  element_app, localstripe_url):
    link = make_link(element_app)
    page.goto(link.url)
    fill_payment_element(page, "4000 0000 0000 0002")
    page.locator("#submit").click()
    expect(page.locator("#card-errors")).to_have_text("Your card was declined.")
    expect(page.locator("#submit")).to_be_enabled()
    assert recorded(element_app, link.customer_id)[1] == []

    fill_payment_element(page, "4242 4242 4242 4242")
    page.locator("#submit").click()
    assert_done(page, element_app, link, localstripe_url, via="browser")
    assert_page_clean(page, browser_log, "402")


def test_payment_element_incomplete_card_is_stopped_before_any_setup_intent(
        page, browser_log, element_app):
    link = make_link(element_app)
    page.goto(link.url)
    page.get_by_label("Card number").fill("4242")
    page.locator("#submit").click()
    expect(page.locator("#card-errors")).to_have_text("Your card number is incomplete.")
    expect(page.locator("#submit")).to_be_enabled()
    with element_app.app_context():
        assert db.session.execute(select(Link.setup_intent_id)).scalar_one() is None
        db.session.remove()
    assert_page_clean(page, browser_log)


def test_payment_element_3d_secure_comes_back_through_the_return_url(page, browser_log,
                                                                     element_app,
                                                                     localstripe_url):
    link = make_link(element_app)
    page.goto(link.url)
    fill_payment_element(page, "4000 0025 0000 3155")
    page.locator("#submit").click()
    page.get_by_role("button", name="Complete authentication").click()
    page.wait_for_url("**/u/done")
    assert "secret" not in page.url
    customer, saved = recorded(element_app, link.customer_id)
    assert customer.status == "updated"
    assert [(s.last4, s.recorded_via) for s in saved] == [("3155", "return")]
    assert_page_clean(page, browser_log)


def test_payment_element_failed_3d_secure_returns_to_the_form(page, browser_log, element_app):
    link = make_link(element_app)
    page.goto(link.url)
    fill_payment_element(page, "4000 0025 0000 3155")
    page.locator("#submit").click()
    page.get_by_role("button", name="Fail authentication").click()
    page.wait_for_url(f"{link.url}?retry=1")
    expect(page.locator("#card-errors")).to_have_text(
        "Your card was not confirmed, so nothing was saved. Please try again or use another card.")
    expect(page.locator("#submit")).to_be_enabled()
    shoot(page, "payment-element-retry")
    assert recorded(element_app, link.customer_id)[1] == []
    assert_page_clean(page, browser_log)


# -- Checkout --------------------------------------------------------------------------------------
def test_checkout_goes_to_stripe_and_back_to_done(page, browser_log, checkout_app,
                                                  stripe_front, localstripe_url):
    link = make_link(checkout_app)
    page.goto(link.url)
    shoot(page, "checkout-update")
    page.get_by_role("button", name="Continue to secure card page").click()
    page.wait_for_url(f"{stripe_front.url}/c/pay/cs_test_*")
    session_id = page.url.rsplit("/", 1)[1]
    session = stripe_front.sessions[session_id]
    assert (session["mode"], session["currency"], session["status"]) == ("setup", "usd", "open")
    with checkout_app.app_context():
        row = db.session.execute(select(Link)).scalar_one()
        assert session["metadata"] == {"cardbridge_link": row.public_id}
        assert row.checkout_session_id == session_id
        db.session.remove()

    page.get_by_label("Card number").fill("4242424242424242")
    page.get_by_label("Expiration (MM / YY)").fill("12/30")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name="Save card").click()
    assert_done(page, checkout_app, link, localstripe_url, via="return")
    assert stripe_front.sessions[session_id]["status"] == "complete"
    assert_page_clean(page, browser_log)


def test_checkout_cancel_brings_the_customer_back_to_the_page(page, browser_log, checkout_app,
                                                              stripe_front):
    link = make_link(checkout_app)
    page.goto(link.url)
    page.get_by_role("button", name="Continue to secure card page").click()
    page.wait_for_url(f"{stripe_front.url}/c/pay/cs_test_*")
    page.get_by_role("link", name="Back").click()
    page.wait_for_url(link.url)
    expect(page.get_by_role("button", name="Continue to secure card page")).to_be_enabled()
    customer, saved = recorded(checkout_app, link.customer_id)
    assert (customer.status, saved) == ("invited", [])
    assert_page_clean(page, browser_log)


def test_browser_back_from_stripe_leaves_a_usable_button(page, browser_log, checkout_app,
                                                         stripe_front):
    link = make_link(checkout_app)
    page.goto(link.url)
    page.get_by_role("button", name="Continue to secure card page").click()
    page.wait_for_url(f"{stripe_front.url}/c/pay/cs_test_*")
    page.go_back()
    page.wait_for_url(link.url)
    button = page.get_by_role("button", name="Continue to secure card page")
    expect(button).to_be_enabled()
    button.click()
    page.wait_for_url(f"{stripe_front.url}/c/pay/cs_test_*")
    assert len({s["id"] for s in stripe_front.sessions.values()
                if s["metadata"].get("cardbridge_link") == link_public_id(checkout_app)}) == 1
    assert_page_clean(page, browser_log)


def test_checkout_return_before_the_session_completes_asks_to_try_again(page, browser_log,
                                                                       checkout_app,
                                                                       stripe_front):
    link = make_link(checkout_app)
    page.goto(link.url)
    page.get_by_role("button", name="Continue to secure card page").click()
    page.wait_for_url(f"{stripe_front.url}/c/pay/cs_test_*")
    session_id = page.url.rsplit("/", 1)[1]
    page.goto(f"{checkout_app.config['PUBLIC_BASE_URL']}/u/checkout/return?session_id={session_id}")
    page.wait_for_url(f"{link.url}?retry=1")
    expect(page.get_by_role("alert")).to_have_text(
        "Your card was not confirmed, so nothing was saved. Please try again or use another card.")
    customer, saved = recorded(checkout_app, link.customer_id)
    assert (customer.status, saved) == ("invited", [])
    assert_page_clean(page, browser_log)
