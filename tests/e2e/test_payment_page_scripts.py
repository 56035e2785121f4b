"""PCI DSS 6.4.3: the payment page loads only the scripts docs/payment-page-scripts.md lists,
seen by a real browser for each card form; `flask check-payment-page` reports differences."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cardbridge.payments import script_inventory as payment_page
from tests.e2e.conftest import make_link
from tests.e2e.test_payment_element_and_checkout import front_app, stripe_front  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.localstripe]


def _app_for(card_form, make_app, live_server_for, front, localstripe_url):
    if card_form != "card_element":
        return front_app(make_app, live_server_for, front, card_form)
    # The Card Element runs on localstripe's own Stripe.js, as in test_card_element.py.
    app = make_app(STRIPE_API_BASE=localstripe_url, CARD_FORM="card_element",
                   STRIPE_JS_URL=f"{localstripe_url}/js.stripe.com/v3/",
                   STRIPE_SECRET_KEY="sk_test_cardbridge", STRIPE_MAX_RETRIES=0)
    live_server_for(app)
    return app


@pytest.mark.parametrize("card_form", ["payment_element", "card_element", "checkout"])
def test_the_browser_loads_only_inventoried_scripts(page, make_app, live_server_for,
                                                    stripe_front, localstripe_url,  # noqa: F811
                                                    card_form):
    app = _app_for(card_form, make_app, live_server_for, stripe_front, localstripe_url)
    link = make_link(app)
    loaded: list[str] = []
    page.on("request", lambda r: loaded.append(r.url) if r.resource_type == "script" else None)
    # The page's script reports it was opened: wait for that answer, so no request is still
    # using a database connection when the test's app is torn down.
    with page.expect_response(lambda r: r.url.endswith("/opened")):
        response = page.goto(link.url)
    inline = page.evaluate("document.querySelectorAll('script:not([src])').length")
    inventory = payment_page.load_inventory()
    # Scripts Stripe.js loads inside its own iframes are Stripe's; ours are the page's frame.
    stripe_js = app.config["STRIPE_JS_URL"]
    top = [url for url in loaded
           if url.rstrip("/") == stripe_js.rstrip("/") or not url.startswith(stripe_js)]
    assert payment_page.script_differences(inventory, card_form, top, inline,
                                           app.config["STRIPE_JS_URL"], link.url) == []
    assert payment_page.csp_differences(inventory, response.headers["content-security-policy"],
                                        app.config["STRIPE_JS_URL"]) == []


def test_an_unlisted_script_is_a_difference():
    inventory = payment_page.load_inventory()
    problems = payment_page.script_differences(
        inventory, "checkout", ["https://cards.example/static/js/checkout.js?v=1",
                                "https://evil.example/skimmer.js"], 1,
        "https://js.stripe.com/v3/", "https://cards.example/u/x")
    assert problems == ["script not in the inventory: https://evil.example/skimmer.js",
                        "1 inline script(s): the inventory allows none"]


def test_check_payment_page_passes_on_the_live_page(make_app, live_server_for,
                                                    stripe_front):  # noqa: F811
    app = front_app(make_app, live_server_for, stripe_front, "payment_element")
    link = make_link(app)
    result = app.test_cli_runner().invoke(args=["check-payment-page", link.url])
    assert result.exit_code == 0, result.output
    assert "match the inventory" in result.output


class _Skimmed(BaseHTTPRequestHandler):
    """A payment page someone changed: one more script, and a looser CSP."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = (b'<html><body><div data-form="checkout"></div>'
                b'<script src="/static/js/checkout.js?v=1"></script>'
                b'<script src="https://evil.example/skim.js"></script></body></html>')
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Security-Policy",
                         "script-src 'self' https://evil.example; object-src 'none'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_check_payment_page_reports_an_extra_script_and_a_changed_csp(make_app):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Skimmed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/u/some-token"
        result = make_app().test_cli_runner().invoke(args=["check-payment-page", url])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    assert "script not in the inventory: https://evil.example/skim.js" in result.output
    assert "CSP script-src" in result.output and "CSP has no base-uri" in result.output
