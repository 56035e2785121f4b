"""The Billing calls of the Stripe gateway (prices, schedules, subscriptions, invoices), as a
mixin of StripeGateway so `stripe_gateway.py` stays one screen of plumbing and card calls.
Same rules: plain dicts back, an idempotency key from our own ids on every create."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class BillingCalls:
    _call: Callable[[str, Callable[[], Any]], dict]
    _client: Any
    _key: Callable[..., dict]

    # -- prices -------------------------------------------------------------------------------
    def retrieve_price(self, price_id: str) -> dict:
        return self._call("price.retrieve", lambda: self._client.v1.prices.retrieve(price_id))

    def prices_by_lookup_key(self, keys: list[str]) -> list[dict]:
        """The prices whose lookup_key is one of `keys` (at most 10, Stripe's limit)."""
        params = {"lookup_keys": list(keys), "limit": 100}
        return self._call("price.list",
                          lambda: self._client.v1.prices.list(params)).get("data", [])

    # -- schedules and subscriptions ------------------------------------------------------------
    def create_schedule(self, params: dict, *key_parts: str) -> dict:
        return self._call("subscription_schedule.create",
                          lambda: self._client.v1.subscription_schedules.create(
                              params, self._key("subsched", *key_parts)))

    def create_subscription(self, params: dict, *key_parts: str) -> dict:
        return self._call("subscription.create",
                          lambda: self._client.v1.subscriptions.create(
                              params, self._key("subcreate", *key_parts)))

    def cancel_schedule(self, schedule_id: str) -> dict:
        return self._call("subscription_schedule.cancel",
                          lambda: self._client.v1.subscription_schedules.cancel(schedule_id))

    def cancel_subscription(self, subscription_id: str) -> dict:
        return self._call("subscription.cancel",
                          lambda: self._client.v1.subscriptions.cancel(subscription_id))

    def schedules(self, customer_id: str | None = None) -> Iterator[dict]:
        """Every subscription schedule (of one customer, or of the account), page by page."""
        params: dict[str, Any] = {"limit": 100}
        if customer_id:
            params["customer"] = customer_id
        return self._pages("subscription_schedule.list",
                           self._client.v1.subscription_schedules.list, params)

    def subscriptions(self, customer_id: str | None = None) -> Iterator[dict]:
        """Every subscription whatever its status (of one customer, or of the account)."""
        params: dict[str, Any] = {"limit": 100, "status": "all"}
        if customer_id:
            params["customer"] = customer_id
        return self._pages("subscription.list", self._client.v1.subscriptions.list, params)

    def retrieve_subscription(self, subscription_id: str) -> dict:
        return self._call("subscription.retrieve",
                          lambda: self._client.v1.subscriptions.retrieve(subscription_id))

    def retrieve_schedule(self, schedule_id: str) -> dict:
        return self._call("subscription_schedule.retrieve",
                          lambda: self._client.v1.subscription_schedules.retrieve(schedule_id))

    def subscriptions_page(self, customer_id: str, starting_after: str | None = None,
                           limit: int = 100) -> dict:
        """One page of a customer's subscriptions, whatever their status (the caller pages,
        taking a slot of the read budget for each)."""
        params: dict[str, Any] = {"customer": customer_id, "status": "all", "limit": limit}
        if starting_after:
            params["starting_after"] = starting_after
        return self._call("subscription.list",
                          lambda: self._client.v1.subscriptions.list(params))

    def _pages(self, what: str, list_call, params: dict) -> Iterator[dict]:
        while True:
            page = self._call(what, lambda p=dict(params): list_call(p))
            yield from page.get("data", [])
            if not page.get("has_more") or not page.get("data"):
                return
            params["starting_after"] = page["data"][-1]["id"]

    # -- invoices -------------------------------------------------------------------------------
    def open_invoices(self, customer_id: str) -> list[dict]:
        return list(self._pages("invoice.list", self._client.v1.invoices.list,
                                {"customer": customer_id, "status": "open", "limit": 100}))

    def pay_invoice(self, invoice_id: str, pm_id: str) -> dict:
        """Pay an open invoice now with this card (off session, as Stripe defaults)."""
        return self._call("invoice.pay", lambda: self._client.v1.invoices.pay(
            invoice_id, {"payment_method": pm_id}, self._key("invoicepay", invoice_id, pm_id)))
