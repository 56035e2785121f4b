"""Moving subscriptions, seen in chromium: the dashboard's revenue at risk (chart and table), the
admin page's states and its Apply button (queued to the worker, run at once in tests) against
the fake Stripe, and a customer's subscriptions and invoice outcomes. Screenshots at laptop and
phone widths, axe at both."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from cardbridge.extensions import db
from cardbridge.models import InvoicePayment
from cardbridge.models.types import utcnow
from tests.e2e.conftest import assert_page_clean
from tests.e2e.test_support_console import check_page
from tests.stripe_helpers import TEST_SECRET_KEY
from tests.subscriptions.test_subscription_apply import schedules_on, world
from tests.subscriptions.test_subscription_console import ledger_row
from tests.support.staff_helpers import FAST_HASH, create_staff

pytestmark = [pytest.mark.e2e, pytest.mark.localstripe]


def sign_in(page: Page, base: str, staff) -> None:
    page.goto(f"{base}/support/login")
    page.get_by_label("Email").fill(staff.email)
    page.get_by_label("Password").fill(staff.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Migration progress")).to_be_visible()


def test_an_admin_sees_revenue_at_risk_and_applies_the_plan_on_stripe(
        page, browser_log, make_app, make_customer, localstripe_url, live_server_for):
    app = make_app(STRIPE_API_BASE=localstripe_url, STRIPE_SECRET_KEY=TEST_SECRET_KEY,
                   STRIPE_WRITE_RATE=0, STRIPE_READ_RATE=0, STAFF_REQUIRE_2FA=False,
                   STAFF_PASSWORD_METHOD=FAST_HASH,
                   CUTOVER_DATE=utcnow().date() + timedelta(days=24))
    world(app, make_customer, localstripe_url, 3)
    waiting = make_customer(legacy_id="C-wait", stripe_customer_id="cus_wait",
                            status="needs_update", name="Robin Waits")
    with app.app_context():
        db.session.add_all([
            ledger_row(waiting.id, "S-wait", "waiting_for_card", 4900, days_ago=20),
            ledger_row(waiting.id, "S-review", "needs_review", 1900, days_ago=12,
                       reason="price mismatch: legacy 19.00, Stripe 18.00"),
            ledger_row(None, "S-lost", "needs_review", 9900, days_ago=5,
                       reason="customer not in the roster"),
        ])
        db.session.add(InvoicePayment(customer_id=waiting.id, stripe_invoice_id="in_e2e_declined",
                                      amount=4900, currency="usd", outcome="declined",
                                      message="Your card has insufficient funds."))
        db.session.commit()
        db.session.remove()
    before = len(schedules_on(localstripe_url))
    base = live_server_for(app).url
    sign_in(page, base, create_staff(app, "ops@example.com", "admin"))

    # The dashboard: MRR per group, the burn-down with the cutover marked, a table beside it.
    section = page.get_by_role("region", name="Subscriptions and revenue at risk")
    expect(section.locator('[data-group="covered"]')).to_have_text("3")
    expect(section.locator('[data-at-risk="usd"]')).to_have_text("167.00 USD")
    expect(section.get_by_role("img", name="Monthly revenue at risk, USD")).to_be_visible()
    expect(section.locator(".chart-marker")).to_have_count(1)
    expect(section).to_contain_text("24 days to the cutover")
    section.get_by_text("Show as a table").click()
    expect(section.locator("tbody tr").first).to_contain_text("167.00 USD")
    check_page(page, "dashboard-revenue")

    # The admin page: states, reasons, and Apply on Stripe with a reason.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Subscriptions").click()
    expect(page.locator('[data-count="planned"]')).to_have_text("3")
    expect(page.locator("#reasons-heading + ul")).to_contain_text(
        "price mismatch: legacy 19.00, Stripe 18.00")
    check_page(page, "subscriptions")
    page.locator("#apply-reason").fill("legacy side cancelled the first wave")
    page.get_by_role("button", name="Apply on Stripe").click()
    expect(page.locator(".flash-success")).to_contain_text("Applying on Stripe is queued")
    expect(page.locator('[data-count="scheduled"]')).to_have_text("3")
    expect(page.locator('[data-count="planned"]')).to_have_text("0")
    expect(page.locator("#runs-heading + ul")).to_contain_text("worker for ops@example.com")
    assert len(schedules_on(localstripe_url)) == before + 3
    check_page(page, "subscriptions-applied")

    # The customer who is waiting: their subscriptions and the declined invoice, Stripe's words.
    page.get_by_role("link", name="C-wait").first.click()
    expect(page.locator('[data-subscription="S-wait"]')).to_contain_text("Waiting for a card")
    expect(page.locator('[data-invoice="in_e2e_declined"]')).to_contain_text(
        "Your card has insufficient funds.")
    check_page(page, "customer-subscriptions")
    assert_page_clean(page, browser_log)
