"""Test clocks (`/v1/test_helpers/test_clocks`: create, retrieve, list, delete, advance) and the
time each customer lives in: a customer created with `test_clock` sees that clock's
`frozen_time`, every other customer the wall clock.

An advance answers at once with `status: advancing` (and `status_details.advancing
.target_frozen_time`), as Stripe does; a moment later the clock moves, what is due on it
happens (the hooks in `ON_ADVANCE`: schedules start, periods roll, invoices are made) and the
clock is `ready` again. Poll the clock until it is ready, as against Stripe.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from aiohttp import web
from localstripe import resources, server
from localstripe.errors import UserError
from stripe.params.test_helpers import (
    TestClockAdvanceParams,
    TestClockCreateParams,
    TestClockDeleteParams,
    TestClockListParams,
    TestClockRetrieveParams,
)

from devtools.fake_billing.strict import invalid, page, params

CLOCKS: dict[str, dict] = {}
# Called with (clock id, new frozen time) while a clock advances.
ON_ADVANCE: list[Callable[[str, int], None]] = []
ADVANCE_SECONDS = 0.2  # how long a clock stays `advancing`


def now_for(customer_id: str | None) -> int:
    """The customer's present: its test clock's frozen time, else the wall clock."""
    customer = resources.store.get(f"customer:{customer_id}") if customer_id else None
    clock = CLOCKS.get(getattr(customer, "test_clock", None) or "")
    return clock["frozen_time"] if clock else int(time.time())


def customers_on(clock_id: str) -> set[str]:
    return {obj.id for key, obj in resources.store.items()
            if key.startswith("customer:") and getattr(obj, "test_clock", None) == clock_id}


def accept_test_clock_on_customers() -> None:
    """localstripe's Customer takes `test_clock` on create and shows it (null without one)."""
    customer_cls = resources.Customer
    if getattr(customer_cls, "_fake_clock", False):
        return
    original_init = customer_cls.__init__

    def __init__(self, *args, test_clock=None, **kwargs):
        if test_clock is not None and test_clock not in CLOCKS:
            raise UserError(400, f"No such test clock: '{test_clock}'",
                            {"code": "resource_missing", "param": "test_clock"})
        original_init(self, *args, **kwargs)
        self.test_clock = test_clock

    customer_cls.__init__ = __init__
    customer_cls._fake_clock = True


def _found(clock_id: str) -> dict:
    if clock_id not in CLOCKS:
        raise UserError(404, f"No such test clock: '{clock_id}'",
                        {"code": "resource_missing", "param": "test_clock"})
    return CLOCKS[clock_id]


async def create_clock(request: web.Request) -> web.Response:
    data = await params(request, TestClockCreateParams)
    created = int(time.time())
    clock = {"id": f"clock_{secrets.token_hex(12)}", "object": "test_helpers.test_clock",
             "created": created, "deletes_after": created + 30 * 86400,
             "frozen_time": int(data["frozen_time"]), "livemode": False,
             "name": data.get("name"), "status": "ready", "status_details": {}}
    CLOCKS[clock["id"]] = clock
    return server.json_response(clock)


async def retrieve_clock(request: web.Request) -> web.Response:
    return server.json_response(_found(request.match_info["id"]))


async def list_clocks(request: web.Request) -> web.Response:
    return page(list(CLOCKS.values()), await params(request, TestClockListParams))


async def delete_clock(request: web.Request) -> web.Response:
    clock = _found(request.match_info["id"])
    del CLOCKS[clock["id"]]
    return server.json_response({"id": clock["id"], "object": "test_helpers.test_clock",
                                 "deleted": True})


async def advance_clock(request: web.Request) -> web.Response:
    data = await params(request, TestClockAdvanceParams)
    clock = _found(request.match_info["id"])
    target = int(data["frozen_time"])
    if clock["status"] != "ready":
        raise invalid("", "test_clock_not_ready",
                      f"The test clock {clock['id']} is {clock['status']}; wait until it is "
                      "ready before advancing it again.")
    if target <= clock["frozen_time"]:
        raise invalid("frozen_time", "parameter_invalid_integer",
                      "The test clock can only be advanced to a time after its current "
                      f"frozen_time ({clock['frozen_time']}).")
    clock["status"] = "advancing"
    clock["status_details"] = {"advancing": {"target_frozen_time": target}}
    answer = server.json_response(dict(clock))
    asyncio.get_running_loop().call_later(ADVANCE_SECONDS, _finish_advance, clock, target)
    return answer


def _finish_advance(clock: dict, target: int) -> None:
    clock["frozen_time"] = target
    try:
        for hook in ON_ADVANCE:
            hook(clock["id"], target)
    finally:
        clock["status"], clock["status_details"] = "ready", {}


ROUTES = (
    ("POST", "/v1/test_helpers/test_clocks", create_clock, TestClockCreateParams),
    ("GET", "/v1/test_helpers/test_clocks", list_clocks, TestClockListParams),
    ("GET", "/v1/test_helpers/test_clocks/{id}", retrieve_clock, TestClockRetrieveParams),
    ("DELETE", "/v1/test_helpers/test_clocks/{id}", delete_clock, TestClockDeleteParams),
    ("POST", "/v1/test_helpers/test_clocks/{id}/advance", advance_clock, TestClockAdvanceParams),
)
