"""What the fake Stripe adds to localstripe for moving subscriptions, through localstripe's own
extension points (routes on its aiohttp app, middlewares added before it starts):

- Prices (`/v1/prices`: create, retrieve, list by `lookup_keys[]`), Stripe's shape;
- Subscription Schedules (`/v1/subscription_schedules`: create, retrieve, list by customer,
  cancel, release), `not_started` until their start date, `active` with a subscription id after;
- `--latency-ms M`: every /v1 answer waits M ms (asyncio: concurrent requests overlap, as on
  the real API);
- `--rate-limit N`: at most N reads (GET) and N writes a second, counted apart in one-second
  windows; past that, a 429 in Stripe's error shape with `Stripe-Rate-Limited-Reason`;
- strictness for these routes: every parameter is checked against stripe-python's own
  generated TypedDict for the endpoint (`stripe.params`), so an unknown key at any depth, a
  value outside a Literal, a non-integer where Stripe wants one, or a missing required key is
  refused the way Stripe refuses it (400, `param` naming it).

Objects live in memory only (not in localstripe's pickled store: a bulk run of thousands must
not re-pickle the store on every write).
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import sys
import time
import types
import typing
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

import stripe
from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext
from stripe.params import (
    PriceCreateParams,
    PriceListParams,
    SubscriptionScheduleCancelParams,
    SubscriptionScheduleCreateParams,
    SubscriptionScheduleListParams,
    SubscriptionScheduleReleaseParams,
)

PRICES: dict[str, dict] = {}
SCHEDULES: dict[str, dict] = {}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- strictness -----------------------------------------------------------------------------------
def check(value: Any, kind: Any, param: str) -> None:
    """Raise Stripe's 400 unless `value` (form-decoded: leaves are strings) fits `kind`."""
    origin = get_origin(kind)
    if origin in (Required, NotRequired):
        return check(value, get_args(kind)[0], param)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if str in options and any(get_origin(o) is Literal for o in options):
            # The SDK types an enum as `Literal[...] | str` to accept values newer than
            # itself; the API of its pinned version accepts only the listed ones.
            options = tuple(o for o in options if o is not str)
        problems = []
        for option in options:
            try:
                return check(value, option, param)
            except UserError as exc:
                problems.append(exc)
        raise problems[0]
    checker = _CHECKS.get(origin) or _CHECKS.get(kind)
    if checker is not None:
        return checker(value, kind, param)
    if isinstance(kind, type) and hasattr(kind, "__annotations__"):  # a TypedDict
        return check_object(value, kind, param)
    return None


def _literal(value, kind, param):
    if str(value) not in map(str, get_args(kind)):
        raise _invalid(param, "parameter_invalid_string",
                       f"Invalid {param}: must be one of {', '.join(map(str, get_args(kind)))}")


def _list(value, kind, param):
    if not isinstance(value, list):
        raise _invalid(param, "parameter_invalid_array", f"Invalid array: {param}")
    for n, item in enumerate(value):
        check(item, get_args(kind)[0], f"{param}[{n}]")


def _hash(value, kind, param):
    if not isinstance(value, dict):
        raise _invalid(param, "parameter_invalid_object", f"Invalid hash: {param}")


def _integer(value, kind, param):
    if not (isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())):
        raise _invalid(param, "parameter_invalid_integer", f"Invalid integer: {value}")


def _boolean(value, kind, param):
    if str(value).lower() not in ("true", "false"):
        raise _invalid(param, "parameter_invalid_boolean", f"Invalid boolean: {value}")


def _string(value, kind, param):
    if isinstance(value, (dict, list)):
        raise _invalid(param, "parameter_invalid_string", f"Invalid string: {param}")


_CHECKS = {Literal: _literal, list: _list, typing.List: _list, dict: _hash,  # noqa: UP006
           typing.Dict: _hash, int: _integer, bool: _boolean, str: _string,  # noqa: UP006
           float: _string}


