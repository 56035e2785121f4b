"""The project's fake Stripe itself (localstripe + devtools/fake_billing/): price subscriptions
in Stripe's shape, the anchor config, trials, test clocks starting schedules and rolling
periods, invoices.pay with a card that declines, and strictness on every route the app uses."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import requests

from cardbridge.stripe_gateway import CardDeclined
from devtools import fake_billing
from tests.stripe_helpers import TEST_SECRET_KEY, active_subscription, ls

AUTH = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
FEB_10 = int(datetime(2027, 2, 10, 12, 0, tzinfo=UTC).timestamp())
DAY = 86400


def call(url: str, method: str, path: str, data: dict | None = None) -> requests.Response:
    if method in ("GET", "DELETE"):
        return requests.request(method, url + path, params=data, headers=AUTH, timeout=10)
    return requests.request(method, url + path, data=data, headers=AUTH, timeout=10)


def price(url: str, amount: int, interval: str = "month") -> str:
    return ls(url, "POST", "/v1/prices", {"currency": "usd", "unit_amount": amount,
                                          "recurring[interval]": interval,
                                          "product": "prod_fake"})["id"]


def clock_customer(url: str, frozen_time: int = FEB_10, card: str | None = "pm_card_visa"):
    """A customer on a new test clock (with a default card unless card is None)."""
    clock = ls(url, "POST", "/v1/test_helpers/test_clocks", {"frozen_time": frozen_time,
                                                            "name": "fake test"})
    customer = ls(url, "POST", "/v1/customers", {"email": "clock@example.com",
                                                 "test_clock": clock["id"]})
    if card:
        pm = ls(url, "POST", f"/v1/payment_methods/{card}/attach", {"customer": customer["id"]})
        ls(url, "POST", f"/v1/customers/{customer['id']}",
           {"invoice_settings[default_payment_method]": pm["id"]})
    return clock, customer


def advance(url: str, clock_id: str, to: int) -> dict:
    """Advance the clock and wait until it is ready again, as against Stripe."""
    moving = ls(url, "POST", f"/v1/test_helpers/test_clocks/{clock_id}/advance",
                {"frozen_time": to})
    assert moving["status"] == "advancing"
    assert moving["status_details"] == {"advancing": {"target_frozen_time": to}}
    deadline = time.time() + 5
    while (clock := ls(url, "GET", f"/v1/test_helpers/test_clocks/{clock_id}"))[
            "status"] != "ready":
        assert time.time() < deadline
        time.sleep(0.05)
    return clock


def test_a_subscription_of_several_prices_anchored_on_the_31st_has_stripes_shape(
        localstripe_url):
    url = localstripe_url
    gold, seat = price(url, 2500), price(url, 700)
    _, customer = clock_customer(url)
    sub = ls(url, "POST", "/v1/subscriptions", {
        "customer": customer["id"], "items[0][price]": gold, "items[0][quantity]": "2",
        "items[1][price]": seat, "items[1][quantity]": "3",
        "billing_cycle_anchor_config[day_of_month]": "31",
        "billing_cycle_anchor_config[hour]": "15", "billing_cycle_anchor_config[minute]": "0",
        "billing_cycle_anchor_config[second]": "0", "proration_behavior": "none",
        "metadata[legacy_subscription_id]": "S-31"})
    feb_28 = int(datetime(2027, 2, 28, 15, 0, tzinfo=UTC).timestamp())
    assert sub["object"] == "subscription" and sub["status"] == "active"
    assert sub["billing_cycle_anchor"] == feb_28  # day 31 clamped to February's last day
    assert sub["billing_cycle_anchor_config"] == {"day_of_month": 31, "month": None,
                                                  "hour": 15, "minute": 0, "second": 0}
    assert [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]] == [
        (gold, 2), (seat, 3)]
    item = sub["items"]["data"][0]
    assert (item["current_period_start"], item["current_period_end"]) == (FEB_10, feb_28)
    assert item["price"]["unit_amount"] == 2500 and item["object"] == "subscription_item"
    assert sub["metadata"] == {"legacy_subscription_id": "S-31"}
    assert sub["latest_invoice"] is None  # proration none: the stub until the anchor is free
    assert (sub["trial_end"], sub["schedule"], sub["test_clock"]) == (
        None, None, customer["test_clock"])

    listed = ls(url, "GET", f"/v1/subscriptions?customer={customer['id']}&status=all")["data"]
    assert [s["id"] for s in listed] == [sub["id"]]
    card = ls(url, "POST", "/v1/payment_methods/pm_card_visa/attach",
              {"customer": customer["id"]})["id"]
    updated = ls(url, "POST", f"/v1/subscriptions/{sub['id']}", {"default_payment_method": card})
    assert updated["default_payment_method"] == card
    assert ls(url, "DELETE", f"/v1/subscriptions/{sub['id']}")["status"] == "canceled"
    assert ls(url, "GET", f"/v1/subscriptions?customer={customer['id']}")["data"] == []
    assert [s["status"] for s in ls(
        url, "GET", f"/v1/subscriptions?customer={customer['id']}&status=all")["data"]] == [
        "canceled"]


def test_a_trial_makes_a_zero_invoice_and_the_clock_ending_it_bills_the_first_period(
        localstripe_url):
    url = localstripe_url
    gold = price(url, 2500)
    clock, customer = clock_customer(url)
    trial_end = FEB_10 + 10 * DAY
    sub = ls(url, "POST", "/v1/subscriptions", {
        "customer": customer["id"], "items[0][price]": gold, "trial_end": str(trial_end),
        "proration_behavior": "none"})
    assert (sub["status"], sub["trial_start"], sub["trial_end"]) == (
        "trialing", FEB_10, trial_end)
    assert sub["billing_cycle_anchor"] == trial_end
    first = ls(url, "GET", f"/v1/invoices/{sub['latest_invoice']}")
    assert (first["total"], first["status"]) == (0, "paid")

    advance(url, clock["id"], trial_end + 3600)
    after = ls(url, "GET", f"/v1/subscriptions/{sub['id']}")
    assert after["status"] == "active"
    assert after["items"]["data"][0]["current_period_start"] == trial_end
    invoice = ls(url, "GET", f"/v1/invoices/{after['latest_invoice']}")
    assert (invoice["total"], invoice["status"], invoice["billing_reason"]) == (
        2500, "paid", "subscription_cycle")


def test_a_schedule_waits_for_its_clock_then_starts_a_subscription_and_bills_it(
        localstripe_url):
    url = localstripe_url
    gold = price(url, 2500)
    clock, customer = clock_customer(url)
    start = FEB_10 + 3 * DAY
    schedule = ls(url, "POST", "/v1/subscription_schedules", {
        "customer": customer["id"], "start_date": str(start), "end_behavior": "release",
        "phases[0][items][0][price]": gold, "phases[0][items][0][quantity]": "2",
        "phases[0][billing_cycle_anchor]": "phase_start", "phases[0][proration_behavior]": "none",
        "phases[0][metadata][legacy_subscription_id]": "S-sched"})
    assert (schedule["status"], schedule["test_clock"]) == ("not_started", clock["id"])

    advance(url, clock["id"], start - 60)  # only the clock counts, not the wall clock
    assert ls(url, "GET", f"/v1/subscription_schedules/{schedule['id']}")[
        "status"] == "not_started"
    advance(url, clock["id"], start + 60)
    started = ls(url, "GET", f"/v1/subscription_schedules/{schedule['id']}")
    assert started["status"] == "active" and started["subscription"].startswith("sub_")
    sub = ls(url, "GET", f"/v1/subscriptions/{started['subscription']}")
    assert (sub["status"], sub["schedule"], sub["billing_cycle_anchor"]) == (
        "active", schedule["id"], start)
    assert sub["metadata"] == {"legacy_subscription_id": "S-sched"}
    invoice = ls(url, "GET", f"/v1/invoices/{sub['latest_invoice']}")
    assert (invoice["total"], invoice["status"]) == (5000, "paid")

    back = call(url, "POST", f"/v1/test_helpers/test_clocks/{clock['id']}/advance",
                {"frozen_time": str(start)})
    assert back.status_code == 400 and back.json()["error"]["param"] == "frozen_time"
    assert ls(url, "DELETE", f"/v1/test_helpers/test_clocks/{clock['id']}")["deleted"] is True
    assert call(url, "GET", f"/v1/test_helpers/test_clocks/{clock['id']}").status_code == 404


def test_paying_with_a_card_that_declines_is_a_402_card_error_and_leaves_the_invoice_open(
        localstripe_url):
    url = localstripe_url
    gold = price(url, 2500)
    _, customer = clock_customer(url, card=None)
    declining = ls(url, "POST", "/v1/payment_methods", {
        "type": "card", "card[number]": "4000000000000341", "card[exp_month]": "12",
        "card[exp_year]": "2030", "card[cvc]": "123"})["id"]
    ls(url, "POST", f"/v1/payment_methods/{declining}/attach", {"customer": customer["id"]})
    sub = ls(url, "POST", "/v1/subscriptions", {"customer": customer["id"],
                                                "items[0][price]": gold})
    assert sub["status"] == "incomplete"  # no card to bill: the first invoice waits, open
    open_ones = ls(url, "GET", f"/v1/invoices?customer={customer['id']}&status=open")["data"]
    assert [i["id"] for i in open_ones] == [sub["latest_invoice"]]

    declined = call(url, "POST", f"/v1/invoices/{sub['latest_invoice']}/pay",
                    {"payment_method": declining})
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error", "card_declined", "generic_decline")
    assert error["message"] == "Your card was declined."
    assert ls(url, "GET", f"/v1/invoices/{sub['latest_invoice']}")["status"] == "open"

    stranger = ls(url, "POST", "/v1/customers", {"email": "other@example.com"})["id"]
    theirs = ls(url, "POST", "/v1/payment_methods/pm_card_visa/attach",
                {"customer": stranger})["id"]
    refused = call(url, "POST", f"/v1/invoices/{sub['latest_invoice']}/pay",
                   {"payment_method": theirs})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "payment_method"

    good = ls(url, "POST", "/v1/payment_methods/pm_card_visa/attach",
              {"customer": customer["id"]})["id"]
    paid = ls(url, "POST", f"/v1/invoices/{sub['latest_invoice']}/pay", {"payment_method": good})
    assert paid["status"] == "paid"
    assert ls(url, "GET", f"/v1/subscriptions/{sub['id']}")["status"] == "active"


# Every route the fake adds, and localstripe's routes the app uses, with the stripe-python
# params type each is checked against.
ROUTES = {
    ("POST", "/v1/prices"): "PriceCreateParams",
    ("GET", "/v1/prices"): "PriceListParams",
    ("GET", "/v1/prices/{id}"): "PriceRetrieveParams",
    ("POST", "/v1/subscription_schedules"): "SubscriptionScheduleCreateParams",
    ("GET", "/v1/subscription_schedules"): "SubscriptionScheduleListParams",
    ("GET", "/v1/subscription_schedules/{id}"): "SubscriptionScheduleRetrieveParams",
    ("POST", "/v1/subscription_schedules/{id}/cancel"): "SubscriptionScheduleCancelParams",
    ("POST", "/v1/subscription_schedules/{id}/release"): "SubscriptionScheduleReleaseParams",
    ("POST", "/v1/test_helpers/test_clocks"): "TestClockCreateParams",
    ("GET", "/v1/test_helpers/test_clocks"): "TestClockListParams",
    ("GET", "/v1/test_helpers/test_clocks/{id}"): "TestClockRetrieveParams",
    ("DELETE", "/v1/test_helpers/test_clocks/{id}"): "TestClockDeleteParams",
    ("POST", "/v1/test_helpers/test_clocks/{id}/advance"): "TestClockAdvanceParams",
    ("POST", "/v1/subscriptions"): "SubscriptionCreateParams",
    ("GET", "/v1/subscriptions"): "SubscriptionListParams",
    ("GET", "/v1/subscriptions/{id}"): "SubscriptionRetrieveParams",
    ("POST", "/v1/subscriptions/{id}"): "SubscriptionUpdateParams",
    ("DELETE", "/v1/subscriptions/{id}"): "SubscriptionCancelParams",
    ("POST", "/v1/invoices/{id}/pay"): "InvoicePayParams",
    ("GET", "/v1/invoices"): "InvoiceListParams",
    ("GET", "/v1/events"): "EventListParams",
}


def test_every_route_the_fake_adds_or_the_app_uses_is_checked_against_its_params_type():
    table = {(m, p): t.__name__ for m, p, _, t in
             (*fake_billing.ADDED_ROUTES, *fake_billing.LOCALSTRIPE_ROUTES)}
    assert table == ROUTES
    assert {(m, p) for m, p, *_ in fake_billing.ADDED_ROUTES} <= set(ROUTES)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_each_route_refuses_an_unknown_parameter_naming_it(localstripe_url, method, path):
    response = call(localstripe_url, method, path.replace("{id}", "x_missing"),
                    {"colour": "red"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        "colour", "parameter_unknown", "invalid_request_error")


def test_the_gateway_sees_price_and_plan_subscriptions_alike_and_gets_declines_as_stripe_sends(
        make_app, localstripe_url):
    """The card path through the app's own gateway: billable subscriptions of both kinds get
    the new card, open invoices are listed, a declined pay is a CardDeclined with its code."""
    url = localstripe_url
    app = make_app(STRIPE_API_BASE=url, STRIPE_SECRET_KEY=TEST_SECRET_KEY)
    gateway = app.extensions["stripe_gateway"]
    customer = ls(url, "POST", "/v1/customers", {"email": "card@example.com"})["id"]
    on_plan = active_subscription(url, customer)
    on_price = ls(url, "POST", "/v1/subscriptions", {
        "customer": customer, "items[0][price]": price(url, 900),
        "trial_end": str(int(time.time()) + 5 * DAY)})
    assert {s["id"] for s in gateway.billable_subscriptions(customer)} == {
        on_plan["id"], on_price["id"]}
    declining = ls(url, "POST", "/v1/payment_methods", {
        "type": "card", "card[number]": "4000000000000341", "card[exp_month]": "12",
        "card[exp_year]": "2030", "card[cvc]": "123"})["id"]
    gateway.attach_payment_method(declining, customer)
    gateway.set_subscription_default(on_price["id"], declining)
    assert ls(url, "GET", f"/v1/subscriptions/{on_price['id']}")[
        "default_payment_method"] == declining
    owed = ls(url, "POST", "/v1/subscriptions", {
        "customer": customer, "items[0][price]": price(url, 1200),
        "default_payment_method": declining})
    assert [i["id"] for i in gateway.open_invoices(customer)] == [owed["latest_invoice"]]
    with pytest.raises(CardDeclined) as declined:
        gateway.pay_invoice(owed["latest_invoice"], declining)
    assert (declined.value.code, declined.value.decline_code) == (
        "card_declined", "generic_decline")
