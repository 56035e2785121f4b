"""`flask prices import` and `flask subscriptions import`: each file streamed in one transaction
through the same run driver as the roster (cardbridge/imports/runs.py): a file-level error or a
--strict abort changes nothing, row problems are listed with their line, the same file again is
a recorded no-op, and a changed file changes only what it changes.

Each price the map names is read from Stripe once per file and checked (it exists, is active and
recurring, its currency is the row's, its mode matches the key) before the map row is kept.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from flask import current_app
from sqlalchemy import select

from cardbridge.bulk import batches
from cardbridge.extensions import db
from cardbridge.imports.files import CsvRecords, RowProblem, Source
from cardbridge.imports.runs import ImportResult, ProblemLog, Progress, run_import
from cardbridge.models import Customer, LegacySubscription, PriceMapEntry, StripePrice
from cardbridge.models.subscriptions import OPEN_STATES
from cardbridge.stripe_gateway import NotFound
from cardbridge.subscriptions import files

NOT_PLANNED = "imported; not planned yet (flask subscriptions plan)"


# -- prices -------------------------------------------------------------------------------------
def import_prices(source, *, gateway, name: str | None = None, strict: bool = False,
                  progress: Progress | None = None, report_dir=None,
                  now: datetime | None = None) -> ImportResult:
    def apply(src: Source, run, problems: ProblemLog, progress, now: datetime) -> Counter:
        run.format = "price_map"
        return _apply_prices(src, problems, progress, now, gateway)

    return run_import("prices", source, name=name, strict=strict, progress=progress,
                      report_dir=report_dir, now=now, apply=apply)


def _apply_prices(src: Source, problems: ProblemLog, progress, now: datetime,
                  gateway) -> Counter:
    records = CsvRecords(src.fh)
    counts: Counter[str] = Counter()
    try:
        header = records.header()
        files.price_map_columns(header)
        seen: dict[tuple[str, str], int] = {}
        checked: dict[str, str | None] = {}  # price id → problem (None: good), read once
        for line, fields in records:
            try:
                plan, cur, price_id = files.price_map_row(header, fields)
                if (plan, cur) in seen:
                    raise RowProblem(f"{plan} in {cur} is already mapped on line "
                                     f"{seen[(plan, cur)]}")
                seen[(plan, cur)] = line
                if price_id not in checked:
                    checked[price_id] = verify_price(gateway, price_id, now)
                if checked[price_id]:
                    raise RowProblem(checked[price_id])
                price = db.session.get(StripePrice, price_id)
                if price.currency != cur:
                    raise RowProblem(f"{price_id} is in {price.currency}, not {cur}")
            except RowProblem as exc:
                problems.add(line, fields[0][:80] if fields else None, "error", str(exc))
                continue
            counts[_keep_mapping(plan, cur, price_id, "file", now)] += 1
            if progress:
                progress(records.count, records.offset, src.size)
        counts["rows"] = records.count
        problems.flush()
    finally:
        records.detach()
    return counts


def verify_price(gateway, price_id: str, now: datetime) -> str | None:
    """Read the price from Stripe and store its facts; the reason it cannot be used, or None."""
    try:
        obj = gateway.retrieve_price(price_id)
    except NotFound:
        return f"{price_id} does not exist on Stripe (in this account and mode)"
    store_price(obj, now)
    return price_problem(obj)


def price_problem(obj: dict) -> str | None:
    live_key = current_app.config["STRIPE_SECRET_KEY"].startswith(("sk_live_", "rk_live_"))
    if bool(obj.get("livemode")) != live_key:
        return (f"{obj['id']} is a {'live' if obj.get('livemode') else 'test'}-mode price; "
                f"the key is {'live' if live_key else 'test'}")
    if not obj.get("active"):
        return f"{obj['id']} is archived (not active)"
    if obj.get("type") != "recurring" or not obj.get("recurring"):
        return f"{obj['id']} is not a recurring price"
    return None


def store_price(obj: dict, now: datetime) -> StripePrice:
    recurring = obj.get("recurring") or {}
    product = obj.get("product")
    values = {
        "product": product.get("id") if isinstance(product, dict) else product,
        "active": bool(obj.get("active")), "recurring": obj.get("type") == "recurring",
        "interval": recurring.get("interval"), "interval_count": recurring.get("interval_count"),
        "currency": obj.get("currency"), "unit_amount": obj.get("unit_amount"),
        "livemode": bool(obj.get("livemode")), "lookup_key": obj.get("lookup_key"),
        "fetched_at": now,
    }
    price = db.session.get(StripePrice, obj["id"])
    if price is None:
        price = StripePrice(id=obj["id"], **values)
        db.session.add(price)
    else:
        for key, value in values.items():
            setattr(price, key, value)
    return price


def _entry(plan: str, cur: str) -> PriceMapEntry | None:
    return db.session.execute(select(PriceMapEntry).where(
        PriceMapEntry.legacy_plan_id == plan, PriceMapEntry.currency == cur)).scalar_one_or_none()


def _keep_mapping(plan: str, cur: str, price_id: str | None, source: str, now: datetime) -> str:
    entry = _entry(plan, cur)
    if entry is None:
        db.session.add(PriceMapEntry(legacy_plan_id=plan, currency=cur, stripe_price_id=price_id,
                                     source=source, updated_at=now))
        return "added"
    if entry.stripe_price_id == price_id and entry.source == source:
        return "unchanged"
    entry.stripe_price_id, entry.source, entry.updated_at = price_id, source, now
    return "changed"


def keep_mapping(plan: str, cur: str, price_id: str | None, source: str, now: datetime) -> str:
    """A lookup_key result (or its absence) joins the map; a file's row is never overridden."""
    entry = _entry(plan, cur)
    if entry is not None and entry.source == "file":
        return "unchanged"
    return _keep_mapping(plan, cur, price_id, source, now)


