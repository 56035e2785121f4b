"""What the fake Stripe adds to localstripe for moving subscriptions, through localstripe's own
extension points (routes on its aiohttp app, middlewares, a wrapped resource class), installed
before it starts:

- Prices and Subscription Schedules (`catalog.py`);
- subscriptions of Prices as `apply.subscription_params` makes them: several items, anchor
  config, trials, collection, discounts, taxes, one-off items, metadata; stored in localstripe's
  store beside its own plan subscriptions, so list (status=all too), retrieve, update and cancel
  see both (`subscriptions.py`);
- test clocks, and customers on them living in the clock's time: schedules start and periods
  roll when the clock is advanced (`clocks.py`);
- `invoices.pay` with a `payment_method`, Stripe's 402 card_error on a decline, and the invoice
  list by status (`invoicing.py`);
- events as Stripe makes them for customers, payment methods, SetupIntents, subscriptions,
  schedules and invoices, listed by `GET /v1/events` and delivered signed to the endpoints
  registered at `/_config/webhooks/{id}`, each remembering whether delivery succeeded
  (`events.py`);
- Stripe's card account updater on demand, `POST /_config/card_updater/{pm id}` (not a Stripe
  API: none exists), which changes a card in place and sends
  `payment_method.automatically_updated` (`card_updater.py`);
- `--latency-ms M` and `--rate-limit N` (`limits.py`);
- strictness on every route the app uses (`STRICT`): parameters checked against stripe-python's
  generated `stripe.params` TypedDict for the endpoint, refused as Stripe refuses (`strict.py`).
"""

from __future__ import annotations

from aiohttp import web
from stripe.params import (
    EventListParams,
    InvoiceListParams,
    InvoicePayParams,
    SubscriptionCancelParams,
    SubscriptionCreateParams,
    SubscriptionListParams,
    SubscriptionRetrieveParams,
    SubscriptionUpdateParams,
)

from devtools.fake_billing import (
    card_updater,
    catalog,
    clocks,
    events,
    invoicing,
    subscriptions,
)
from devtools.fake_billing.limits import latency_middleware, rate_limit_middleware
from devtools.fake_billing.store import PRICES, SCHEDULES
from devtools.fake_billing.strict import STRICT, check, check_object, strict_middleware

__all__ = ["ADDED_ROUTES", "LOCALSTRIPE_ROUTES", "PRICES", "SCHEDULES", "STRICT", "check",
           "check_object", "install"]

# Routes the fake adds: (method, path, handler, stripe.params type).
ADDED_ROUTES = catalog.ROUTES + clocks.ROUTES
# localstripe's routes the app uses, checked as strictly; some answered by the fake instead.
LOCALSTRIPE_ROUTES = (
    ("POST", "/v1/subscriptions", None, SubscriptionCreateParams),
    ("GET", "/v1/subscriptions", None, SubscriptionListParams),
    ("GET", "/v1/subscriptions/{id}", None, SubscriptionRetrieveParams),
    ("POST", "/v1/subscriptions/{id}", None, SubscriptionUpdateParams),
    ("DELETE", "/v1/subscriptions/{id}", None, SubscriptionCancelParams),
    ("POST", "/v1/invoices/{id}/pay", invoicing.pay_invoice, InvoicePayParams),
    ("GET", "/v1/invoices", invoicing.list_invoices, InvoiceListParams),
    ("GET", "/v1/events", events.list_events, EventListParams),
)
OVERRIDES = {(method, path): handler
             for method, path, handler, _ in LOCALSTRIPE_ROUTES if handler is not None}


@web.middleware
async def override_middleware(request: web.Request, handler):
    """localstripe registered these paths first; the fake answers them in its place."""
    resource = getattr(request.match_info.route, "resource", None)
    ours = OVERRIDES.get((request.method, resource.canonical if resource else ""))
    return await (ours or handler)(request)


def install(app: web.Application, *, latency_ms: int = 0, rate_limit: int = 0) -> None:
    """Add the routes and middlewares to localstripe's app (before it starts)."""
    if rate_limit:
        app.middlewares.insert(0, rate_limit_middleware(rate_limit))
    if latency_ms:
        app.middlewares.insert(0, latency_middleware(latency_ms))
    # Inside localstripe's error middleware, which turns UserError into Stripe's error shape.
    app.middlewares.extend((strict_middleware, events.schedule_events_middleware,
                            override_middleware))
    for method, path, handler, typed in ADDED_ROUTES:
        app.router.add_route(method, path, handler)
        STRICT[(method, path)] = typed
    app.router.add_route(*card_updater.ROUTE)  # outside /v1: no Stripe params type to check
    for method, path, _, typed in LOCALSTRIPE_ROUTES:
        STRICT[(method, path)] = typed
    clocks.accept_test_clock_on_customers()
    subscriptions.wrap_localstripe_create()
    OVERRIDES.update(events.install())
    clocks.ON_ADVANCE[:] = [catalog.start_due_on_clock, subscriptions.catch_up_clock]
