"""The plan: every legacy subscription in exactly one SPEC state, with its start on Stripe.

`decide()` is the rules, on plain values; `plan()` resolves the prices the rows name (Stripe is
read once per unknown price or lookup key), then decides every row whose plan may still change
(OPEN_STATES) and stores the outcome; `plan_customer()` does the same for one customer without
reading Stripe (a card was just saved: their waiting subscriptions are planned at once).

The start is the legacy next charge, in UTC, keeping its hour of day. A charge due within
SUBSCRIPTION_START_BUFFER_HOURS stays with the legacy processor and the start moves on one
billing interval (or more) from there: the legacy side charges that once more.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import Customer, LegacySubscription, PriceMapEntry, StripePrice
from cardbridge.models.subscriptions import OPEN_STATES
from cardbridge.models.types import utcnow
from cardbridge.stripe_gateway import NotFound
from cardbridge.subscriptions import calendar
from cardbridge.subscriptions.loading import keep_mapping, price_problem, store_price

USABLE_CARD = ("ready", "updated")  # SPEC statuses whose customer has a card Stripe can charge
MAX_TRIAL = timedelta(days=730)  # Stripe: a trial ends at most two years out
ANY_CURRENCY = "any"  # a price map row for a plan missing on Stripe whatever the currency


@dataclass
class Decision:
    state: str
    reason: str | None = None
    start_at: datetime | None = None
    mode: str | None = None  # schedule | subscription
    plan: dict = field(default_factory=dict)
    mrr: int | None = None


@dataclass
class Context:
    now: datetime
    buffer: timedelta
    bill_arrears: bool
    prices: dict[str, StripePrice]  # by price id
    mapped: dict[tuple[str, str], str | None]  # (legacy plan, currency) → price id (None: none)


def review(reason: str, mrr: int | None = None) -> Decision:
    return Decision("needs_review", reason, mrr=mrr)


def decide(sub: LegacySubscription, customer: Customer | None, ctx: Context) -> Decision:
    """The rules of SPEC and issue "Begin charging on Stripe", first match wins."""
    if sub.legacy_status == "canceled":
        return Decision("skipped", "canceled in the legacy system")
    if sub.legacy_status == "non_renewing":
        return Decision("skipped", "ends at its period end in the legacy system")
    if customer is None:
        return review(f"customer {sub.legacy_customer_id} is not in the roster")
    if not customer.stripe_customer_id:
        return review("the customer has no Stripe customer yet (import the mapping file)")
    items, problem = _resolve_items(sub, ctx)
    if problem:
        return review(problem)
    currency = items[0][1].currency
    interval, count = items[0][1].interval, items[0][1].interval_count
    mrr = sum(calendar.monthly((p.unit_amount or 0) * q, interval, count) for q, p in
              ((item["quantity"], price) for item, price in items))
    base, note = _base_moment(sub)
    if base is None:
        return review(note, mrr)
    plan: dict = {"items": [{"price": p.id, "quantity": i["quantity"]} for i, p in items],
                  "currency": currency, "interval": interval, "interval_count": count}
    if sub.legacy_status == "past_due":
        arrears = _arrears(sub, items[0][1], ctx)
        if isinstance(arrears, str):
            return review(arrears, mrr)
        plan["add_invoice_items"] = [arrears]
    start, mode = _start(sub, base, interval, count, ctx, plan)
    if isinstance(start, str):
        return review(start, mrr)
    if customer.status not in USABLE_CARD:
        return Decision("waiting_for_card", "waiting for the customer's card", start, mode, plan,
                        mrr)
    return Decision("planned", note, start, mode, plan, mrr)


def _resolve_items(sub: LegacySubscription, ctx: Context):
    """[(item, StripePrice)] and None, or None and the reason the items cannot be used."""
    resolved = []
    for item in sub.items:
        price_id = item.get("price")
        if price_id is None:
            plan_id = item["legacy_plan_id"]
            keys = [k for k in ctx.mapped if k[0] == plan_id and
                    (sub.currency is None or k[1] == sub.currency)]
            price_id = ctx.mapped[keys[0]] if len(keys) == 1 else None
            if len(keys) > 1:
                return None, f"plan {plan_id} is mapped in several currencies: add currency"
            elsewhere = sorted(k[1] for k in ctx.mapped if k[0] == plan_id and ctx.mapped[k])
            if price_id is None and elsewhere:
                return None, (f"currency mismatch: the subscription is in {sub.currency}, plan "
                              f"{plan_id} has prices in {', '.join(elsewhere)} only")
            if price_id is None:
                return None, (f"unknown plan {plan_id}: no price map row for it"
                              f"{' in ' + sub.currency if sub.currency else ''} and no Stripe "
                              "price with that lookup_key")
        price = ctx.prices.get(price_id)
        if price is None:
            return None, f"{price_id} has not been read from Stripe yet (run the plan again)"
        problem = _price_mismatch(sub, item, price)
        if problem:
            return None, problem
        resolved.append((item, price))
    first = resolved[0][1]
    for _, price in resolved[1:]:
        if price.currency != first.currency:
            return None, "items in different currencies (one currency per Stripe subscription)"
        if (price.interval, price.interval_count) != (first.interval, first.interval_count):
            return None, "items billed on different intervals"
    return resolved, None


def _price_mismatch(sub: LegacySubscription, item: dict, price: StripePrice) -> str | None:
    if not price.active or not price.recurring:
        return f"{price.id} is {'archived' if not price.active else 'not recurring'} on Stripe"
    if sub.currency and price.currency != sub.currency:
        return f"currency mismatch: the subscription is in {sub.currency}, {price.id} in " \
               f"{price.currency}"
    wanted = (sub.interval, sub.interval_count or 1)
    if sub.interval and wanted != (price.interval, price.interval_count):
        return (f"billing interval mismatch: legacy every {wanted[1]} {wanted[0]}, {price.id} "
                f"every {price.interval_count} {price.interval}")
    if "unit_amount" in item and item["unit_amount"] != price.unit_amount:
        return (f"price mismatch: legacy {item['unit_amount']} {price.currency} a unit, "
                f"{price.id} {price.unit_amount}")
    return None


def _base_moment(sub: LegacySubscription) -> tuple[datetime | None, str | None]:
    if sub.legacy_status == "paused":
        if sub.resume_at is None:
            return None, "paused with no resume_at: when does it resume?"
        return sub.resume_at, "starts when the legacy pause ends"
    if sub.legacy_status == "trialing" and sub.trial_end is not None:
        return sub.trial_end, None
    return sub.next_billing_at, None


def _arrears(sub: LegacySubscription, price: StripePrice, ctx: Context) -> dict | str:
    if not sub.past_due_amount:
        return "past due with no past_due_amount: how much does the customer owe?"
    if not ctx.bill_arrears:
        return (f"past due: {sub.past_due_amount} {price.currency} owed in the legacy system; "
                "collect it there, or set SUBSCRIPTION_BILL_ARREARS=true to put it on the "
                "first Stripe invoice")
    return {"price_data": {"product": price.product, "currency": price.currency,
                           "unit_amount": sub.past_due_amount}, "quantity": 1}


def _start(sub: LegacySubscription, base: datetime, interval: str, count: int, ctx: Context,
           plan: dict):
    """(start, mode) filling `plan`, or the review reason."""
    earliest = ctx.now + ctx.buffer
    day = calendar.anchor_day(sub.next_billing_at or base, sub.timezone, sub.anchor_day)
    start, rolled = calendar.first_at_or_after(base, earliest, interval, count, day=day,
                                               zone=sub.timezone)
    if rolled:
        plan["rolled"] = rolled  # the legacy processor charges this many more times
    mode = "schedule"
    if sub.legacy_status == "trialing" and sub.trial_end is not None and not rolled:
        if start - ctx.now > MAX_TRIAL:
            return "the trial ends more than two years out (Stripe's limit)"
        plan["trial_end"] = int(start.timestamp())
        mode = "subscription"
    local_start = calendar.local(start, sub.timezone)
    if interval in ("month", "year") and day >= 29 and local_start.day < day:
        # A schedule starting on a short month's last day would move billing to that day for
        # good; a subscription anchored on the day keeps it (billing_cycle_anchor_config).
        utc_start = calendar.local(start, None)
        plan["anchor_config"] = {"day_of_month": day, "hour": utc_start.hour,
                                 "minute": utc_start.minute, "second": utc_start.second}
        if interval == "year":
            plan["anchor_config"]["month"] = utc_start.month
        mode = "subscription"
    for key in ("coupon", "collection_method", "days_until_due", "automatic_tax",
                "default_tax_rate"):
        if getattr(sub, key) is not None:
            plan[key] = getattr(sub, key)
    return start, mode


# -- storing the plan ---------------------------------------------------------------------------
def context(now: datetime | None = None) -> Context:
    config = current_app.config
    prices = {p.id: p for p in db.session.execute(select(StripePrice)).scalars()}
    mapped = {(e.legacy_plan_id, e.currency): e.stripe_price_id
              for e in db.session.execute(select(PriceMapEntry)).scalars()}
    return Context(now or utcnow(), timedelta(hours=config["SUBSCRIPTION_START_BUFFER_HOURS"]),
                   config["SUBSCRIPTION_BILL_ARREARS"], prices, mapped)


def store(sub: LegacySubscription, decision: Decision, now: datetime) -> bool:
    """Write the decision; True when anything changed (the plan's revision moves on then)."""
    before = (sub.state, sub.reason, sub.start_at, sub.mode, sub.plan, sub.mrr)
    after = (decision.state, decision.reason, decision.start_at, decision.mode, decision.plan,
             decision.mrr)
    if before == after:
        return False
    if (sub.start_at, sub.mode, sub.plan) != (decision.start_at, decision.mode, decision.plan):
        sub.plan_revision += 1
    sub.state, sub.reason, sub.start_at, sub.mode, sub.plan, sub.mrr = after
    if decision.state == "planned" and sub.covered_at is None:
        sub.covered_at = now
    sub.updated_at = now
    return True


def plan(gateway, now: datetime | None = None, batch: int = 1000) -> Counter:
    """Resolve prices, then decide every open row; returns counts of the changes."""
    now = now or utcnow()
    resolve_prices(gateway, now)
    ctx = context(now)
    counts: Counter[str] = Counter()
    last = 0
    while True:
        rows = db.session.execute(
            select(LegacySubscription, Customer).outerjoin(Customer)
            .where(LegacySubscription.state.in_(OPEN_STATES), LegacySubscription.id > last)
            .order_by(LegacySubscription.id).limit(batch)).all()
        if not rows:
            return counts
        for sub, customer in rows:
            counts["changed" if store(sub, decide(sub, customer, ctx), now) else "same"] += 1
        last = rows[-1][0].id
        db.session.flush()


def plan_customer(customer: Customer, now: datetime | None = None) -> int:
    """Decide this customer's open subscriptions again (no Stripe reads); how many changed."""
    subs = db.session.execute(select(LegacySubscription).where(
        LegacySubscription.customer_id == customer.id,
        LegacySubscription.state.in_(OPEN_STATES))).scalars().all()
    if not subs:
        return 0
    ctx = context(now)
    return sum(store(sub, decide(sub, customer, ctx), ctx.now) for sub in subs)


def resolve_prices(gateway, now: datetime) -> Counter:
    """Read from Stripe, once, each price the open rows name that is not known yet, and look up
    by lookup_key each legacy plan the price map does not name (or found missing before)."""
    counts: Counter[str] = Counter()
    known = set(db.session.execute(select(StripePrice.id)).scalars())
    mapped = {e.legacy_plan_id: e.source for e in db.session.execute(
        select(PriceMapEntry)).scalars() if e.source != "missing"}
    wanted_prices, wanted_plans = set(), {}
    for items, cur in db.session.execute(select(LegacySubscription.items,
                                                LegacySubscription.currency)
                                         .where(LegacySubscription.state.in_(OPEN_STATES))):
        for item in items:
            if "price" in item and item["price"] not in known:
                wanted_prices.add(item["price"])
            elif "legacy_plan_id" in item and item["legacy_plan_id"] not in mapped:
                wanted_plans.setdefault(item["legacy_plan_id"], set()).add(cur)
    for price_id in sorted(wanted_prices):
        try:
            store_price(gateway.retrieve_price(price_id), now)
            counts["prices_read"] += 1
        except NotFound:
            counts["prices_missing"] += 1
    plans = sorted(wanted_plans)
    for start in range(0, len(plans), 10):  # Stripe takes up to 10 lookup keys a request
        found = {p["lookup_key"]: p for p in gateway.prices_by_lookup_key(plans[start:start + 10])}
        for plan_id in plans[start:start + 10]:
            price = found.get(plan_id)
            if price is not None and price_problem(price) is None:
                store_price(price, now)
                keep_mapping(plan_id, price["currency"], price["id"], "lookup_key", now)
                counts["found_by_lookup_key"] += 1
            else:
                for cur in wanted_plans[plan_id] - {None} or {ANY_CURRENCY}:
                    keep_mapping(plan_id, cur, None, "missing", now)
                counts["plans_missing"] += 1
    db.session.flush()
    return counts
