"""`flask subscriptions apply`: create the planned subscriptions on Stripe, each exactly once.

Per row, in its own short transactions:
1. claim it (a conditional UPDATE: one process at a time; a killed process's claim runs out)
   and decide it again (a plan made days ago may have to roll on, or lost its card);
2. look in the ledger, then in what is on Stripe (every schedule and subscription of the
   account, listed page by page when the run starts) for that legacy id: one this plan made is
   adopted, anyone else's sends the row to review;
3. take a slot of the shared write budget, create it with an idempotency key from the legacy id
   and the plan revision, and record the Stripe id in the same transaction that moves the row
   to `scheduled` (a schedule) or `live` (a subscription).
A run killed at any point and run again creates nothing twice: a create whose answer was lost
is found on Stripe by the listing (and, within a day, replayed by its idempotency key).
Writes run on SUBSCRIPTION_APPLY_CONCURRENCY threads; a 429 that outlasts the gateway's
backoff puts the row back at the end of the run's queue.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, select, update

from cardbridge.extensions import db
from cardbridge.models import Customer, LegacySubscription
from cardbridge.models.types import utcnow
from cardbridge.stripe_gateway import RateLimited, StripeRejected, StripeUnavailable
from cardbridge.subscriptions import calendar, planner
from cardbridge.subscriptions.budget import Budget

log = logging.getLogger(__name__)

# How long one process holds a row it is creating. Short, so a run killed with kill -9 holds
# nothing for long; safe when it runs out mid-create, because a second create of the same
# row carries the same idempotency key and Stripe answers it with the first one's object.
CLAIM_FOR = timedelta(seconds=20)
CLAIM_WAIT = 1.5  # seconds between looks at a row another process holds
APPLICABLE = ("planned", "held")
LIVE_SCHEDULE = ("not_started", "active")
ENDED_SUBSCRIPTION = ("canceled", "incomplete_expired")
MAX_REQUEUES = 30


@dataclass
class ApplyReport:
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    writes: int = 0

    @property
    def rate(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0


def attempt_key(sub: LegacySubscription) -> str:
    digest = hashlib.sha256(f"{sub.legacy_id}\x1f{sub.plan_revision}".encode()).hexdigest()
    return f"cb-{digest[:40]}"


def on_stripe(gateway, budget: Budget) -> dict[str, list[dict]]:
    """legacy id → the schedules and subscriptions on Stripe that still count (not cancelled,
    released or ended), from every one of the account's, read within the read budget."""
    found: dict[str, list[dict]] = {}
    for kind, listing in (("schedule", gateway.schedules()),
                          ("subscription", gateway.subscriptions())):
        for n, obj in enumerate(listing):
            if n % 100 == 0:
                budget.take("read")
            legacy_id = (obj.get("metadata") or {}).get("legacy_subscription_id")
            if not legacy_id:
                continue
            if kind == "schedule" and obj.get("status") not in LIVE_SCHEDULE:
                continue
            if kind == "subscription" and (obj.get("status") in ENDED_SUBSCRIPTION
                                           or obj.get("schedule")):
                continue  # a schedule's own subscription is counted through its schedule
            found.setdefault(legacy_id, []).append({"kind": kind, **obj})
    return found


def apply(gateway, *, limit: int | None = None, budget: Budget | None = None,
          progress: Callable[[int, int], None] | None = None,
          concurrency: int | None = None) -> ApplyReport:
    app = current_app._get_current_object()
    budget = budget or Budget.from_config()
    started = time.perf_counter()
    report = ApplyReport()
    ids = list(db.session.execute(
        select(LegacySubscription.id).where(LegacySubscription.state.in_(APPLICABLE))
        .order_by(LegacySubscription.start_at, LegacySubscription.id).limit(limit)).scalars())
    db.session.commit()
    if not ids:
        return report
    existing = on_stripe(gateway, budget)
    queue, lock, done = deque((i, 0) for i in ids), threading.Lock(), [0]

    def worker() -> None:
        with app.app_context():
            ctx = planner.context()
            while True:
                with lock:
                    if not queue:
                        return
                    row_id, tries = queue.popleft()
                outcome = _apply_one(row_id, gateway, budget, existing, ctx)
                if outcome == "claimed_elsewhere":
                    time.sleep(CLAIM_WAIT)  # a live run finishes it; a killed one's claim ends
                with lock:
                    if outcome in ("rate_limited", "claimed_elsewhere") and tries < MAX_REQUEUES:
                        queue.append((row_id, tries + 1))
                        continue
                    report.counts[outcome] += 1
                    report.writes += outcome in ("scheduled", "live")
                    done[0] += 1
                    if progress:
                        progress(done[0], len(ids))

    threads = concurrency or app.config["SUBSCRIPTION_APPLY_CONCURRENCY"]
    with ThreadPoolExecutor(max_workers=min(threads, len(ids))) as pool:
        for future in [pool.submit(worker) for _ in range(min(threads, len(ids)))]:
            future.result()
    report.seconds = time.perf_counter() - started
    return report


def _claim(row_id: int, now: datetime) -> LegacySubscription | str:
    claimed = db.session.execute(
        update(LegacySubscription)
        .where(LegacySubscription.id == row_id, LegacySubscription.state.in_(APPLICABLE),
               or_(LegacySubscription.claimed_until.is_(None),
                   LegacySubscription.claimed_until < now))
        .values(claimed_until=now + CLAIM_FOR)).rowcount
    db.session.commit()
    sub = db.session.get(LegacySubscription, row_id)
    if claimed:
        return sub
    return "claimed_elsewhere" if sub.state in APPLICABLE else f"now_{sub.state}"


def _release(sub: LegacySubscription) -> None:
    sub.claimed_until = None
    db.session.commit()


