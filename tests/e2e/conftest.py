"""Browser fixtures: one headless Debian chromium per run, a fresh context per test that records
CSP violations and console errors, screenshots, and the customer/link/localstripe set-up the
browser tests share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer
from cardbridge.models.types import utcnow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
LOCALSTRIPE_KEY = "sk_test_cardbridge"

# Runs in every document before the page's own scripts (CDP injects it, so the page's CSP does
# not apply to it). Each violation is kept on the page and also sent to Python, because the
# page's own array is lost when the browser navigates away.
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  var v = {directive: e.effectiveDirective || e.violatedDirective, blocked: e.blockedURI,
           source: e.sourceFile, line: e.lineNumber, page: location.pathname.slice(0, 40)};
  window.__cspViolations.push(v);
  if (window.__cardbridgeCsp) { window.__cardbridgeCsp(v); }
});
"""


@dataclass
class BrowserLog:
    """What the page reported while a test drove it."""

    csp: list[dict] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def console(self, msg) -> None:
        # The browser asks every site for /favicon.ico; its 404 says nothing about our pages.
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            self.console_errors.append(msg.text)

    def unexpected_console_errors(self, *allowed: str) -> list[str]:
        """Console errors except failed loads a test expects: a status such as "402" (a decline)
        or a network error such as "net::ERR_CONNECTION_RESET"."""
        pattern = re.compile(r"status of (\d{3})|(net::ERR_[A-Z_]+)")
        out = []
        for message in self.console_errors:
            found = pattern.search(message)
            if found and (found.group(1) or found.group(2)) in allowed:
                continue
            out.append(message)
        return out


@pytest.fixture(scope="session")
def browser() -> Browser:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True)
        yield launched
        launched.close()


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


def watched_page(browser: Browser, log: BrowserLog, **context_options) -> Page:
    """A page in a new context that reports CSP violations, console errors and script errors
    to `log` (a second browser in one test: a customer beside staff). Close its context."""
    options = {"viewport": {"width": 1280, "height": 900}, "locale": "en-US"}
    options.update(context_options)
    context = browser.new_context(**options)
    context.set_default_timeout(10_000)
    context.expose_function("__cardbridgeCsp", lambda violation: log.csp.append(violation))
    context.add_init_script(CSP_LISTENER)
    opened = context.new_page()
    opened.on("console", lambda msg: log.console(msg))
    opened.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    return opened


@pytest.fixture
def page(browser: Browser, browser_log: BrowserLog) -> Page:
    """A page in a context of its own, listening for CSP violations and console errors."""
    opened = watched_page(browser, browser_log)
    yield opened
    opened.context.close()


def csp_violations(page: Page, log: BrowserLog) -> list[dict]:
    """Every violation seen so far: the Python side plus what the current page still holds."""
    current = page.evaluate("window.__cspViolations || []")
    seen = list(log.csp)
    return seen + [v for v in current if v not in seen]


def assert_page_clean(page: Page, log: BrowserLog, *allowed_statuses: str) -> None:
    """No CSP violation anywhere this test went, no script error, no unexpected console error."""
    assert csp_violations(page, log) == []
    assert log.page_errors == []
    assert log.unexpected_console_errors(*allowed_statuses) == []


def shoot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot under tests/e2e/screenshots/ (git-ignored) and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# -- the Card Element page on localstripe ----------------------------------------------------------
@pytest.fixture
def card_app(stripe_app, live_server_for):
    """The app with CARD_FORM=card_element on localstripe, served to the browser."""
    stripe_app.config["CARD_FORM"] = "card_element"
    live_server_for(stripe_app)
    return stripe_app


def open_page(page: Page, url: str) -> None:
    response = page.goto(url)
    assert response.status == 200
    expect(page.locator("#submit")).to_be_enabled()  # Stripe.js loaded and mounted the card


def fill_card(page: Page, number: str) -> None:
    """localstripe's Card Element: plain inputs named by their placeholders."""
    field = page.locator("#card-element")
    field.get_by_placeholder("number").fill(number)
    field.get_by_placeholder("exp_month").fill("12")
    field.get_by_placeholder("exp_year").fill("30")
    field.get_by_placeholder("cvc").fill("123")
    field.get_by_placeholder("postal_code").fill("75001")


# -- customers and links -----------------------------------------------------------------------
@dataclass(frozen=True)
class LinkFor:
    customer_id: int
    legacy_id: str
    email: str
    url: str
    token: str


def add_customer(**fields) -> Customer:
    n = db.session.execute(db.select(db.func.count(Customer.id))).scalar_one() + 1
    values = {"legacy_id": f"e2e-{n}", "email": f"e2e{n}@example.com", "name": f"Pat Doe {n}",
              "status": "needs_update", "card_brand": "visa", "card_last4": "0019",
              "card_exp_month": 4, "card_exp_year": 2025}
    values.update(fields)
    customer = Customer(**values)
    db.session.add(customer)
    db.session.flush()
    return customer


def make_link(app, *, expired: bool = False, **fields) -> LinkFor:
    """A customer and a live (or already expired) link, built from the app's PUBLIC_BASE_URL."""
    with app.app_context():
        customer = add_customer(**fields)
        if expired:
            issued = issue_link(customer, created_by="e2e", days=1,
                                now=utcnow() - timedelta(days=2))
        else:
            issued = issue_link(customer, created_by="e2e")
        db.session.commit()
        made = LinkFor(customer.id, customer.legacy_id, customer.email, issued.url,
                       issued.token)
        db.session.remove()
    return made


# -- localstripe, spoken to directly (the app itself only goes through its gateway) ------------
def ls(base: str, method: str, path: str, data: dict | None = None) -> dict:
    response = requests.request(method, f"{base}{path}", data=data, timeout=10,
                                headers={"Authorization": f"Bearer {LOCALSTRIPE_KEY}"})
    body = response.json()
    assert response.status_code < 400, f"localstripe {method} {path}: {body}"
    return body


def stripe_customer_with_subscription(base: str, email: str) -> tuple[str, str, str]:
    """A Stripe customer paying a monthly plan with an old card that is the subscription's own
    default: (customer id, subscription id, old payment method id)."""
    plan = ls(base, "POST", "/v1/plans", {"amount": 1500, "currency": "usd",
                                          "interval": "month", "product[name]": "Membership"})
    cus = ls(base, "POST", "/v1/customers", {"email": email, "payment_method": "pm_card_visa"})
    old = ls(base, "POST", "/v1/payment_methods/pm_card_visa/attach", {"customer": cus["id"]})
    ls(base, "POST", f"/v1/customers/{cus['id']}",
       {"invoice_settings[default_payment_method]": old["id"]})
    sub = ls(base, "POST", "/v1/subscriptions",
             {"customer": cus["id"], "items[0][plan]": plan["id"],
              "default_payment_method": old["id"]})
    return cus["id"], sub["id"], old["id"]