def check_object(value: Any, typed: type, param: str = "") -> None:
    if not isinstance(value, dict):
        raise _invalid(param, "parameter_invalid_object", f"Invalid object: {param}")
    hints = _hints(typed)
    for key, item in value.items():
        name = f"{param}[{key}]" if param else key
        if key == "expand":
            continue
        if key not in hints:
            raise _invalid(name, "parameter_unknown", f"Received unknown parameter: {name}")
        check(item, hints[key], name)
    for key in getattr(typed, "__required_keys__", ()):
        if key not in value:
            name = f"{param}[{key}]" if param else key
            raise _invalid(name, "parameter_missing", f"Missing required param: {name}.")


@functools.cache
def _hints(typed: type) -> dict:
    """The TypedDict's fields; names stripe-python imports only for type checkers (such as
    StripeContext) resolve against the stripe package itself."""
    namespace = {**vars(typing), **vars(stripe), **vars(sys.modules[typed.__module__]),
                 "StripeContext": StripeContext}
    hints = typing.get_type_hints(typed, globalns=namespace, include_extras=True)
    # Some params classes extend the SDK's RequestOptions (api_key, idempotency_key, …):
    # those travel as headers, never as parameters.
    return {k: v for k, v in hints.items() if k not in RequestOptions.__annotations__}


def _invalid(param: str, code: str, message: str) -> UserError:
    return UserError(400, message, {"code": code, "param": param})


async def _params(request: web.Request, typed: type) -> dict:
    if request.method == "GET":
        data = server.unflatten_data(request.query) or {}
    else:
        data = await server.get_post_data(request) or {}
    check_object(data, typed)
    return data


# -- prices ---------------------------------------------------------------------------------------
async def create_price(request: web.Request) -> web.Response:
    data = await _params(request, PriceCreateParams)
    lookup_key = data.get("lookup_key")
    if lookup_key and any(p["lookup_key"] == lookup_key and p["active"] for p in PRICES.values()):
        raise _invalid("lookup_key", "lookup_key_in_use",
                       f"A price (`{lookup_key}`) already uses that lookup key.")
    recurring = data.get("recurring")
    price = {
        "id": _id("price"), "object": "price", "active": str(data.get("active", "true")) == "true",
        "billing_scheme": "per_unit", "created": int(time.time()), "currency": data["currency"],
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
    return server.json_response(_found(PRICES, request.match_info["id"], "price"))


async def list_prices(request: web.Request) -> web.Response:
    data = await _params(request, PriceListParams)
    keys = data.get("lookup_keys")
    found = [p for p in PRICES.values() if keys is None or p["lookup_key"] in keys]
    return _page(found, data)


def _page(objects: list[dict], data: dict) -> web.Response:
    objects = sorted(objects, key=lambda o: (o["created"], o["id"]))
    after = data.get("starting_after")
    if after:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1:] if after in ids else []
    limit = int(data.get("limit", 10))
    return server.json_response({"object": "list", "data": objects[:limit],
                                 "has_more": len(objects) > limit, "url": "/v1/list"})


# -- subscription schedules ------------------------------------------------------------------------
async def create_schedule(request: web.Request) -> web.Response:
    data = await _params(request, SubscriptionScheduleCreateParams)
    customer = data.get("customer")
    resources.Customer._api_retrieve(customer)  # 404 as Stripe for an unknown customer
    phases = data.get("phases") or []
    if not phases:
        raise _invalid("phases", "parameter_missing", "Missing required param: phases.")
    for n, phase in enumerate(phases):
        if phase.get("billing_cycle_anchor") == "phase_start" and phase.get("trial_end"):
            raise _invalid(f"phases[{n}][billing_cycle_anchor]", "parameter_invalid_string",
                           "billing_cycle_anchor cannot be phase_start in a phase with a trial")
        for m, item in enumerate(phase.get("items") or []):
            if item.get("price") and item["price"] not in PRICES:
                raise _invalid(f"phases[{n}][items][{m}][price]", "resource_missing",
                               f"No such price: '{item['price']}'")
    start = data.get("start_date", "now")
    start = int(time.time()) if start == "now" else int(start)
    schedule = {
        "id": _id("sub_sched"), "object": "subscription_schedule", "customer": customer,
        "created": int(time.time()), "canceled_at": None, "completed_at": None,
        "current_phase": None, "end_behavior": data.get("end_behavior", "release"),
        "livemode": False, "metadata": data.get("metadata", {}), "phases": [
            {**phase, "start_date": start} for phase in phases],
        "released_at": None, "released_subscription": None, "status": "not_started",
        "subscription": None, "test_clock": None, "_start": start,
    }
    SCHEDULES[schedule["id"]] = schedule
    return _schedule_response(schedule)


