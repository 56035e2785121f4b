"""The update page with the Card Element, driven in chromium against a real localstripe: every
path a customer can take, ending in Stripe (localstripe) and our database agreeing."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select

from cardbridge.extensions import db
from cardbridge.models import Customer, SavedPaymentMethod
from tests.e2e.conftest import (
    assert_page_clean,
    csp_violations,
    fill_card,
    ls,
    make_link,
    open_page,
    shoot,
    stripe_customer_with_subscription,
)

pytestmark = [pytest.mark.e2e, pytest.mark.localstripe]

DECLINED = "Your card was declined."


def save(page: Page) -> None:
    page.locator("#submit").click()


def db_state(app, customer_id: int) -> tuple[str, list[SavedPaymentMethod]]:
    with app.app_context():
        customer = db.session.get(Customer, customer_id)
        saved = list(db.session.execute(
            select(SavedPaymentMethod).where(SavedPaymentMethod.customer_id == customer_id)
        ).scalars())
        status = customer.status
        db.session.remove()
    return status, saved


def stripe_customer_id(app, customer_id: int) -> str:
    with app.app_context():
        found = db.session.get(Customer, customer_id).stripe_customer_id
        db.session.remove()
    return found


def assert_saved(page: Page, app, link, localstripe_url: str,
                 last4: str = "4242") -> SavedPaymentMethod:
    """Ends on /u/done naming the card; DB and Stripe both say the new card is the default."""
    page.wait_for_url("**/u/done")
    assert link.token not in page.url
    expect(page.locator("h1")).to_have_text("Thank you, your card is saved")
    expect(page.locator(".lead")).to_contain_text(f"Visa ending {last4}")
    status, saved = db_state(app, link.customer_id)
    assert status == "updated"
    assert len(saved) == 1
    cus = ls(localstripe_url, "GET", f"/v1/customers/{stripe_customer_id(app, link.customer_id)}")
    assert cus["invoice_settings"]["default_payment_method"] == saved[0].stripe_payment_method_id
    assert saved[0].last4 == last4
    return saved[0]


def test_card_4242_is_saved_and_becomes_the_stripe_default(page, browser_log, card_app,
                                                           localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    expect(page.locator("h1")).to_have_text("Update your card")
    expect(page.locator(".facts")).to_contain_text("Visa ending 0019")
    shoot(page, "card-element-update")
    fill_card(page, "4242424242424242")
    save(page)
    assert_saved(page, card_app, link, localstripe_url)
    shoot(page, "card-element-done")
    assert_page_clean(page, browser_log)


def test_declined_card_shows_stripes_message_then_4242_succeeds(page, browser_log, card_app,
                                                                localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    fill_card(page, "4000000000000002")
    save(page)
    expect(page.locator("#card-errors")).to_have_text(DECLINED)
    expect(page.locator("#submit")).to_be_enabled()
    assert page.url == link.url
    assert db_state(card_app, link.customer_id) == ("invited", [])
    shoot(page, "card-element-declined")

    fill_card(page, "4242424242424242")
    save(page)
    assert_saved(page, card_app, link, localstripe_url)
    assert_page_clean(page, browser_log, "402")  # localstripe answers a decline with 402


def test_3d_secure_completed_saves_the_card(page, browser_log, card_app, localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    fill_card(page, "4000002500003155")
    save(page)
    page.get_by_role("button", name="Complete authentication").click()
    assert_saved(page, card_app, link, localstripe_url, last4="3155")
    assert_page_clean(page, browser_log)


def test_3d_secure_failed_records_nothing_then_4242_succeeds(page, browser_log, card_app,
                                                             localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    fill_card(page, "4000002500003155")
    save(page)
    expect(page.locator("#submit")).to_be_disabled()  # still busy while 3-D Secure is open
    page.get_by_role("button", name="Fail authentication").click()
    expect(page.locator("#card-errors")).to_contain_text("authentication failed")
    expect(page.locator("#submit")).to_be_enabled()
    assert db_state(card_app, link.customer_id) == ("invited", [])

    fill_card(page, "4242424242424242")
    save(page)
    assert_saved(page, card_app, link, localstripe_url)
    assert_page_clean(page, browser_log)


def test_active_subscription_gets_the_new_card_as_its_default(page, browser_log, card_app,
                                                              localstripe_url):
    cus_id, sub_id, old_pm = stripe_customer_with_subscription(localstripe_url,
                                                               "subscriber@example.com")
    link = make_link(card_app, stripe_customer_id=cus_id, email="subscriber@example.com")
    assert ls(localstripe_url, "GET", f"/v1/subscriptions/{sub_id}")["default_payment_method"] \
        == old_pm
    open_page(page, link.url)
    fill_card(page, "4242424242424242")
    save(page)
    saved = assert_saved(page, card_app, link, localstripe_url)
    sub = ls(localstripe_url, "GET", f"/v1/subscriptions/{sub_id}")
    assert sub["default_payment_method"] == saved.stripe_payment_method_id
    assert saved.subscriptions_updated == 1
    assert_page_clean(page, browser_log)


def test_button_is_disabled_while_the_card_is_being_confirmed(page, browser_log, card_app,
                                                              localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    held = []
    page.route("**/complete", lambda route: held.append(route))  # answer only after we look
    fill_card(page, "4242424242424242")
    with page.expect_request("**/complete"):
        save(page)
    button = page.locator("#submit")
    expect(button).to_be_disabled()
    expect(page.locator("#card-form")).to_have_attribute("aria-busy", "true")
    expect(page.locator("#card-status")).to_have_text("Saving your card…")
    shoot(page, "card-element-busy", full_page=False)
    button.click(force=True)  # a second press while busy must not send a second request
    while not held:
        page.wait_for_timeout(10)
    page.wait_for_timeout(100)
    assert len(held) == 1
    held[0].continue_()
    assert_saved(page, card_app, link, localstripe_url)
    assert_page_clean(page, browser_log)


def test_lost_answer_after_stripe_confirmed_is_finished_by_the_next_save(page, browser_log,
                                                                          card_app,
                                                                          localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    page.route("**/complete", lambda route: route.abort("connectionreset"))
    fill_card(page, "4242424242424242")
    save(page)
    expect(page.locator("#card-errors")).to_contain_text("We could not reach the server")
    expect(page.locator("#submit")).to_be_enabled()
    assert db_state(card_app, link.customer_id) == ("invited", [])  # Stripe has it, we do not

    page.unroute("**/complete")
    save(page)  # the open SetupIntent has succeeded: the server finishes it, no second card
    assert_saved(page, card_app, link, localstripe_url)
    assert_page_clean(page, browser_log, "net::ERR_CONNECTION_RESET")


def test_used_link_shows_already_used_page_without_a_form(page, browser_log, card_app,
                                                          localstripe_url):
    link = make_link(card_app)
    open_page(page, link.url)
    fill_card(page, "4242424242424242")
    save(page)
    assert_saved(page, card_app, link, localstripe_url)

    response = page.goto(link.url)
    assert response.status == 410
    expect(page.locator("h1")).to_have_text("This link has already been used")
    expect(page.locator("#card-form")).to_have_count(0)
    expect(page.locator("#card-element")).to_have_count(0)
    expect(page.get_by_role("button", name="Email me a fresh link")).to_be_visible()
    shoot(page, "link-used")
    assert_page_clean(page, browser_log, "410")


def test_tampered_link_shows_the_friendly_page_with_404(page, browser_log, card_app):
    link = make_link(card_app)
    # Change a character inside the signature (the last base64 character carries padding bits
    # a decoder ignores, so changing that one alone may leave the signature intact).
    at = len(link.url) - 10
    tampered = link.url[:at] + ("x" if link.url[at] != "x" else "y") + link.url[at + 1:]
    response = page.goto(tampered)
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("We can't open this link")
    expect(page.locator("#card-form")).to_have_count(0)
    assert "Traceback" not in page.content()
    shoot(page, "link-tampered")
    assert_page_clean(page, browser_log, "404")


def outbox(app) -> list[Path]:
    return sorted((Path(app.instance_path) / "outbox").glob("*.eml"))


def test_expired_page_sends_a_fresh_link_only_to_the_address_on_file(page, browser_log,
                                                                     card_app):
    link = make_link(card_app, expired=True)
    response = page.goto(link.url)
    assert response.status == 410
    expect(page.locator("h1")).to_have_text("This link has expired")
    shoot(page, "link-expired")

    page.get_by_label("Email address we have on file").fill("someone.else@example.com")
    page.get_by_role("button", name="Email me a fresh link").click()
    expect(page.locator("h1")).to_have_text("Check your email")
    assert outbox(card_app) == []

    page.goto(link.url)
    page.get_by_label("Email address we have on file").fill(link.email.upper())
    page.get_by_role("button", name="Email me a fresh link").click()
    expect(page.locator("h1")).to_have_text("Check your email")
    shoot(page, "fresh-link-sent")
    sent = outbox(card_app)
    assert len(sent) == 1
    mail = message_from_bytes(sent[0].read_bytes(), policy=default_policy)
    assert mail["To"] == link.email
    fresh_url = re.search(r"http://127\.0\.0\.1:\d+/u/[\w.\-]+",
                          mail.get_body(("plain",)).get_content()).group(0)
    assert fresh_url != link.url
    open_page(page, fresh_url)  # the emailed link opens the card form
    with card_app.app_context():
        assert db.session.execute(select(func.count(SavedPaymentMethod.id))).scalar_one() == 0
        db.session.remove()
    assert_page_clean(page, browser_log, "410")


def test_the_csp_listener_does_catch_a_violation(page, browser_log, card_app):
    """Guards the "zero violations" checks above against passing because nothing listens."""
    link = make_link(card_app)
    open_page(page, link.url)
    page.evaluate("""() => { const img = document.createElement("img");
                             img.src = "https://tracker.invalid/pixel.png";
                             document.body.appendChild(img); }""")
    page.wait_for_function("window.__cspViolations.length > 0")
    assert [v["directive"] for v in csp_violations(page, browser_log)] == ["img-src"]


def test_page_says_so_when_stripe_js_cannot_load(page, browser_log, card_app):
    link = make_link(card_app)
    page.route(card_app.config["STRIPE_JS_URL"], lambda route: route.abort("blockedbyclient"))
    assert page.goto(link.url).status == 200
    expect(page.locator("#card-errors")).to_contain_text("The secure card form could not load")
    expect(page.locator("#submit")).to_be_disabled()
    assert_page_clean(page, browser_log, "net::ERR_BLOCKED_BY_CLIENT")
