"""Drift: where Stripe no longer holds what cardbridge set there (`flask stripe reconcile`).

For every customer cardbridge touched (a Stripe customer id and a card saved through cardbridge,
or a ledger subscription with Stripe ids) it reads the customer, the saved card, the customer's
subscriptions (paged) and the ledger's schedules and subscriptions, each read within the shared
Stripe rate budget, and lists each difference with what it means (`MEANINGS`).

The differences are findings (models/drift.py): one row per customer, kind and object, kept
across scans; a difference gone at the next check is `resolved`. Customers are checked in id
order and the scan row keeps the last one finished, committed with its findings: a run that
stops (Stripe away, a killed process) resumes after it unless told to restart.

What `--fix` may change is in `drift_fix.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, or_, select

from cardbridge.extensions import db
from cardbridge.models import (
    Customer,
    DriftFinding,
    DriftScan,
    LegacySubscription,
    SavedPaymentMethod,
)
from cardbridge.models.types import utcnow
from cardbridge.payments import drift_fix
from cardbridge.staff import audit
from cardbridge.stripe_gateway import BILLABLE_SUBSCRIPTION_STATUSES, NotFound, StripeGateway

BATCH = 100
MEANINGS = {
    "customer_deleted": "the customer was deleted on Stripe: nothing can be charged; "
                        "cardbridge cannot bring it back",
    "default_changed": "the customer's default payment method changed on Stripe and is not "
                       "the card saved through cardbridge",
    "card_detached": "the card saved through cardbridge was detached on Stripe: it cannot be "
                     "charged; the customer needs to save a card again",
    "subscription_default": "a billable subscription's default payment method is not the card "
                            "the customer saved",
    "ledger_missing": "a subscription cardbridge created (the ledger) no longer exists on Stripe",
    "ledger_cancelled": "a subscription cardbridge created (the ledger) was cancelled on Stripe",
    "ledger_state": "a subscription cardbridge created is in a different state on Stripe than "
                    "the ledger says",
}
LEDGER_CHECKED = ("scheduled", "live")
ENDED = ("canceled", "incomplete_expired")


@dataclass
class Difference:
    kind: str
    object_id: str = ""
    ours: str | None = None
    theirs: str | None = None
    newer: bool = False  # theirs is a card set on Stripe after the one saved through cardbridge


def _id(value) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


class Reader:
    """Stripe reads, each after a slot of the shared read budget."""

    def __init__(self, gateway: StripeGateway, budget):
        self.gateway, self.budget = gateway, budget

    def __call__(self, name: str, *args):
        self.budget.take("read")
        return getattr(self.gateway, name)(*args)


def touched_after(after_id: int, limit: int = BATCH) -> list[Customer]:
    """The next customers cardbridge touched on Stripe, in id order."""
    saved = exists().where(SavedPaymentMethod.customer_id == Customer.id)
    ledger = exists().where(
        LegacySubscription.customer_id == Customer.id,
        or_(LegacySubscription.stripe_subscription_id.is_not(None),
            LegacySubscription.stripe_schedule_id.is_not(None)))
    return list(db.session.execute(
        select(Customer).where(Customer.id > after_id, Customer.stripe_customer_id.is_not(None),
                               or_(saved, ledger))
        .order_by(Customer.id).limit(limit)).scalars())


def saved_card(customer: Customer) -> SavedPaymentMethod | None:
    """The card cardbridge made the default last."""
    return db.session.execute(
        select(SavedPaymentMethod).where(SavedPaymentMethod.customer_id == customer.id)
        .order_by(SavedPaymentMethod.created_at.desc(), SavedPaymentMethod.id.desc())
        .limit(1)).scalar_one_or_none()


def compare(customer: Customer, read: Reader) -> list[Difference]:
    """Every difference between cardbridge and Stripe for this customer."""
    try:
        found = read("retrieve_customer", customer.stripe_customer_id)
    except NotFound:
        found = {"deleted": True}
    if found.get("deleted"):
        return [Difference("customer_deleted", ours=customer.stripe_customer_id)]
    diffs: list[Difference] = []
    saved = saved_card(customer)
    if saved is not None:
        diffs.extend(_card_differences(customer, found, saved, read))
    for sub in db.session.execute(
            select(LegacySubscription).where(LegacySubscription.customer_id == customer.id,
                                             LegacySubscription.state.in_(LEDGER_CHECKED))
            .order_by(LegacySubscription.id)).scalars():
        diff = _ledger_difference(sub, read)
        if diff is not None:
            diffs.append(diff)
    return diffs


def _card_differences(customer: Customer, found: dict, saved: SavedPaymentMethod,
                      read: Reader) -> list[Difference]:
    ours = saved.stripe_payment_method_id
    diffs = []
    try:
        owner = _id(read("retrieve_payment_method", ours).get("customer"))
    except NotFound:
        owner = None
    if owner != customer.stripe_customer_id:
        diffs.append(Difference("card_detached", ours=ours, theirs=owner))
    newer_cache: dict[str, bool] = {}

    def newer(pm_id: str | None) -> bool:
        """A card set on Stripe after ours was saved: a change made there on purpose."""
        if not pm_id:
            return False
        if pm_id not in newer_cache:
            try:
                created = read("retrieve_payment_method", pm_id).get("created") or 0
            except NotFound:
                created = 0
            newer_cache[pm_id] = created > int(saved.created_at.timestamp())
        return newer_cache[pm_id]

    default = _id((found.get("invoice_settings") or {}).get("default_payment_method"))
    if default != ours:
        diffs.append(Difference("default_changed", ours=ours, theirs=default,
                                newer=newer(default)))
    return diffs + _subscription_differences(customer, ours, newer, read)


def _subscription_differences(customer: Customer, ours: str, newer: Callable[[str | None], bool],
                              read: Reader) -> list[Difference]:
    """The billable subscriptions whose own default is not the saved card, page by page."""
    diffs, after = [], None
    while True:
        page = read("subscriptions_page", customer.stripe_customer_id, after)
        data = page.get("data") or []
        for sub in data:
            current = _id(sub.get("default_payment_method"))
            if sub.get("status") in BILLABLE_SUBSCRIPTION_STATUSES and current != ours:
                diffs.append(Difference("subscription_default", sub["id"], ours, current,
                                        newer(current)))
        if not page.get("has_more") or not data:
            return diffs
        after = data[-1]["id"]


def _ledger_difference(sub: LegacySubscription, read: Reader) -> Difference | None:
    if sub.state == "live" and sub.stripe_subscription_id:
        ours = f"live {sub.stripe_subscription_id}"
        try:
            status = read("retrieve_subscription", sub.stripe_subscription_id).get("status")
        except NotFound:
            return Difference("ledger_missing", sub.legacy_id, ours, None)
        if status in ENDED:
            return Difference("ledger_cancelled", sub.legacy_id, ours, status)
        if status not in BILLABLE_SUBSCRIPTION_STATUSES:
            return Difference("ledger_state", sub.legacy_id, ours, status)
        return None
    if sub.state == "scheduled" and sub.stripe_schedule_id:
        ours = f"scheduled {sub.stripe_schedule_id}"
        try:
            schedule = read("retrieve_schedule", sub.stripe_schedule_id)
        except NotFound:
            return Difference("ledger_missing", sub.legacy_id, ours, None)
        status = schedule.get("status")
        if status == "canceled":
            return Difference("ledger_cancelled", sub.legacy_id, ours, status)
        started = _id(schedule.get("subscription") or schedule.get("released_subscription"))
        if status in ("active", "completed", "released") and started:
            return Difference("ledger_state", sub.legacy_id, ours, f"started {started}")
        if status != "not_started":
            return Difference("ledger_state", sub.legacy_id, ours, status)
    return None


def record(customer: Customer, diffs: list[Difference], scan: DriftScan,
           now: datetime) -> list[tuple[DriftFinding, Difference]]:
    """Store this customer's differences as findings; those no longer there are resolved.
    A difference recorded as accepted stays accepted while Stripe holds the same value."""
    existing = {(f.kind, f.object_id): f for f in db.session.execute(
        select(DriftFinding).where(DriftFinding.customer_id == customer.id)).scalars()}
    out = []
    for diff in diffs:
        finding = existing.pop((diff.kind, diff.object_id), None)
        if finding is None:
            finding = DriftFinding(customer_id=customer.id, kind=diff.kind,
                                   object_id=diff.object_id, status="open", first_seen_at=now)
            db.session.add(finding)
        elif finding.status != "open" and not (
                finding.status == "accepted" and finding.theirs == diff.theirs):
            finding.status, finding.first_seen_at, finding.resolved_at = "open", now, None
        finding.ours, finding.theirs = diff.ours, diff.theirs
        finding.scan_id, finding.last_seen_at = scan.id, now
        out.append((finding, diff))
    for finding in existing.values():
        if finding.status in ("open", "accepted"):
            finding.status, finding.resolved_at, finding.scan_id = "resolved", now, scan.id
    return out


def current_scan(actor: str, fix: bool, restart: bool) -> tuple[DriftScan, bool]:
    """The unfinished scan to continue (resumed=True), or a new one."""
    unfinished = db.session.execute(
        select(DriftScan).where(DriftScan.finished_at.is_(None))
        .order_by(DriftScan.id.desc())).scalars().all()
    if unfinished and not restart:
        scan = unfinished[0]
        scan.fix = fix
        return scan, True
    now = utcnow()
    for old in unfinished:
        old.finished_at = now
        old.counts = {**(old.counts or {}), "abandoned": True}
    scan = DriftScan(actor=actor, fix=fix, counts={}, started_at=now)
    db.session.add(scan)
    db.session.flush()
    return scan, False


@dataclass
class Report:
    scan: DriftScan
    resumed: bool
    resumed_after: int
    counts: Counter
    finished: bool


def reconcile(gateway: StripeGateway, budget, *, fix: bool = False, actor: str = "cli",
              restart: bool = False, progress: Callable[[Customer], None] | None = None
              ) -> Report:
    """Check every touched customer (from where an unfinished scan stopped), commit per
    customer; a Stripe error stops the run with everything before it kept."""
    scan, resumed = current_scan(actor, fix, restart)
    db.session.commit()
    start = scan.last_customer_id
    counts: Counter = Counter()
    base = Counter({k: v for k, v in (scan.counts or {}).items() if isinstance(v, int)})
    read = Reader(gateway, budget)
    try:
        while batch := touched_after(scan.last_customer_id):
            for customer in batch:
                now = utcnow()
                findings = record(customer, compare(customer, read), scan, now)
                counts["customers"] += 1
                for finding, diff in findings:
                    counts[diff.kind] += 1
                    if fix and finding.status == "open":
                        counts[drift_fix.fix(finding, diff, customer, gateway, budget, scan,
                                             actor, now)] += 1
                scan.last_customer_id = customer.id
                scan.counts = dict(base + counts)
                db.session.commit()
                if progress:
                    progress(customer)
    except Exception:
        db.session.rollback()
        _audit(scan, actor, resumed, start, counts, finished=False)
        db.session.commit()
        raise
    scan.finished_at = utcnow()
    _audit(scan, actor, resumed, start, counts, finished=True)
    db.session.commit()
    return Report(scan, resumed, start, counts, True)


def _audit(scan: DriftScan, actor: str, resumed: bool, start: int, counts: Counter,
           finished: bool) -> None:
    audit.record(actor, "drift.scan", f"scan {scan.id}", details={
        "scan": scan.id, "fix": scan.fix, "resumed_after_customer": start if resumed else None,
        "last_customer": scan.last_customer_id, "finished": finished, **dict(counts)})


# -- reading findings back ------------------------------------------------------------------------
def open_count() -> int:
    return db.session.execute(
        select(func.count(DriftFinding.id)).where(DriftFinding.status == "open")).scalar() or 0


def findings(statuses: tuple[str, ...] = ("open",), scan_id: int | None = None,
             limit: int = 500) -> list[DriftFinding]:
    stmt = select(DriftFinding).where(DriftFinding.status.in_(statuses))
    if scan_id is not None:
        stmt = stmt.where(DriftFinding.scan_id == scan_id)
    return list(db.session.execute(
        stmt.order_by(DriftFinding.customer_id, DriftFinding.kind, DriftFinding.object_id)
        .limit(limit)).scalars())


def last_scan() -> DriftScan | None:
    return db.session.execute(select(DriftScan).order_by(DriftScan.id.desc())
                              .limit(1)).scalar_one_or_none()


def as_dict(finding: DriftFinding) -> dict:
    return {"customer": finding.customer.legacy_id,
            "stripe_customer": finding.customer.stripe_customer_id, "kind": finding.kind,
            "object": finding.object_id or None, "ours": finding.ours,
            "theirs": finding.theirs, "status": finding.status,
            "meaning": MEANINGS.get(finding.kind, finding.kind),
            "first_seen_at": finding.first_seen_at.isoformat(),
            "resolved_at": finding.resolved_at.isoformat() if finding.resolved_at else None}