def _apply_one(row_id: int, gateway, budget: Budget, existing: dict, ctx) -> str:
    now = utcnow()
    sub = _claim(row_id, now)
    if isinstance(sub, str):
        return sub
    try:
        customer = db.session.get(Customer, sub.customer_id) if sub.customer_id else None
        ctx.now = now
        planner.store(sub, planner.decide(sub, customer, ctx), now)
        if sub.state != "planned":
            _release(sub)
            return f"now_{sub.state}"
        if sub.mode == "subscription" and not _anchor_is_next(sub, now):
            _release(sub)
            return "not_yet"
        key = sub.attempt_key = attempt_key(sub)
        # Everything the create needs is read before the commit: after it, reading an expired
        # attribute would check a connection out of the pool and hold it through the budget's
        # wait and the call to Stripe, one per thread, while the budget needs one more of its
        # own (16 threads on the default pool of 5 + 10 deadlocked until the pool timed out).
        schedule, legacy_id = sub.mode == "schedule", sub.legacy_id
        params = (schedule_params if schedule else subscription_params)(sub, customer)
        found = [o for o in existing.get(legacy_id, ())
                 if o.get("customer") == customer.stripe_customer_id]
        db.session.commit()  # durable before anything is sent
        if found:
            return _adopt_or_review(sub, found, now)
        budget.take("write")
        if schedule:
            obj = gateway.create_schedule(params, key)
            sub.stripe_schedule_id, sub.state = obj["id"], "scheduled"
        else:
            obj = gateway.create_subscription(params, key)
            sub.stripe_subscription_id, sub.state, sub.live_at = obj["id"], "live", now
        sub.applied_at, sub.claimed_until, sub.updated_at = now, None, now
        db.session.commit()
        return "scheduled" if schedule else "live"
    except RateLimited:
        db.session.rollback()
        _release(db.session.get(LegacySubscription, row_id))
        return "rate_limited"
    except StripeRejected as exc:
        db.session.rollback()
        sub = db.session.get(LegacySubscription, row_id)
        sub.state, sub.reason = "needs_review", f"Stripe refused it: {exc}"[:300]
        _release(sub)
        return "refused"
    except StripeUnavailable:
        db.session.rollback()
        _release(db.session.get(LegacySubscription, row_id))
        return "stripe_unavailable"


def _adopt_or_review(sub: LegacySubscription, objects: list[dict], now: datetime) -> str:
    ours = [o for o in objects
            if (o.get("metadata") or {}).get("cardbridge_attempt") == sub.attempt_key]
    found = (ours or objects)[0]
    if ours and len(objects) == 1:
        if found["kind"] == "schedule":
            sub.stripe_schedule_id, sub.state = found["id"], "scheduled"
        else:
            sub.stripe_subscription_id, sub.state, sub.live_at = found["id"], "live", now
        sub.applied_at, sub.claimed_until, sub.updated_at = now, None, now
        db.session.commit()
        return "adopted"
    sub.state = "needs_review"
    sub.reason = (f"a Stripe {found['kind']} for this legacy id already exists ({found['id']}), "
                  "not made by this plan")[:300]
    sub.claimed_until, sub.updated_at = None, now
    db.session.commit()
    return "duplicate_on_stripe"


def _anchor_is_next(sub: LegacySubscription, now: datetime) -> bool:
    """A subscription anchored by day (or in a trial) starts counting now: create it only once
    the planned start is the first billing date from now, so nothing is billed earlier."""
    if "anchor_config" not in sub.plan:
        return True
    previous = calendar.add_intervals(sub.start_at, sub.plan["interval"],
                                      sub.plan["interval_count"], -1,
                                      day=sub.plan["anchor_config"]["day_of_month"])
    return previous <= now


def _metadata(sub: LegacySubscription) -> dict:
    return {**sub.extra_metadata, "legacy_subscription_id": sub.legacy_id,
            "cardbridge_attempt": sub.attempt_key, "cardbridge_revision": str(sub.plan_revision)}


def _settings(sub: LegacySubscription) -> dict:
    plan, params = sub.plan, {}
    if plan.get("coupon"):
        params["discounts"] = [{"coupon": plan["coupon"]}]
    if plan.get("automatic_tax"):
        params["automatic_tax"] = {"enabled": True}
    if plan.get("default_tax_rate"):
        params["default_tax_rates"] = [plan["default_tax_rate"]]
    if plan.get("collection_method"):
        params["collection_method"] = plan["collection_method"]
    if plan.get("add_invoice_items"):
        params["add_invoice_items"] = plan["add_invoice_items"]
    return params


def schedule_params(sub: LegacySubscription, customer: Customer) -> dict:
    phase = {"items": sub.plan["items"], "billing_cycle_anchor": "phase_start",
             "proration_behavior": "none", "metadata": {"legacy_subscription_id": sub.legacy_id},
             **_settings(sub)}
    if sub.plan.get("collection_method") == "send_invoice":
        phase["invoice_settings"] = {"days_until_due": sub.plan["days_until_due"]}
    return {"customer": customer.stripe_customer_id, "start_date": int(sub.start_at.timestamp()),
            "end_behavior": "release", "metadata": _metadata(sub), "phases": [phase]}


def subscription_params(sub: LegacySubscription, customer: Customer) -> dict:
    params = {"customer": customer.stripe_customer_id, "items": sub.plan["items"],
              "proration_behavior": "none", "metadata": _metadata(sub), **_settings(sub)}
    if sub.plan.get("collection_method") == "send_invoice":
        params["days_until_due"] = sub.plan["days_until_due"]
    if "trial_end" in sub.plan:
        params["trial_end"] = sub.plan["trial_end"]
    if "anchor_config" in sub.plan:
        params["billing_cycle_anchor_config"] = sub.plan["anchor_config"]
    return params
