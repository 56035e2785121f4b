"""Never billed twice: the legacy cancel list, its confirmation, and the guard.

A subscription created on Stripe must be cancelled in the legacy system before Stripe's first
charge. `cancel_list` names each one whose legacy cancellation is not confirmed and the moment
it must be confirmed by (SUBSCRIPTION_GUARD_HOURS before its start); `confirm_cancelled` records
the confirmations (each in the audit trail); the guard, run every few minutes by the worker,
cancels on Stripe every one still unconfirmed at that moment, marks it `held`, and plans it one
billing interval later, so the legacy processor bills that cycle and Stripe never does too.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from cardbridge import csv_safe
from cardbridge.extensions import db
from cardbridge.imports.files import CsvRecords, ImportFileError, RowProblem, open_source
from cardbridge.models import LegacySubscription
from cardbridge.models.types import utcnow
from cardbridge.staff import audit
from cardbridge.stripe_gateway import NotFound
from cardbridge.subscriptions import calendar

log = logging.getLogger(__name__)

ON_STRIPE = ("scheduled", "live")
CANCEL_LIST_HEADER = ("legacy_subscription_id", "legacy_customer_id", "cancel_before")


def _guard_hours() -> timedelta:
    return timedelta(hours=current_app.config["SUBSCRIPTION_GUARD_HOURS"])


def _unconfirmed():
    return (select(LegacySubscription)
            .where(LegacySubscription.state.in_(ON_STRIPE),
                   LegacySubscription.legacy_cancel_confirmed_at.is_(None),
                   LegacySubscription.first_invoice.is_(None))
            .order_by(LegacySubscription.start_at, LegacySubscription.id))


def cancel_list(fh) -> int:
    """Write SPEC's cancel list CSV; returns the rows written."""
    writer = csv_safe.Writer(fh)
    writer.writerow(CANCEL_LIST_HEADER)
    guard, count = _guard_hours(), 0
    for sub in db.session.execute(_unconfirmed()).scalars():
        writer.writerow((sub.legacy_id, sub.legacy_customer_id,
                         (sub.start_at - guard).strftime("%Y-%m-%dT%H:%M:%SZ")))
        count += 1
    return count


def confirm_cancelled(source, *, actor: str, now: datetime | None = None) -> Counter:
    """Record that the legacy processor cancelled the listed ids (a CSV with a
    legacy_subscription_id column). One transaction; unknown ids are listed, nothing else
    changes for them. Returns counts, with `problems` as [(line, id, why)]."""
    now = now or utcnow()
    src = open_source(source)
    counts: Counter = Counter()
    problems: list[tuple[int, str, str]] = []
    records = CsvRecords(src.fh)
    try:
        header = records.header()
        if "legacy_subscription_id" not in header:
            raise ImportFileError("the file needs a legacy_subscription_id column")
        at = header.index("legacy_subscription_id")
        for line, fields in records:
            legacy_id = fields[at].strip() if at < len(fields) else ""
            try:
                counts[_confirm_one(legacy_id, actor, now)] += 1
            except RowProblem as exc:
                problems.append((line, legacy_id[:80], str(exc)))
    finally:
        records.detach()
        src.fh.close()
    counts["problems"] = problems
    return counts


def _confirm_one(legacy_id: str, actor: str, now: datetime) -> str:
    if not legacy_id:
        raise RowProblem("legacy_subscription_id is empty")
    sub = db.session.execute(select(LegacySubscription).where(
        LegacySubscription.legacy_id == legacy_id)).scalar_one_or_none()
    if sub is None:
        raise RowProblem("no such legacy subscription")
    if sub.legacy_cancel_confirmed_at is not None:
        return "already_confirmed"
    sub.legacy_cancel_confirmed_at, sub.updated_at = now, now
    audit.record(actor, "subscription.legacy_cancel_confirmed", f"legacy:{legacy_id}",
                 details={"state": sub.state, "start_at": sub.start_at.isoformat()
                          if sub.start_at else None}, at=now)
    return "confirmed"


def run_guard(gateway, *, now: datetime | None = None) -> Counter:
    """Cancel on Stripe, and plan one cycle later, every subscription whose legacy cancellation
    is still unconfirmed SUBSCRIPTION_GUARD_HOURS before it starts. Commits each one."""
    now = now or utcnow()
    counts: Counter[str] = Counter()
    due = db.session.execute(_unconfirmed().where(
        LegacySubscription.start_at <= now + _guard_hours())).scalars().all()
    for sub in due:
        try:
            if sub.stripe_schedule_id:
                gateway.cancel_schedule(sub.stripe_schedule_id)
            elif sub.stripe_subscription_id:
                gateway.cancel_subscription(sub.stripe_subscription_id)
        except NotFound:
            pass  # gone already: nothing left to charge
        held_from = sub.stripe_schedule_id or sub.stripe_subscription_id
        _hold(sub, now)
        audit.record("system:guard", "subscription.held", f"legacy:{sub.legacy_id}",
                     reason="legacy cancellation not confirmed in time",
                     details={"cancelled": held_from, "new_start_at": sub.start_at.isoformat()},
                     at=now)
        db.session.commit()
        counts["held"] += 1
        log.warning("subscription %s held: legacy cancellation not confirmed; cancelled %s",
                    sub.legacy_id, held_from)
    return counts


def _hold(sub: LegacySubscription, now: datetime) -> None:
    plan = sub.plan
    day = calendar.anchor_day(sub.next_billing_at or sub.start_at, sub.timezone, sub.anchor_day)
    sub.start_at = calendar.add_intervals(sub.start_at, plan["interval"], plan["interval_count"],
                                          1, day=day, zone=sub.timezone)
    sub.plan = {k: v for k, v in plan.items() if k != "trial_end"} | {
        "rolled": plan.get("rolled", 0) + 1}
    if sub.mode == "subscription" and "anchor_config" not in sub.plan:
        sub.mode = "schedule"  # the trial it carried is over by then
    sub.state, sub.reason = "held", "legacy cancellation not confirmed in time; one cycle later"
    sub.stripe_schedule_id = sub.stripe_subscription_id = None
    sub.attempt_key, sub.applied_at, sub.live_at = None, None, None
    sub.plan_revision += 1
    sub.held_count += 1
    sub.updated_at = now
