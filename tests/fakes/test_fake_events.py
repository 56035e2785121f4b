"""The fake Stripe's events (devtools/fake_billing/events.py): made for what the customer's
path touches, listed as Stripe's Events API lists them, delivered signed to the registered
endpoints, each remembering whether delivery succeeded."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
import requests
import stripe

from tests.stripe_helpers import TEST_SECRET_KEY, confirm_setup_intent, ls
from tests.testlib import free_port

pytestmark = pytest.mark.localstripe
AUTH = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
SECRET = "whsec_fake_events"


class Endpoint:
    """A webhook endpoint that keeps what it receives, verified as the app verifies."""

    def __init__(self, status: int = 200):
        self.received: list[dict] = []
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                event = stripe.Webhook.construct_event(body, self.headers["Stripe-Signature"],
                                                       SECRET)
                outer.received.append(event.to_dict(recursive=True))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = Endpoint()
    yield made
    made.close()


def register(url: str, hook_id: str, target: str, events: list[str] | None = None) -> None:
    data = {"url": target, "secret": SECRET}
    if events:
        data["events[]"] = events
    assert requests.post(f"{url}/_config/webhooks/{hook_id}", data=data, timeout=5).ok


def events(url: str, **params) -> dict:
    return ls(url, "GET", "/v1/events?" + requests.compat.urlencode(params, doseq=True))


def wait_for(check, seconds: float = 5):
    deadline = time.time() + seconds
    while not (found := check()):
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)
    return found


def setup(url: str) -> tuple[dict, dict]:
    customer = ls(url, "POST", "/v1/customers", {"email": "events@example.com"})
    seti = ls(url, "POST", "/v1/setup_intents",
              {"customer": customer["id"], "usage": "off_session"})
    return customer, seti


def test_confirmed_setup_intent_is_delivered_signed_to_the_endpoint(own_localstripe, endpoint):
    register(own_localstripe, "app", endpoint.url)
    customer, seti = setup(own_localstripe)
    confirmed = confirm_setup_intent(own_localstripe, seti["id"])
    succeeded = wait_for(lambda: [e for e in endpoint.received
                                  if e["type"] == "setup_intent.succeeded"])
    event = succeeded[0]
    assert event["data"]["object"]["id"] == seti["id"]
    assert event["data"]["object"]["status"] == "succeeded"
    assert event["api_version"] == stripe.api_version and event["object"] == "event"
    # Stripe attaches the card to the SetupIntent's customer when it succeeds.
    wait_for(lambda: "payment_method.attached" in endpoint.types())
    assert ls(own_localstripe, "GET", f"/v1/payment_methods/{confirmed['payment_method']}")[
        "customer"] == customer["id"]
    listed = wait_for(lambda: events(own_localstripe, type="setup_intent.succeeded",
                                     delivery_success="true")["data"])
    assert [e["id"] for e in listed] == [event["id"]]


def test_customer_updated_only_when_the_default_changes(own_localstripe, endpoint):
    register(own_localstripe, "app", endpoint.url, ["customer.updated"])
    customer, seti = setup(own_localstripe)
    pm = confirm_setup_intent(own_localstripe, seti["id"])["payment_method"]
    for _ in range(2):
        ls(own_localstripe, "POST", f"/v1/customers/{customer['id']}",
           {"invoice_settings[default_payment_method]": pm})
    updated = events(own_localstripe, type="customer.updated")["data"]
    assert len(updated) == 1
    assert updated[0]["data"]["previous_attributes"] == {
        "invoice_settings": {"default_payment_method": None}}
    wait_for(lambda: endpoint.types() == ["customer.updated"])


def test_declined_card_makes_setup_failed_with_the_error(own_localstripe):
    _, seti = setup(own_localstripe)
    response = requests.post(
        f"{own_localstripe}/v1/setup_intents/{seti['id']}/confirm", headers=AUTH, timeout=5,
        data={"payment_method_data[type]": "card",
              "payment_method_data[card][number]": "4000000000000002",
              "payment_method_data[card][exp_month]": "12",
              "payment_method_data[card][exp_year]": "2030",
              "payment_method_data[card][cvc]": "123"})
    assert response.status_code == 402
    failed = events(own_localstripe, type="setup_intent.setup_failed")["data"]
    assert failed[0]["data"]["object"]["last_setup_error"]["code"] == "card_declined"
    assert not events(own_localstripe, type="setup_intent.succeeded")["data"]


def test_subscription_update_and_schedule_events(own_localstripe):
    customer, seti = setup(own_localstripe)
    pm = confirm_setup_intent(own_localstripe, seti["id"])["payment_method"]
    ls(own_localstripe, "POST", f"/v1/customers/{customer['id']}",
       {"invoice_settings[default_payment_method]": pm})
    plan = ls(own_localstripe, "POST", "/v1/plans", {
        "amount": 1500, "currency": "usd", "interval": "month", "product[name]": "Membership"})
    sub = ls(own_localstripe, "POST", "/v1/subscriptions",
             {"customer": customer["id"], "items[0][plan]": plan["id"]})
    ls(own_localstripe, "POST", f"/v1/subscriptions/{sub['id']}", {"default_payment_method": pm})
    paid = events(own_localstripe, type="invoice.paid")["data"]
    assert [e["data"]["object"]["subscription"] for e in paid] == [sub["id"]]
    updated = events(own_localstripe, type="customer.subscription.updated")["data"]
    assert updated[0]["data"]["previous_attributes"] == {"default_payment_method": None}
    price = ls(own_localstripe, "POST", "/v1/prices", {
        "currency": "usd", "unit_amount": 900, "recurring[interval]": "month",
        "product": "prod_fake"})
    schedule = ls(own_localstripe, "POST", "/v1/subscription_schedules", {
        "customer": customer["id"], "start_date": int(time.time()) + 86400 * 3,
        "phases[0][items][0][price]": price["id"]})
    ls(own_localstripe, "POST", f"/v1/subscription_schedules/{schedule['id']}/cancel")
    kinds = [e["type"] for e in events(own_localstripe, type="subscription_schedule.*")["data"]]
    assert kinds == ["subscription_schedule.canceled", "subscription_schedule.created"]


def test_unreachable_or_refusing_endpoint_is_recorded_as_failed(own_localstripe):
    refusing = Endpoint(status=500)
    try:
        register(own_localstripe, "refuses", refusing.url, ["setup_intent.created"])
        register(own_localstripe, "dead", f"http://127.0.0.1:{free_port()}/hook",
                 ["customer.created"])
        customer, seti = setup(own_localstripe)
        wait_for(lambda: refusing.received)
        failed = wait_for(lambda: len(events(own_localstripe, delivery_success="false")[
            "data"]) == 2 and events(own_localstripe, delivery_success="false")["data"])
        assert {e["type"] for e in failed} == {"setup_intent.created", "customer.created"}
        assert all(e["pending_webhooks"] == 1 for e in failed)
        assert not events(own_localstripe, delivery_success="true")["data"]
    finally:
        refusing.close()


def test_list_is_newest_first_filtered_and_paged(own_localstripe):
    start = int(time.time())
    for _ in range(3):
        setup(own_localstripe)
    every = events(own_localstripe, limit=100)["data"]
    assert len(every) == 6
    assert [e["created"] for e in every] == sorted((e["created"] for e in every), reverse=True)
    assert every[0]["type"] == "setup_intent.created"  # the last one made comes first
    seen, after = [], None
    while True:
        page = events(own_localstripe, limit=4, **({"starting_after": after} if after else {}))
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == [e["id"] for e in every]
    assert len(events(own_localstripe, **{"types[]": ["customer.created"], "limit": 100})[
        "data"]) == 3
    assert len(events(own_localstripe, **{"created[gte]": start, "limit": 100})["data"]) == 6
    assert not events(own_localstripe, **{"created[lt]": start})["data"]
    assert not events(own_localstripe, **{"created[gt]": int(time.time()) + 5})["data"]


@pytest.mark.parametrize("params, param", [
    ({"created[after]": 1}, "created[after]"),
    ({"delivery_success": "maybe"}, "delivery_success"),
    ({"type": "a", "types[]": ["b"]}, "types"),
    ({"starting_after": "evt_missing"}, "starting_after"),
    ({"limit": 101}, "limit"),
])
def test_list_refuses_what_stripe_refuses(own_localstripe, params, param):
    response = requests.get(f"{own_localstripe}/v1/events", params=params, headers=AUTH,
                            timeout=5)
    assert response.status_code in (400, 404)
    assert response.json()["error"]["param"] == param
