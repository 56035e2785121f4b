"""Stripe's webhooks move the ledger: a schedule that starts makes its row `live`; the first
invoice paid or failed is recorded; a schedule or subscription cancelled or released elsewhere
is noted. Each handler takes the event dict and returns a short outcome for the event row."""

from __future__ import annotations

from sqlalchemy import or_, select

from cardbridge.extensions import db
from cardbridge.models import LegacySubscription
from cardbridge.models.types import utcnow


def _row(*, legacy_id: str | None = None, schedule_id: str | None = None,
         subscription_id: str | None = None) -> LegacySubscription | None:
    clauses = []
    if schedule_id:
        clauses.append(LegacySubscription.stripe_schedule_id == schedule_id)
    if subscription_id:
        clauses.append(LegacySubscription.stripe_subscription_id == subscription_id)
    if legacy_id:
        clauses.append(LegacySubscription.legacy_id == legacy_id)
    if not clauses:
        return None
    return db.session.execute(select(LegacySubscription).where(or_(*clauses))
                              .limit(1)).scalar_one_or_none()


def _obj(event: dict) -> dict:
    return event["data"]["object"]


def _schedule_event(event: dict) -> str:
    schedule = _obj(event)
    sub = _row(schedule_id=schedule.get("id"))
    if sub is None:
        return "not_ours"
    now = utcnow()
    status = schedule.get("status")
    if status == "active" and schedule.get("subscription"):
        return _went_live(sub, schedule["subscription"], now)
    if status in ("canceled", "released", "completed") and sub.state == "scheduled":
        if status == "canceled":
            sub.state, sub.reason = "needs_review", "its schedule was cancelled on Stripe"
            sub.updated_at = now
            return "schedule_cancelled"
        if schedule.get("released_subscription") or schedule.get("subscription"):
            return _went_live(sub, schedule.get("released_subscription")
                              or schedule["subscription"], now)
    return "noted"


def _went_live(sub: LegacySubscription, subscription, now) -> str:
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    if sub.state == "live" and sub.stripe_subscription_id == subscription:
        return "already_live"
    if sub.state not in ("scheduled", "live"):
        return f"ignored_{sub.state}"
    sub.state, sub.stripe_subscription_id, sub.live_at, sub.updated_at = \
        "live", subscription, sub.live_at or now, now
    return "live"


def _subscription_event(event: dict) -> str:
    subscription = _obj(event)
    schedule = subscription.get("schedule")
    if isinstance(schedule, dict):
        schedule = schedule.get("id")
    sub = _row(schedule_id=schedule, subscription_id=subscription.get("id"))
    if sub is None:
        return "not_ours"
    now = utcnow()
    if event["type"] == "customer.subscription.deleted":
        if sub.state == "live":
            sub.state, sub.reason = "needs_review", "its subscription was cancelled on Stripe"
            sub.updated_at = now
            return "subscription_cancelled"
        return "noted"
    return _went_live(sub, subscription["id"], now)


def _invoice_event(event: dict) -> str:
    invoice = _obj(event)
    subscription = invoice.get("subscription") or (
        (invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    sub = _row(subscription_id=subscription) if subscription else None
    if sub is None:
        return "not_ours"
    paid = event["type"] == "invoice.paid"
    if sub.first_invoice == "paid":
        return "noted"
    sub.first_invoice, sub.updated_at = ("paid" if paid else "failed"), utcnow()
    if sub.state == "scheduled":
        sub.state, sub.live_at = "live", sub.live_at or utcnow()
    return f"first_invoice_{sub.first_invoice}"


HANDLERS = {
    **{f"subscription_schedule.{k}": _schedule_event
       for k in ("created", "updated", "released", "completed", "canceled", "aborted")},
    **{f"customer.subscription.{k}": _subscription_event
       for k in ("created", "updated", "deleted")},
    "invoice.paid": _invoice_event,
    "invoice.payment_failed": _invoice_event,
}
