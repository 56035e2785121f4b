"""Test-side calls straight to localstripe (the app itself only talks to Stripe via the gateway)."""

from __future__ import annotations

import requests

TEST_SECRET_KEY = "sk_test_cardbridge"


def ls(base: str, method: str, path: str, data: dict | None = None) -> dict:
    response = requests.request(
        method, f"{base}{path}", data=data,
        headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"}, timeout=10,
    )
    body = response.json()
    if response.status_code >= 400:
        raise AssertionError(f"localstripe {method} {path}: {response.status_code} {body}")
    return body


def confirm_setup_intent(base: str, seti_id: str, payment_method: str = "pm_card_visa") -> dict:
    """What Stripe.js does in the browser: confirm the SetupIntent with a card."""
    return ls(base, "POST", f"/v1/setup_intents/{seti_id}/confirm",
              {"payment_method": payment_method})


def active_subscription(base: str, customer_id: str) -> dict:
    """A paid-up monthly subscription whose own default is an old card."""
    old = ls(base, "POST", "/v1/payment_methods/pm_card_visa/attach", {"customer": customer_id})
    ls(base, "POST", f"/v1/customers/{customer_id}",
       {"invoice_settings[default_payment_method]": old["id"]})
    plan = ls(base, "POST", "/v1/plans", {"amount": 1500, "currency": "usd", "interval": "month",
                                          "product[name]": "Membership"})
    sub = ls(base, "POST", "/v1/subscriptions",
             {"customer": customer_id, "items[0][plan]": plan["id"],
              "default_payment_method": old["id"]})
    return sub


def customer(base: str, customer_id: str) -> dict:
    return ls(base, "GET", f"/v1/customers/{customer_id}")


def subscription(base: str, sub_id: str) -> dict:
    return ls(base, "GET", f"/v1/subscriptions/{sub_id}")
