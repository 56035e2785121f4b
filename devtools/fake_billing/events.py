"""Events as Stripe makes them for the objects the customer's path touches, listed and
delivered as Stripe does.

localstripe makes an `Event` for a few changes and hands it to `schedule_webhook`, which posts
it (signed) to the endpoints registered with `POST /_config/webhooks/{id}` and forgets it. The
fake replaces that one function (`install`), so every event, localstripe's and ours:

- keeps Stripe's shape (`api_version` of the pinned SDK, `pending_webhooks`, `request`,
  `data.previous_attributes` on `*.updated`);
- is posted at once to each endpoint that wants its type, signed as Stripe signs
  (`Stripe-Signature: t=<now>,v1=<HMAC-SHA256 of "t.body" under the endpoint's secret>`), and
  remembers whether every attempt got a 2xx (`delivery_success`); an endpoint that refuses or
  cannot be reached is a failure. Stripe retries for days; the fake does not retry, it records;
- is listed by `GET /v1/events` (newest first; `created`, `type` with `*`, `types[]`,
  `delivery_success`, `starting_after`/`ending_before`, `limit`).

What it adds to localstripe's own events, through wrapped resource methods:
`setup_intent.created`, `.succeeded`, `.requires_action`, `.setup_failed` (a decline, or
3-D Secure failed), `.canceled`; `payment_method.attached` (also when a SetupIntent with a
customer succeeds, which attaches its card as Stripe does); `customer.updated` only when
something changed; `customer.subscription.updated`; `subscription_schedule.created`,
`.canceled`, `.released`; `invoice.paid` beside localstripe's `invoice.payment_succeeded`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import itertools
import json
import logging
import time

import aiohttp
import stripe
from aiohttp import web
from localstripe import resources, server, webhooks
from localstripe.errors import UserError

from devtools.fake_billing.strict import invalid, request_data

log = logging.getLogger("aiohttp.access")
_sequence = itertools.count(1)  # orders events made within the same second
DELIVERY_TIMEOUT = aiohttp.ClientTimeout(total=10)
_before: dict[str, dict] = {}  # object id → its export before an update in progress


class _Plain:
    """A dict standing in for a StripeObject (the fake's schedules are plain dicts)."""

    def __init__(self, obj: dict):
        self._obj = obj

    def _export(self, expand=None) -> dict:
        return {k: v for k, v in self._obj.items() if not k.startswith("_")}


def _changed(before: dict, after: dict) -> dict:
    """Stripe's previous_attributes: the old value of each top-level key that changed."""
    return {k: before.get(k) for k in after if k not in ("updated",) and before.get(k) != after[k]}


def emit(event: resources.Event) -> None:
    """localstripe's `schedule_webhook`, replaced: shape, remember, deliver."""
    obj = event.data["object"]
    if event.type.endswith(".updated") and obj.get("id") in _before:
        previous = _changed(_before.pop(obj["id"]), obj)
        if not previous:  # Stripe makes no event for an update that changed nothing
            resources.store.pop(f"event:{event.id}", None)
            return
        event.data["previous_attributes"] = previous
    event.api_version = stripe.api_version
    event.request = {"id": None, "idempotency_key": None}
    event._seq = next(_sequence)
    endpoints = [hook for hook in list(webhooks._webhooks.values())
                 if hook.events is None or event.type in hook.events or "*" in hook.events]
    # Stripe lists an event still pending delivery under delivery_success=false; one that no
    # endpoint wanted is listed under neither.
    event._delivery_success = False if endpoints else None
    event.pending_webhooks = len(endpoints)
    if endpoints:
        asyncio.ensure_future(_deliver(event, endpoints))
    if event.type == "invoice.payment_succeeded":
        emit(resources.Event("invoice.paid", _Plain(obj)))


def make(type_: str, obj) -> None:
    emit(resources.Event(type_, obj if hasattr(obj, "_export") else _Plain(obj)))


async def _deliver(event: resources.Event, endpoints: list) -> None:
    body = json.dumps(event._export(), sort_keys=True).encode()
    results = []
    async with aiohttp.ClientSession(timeout=DELIVERY_TIMEOUT) as session:
        for hook in endpoints:
            stamp = int(time.time())
            signature = hmac.new(hook.secret.encode(), b"%d.%s" % (stamp, body),
                                 hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "Stripe-Signature": f"t={stamp},v1={signature}"}
            try:
                async with session.post(hook.url, data=body, headers=headers) as answer:
                    ok = 200 <= answer.status < 300
                    log.info("event %s %s to %s: %s", event.id, event.type, hook.url,
                             answer.status)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                ok = False
                log.info("event %s %s to %s failed: %s", event.id, event.type, hook.url,
                         type(exc).__name__)
            results.append(ok)
            if ok:
                event.pending_webhooks -= 1
    event._delivery_success = all(results)


# -- the list ---------------------------------------------------------------------------------
def _created_filter(created) -> list:
    if isinstance(created, dict):
        tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
        return [lambda e, op=tests[k], v=int(v): op(e.created, v) for k, v in created.items()]
    return [lambda e, v=int(created): e.created == v]


async def list_events(request: web.Request) -> web.Response:
    data = await request_data(request)  # checked against EventListParams by the middleware
    if "type" in data and "types" in data:
        raise invalid("types", "parameter_invalid_array",
                      "You cannot specify both `type` and `types`.")
    if len(data.get("types") or []) > 20:
        raise invalid("types", "parameter_invalid_array", "You can pass at most 20 types.")
    limit = int(data.get("limit", 10))
    if not 1 <= limit <= 100:
        raise invalid("limit", "parameter_invalid_integer",
                      "Invalid limit: must be between 1 and 100")
    tests = _created_filter(data["created"]) if "created" in data else []
    if "type" in data:
        tests.append(lambda e: fnmatch.fnmatchcase(e.type, data["type"]))
    if "types" in data:
        tests.append(lambda e: e.type in data["types"])
    if "delivery_success" in data:
        wanted = str(data["delivery_success"]).lower() == "true"
        tests.append(lambda e: e._delivery_success is wanted)
    found = sorted((e for key, e in list(resources.store.items())
                    if key.startswith("event:") and all(t(e) for t in tests)),
                   key=lambda e: (e.created, getattr(e, "_seq", 0)), reverse=True)
    ids = [e.id for e in found]
    if data.get("starting_after"):
        found = found[_index(ids, data["starting_after"], "starting_after") + 1:]
        page, more = found[:limit], len(found) > limit
    elif data.get("ending_before"):
        found = found[:_index(ids, data["ending_before"], "ending_before")]
        page, more = found[-limit:], len(found) > limit
    else:
        page, more = found[:limit], len(found) > limit
    return server.json_response({"object": "list", "url": "/v1/events", "has_more": more,
                                 "data": [e._export() for e in page]})


def _index(ids: list[str], cursor: str, param: str) -> int:
    if cursor not in ids:
        raise invalid(param, "resource_missing", f"No such event: '{cursor}'")
    return ids.index(cursor)


# -- what localstripe does not emit -------------------------------------------------------------
def _wrap_class(cls, name: str, make_wrapper) -> None:
    original = getattr(cls, name).__func__
    setattr(cls, name, classmethod(make_wrapper(original)))


def _remember(cls, obj_id) -> None:
    try:
        _before[obj_id] = cls._api_retrieve(obj_id)._export()
    except UserError:
        pass


def _setup_intents() -> None:
    cls = resources.SetupIntent
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.last_setup_error = None
        make("setup_intent.created", self)

    cls.__init__ = __init__

    def confirm(original):
        def _api_confirm(klass, id, **data):
            try:
                obj = original(klass, id, **data)
            except UserError as exc:
                failed = resources.store.get(f"setup_intent:{id}")
                if failed is not None and exc.code == 402:
                    failed.last_setup_error = {
                        "type": "card_error", "code": "card_declined",
                        "decline_code": "generic_decline", "message": "Your card was declined.",
                        "payment_method": {"id": failed.payment_method}}
                    make("setup_intent.setup_failed", failed)
                raise
            if obj.status == "succeeded":
                _attach_on_success(obj)
                make("setup_intent.succeeded", obj)
            elif obj.status == "requires_action":
                make("setup_intent.requires_action", obj)
            return obj
        return _api_confirm

    def cancel(original):
        def _api_cancel(klass, id, **data):
            waiting = getattr(resources.store.get(f"setup_intent:{id}"), "status", None)
            obj = original(klass, id, **data)
            if waiting == "requires_action" and data.get("client_secret"):
                # Stripe.js's "Fail authentication": 3-D Secure failed, not a merchant cancel.
                obj.last_setup_error = {
                    "type": "invalid_request_error",
                    "code": "setup_intent_authentication_failure",
                    "message": "The latest attempt to set up the payment method has failed "
                               "because authentication failed."}
                make("setup_intent.setup_failed", obj)
            else:
                make("setup_intent.canceled", obj)
            return obj
        return _api_cancel

    _wrap_class(cls, "_api_confirm", confirm)
    _wrap_class(cls, "_api_cancel", cancel)


def _attach_on_success(setup_intent) -> None:
    """A SetupIntent with a customer attaches its card to that customer when it succeeds."""
    if not setup_intent.customer or not setup_intent.payment_method:
        return
    pm = resources.PaymentMethod._api_retrieve(setup_intent.payment_method)
    if pm.customer != setup_intent.customer:
        pm.customer = setup_intent.customer
        make("payment_method.attached", pm)


def _payment_methods() -> None:
    def attach(original):
        def _api_attach(klass, id, **data):
            was = getattr(resources.store.get(f"payment_method:{id}"), "customer", None)
            obj = original(klass, id, **data)
            if obj.customer != was:
                make("payment_method.attached", obj)
            return obj
        return _api_attach

    _wrap_class(resources.PaymentMethod, "_api_attach", attach)


def _updates() -> None:
    def customer(original):
        def _api_update(klass, id, **data):
            _remember(klass, id)  # localstripe emits customer.updated; emit() diffs it
            try:
                return original(klass, id, **data)
            finally:
                _before.pop(id, None)
        return _api_update

    def subscription(original):
        def _api_update(klass, id, **data):
            _remember(klass, id)
            try:
                obj = original(klass, id, **data)
                make("customer.subscription.updated", obj)
                return obj
            finally:
                _before.pop(id, None)
        return _api_update

    _wrap_class(resources.Customer, "_api_update", customer)
    _wrap_class(resources.Subscription, "_api_update", subscription)


SCHEDULE_EVENTS = {
    "/v1/subscription_schedules": "subscription_schedule.created",
    "/v1/subscription_schedules/{id}/cancel": "subscription_schedule.canceled",
    "/v1/subscription_schedules/{id}/release": "subscription_schedule.released",
}


@web.middleware
async def schedule_events_middleware(request: web.Request, handler):
    """The schedules' routes answer plain dicts: their event comes from a successful answer."""
    answer = await handler(request)
    resource = getattr(request.match_info.route, "resource", None)
    kind = SCHEDULE_EVENTS.get(resource.canonical if resource else "")
    if request.method == "POST" and kind and answer.status == 200:
        make(kind, json.loads(answer.body))
    return answer


EXTRA_ROUTES = (  # localstripe bound these methods into its routes when it was imported
    ("/v1/setup_intents/{id}/confirm", resources.SetupIntent, "_api_confirm"),
    ("/v1/setup_intents/{id}/cancel", resources.SetupIntent, "_api_cancel"),
    ("/v1/payment_methods/{id}/attach", resources.PaymentMethod, "_api_attach"),
)


def install() -> dict:
    """Route every event through `emit` and wrap the methods whose events are missing; return
    the routes (method, path) → handler that must answer with the wrapped methods."""
    if not getattr(resources, "_fake_events", False):
        resources.schedule_webhook = emit
        webhooks.schedule_webhook = emit
        _setup_intents()
        _payment_methods()
        _updates()
        resources._fake_events = True
    return {("POST", url): server.api_extra(getattr(cls, name), url)
            for url, cls, name in EXTRA_ROUTES}
