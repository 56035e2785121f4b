"""Which of the four SPEC statuses a customer is in, and the moves between them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, exists, insert, select, update

from cardbridge.extensions import db
from cardbridge.models import Customer, CustomerEvent, Link
from cardbridge.models.links import is_live
from cardbridge.models.types import UTCDateTime, utcnow


def live_link_clause(now: datetime):
    """SQL: this customer has a link that is unused, unrevoked and unexpired."""
    return exists().where(Link.customer_id == Customer.id, is_live(now))


def has_live_link(customer: Customer, now: datetime | None = None) -> bool:
    now = now or utcnow()
    stmt = select(exists().where(Link.customer_id == customer.id, is_live(now)))
    return bool(db.session.execute(stmt).scalar())


def refresh_link_status(customer: Customer, now: datetime | None = None) -> str:
    """needs_update ⇄ invited follows whether a live link exists; ready/updated stay put."""
    if customer.status in ("needs_update", "invited"):
        customer.status = "invited" if has_live_link(customer, now) else "needs_update"
    return customer.status


def sweep_expired_invitations(now: datetime | None = None) -> int:
    """Customers whose every link expired go back to needs_update. Safe to run any time."""
    now = now or utcnow()
    result = db.session.execute(
        update(Customer)
        .where(Customer.status == "invited", ~live_link_clause(now))
        .values(status="needs_update")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


_CUSTOMERS, _EVENTS = Customer.__table__, CustomerEvent.__table__
# SPEC's "invited" for customers who still needed a card and now have a live link emailed or
# made for them (executemany rows: c_id, c_now).
INVITE = (
    update(_CUSTOMERS)
    .where(_CUSTOMERS.c.id == bindparam("c_id"), _CUSTOMERS.c.status == "needs_update")
    .values(status="invited", updated_at=bindparam("c_now", type_=UTCDateTime)))


def event_insert(kind: str):
    """A timeline event of `kind` (executemany rows: v_customer, v_link, v_at, v_details)."""
    return insert(_EVENTS).values(
        customer_id=bindparam("v_customer"), link_id=bindparam("v_link"), kind=kind,
        at=bindparam("v_at", type_=UTCDateTime),
        details=bindparam("v_details", type_=_EVENTS.c.details.type))