def _started(schedule: dict) -> dict:
    """A not_started schedule whose start has come is active, with its subscription."""
    if schedule["status"] == "not_started" and schedule["_start"] <= time.time():
        schedule["status"] = "active"
        schedule["subscription"] = _id("sub")
    return schedule


def _schedule_response(schedule: dict) -> web.Response:
    return server.json_response({k: v for k, v in _started(schedule).items()
                                 if not k.startswith("_")})


async def retrieve_schedule(request: web.Request) -> web.Response:
    return _schedule_response(_found(SCHEDULES, request.match_info["id"],
                                     "subscription_schedule"))


async def list_schedules(request: web.Request) -> web.Response:
    data = await _params(request, SubscriptionScheduleListParams)
    found = [{k: v for k, v in _started(s).items() if not k.startswith("_")}
             for s in SCHEDULES.values()
             if data.get("customer") in (None, s["customer"])]
    return _page(found, data)


async def _end_schedule(request: web.Request, typed: type, status: str) -> web.Response:
    await _params(request, typed)
    schedule = _started(_found(SCHEDULES, request.match_info["id"], "subscription_schedule"))
    if schedule["status"] not in ("not_started", "active"):
        raise _invalid("", "resource_invalid_state",
                       f"You cannot {status[:-1]} a schedule that is {schedule['status']}.")
    schedule["status"] = status
    stamp = int(time.time())
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


# -- latency and rate limits ----------------------------------------------------------------------
def latency_middleware(milliseconds: int):
    @web.middleware
    async def latency(request: web.Request, handler):
        if request.path.startswith("/v1/"):
            await asyncio.sleep(milliseconds / 1000)
        return await handler(request)

    return latency


def rate_limit_middleware(per_second: int):
    windows: dict[str, list] = {"read": [0, 0], "write": [0, 0]}  # kind → [second, count]

    @web.middleware
    async def rate_limit(request: web.Request, handler):
        if request.path.startswith("/v1/"):
            window = windows["read" if request.method == "GET" else "write"]
            second = int(time.monotonic())
            if window[0] != second:
                window[0], window[1] = second, 0
            window[1] += 1
            if window[1] > per_second:
                return web.json_response(
                    {"error": {"type": "invalid_request_error", "code": "rate_limit",
                               "message": "Request rate limit exceeded. Learn more about rate "
                                          "limits here https://stripe.com/docs/rate-limits."}},
                    status=429, headers={"Stripe-Rate-Limited-Reason": "global-rate"})
        return await handler(request)

    return rate_limit


def install(app: web.Application, *, latency_ms: int = 0, rate_limit: int = 0) -> None:
    """Add the routes and middlewares to localstripe's app (before it starts)."""
    if rate_limit:
        app.middlewares.insert(0, rate_limit_middleware(rate_limit))
    if latency_ms:
        app.middlewares.insert(0, latency_middleware(latency_ms))
    # localstripe's error middleware turns UserError into Stripe's error shape.
    for method, path, handler in (
            ("POST", "/v1/prices", create_price),
            ("GET", "/v1/prices", list_prices),
            ("GET", "/v1/prices/{id}", retrieve_price),
            ("POST", "/v1/subscription_schedules", create_schedule),
            ("GET", "/v1/subscription_schedules", list_schedules),
            ("GET", "/v1/subscription_schedules/{id}", retrieve_schedule),
            ("POST", "/v1/subscription_schedules/{id}/cancel", cancel_schedule),
            ("POST", "/v1/subscription_schedules/{id}/release", release_schedule)):
        app.router.add_route(method, path, handler)
