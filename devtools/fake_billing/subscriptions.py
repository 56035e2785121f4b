"""Subscriptions of Prices, as `apply.subscription_params` and started schedules make them.

`PriceSubscription` subclasses localstripe's Subscription and lives in localstripe's own store,
so everything localstripe already does with subscriptions sees it: retrieve, list by customer
and status (`status=all` too), cancel, a customer's `subscriptions`, invoices that name it.
localstripe's own class holds one Plan item and stays as it was for plan-based subscriptions;
a create whose items name a `price` comes here (`install` wraps `Subscription._api_create`).

What it holds, in Stripe's shape: several items each with its `price` and `quantity` and the
current period on the item (`current_period_start/end`); `billing_cycle_anchor` and
`billing_cycle_anchor_config` (day_of_month, month, hour, minute, second: the first such moment
after the start, the day clamped to short months); `trial_end` (status `trialing`, a 0 invoice
as Stripe makes one); `proration_behavior` (`none` with a future anchor: no invoice until the
anchor; `create_prorations`: a prorated first invoice); `collection_method`/`days_until_due`,
`discounts`, `automatic_tax`, `default_tax_rates`, `add_invoice_items`, `metadata`,
`default_payment_method`, `schedule`, `test_clock`. Time is the customer's (`clocks.now_for`).
Invoice amounts are unit_amount × quantity (tax rates as localstripe computes them; coupons are
recorded, not deducted). Parameters the fake does not act on are refused, not ignored.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from localstripe import resources
from stripe.params import SubscriptionCreateParams

from devtools.fake_billing import invoicing
from devtools.fake_billing.clocks import now_for
from devtools.fake_billing.store import PRICES
from devtools.fake_billing.strict import check_object, invalid

UNSUPPORTED = ("backdate_start_date", "billing_cycle_anchor", "billing_thresholds",
               "cancel_at", "pending_invoice_item_interval", "transfer_data", "trial_period_days",
               "trial_from_plan", "billing_mode", "on_behalf_of", "application_fee_percent")
LIVE = ("active", "trialing", "past_due", "incomplete")


def is_price_based(data: dict) -> bool:
    return any(isinstance(item, dict) and "price" in item for item in data.get("items") or [])


def add_interval(ts: int, interval: str, count: int, day: int | None = None) -> int:
    """`ts` plus count intervals (UTC); monthly and yearly steps keep `day` (or ts's own day),
    clamped to the last day of a short month, as Stripe keeps an anchor on the 31st."""
    moment = datetime.fromtimestamp(ts, UTC)
    if interval in ("day", "week"):
        return ts + count * (7 if interval == "week" else 1) * 86400
    months = count * (12 if interval == "year" else 1)
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(day or moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def anchor_from_config(config: dict, start: int, interval: str) -> int:
    """The first moment after `start` matching the anchor config; unset hour, minute and second
    take the start's (UTC)."""
    s = datetime.fromtimestamp(start, UTC)
    hms = [int(config.get(k, getattr(s, k))) for k in ("hour", "minute", "second")]
    want_month = int(config["month"]) if "month" in config else None
    day = int(config["day_of_month"])
    year, month = s.year, want_month or s.month
    for _ in range(30):
        last = calendar.monthrange(year, month)[1]
        candidate = int(datetime(year, month, min(day, last), *hms, tzinfo=UTC).timestamp())
        if candidate > start:
            return candidate
        if want_month or interval == "year":
            year += 1
        else:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise invalid("billing_cycle_anchor_config", "parameter_invalid_integer",
                  "Invalid billing_cycle_anchor_config")


class PriceSubscription(resources.Subscription):
    """A subscription of Prices; created by `create` (never by localstripe's own __init__)."""

    def __init__(self, *, customer: str, items: list[dict], start: int, data: dict,
                 schedule: str | None = None):
        resources.StripeObject.__init__(self)
        self.created, self.customer, self.schedule = start, customer, schedule
        self._prices = [PRICES[item["price"]] for item in items]
        recurring = self._prices[0]["recurring"]
        self._interval, self._count = recurring["interval"], recurring["interval_count"]
        self.currency = self._prices[0]["currency"]
        self.metadata = dict(data.get("metadata") or {})
        self.default_payment_method = data.get("default_payment_method")
        self.collection_method = data.get("collection_method", "charge_automatically")
        self.days_until_due = (int(data["days_until_due"]) if "days_until_due" in data
                               else None)
        self.discounts = [d.get("coupon") or d.get("discount") or d.get("promotion_code")
                          for d in data.get("discounts") or []]
        self.automatic_tax = {"enabled": str((data.get("automatic_tax") or {})
                                             .get("enabled", "false")).lower() == "true",
                              "disabled_reason": None, "liability": None}
        self.default_tax_rates = [resources.TaxRate._api_retrieve(t)
                                  for t in data.get("default_tax_rates") or []]
        self.tax_percent = None
        self.start_date, self.status, self.latest_invoice = start, "incomplete", None
        self.cancel_at_period_end, self.cancel_at = False, None
        self.canceled_at = self.ended_at = None
        self.test_clock = getattr(resources.Customer._api_retrieve(customer), "test_clock", None)
        config = data.get("billing_cycle_anchor_config")
        self.billing_cycle_anchor_config = None if config is None else {
            k: (int(config[k]) if k in config else None)
            for k in ("day_of_month", "month", "hour", "minute", "second")}
        trial_end = data.get("trial_end")
        trial_end = start if trial_end == "now" else (int(trial_end) if trial_end else None)
        self.trial_start = start if trial_end and trial_end > start else None
        self.trial_end = trial_end if self.trial_start else None
        if self.trial_end:
            anchor = self.trial_end
        elif config is not None:
            anchor = anchor_from_config(config, start, self._interval)
        else:
            anchor = start
        self.billing_cycle_anchor = anchor
        self._anchor_day = datetime.fromtimestamp(
            anchor, UTC).day if config is None else int(config["day_of_month"])
        self._period = (start, anchor if anchor > start else self._next(start))
        self._items = [{"id": f"si_{resources.random_id(14)}", "object": "subscription_item",
                        "created": start, "metadata": dict(item.get("metadata") or {}),
                        "quantity": int(item.get("quantity", 1)), "subscription": self.id,
                        "tax_rates": [], "discounts": []} for item in items]
        self._first_invoice(data)

    # -- Stripe's shape ------------------------------------------------------------------
    @property
    def current_period_start(self) -> int:
        return self._period[0]

    @property
    def current_period_end(self) -> int:
        return self._period[1]

    @property
    def plan(self):  # localstripe's Subscription reads its one plan; a price has none
        return None

    def _export(self, expand=None) -> dict:
        items = [{**item, "price": dict(price), "current_period_start": self._period[0],
                  "current_period_end": self._period[1]}
                 for item, price in zip(self._items, self._prices, strict=True)]
        return {
            "id": self.id, "object": "subscription", "created": self.created,
            "livemode": False, "customer": self.customer, "status": self.status,
            "items": {"object": "list", "data": items, "has_more": False,
                      "url": f"/v1/subscription_items?subscription={self.id}"},
            "billing_cycle_anchor": self.billing_cycle_anchor,
            "billing_cycle_anchor_config": self.billing_cycle_anchor_config,
            "start_date": self.start_date, "trial_start": self.trial_start,
            "trial_end": self.trial_end, "currency": self.currency,
            "metadata": dict(self.metadata), "schedule": self.schedule,
            "default_payment_method": self.default_payment_method,
            "collection_method": self.collection_method, "days_until_due": self.days_until_due,
            "discounts": list(self.discounts), "automatic_tax": dict(self.automatic_tax),
            "default_tax_rates": [t._export() for t in self.default_tax_rates],
            "latest_invoice": self.latest_invoice, "cancel_at": self.cancel_at,
            "cancel_at_period_end": self.cancel_at_period_end,
            "canceled_at": self.canceled_at, "ended_at": self.ended_at,
            "test_clock": self.test_clock, "pending_update": None,
        }

    # -- invoices --------------------------------------------------------------------------
    def _next(self, ts: int) -> int:
        return add_interval(ts, self._interval, self._count, self._anchor_day)

    def _first_invoice(self, data: dict) -> None:
        start, end = self._period
        extras = data.get("add_invoice_items") or []
        if self.trial_end:
            self.status = "trialing"
            invoicing.bill(self, [(0, "Trial period", start, end)], extras, creating=True)
        elif self.billing_cycle_anchor > start:
            self.status = "active"
            if data.get("proration_behavior", "create_prorations") == "create_prorations":
                full = self._next(start) - start
                share = (end - start) / full if full else 1
                lines = [(round(a * share), d, start, end) for a, d, _, _ in self._lines()]
                invoicing.bill(self, lines, extras, creating=True)
            elif extras:
                invoicing.bill(self, [], extras, creating=True)
        else:
            invoicing.bill(self, self._lines(), extras, creating=True)

    def _lines(self) -> list[tuple[int, str, int, int]]:
        start, end = self._period
        return [(int(price["unit_amount"] or 0) * item["quantity"],
                 f"{item['quantity']} × {price.get('nickname') or price['id']}", start, end)
                for item, price in zip(self._items, self._prices, strict=True)]

    def catch_up(self, now: int) -> None:
        """Roll every period that has ended by `now`: a trial ends, each renewal is invoiced."""
        for _ in range(240):
            if self.status not in LIVE or self._period[1] > now:
                return
            if self.cancel_at_period_end:
                self.status, self.canceled_at, self.ended_at = "canceled", now, self._period[1]
                return
            start = self._period[1]
            self._period = (start, self._next(start))
            if self.status == "trialing":
                self.status = "active"
            invoicing.bill(self, self._lines(), [], creating=False)

    def _on_initial_payment_success(self, invoice):
        if self.status in ("incomplete", "past_due"):
            self.status = "active"

    def _on_initial_payment_failure_now(self, invoice):
        pass  # stays incomplete, as with payment_behavior=allow_incomplete

    def _on_initial_payment_failure_later(self, invoice):
        pass

    def _on_recurring_payment_failure(self, invoice):
        self.status = "past_due"

    # -- update ----------------------------------------------------------------------------
    def _update(self, metadata=None, default_payment_method=None, cancel_at_period_end=None,
                proration_behavior=None, **rest):
        if rest:
            raise invalid(next(iter(rest)), "parameter_unknown",
                          f"The fake cannot update {', '.join(rest)} on a price subscription")
        if default_payment_method is not None:
            if default_payment_method:
                resources.PaymentMethod._api_retrieve(default_payment_method)
            self.default_payment_method = default_payment_method or None
        if metadata == "":
            self.metadata = {}
        elif metadata:
            for key, value in metadata.items():
                if value == "":
                    self.metadata.pop(key, None)
                else:
                    self.metadata[key] = value
        if cancel_at_period_end is not None:
            self.cancel_at_period_end = str(cancel_at_period_end).lower() == "true"


def create(data: dict, *, customer: str | None = None, schedule: str | None = None,
           start: int | None = None) -> PriceSubscription:
    """Check `data` as Stripe would and make the subscription, starting at `start` (the
    customer's now unless a schedule says when)."""
    check_object(data, SubscriptionCreateParams)
    customer = customer or data.get("customer")
    if not customer:
        raise invalid("customer", "parameter_missing", "Missing required param: customer.")
    resources.Customer._api_retrieve(customer)  # 404 as Stripe for an unknown customer
    for key in UNSUPPORTED:
        if key in data:
            raise invalid(key, "parameter_unknown", f"The fake does not implement {key}.")
    items = _checked_items(data)
    _check_settings(data)
    start = start if start is not None else now_for(customer)
    trial_end = data.get("trial_end")
    if trial_end not in (None, "now") and int(trial_end) <= start:
        raise invalid("trial_end", "parameter_invalid_integer",
                      "Invalid timestamp: must be an integer Unix timestamp in the future.")
    return PriceSubscription(customer=customer, items=items, start=start, data=data,
                             schedule=schedule)


def _checked_items(data: dict) -> list[dict]:
    items = data.get("items") or []
    if not items:
        raise invalid("items", "parameter_missing", "Missing required param: items.")
    for n, item in enumerate(items):
        if "price" not in item:
            raise invalid(f"items[{n}][price]", "parameter_missing",
                          "The fake's price subscriptions need a price on every item.")
        if item["price"] not in PRICES:
            raise invalid(f"items[{n}][price]", "resource_missing",
                          f"No such price: '{item['price']}'")
        if not PRICES[item["price"]]["recurring"]:
            raise invalid(f"items[{n}][price]", "parameter_invalid_string",
                          "The price specified is set to `type=one_time` but this field only "
                          "accepts prices with `type=recurring`.")
    prices = [PRICES[item["price"]] for item in items]
    if len({p["currency"] for p in prices}) > 1:
        raise invalid("items", "parameter_invalid_array",
                      "All prices on a subscription must have the same `currency`.")
    if len({(p["recurring"]["interval"], p["recurring"]["interval_count"])
            for p in prices}) > 1:
        raise invalid("items", "parameter_invalid_array", "All prices on a subscription must "
                      "have the same `recurring.interval` and `recurring.interval_count`.")
    return items


def _check_settings(data: dict) -> None:
    send_invoice = data.get("collection_method") == "send_invoice"
    if send_invoice and "days_until_due" not in data:
        raise invalid("days_until_due", "parameter_missing",
                      "Missing required param: days_until_due.")
    if not send_invoice and "days_until_due" in data:
        raise invalid("days_until_due", "parameter_invalid_integer", "days_until_due can only "
                      "be set when collection_method is send_invoice.")
    for discount in data.get("discounts") or []:
        if discount.get("coupon"):
            resources.Coupon._api_retrieve(discount["coupon"])
    if data.get("default_payment_method"):
        resources.PaymentMethod._api_retrieve(data["default_payment_method"])


def catch_up_clock(clock_id: str, now: int) -> None:
    """Every price subscription of the clock's customers lives up to `now`."""
    for key, obj in list(resources.store.items()):
        if key.startswith("subscription:") and isinstance(obj, PriceSubscription) \
                and obj.test_clock == clock_id:
            obj.catch_up(now)


def wrap_localstripe_create() -> None:
    """POST /v1/subscriptions with price items makes a PriceSubscription; plan items still go
    to localstripe's own Subscription, unchanged."""
    cls = resources.Subscription
    if getattr(cls, "_fake_prices", False):
        return
    original = cls._api_create.__func__

    def _api_create(klass, **data):
        if is_price_based(data):
            return create(data)
        return original(klass, **data)

    cls._api_create = classmethod(_api_create)
    cls._fake_prices = True

