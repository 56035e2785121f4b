"""Revenue at risk and the files: monthly recurring revenue per state and its burn-down to the
cutover, `flask subscriptions export` (SPEC's CSV) and `export-toolkit` (the planned ones as
Stripe's subscription migration toolkit CSV, with its documented header)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

from sqlalchemy import func, select

from cardbridge import csv_safe
from cardbridge.extensions import db
from cardbridge.models import Customer, LegacySubscription
from cardbridge.models.subscriptions import SUBSCRIPTION_STATES

# The dashboard's grouping of the states, in the order an operator reads them.
RISK_GROUPS = {
    "live": ("live",),
    "covered": ("planned", "scheduled"),
    "waiting_for_card": ("waiting_for_card",),
    "needs_review": ("needs_review", "held"),
}
EXPORT_HEADER = ("legacy_subscription_id", "legacy_customer_id", "state", "reason",
                 "stripe_customer_id", "start_at", "stripe_schedule_id", "stripe_subscription_id")
TOOLKIT_BASIC = ("customer", "start_date", "price", "quantity", "metadata.third_party_sub_id",
                 "automatic_tax", "billing_cycle_anchor", "coupon", "trial_end",
                 "proration_behavior", "collection_method", "default_tax_rate",
                 "backdate_start_date", "days_until_due", "cancel_at_period_end",
                 "add_invoice_items.0.amount", "add_invoice_items.0.product",
                 "add_invoice_items.0.currency")


def by_state() -> dict[str, int]:
    counts = dict(db.session.execute(select(LegacySubscription.state, func.count())
                                     .group_by(LegacySubscription.state)).all())
    return {state: counts.get(state, 0) for state in SUBSCRIPTION_STATES}


def mrr_by_state() -> dict[str, dict[str, int]]:
    """state → currency → monthly recurring revenue in minor units (SPEC's report shape)."""
    out: dict[str, dict[str, int]] = {state: {} for state in SUBSCRIPTION_STATES}
    # Grouped by the output column's name: written twice, the JSON path would be two
    # expressions (two bound keys) to PostgreSQL.
    plan_currency = LegacySubscription.plan["currency"].as_string().label("plan_currency")
    rows = db.session.execute(
        select(LegacySubscription.state, plan_currency, LegacySubscription.currency,
               func.sum(LegacySubscription.mrr))
        .where(LegacySubscription.mrr.is_not(None))
        .group_by(LegacySubscription.state, "plan_currency", LegacySubscription.currency))
    for state, plan_currency, currency, total in rows:
        cur = plan_currency or currency or "xxx"
        out[state][cur] = out[state].get(cur, 0) + int(total or 0)
    return out


def reasons() -> list[tuple[str, int]]:
    """Review reasons with how many rows each (the same reason text groups together)."""
    return [(r or "", n) for r, n in db.session.execute(
        select(LegacySubscription.reason, func.count())
        .where(LegacySubscription.state.in_(("needs_review", "held")))
        .group_by(LegacySubscription.reason).order_by(func.count().desc()).limit(20))]


def burn_down(today: date, cutover: date | None, days: int = 60) -> list[tuple[date, int]]:
    """MRR (all currencies' minor units added, for the shape only) not yet covered by a plan
    with a card, for each day from the first import (at most `days` back) to today."""
    rows = db.session.execute(select(LegacySubscription.created_at, LegacySubscription.covered_at,
                                     LegacySubscription.mrr, LegacySubscription.state)
                              .where(LegacySubscription.mrr.is_not(None),
                                     LegacySubscription.state != "skipped")).all()
    if not rows:
        return []
    first = max(min(r.created_at for r in rows).date(), today - timedelta(days=days))
    change: dict[date, int] = defaultdict(int)
    for created, covered, mrr, _state in rows:
        change[max(created.date(), first)] += mrr
        if covered is not None:
            change[max(covered.date(), first)] -= mrr
    series, running, day = [], 0, first
    while day <= today:
        running += change.get(day, 0)
        series.append((day, running))
        day += timedelta(days=1)
    return series


def export_csv(fh) -> int:
    writer = csv_safe.Writer(fh)
    writer.writerow(EXPORT_HEADER)
    count = 0
    for sub, stripe_customer in db.session.execute(
            select(LegacySubscription, Customer.stripe_customer_id).outerjoin(Customer)
            .order_by(LegacySubscription.id)).yield_per(1000):
        writer.writerow((sub.legacy_id, sub.legacy_customer_id, sub.state, sub.reason or "",
                         stripe_customer or "", _iso(sub.start_at), sub.stripe_schedule_id or "",
                         sub.stripe_subscription_id or ""))
        count += 1
    return count


def export_toolkit(fh) -> int:
    """The planned ones as Stripe's toolkit CSV: the Basic template's header, or the
    multi-price one (items.N.price/quantity) when any has several items."""
    rows = db.session.execute(
        select(LegacySubscription, Customer.stripe_customer_id).join(Customer)
        .where(LegacySubscription.state == "planned").order_by(LegacySubscription.id)).all()
    width = max((len(sub.plan["items"]) for sub, _ in rows), default=1)
    item_columns = ["price", "quantity"] if width == 1 else [
        f"items.{n}.{k}" for n in range(width) for k in ("price", "quantity")]
    header = ["customer", "start_date", *item_columns, *TOOLKIT_BASIC[4:]]
    writer = csv_safe.Writer(fh)
    writer.writerow(header)
    for sub, stripe_customer in rows:
        plan = sub.plan
        items: list = []
        for n in range(width):
            item = plan["items"][n] if n < len(plan["items"]) else {}
            items += [item.get("price", ""), item.get("quantity", "")]
        arrears = (plan.get("add_invoice_items") or [{}])[0].get("price_data", {})
        writer.writerow([
            stripe_customer, int(sub.start_at.timestamp()), *items, sub.legacy_id,
            _flag(plan.get("automatic_tax")), "", plan.get("coupon", ""), plan.get("trial_end", ""),
            "none", plan.get("collection_method", ""), plan.get("default_tax_rate", ""), "",
            plan.get("days_until_due", ""), "",
            _major(arrears.get("unit_amount")), arrears.get("product", ""),
            arrears.get("currency", "")])
    return len(rows)


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def _flag(value) -> str:
    return "" if value is None else ("TRUE" if value else "FALSE")


def _major(amount: int | None) -> str:
    """The toolkit's amounts are in full units with decimals (21.50)."""
    return "" if amount is None else f"{amount / 100:.2f}"