# -- legacy subscriptions -----------------------------------------------------------------------
LEGACY_FIELDS = ("legacy_customer_id", "legacy_status", "next_billing_at", "timezone",
                 "current_period_start", "anchor_day", "trial_end", "resume_at", "currency",
                 "interval", "interval_count", "items", "coupon", "collection_method",
                 "days_until_due", "automatic_tax", "default_tax_rate", "past_due_amount",
                 "extra_metadata")
_RENAMED = {"anchor_day_of_month": "anchor_day"}


def import_subscriptions(source, *, name: str | None = None, strict: bool = False,
                         zone: str | None = None, charge_hour: int = 10,
                         progress: Progress | None = None, report_dir=None,
                         now: datetime | None = None) -> ImportResult:
    def apply(src: Source, run, problems: ProblemLog, progress, now: datetime) -> Counter:
        run.format = "subscriptions"
        return _apply_subscriptions(src, problems, progress, now, zone, charge_hour)

    return run_import("subscriptions", source, name=name, strict=strict, progress=progress,
                      report_dir=report_dir, now=now, apply=apply)


def _apply_subscriptions(src: Source, problems: ProblemLog, progress, now: datetime,
                         zone: str | None, charge_hour: int) -> Counter:
    records = CsvRecords(src.fh)
    counts: Counter[str] = Counter()
    try:
        columns = files.SubscriptionColumns(records.header(), zone, charge_hour)
        seen: dict[str, int] = {}

        def parsed():
            for line, fields in records:
                try:
                    row = columns.row(fields)
                    if row.legacy_id in seen:
                        raise RowProblem(f"legacy_subscription_id {row.legacy_id} is already on "
                                         f"line {seen[row.legacy_id]}")
                    seen[row.legacy_id] = line
                    yield line, _values(row, columns.zone_name)
                except RowProblem as exc:
                    problems.add(line, columns.legacy_id(fields), "error", str(exc))

        for batch in batches(parsed(), 1000):
            _subscription_batch(batch, problems, counts, now)
            problems.flush()
            if progress:
                progress(records.count, records.offset, src.size)
        counts["rows"] = records.count
        problems.flush()
    finally:
        records.detach()
    return counts


def _values(row: files.LegacyRow, zone: str | None) -> dict:
    values = {_RENAMED.get(k, k): v for k, v in row.values.items()}
    values.update(legacy_id=row.legacy_id, legacy_customer_id=row.legacy_customer_id,
                  legacy_status=row.status, next_billing_at=row.next_billing_at,
                  timezone=zone, items=row.items, extra_metadata=row.metadata)
    return {k: values.get(k) for k in ("legacy_id", *LEGACY_FIELDS)}


def _subscription_batch(batch: list[tuple[int, dict]], problems: ProblemLog, counts: Counter,
                        now: datetime) -> None:
    ids = [values["legacy_id"] for _, values in batch]
    existing = {s.legacy_id: s for s in db.session.execute(
        select(LegacySubscription).where(LegacySubscription.legacy_id.in_(ids))).scalars()}
    customers = dict(db.session.execute(
        select(Customer.legacy_id, Customer.id).where(
            Customer.legacy_id.in_({v["legacy_customer_id"] for _, v in batch}))).all())
    for line, values in batch:
        values["customer_id"] = customers.get(values["legacy_customer_id"])
        sub = existing.get(values["legacy_id"])
        if sub is None:
            db.session.add(LegacySubscription(**values, state="needs_review", reason=NOT_PLANNED,
                                              created_at=now, updated_at=now))
            counts["added"] += 1
            continue
        changed = [k for k in (*LEGACY_FIELDS, "customer_id") if getattr(sub, k) != values[k]]
        if not changed:
            counts["unchanged"] += 1
        elif sub.state not in OPEN_STATES:
            problems.add(line, sub.legacy_id, "conflict",
                         f"already {sub.state} on Stripe; changed {', '.join(changed[:4])} "
                         "not applied (change it on Stripe, or cancel it there first)")
        else:
            for key in changed:
                setattr(sub, key, values[key])
            sub.state, sub.reason, sub.updated_at = "needs_review", NOT_PLANNED, now
            counts["changed"] += 1
    db.session.flush()
