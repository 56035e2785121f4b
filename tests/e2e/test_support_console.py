"""The support console in chromium, against a real localstripe: staff sign in (with a TOTP code),
find a customer, copy a new link, the customer saves a card with it in another browser, and the
dashboard counts it. Screenshots at laptop and phone widths; axe on the main pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import Customer, Email, Wave
from cardbridge.models.drift import DriftFinding
from cardbridge.models.types import utcnow
from tests.e2e.conftest import CSP_LISTENER, BrowserLog, add_customer, assert_page_clean, shoot
from tests.support.staff_helpers import FAST_HASH, create_staff

pytestmark = [pytest.mark.e2e, pytest.mark.localstripe]

LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def console(stripe_app, live_server_for):
    stripe_app.config.update(CARD_FORM="card_element", STAFF_REQUIRE_2FA=True,
                             STAFF_PASSWORD_METHOD=FAST_HASH)
    server = live_server_for(stripe_app)
    return stripe_app, server.url


def assert_accessible(page: Page, name: str) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, f"{name}:\n{results.generate_report()}"


def check_page(page: Page, name: str) -> None:
    """Laptop and phone screenshots of the current page, axe at both widths, and no sideways
    scrolling of the whole page on a phone (wide tables scroll inside their own box)."""
    for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        shoot(page, f"support-{name}-{label}")
        assert_accessible(page, f"{name} ({label})")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], \
        f"{name} scrolls sideways on a phone"
    page.set_viewport_size(LAPTOP)


def customer_browser(browser: Browser, log: BrowserLog) -> Page:
    context = browser.new_context(viewport=PHONE, locale="en-US")
    context.set_default_timeout(10_000)
    context.expose_function("__cardbridgeCsp", lambda v: log.csp.append(v))
    context.add_init_script(CSP_LISTENER)
    opened = context.new_page()
    opened.on("console", lambda m: m.type == "error" and log.console_errors.append(m.text))
    opened.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    return opened


def test_staff_copy_a_link_the_customer_saves_a_card_and_the_dashboard_counts_it(
        browser, page, browser_log, console, localstripe_url):
    app, base = console
    staff = create_staff(app, "lead@example.com", "admin", totp=True)
    with app.app_context():
        add_customer(legacy_id="CB-4242", email="pat.doe@example.com", name="Pat Doe")
        db.session.commit()
        db.session.remove()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

    # Sign in: password, then the code from the authenticator app; lands where it was going.
    page.goto(f"{base}/support/customers")
    expect(page.get_by_role("heading", name="Staff sign in")).to_be_visible()
    check_page(page, "login")
    page.get_by_label("Email").fill(staff.email)
    page.get_by_label("Password").fill(staff.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("6-digit code").fill(staff.code())
    page.get_by_role("button", name="Verify and sign in").click()
    expect(page.get_by_role("heading", name="Customers", exact=True)).to_be_visible()

    page.goto(f"{base}/support/")
    expect(page.locator('[data-status="updated"]')).to_have_text("0")
    expect(page.locator('[data-status="needs_update"]')).to_have_text("1")

    # Find the customer by email in another case, from the search box.
    page.get_by_role("link", name="Customers").click()
    page.get_by_label("Find by legacy id, email or Stripe customer id").fill("PAT.DOE@Example.com")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", name="Pat Doe CB-4242")).to_be_visible()
    check_page(page, "customer")

    # Generate a link with a reason; copy it with the button.
    page.get_by_label("Reason").fill("customer phoned: never got the email")
    page.get_by_role("button", name="Generate link").click()
    expect(page.get_by_text("It is shown only once")).to_be_visible()
    page.get_by_role("button", name="Copy link").click()
    expect(page.locator(".copy-status")).to_have_text("Link copied")
    link = page.evaluate("navigator.clipboard.readText()")
    assert link.startswith(f"{base}/u/")
    assert link == page.get_by_label("Link").input_value()
    check_page(page, "link-issued")

    # The customer opens it in a browser of their own and saves 4242.
    customer_log = BrowserLog()
    customer = customer_browser(browser, customer_log)
    customer.goto(link)
    expect(customer.locator("#submit")).to_be_enabled()
    card = customer.locator("#card-element")
    card.get_by_placeholder("number").fill("4242424242424242")
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("30")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("75001")
    customer.locator("#submit").click()
    customer.wait_for_url("**/u/done")
    assert_page_clean(customer, customer_log)
    customer.context.close()

    # As if a wave had emailed Pat an hour ago: the dashboard credits that wave too.
    with app.app_context():
        pat = db.session.execute(select(Customer).filter_by(legacy_id="CB-4242")).scalar_one()
        wave = Wave(created_by=staff.email, status_filter="needs_update", queued=1)
        db.session.add(wave)
        db.session.flush()
        db.session.add(Email(customer_id=pat.id, wave_id=wave.id, kind="link", status="sent",
                             to_address=pat.email, sent_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
        db.session.remove()

    # The dashboard counts it: one more updated, the funnel shows the page opened and started.
    page.goto(f"{base}/support/")
    expect(page.locator('[data-status="updated"]')).to_have_text("1")
    expect(page.locator('[data-status="needs_update"]')).to_have_text("0")
    expect(page.locator('[data-stage="opened"]')).to_contain_text("1")
    expect(page.locator('[data-stage="started"]')).to_contain_text("1")
    expect(page.locator("svg.chart rect.chart-bar")).to_have_count(30)
    expect(page.locator('.wave-funnel [data-funnel="updated"]')).to_contain_text("1 (100%)")
    check_page(page, "dashboard")

    # The customer page tells the story, and the admin pages look right too.
    page.goto(f"{base}/support/customers?q=CB-4242")
    expect(page.locator(".page-head .badge")).to_have_text("Updated")
    expect(page.locator("#pm-heading + ul")).to_contain_text("Visa ending 4242")
    check_page(page, "customer-updated")
    # An admin imports a roster from the page; it runs in the background and the page
    # follows it (support.js refreshes the list) until the counts and the row error show.
    page.goto(f"{base}/support/admin/imports")
    page.get_by_label("Customer roster (CSV)").check()
    page.get_by_label("File", exact=True).set_input_files(files=[{
        "name": "roster-nov.csv", "mimeType": "text/csv",
        "buffer": b"legacy_customer_id,email,name\nR-1,r1@example.com,Rae One\n"
                  b"R-2,not-an-email,Bad Row\n"}])
    page.get_by_role("region", name="Import a file").get_by_label("Reason").fill(
        "November roster from billing")
    page.get_by_role("button", name="Upload and import").click()
    run = page.locator(".run").first
    expect(run).to_contain_text("roster-nov.csv")
    expect(run).to_contain_text("Succeeded", timeout=20_000)
    expect(run).to_contain_text("1 row not applied")
    run.get_by_text("1 row not applied").click()
    expect(run).to_contain_text("line 3")
    with app.app_context():  # two differences a drift scan found, for the drift page
        pat_id = db.session.execute(select(Customer.id).where(
            Customer.legacy_id == "CB-4242")).scalar_one()
        db.session.add_all([
            DriftFinding(customer_id=pat_id, kind="default_changed", object_id="cus_x",
                         ours="pm_saved_here", theirs="pm_set_on_stripe"),
            DriftFinding(customer_id=pat_id, kind="card_detached", object_id="pm_saved_here",
                         ours="pm_saved_here")])
        db.session.commit()
        db.session.remove()
    for name, path in (("audit", "/support/admin/audit"), ("staff", "/support/admin/staff"),
                       ("imports", "/support/admin/imports"), ("tokens", "/support/admin/tokens"),
                       ("drift", "/support/admin/drift"), ("account", "/support/account")):
        page.goto(base + path)
        check_page(page, name)
    expect(page.get_by_role("navigation", name="Console")).to_be_visible()
    assert_page_clean(page, browser_log)
