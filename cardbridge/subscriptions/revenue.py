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
GROUP_LABELS = {"live": "Live on Stripe", "covered": "Covered and scheduled",
                "waiting_for_card": "Waiting for a card", "needs_review": "Needs review"}
AT_RISK_STATES = ("waiting_for_card", "needs_review", "held")
# Stripe's zero-decimal currencies: amounts are already whole units.
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
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


def risk_groups() -> list[dict]:
    """The dashboard's four groups: label, subscriptions, and MRR per currency."""
    counts, mrr = by_state(), mrr_by_state()
    out = []
    for key, states in RISK_GROUPS.items():
        amounts: dict[str, int] = defaultdict(int)
        for state in states:
            for currency, amount in mrr[state].items():
                amounts[currency] += amount
        out.append({"key": key, "label": GROUP_LABELS[key], "states": states,
                    "count": sum(counts[s] for s in states), "mrr": dict(sorted(amounts.items())),
                    "at_risk": key in ("waiting_for_card", "needs_review")})
    return out


def at_risk_series(today: date, days: int = 60) -> dict[str, list[tuple[date, int]]]:
    """Per currency, the MRR (minor units) at risk at the end of each day, from the first
    import (at most `days` back) to today. At risk: not yet covered by a plan with a card, or
    now waiting or in review again (so today's figure is the table's). Skipped rows never are."""
    plan_currency = LegacySubscription.plan["currency"].as_string().label("plan_currency")
    rows = db.session.execute(
        select(LegacySubscription.created_at, LegacySubscription.covered_at,
               LegacySubscription.mrr, LegacySubscription.state, plan_currency,
               LegacySubscription.currency)
        .where(LegacySubscription.mrr.is_not(None), LegacySubscription.state != "skipped"))
    changes: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    first = today
    earliest = today - timedelta(days=days - 1)
    for created, covered, mrr, state, plan_cur, currency in rows:
        cur = plan_cur or currency or "xxx"
        start = max(created.date(), earliest)
        first = min(first, start)
        changes[cur][start] += mrr
        if covered is not None and state not in AT_RISK_STATES:
            changes[cur][max(covered.date(), start)] -= mrr
    series: dict[str, list[tuple[date, int]]] = {}
    for cur, change in sorted(changes.items()):
        points, running, day = [], 0, first
        while day <= today:
            running += change.get(day, 0)
            points.append((day, running))
            day += timedelta(days=1)
        series[cur] = points
    return series


def major(amount: int, currency: str) -> float:
    """Minor units to the currency's own unit (Stripe's zero-decimal currencies stay whole)."""
    return amount if currency.lower() in ZERO_DECIMAL else amount / 100


def money(amount: int | None, currency: str) -> str:
    if amount is None:
        return "–"
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount:,} {currency.upper()}"
    return f"{amount / 100:,.2f} {currency.upper()}"


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
            _major(arrears.get("unit_amount"), arrears.get("currency", "")),
            arrears.get("product", ""), arrears.get("currency", "")])
    return len(rows)


def _iso(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else ""


def _flag(value) -> str:
    return "" if value is None else ("TRUE" if value else "FALSE")


def _major(amount: int | None, currency: str = "") -> str:
    """The toolkit's amounts are in full units with decimals (21.50), or whole (JPY)."""
    if amount is None:
        return ""
    return str(amount) if currency.lower() in ZERO_DECIMAL else f"{amount / 100:.2f}"
