"""Prices (`/v1/prices`: create, retrieve, list by `lookup_keys[]`) and Subscription
Schedules (`/v1/subscription_schedules`: create, retrieve, list by customer, cancel, release),
in Stripe's shape. A schedule is `not_started` until its start date comes in its customer's
time (a test clock's frozen time, else the wall clock); then it is `active` with a real price
subscription made from its first phase (`schedule` names it back; its first invoice made and
collected as Stripe would)."""

from __future__ import annotations

import secrets

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
from stripe.params import (
    PriceCreateParams,
    PriceListParams,
    PriceRetrieveParams,
    SubscriptionScheduleCancelParams,
    SubscriptionScheduleCreateParams,
    SubscriptionScheduleListParams,
    SubscriptionScheduleReleaseParams,
    SubscriptionScheduleRetrieveParams,
)

from devtools.fake_billing import subscriptions
from devtools.fake_billing.clocks import customers_on, now_for
from devtools.fake_billing.store import PRICES, SCHEDULES
from devtools.fake_billing.strict import invalid, page, params

# What a schedule's phase hands to the subscription it starts.
PHASE_TO_SUBSCRIPTION = ("items", "metadata", "discounts", "automatic_tax", "default_tax_rates",
                         "collection_method", "add_invoice_items", "trial_end",
                         "proration_behavior", "default_payment_method")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- prices ---------------------------------------------------------------------------------------
async def create_price(request: web.Request) -> web.Response:
    data = await params(request, PriceCreateParams)
    lookup_key = data.get("lookup_key")
    if lookup_key and any(p["lookup_key"] == lookup_key and p["active"] for p in PRICES.values()):
        raise invalid("lookup_key", "lookup_key_in_use",
                       f"A price (`{lookup_key}`) already uses that lookup key.")
    recurring = data.get("recurring")
    price = {
        "id": _id("price"), "object": "price", "active": str(data.get("active", "true")) == "true",
        "billing_scheme": "per_unit", "created": now_for(None), "currency": data["currency"],
        "livemode": False, "lookup_key": lookup_key, "metadata": data.get("metadata", {}),
        "nickname": data.get("nickname"), "product": data.get("product") or _id("prod"),
        "recurring": None if not recurring else {
            "interval": recurring["interval"],
            "interval_count": int(recurring.get("interval_count", 1)),
            "usage_type": "licensed", "meter": None, "trial_period_days": None},
        "tax_behavior": data.get("tax_behavior", "unspecified"),
        "type": "recurring" if recurring else "one_time",
        "unit_amount": int(data["unit_amount"]) if "unit_amount" in data else None,
    }
    PRICES[price["id"]] = price
    return server.json_response(price)


def _found(store: dict, key: str, what: str) -> dict:
    if key not in store:
        raise UserError(404, f"No such {what}: '{key}'", {"code": "resource_missing"})
    return store[key]


async def retrieve_price(request: web.Request) -> web.Response:
    await params(request, PriceRetrieveParams)
    return server.json_response(_found(PRICES, request.match_info["id"], "price"))


async def list_prices(request: web.Request) -> web.Response:
    data = await params(request, PriceListParams)
    keys = data.get("lookup_keys")
    found = [p for p in PRICES.values() if keys is None or p["lookup_key"] in keys]
    return page(found, data)


# -- subscription schedules ------------------------------------------------------------------------
async def create_schedule(request: web.Request) -> web.Response:
    data = await params(request, SubscriptionScheduleCreateParams)
    customer = data.get("customer")
    resources.Customer._api_retrieve(customer)  # 404 as Stripe for an unknown customer
    phases = data.get("phases") or []
    if not phases:
        raise invalid("phases", "parameter_missing", "Missing required param: phases.")
    for n, phase in enumerate(phases):
        if phase.get("billing_cycle_anchor") == "phase_start" and phase.get("trial_end"):
            raise invalid(f"phases[{n}][billing_cycle_anchor]", "parameter_invalid_string",
                           "billing_cycle_anchor cannot be phase_start in a phase with a trial")
        for m, item in enumerate(phase.get("items") or []):
            if item.get("price") and item["price"] not in PRICES:
                raise invalid(f"phases[{n}][items][{m}][price]", "resource_missing",
                               f"No such price: '{item['price']}'")
    now = now_for(customer)
    start = data.get("start_date", "now")
    start = now if start == "now" else int(start)
    schedule = {
        "id": _id("sub_sched"), "object": "subscription_schedule", "customer": customer,
        "created": now, "canceled_at": None, "completed_at": None,
        "current_phase": None, "end_behavior": data.get("end_behavior", "release"),
        "livemode": False, "metadata": data.get("metadata", {}), "phases": [
            {**phase, "start_date": start} for phase in phases],
        "released_at": None, "released_subscription": None, "status": "not_started",
        "subscription": None, "_start": start,
        "test_clock": getattr(resources.Customer._api_retrieve(customer), "test_clock", None),
    }
    SCHEDULES[schedule["id"]] = schedule
    return _schedule_response(schedule)


