"""Migration progress for the console: counts per status, the funnel, updates per day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import distinct, func, select

from cardbridge.extensions import db
from cardbridge.models import STATUSES, Customer, CustomerEvent, Link, SavedPaymentMethod
from cardbridge.models.types import utcnow


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    count: int
    share: float  # of the customers who needed a card, 0–1


def status_counts() -> dict[str, int]:
    rows = db.session.execute(
        select(Customer.status, func.count()).group_by(Customer.status)
    ).all()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: n for status, n in rows})
    return counts


def _customers_with_event(kind: str) -> int:
    return db.session.execute(
        select(func.count(distinct(CustomerEvent.customer_id))).where(CustomerEvent.kind == kind)
    ).scalar_one()


def funnel(counts: dict[str, int] | None = None) -> list[Stage]:
    """Needs a card → invited → opened the page → started a card setup → updated.

    "Opened" comes from the page's own script (a `page_opened` event), so a mail scanner's GET
    never counts; each stage counts distinct customers.
    """
    counts = counts or status_counts()
    needs = counts["needs_update"] + counts["invited"] + counts["updated"]
    invited = db.session.execute(select(func.count(distinct(Link.customer_id)))).scalar_one()
    values = [
        ("needs_card", "Needed a new card", needs),
        ("invited", "Sent or given a link", invited),
        ("opened", "Opened the page", _customers_with_event("page_opened")),
        ("started", "Started entering a card", _customers_with_event("setup_started")),
        ("updated", "Saved a new card", counts["updated"]),
    ]
    return [Stage(key, label, n, (n / needs) if needs else 0.0) for key, label, n in values]


def setup_failures() -> dict[str, int]:
    """Failed card setups: how many events, and how many customers they hit."""
    events, customers = db.session.execute(
        select(func.count(), func.count(distinct(CustomerEvent.customer_id)))
        .where(CustomerEvent.kind == "setup_failed")
    ).one()
    return {"events": events, "customers": customers}


def _day_expression(column):
    # Buckets by the UTC calendar day on both engines (PostgreSQL would use the session zone).
    if db.engine.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def updates_per_day(days: int = 30, today: date | None = None) -> list[tuple[date, int]]:
    """Cards saved through cardbridge per UTC day for the last `days` days, oldest first."""
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=utcnow().tzinfo)
    day = _day_expression(SavedPaymentMethod.created_at)
    rows = db.session.execute(
        select(day, func.count())
        .where(SavedPaymentMethod.created_at >= since)
        .group_by(day)
    ).all()
    by_day: dict[date, int] = {}
    for value, n in rows:
        key = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        by_day[key] = by_day.get(key, 0) + n
    return [(first + timedelta(days=i), by_day.get(first + timedelta(days=i), 0))
            for i in range(days)]
