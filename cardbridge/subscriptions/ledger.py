"""What the console reads from the ledger: a page of legacy subscriptions (by state, or found
by legacy id, customer or Stripe id) and the latest plan and apply runs from the audit trail."""

from __future__ import annotations

from sqlalchemy import or_, select

from cardbridge.extensions import db
from cardbridge.models import AuditEvent, Customer, LegacySubscription
from cardbridge.models.subscriptions import SUBSCRIPTION_STATES

PER_PAGE = 50
RUN_ACTIONS = ("subscription.plan", "subscription.apply", "subscription.plan_queued",
               "subscription.apply_queued", "import.subscriptions", "import.prices")


def page(state: str | None, q: str, number: int) -> tuple[list, bool]:
    """One page of (subscription, customer) rows, soonest start first; and whether more follow."""
    query = select(LegacySubscription, Customer).outerjoin(Customer)
    if state in SUBSCRIPTION_STATES:
        query = query.where(LegacySubscription.state == state)
    if q:
        query = query.where(or_(
            LegacySubscription.legacy_id == q, LegacySubscription.legacy_customer_id == q,
            LegacySubscription.stripe_schedule_id == q,
            LegacySubscription.stripe_subscription_id == q,
            Customer.stripe_customer_id == q, Customer.email == q.lower()))
    rows = db.session.execute(
        query.order_by(LegacySubscription.start_at.is_(None), LegacySubscription.start_at,
                       LegacySubscription.id)
        .offset((number - 1) * PER_PAGE).limit(PER_PAGE + 1)).all()
    return rows[:PER_PAGE], len(rows) > PER_PAGE


def recent_runs(limit: int = 8) -> list[AuditEvent]:
    return list(db.session.execute(
        select(AuditEvent).where(AuditEvent.action.in_(RUN_ACTIONS))
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)).scalars())