def _started(schedule: dict) -> dict:
    """A not_started schedule whose start has come in its customer's time is active, with the
    subscription its first phase makes (periods since the start rolled, as on a test clock
    advanced far past it)."""
    now = now_for(schedule["customer"])
    if schedule["status"] != "not_started" or schedule["_start"] > now:
        return schedule
    phase = schedule["phases"][0]
    data = {k: phase[k] for k in PHASE_TO_SUBSCRIPTION if k in phase}
    if "days_until_due" in (phase.get("invoice_settings") or {}):
        data["days_until_due"] = phase["invoice_settings"]["days_until_due"]
    schedule["status"] = "active"
    schedule["current_phase"] = {"start_date": schedule["_start"], "end_date": None}
    try:
        sub = subscriptions.create(data, customer=schedule["customer"],
                                   schedule=schedule["id"], start=schedule["_start"])
    except UserError:  # a phase the fake cannot turn into a subscription: an id, no object
        schedule["subscription"] = _id("sub")
        return schedule
    schedule["subscription"] = sub.id
    sub.catch_up(now)
    return schedule


def start_due_on_clock(clock_id: str, now: int) -> None:
    """A test clock moved: its customers' schedules whose start has come begin."""
    customers = customers_on(clock_id)
    for schedule in list(SCHEDULES.values()):
        if schedule["customer"] in customers:
            _started(schedule)


def _schedule_response(schedule: dict) -> web.Response:
    return server.json_response({k: v for k, v in _started(schedule).items()
                                 if not k.startswith("_")})


async def retrieve_schedule(request: web.Request) -> web.Response:
    await params(request, SubscriptionScheduleRetrieveParams)
    return _schedule_response(_found(SCHEDULES, request.match_info["id"],
                                     "subscription_schedule"))


async def list_schedules(request: web.Request) -> web.Response:
    data = await params(request, SubscriptionScheduleListParams)
    found = [{k: v for k, v in _started(s).items() if not k.startswith("_")}
             for s in SCHEDULES.values()
             if data.get("customer") in (None, s["customer"])]
    return page(found, data)


async def _end_schedule(request: web.Request, typed: type, status: str) -> web.Response:
    await params(request, typed)
    schedule = _started(_found(SCHEDULES, request.match_info["id"], "subscription_schedule"))
    if schedule["status"] not in ("not_started", "active"):
        raise invalid("", "resource_invalid_state",
                       f"You cannot {status[:-1]} a schedule that is {schedule['status']}.")
    schedule["status"] = status
    stamp = now_for(schedule["customer"])
    if status == "canceled":
        schedule["canceled_at"] = stamp
    else:
        schedule["released_at"], schedule["released_subscription"] = \
            stamp, schedule["subscription"]
    return _schedule_response(schedule)


async def cancel_schedule(request: web.Request) -> web.Response:
    return await _end_schedule(request, SubscriptionScheduleCancelParams, "canceled")


async def release_schedule(request: web.Request) -> web.Response:
    return await _end_schedule(request, SubscriptionScheduleReleaseParams, "released")


ROUTES = (
    ("POST", "/v1/prices", create_price, PriceCreateParams),
    ("GET", "/v1/prices", list_prices, PriceListParams),
    ("GET", "/v1/prices/{id}", retrieve_price, PriceRetrieveParams),
    ("POST", "/v1/subscription_schedules", create_schedule, SubscriptionScheduleCreateParams),
    ("GET", "/v1/subscription_schedules", list_schedules, SubscriptionScheduleListParams),
    ("GET", "/v1/subscription_schedules/{id}", retrieve_schedule,
     SubscriptionScheduleRetrieveParams),
    ("POST", "/v1/subscription_schedules/{id}/cancel", cancel_schedule,
     SubscriptionScheduleCancelParams),
    ("POST", "/v1/subscription_schedules/{id}/release", release_schedule,
     SubscriptionScheduleReleaseParams),
)
