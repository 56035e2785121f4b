"""`flask purge`: after CUTOVER_DATE + RETENTION_DAYS, remove the personal data cardbridge no
longer needs and keep what the business must still show (SPEC "Truth with Stripe, and after
the migration"; docs/privacy.md lists every column).

Customers go in batches, one transaction each: their name, email and card details, the card
details of their migrated and saved cards, the addresses and error texts of their emails, and
the personal keys of their timeline events, then `purged_at`. A re-run continues with the
customers not yet marked, and finds nothing once all are. Then, once, what is not held per
customer: IPs, addresses and personal keys in the audit trail (its rows stay), bounced
addresses, processed Stripe event payloads, import error rows, and the files under instance/
(files.py). The purge records itself: one audit row "purge" per run, written with its first
change and brought up to date in every later transaction, so even an interrupted run is on
record with what it did.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import and_, case, cast, func, null, select, update
from sqlalchemy.sql.sqltypes import String

from cardbridge.extensions import db
from cardbridge.models import (
    AuditEvent,
    Bounce,
    Customer,
    CustomerEvent,
    Email,
    ImportRun,
    MigratedCard,
    SavedPaymentMethod,
    StaffUser,
    StripeEvent,
)
from cardbridge.models.types import utcnow
from cardbridge.retention import files
from cardbridge.staff import audit

BATCH_SIZE = 1000
ACTOR = "cli"

# Per customer: the columns that go (strings become NULL, or "" where the column is NOT NULL).
CUSTOMER_COLUMNS = {
    Customer: ("name", "email", "card_brand", "card_last4", "card_exp_month", "card_exp_year"),
    MigratedCard: ("brand", "last4", "exp_month", "exp_year", "fingerprint"),
    SavedPaymentMethod: ("brand", "last4", "exp_month", "exp_year", "fingerprint"),
    Email: ("to_address", "last_error"),
}
# JSON keys that name, address or describe a person or their card, wherever they appear.
PERSONAL_KEYS = frozenset({"to", "email", "address", "name", "ip", "brand", "last4",
                           "exp_month", "exp_year", "expiry", "fingerprint"})
EMAIL_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+\.[A-Za-z]{2,}")
REMOVED = "[removed]"
UNSENT = ("queued", "sending")


class PurgeRefused(Exception):
    """Not yet (or not configured): the message says why and when."""


def purge_date(config) -> date:
    """The first day `flask purge` may run; PurgeRefused without a CUTOVER_DATE."""
    cutover = config.get("CUTOVER_DATE")
    if cutover is None:
        raise PurgeRefused("CUTOVER_DATE is not set: cardbridge cannot tell when the migration "
                           "ended, so it removes nothing")
    return cutover + timedelta(days=int(config.get("RETENTION_DAYS", 90)))


def check_allowed(config, today: date) -> date:
    allowed = purge_date(config)
    if today < allowed:
        raise PurgeRefused(
            f"too early: personal data is kept until CUTOVER_DATE {config['CUTOVER_DATE']} + "
            f"RETENTION_DAYS {config.get('RETENTION_DAYS', 90)}; purge may run from "
            f"{allowed.isoformat()}")
    return allowed


@dataclass
class PurgeReport:
    dry_run: bool
    counts: Counter = field(default_factory=Counter)  # "table.column" → values removed
    customers: int = 0
    batches: int = 0
    finished: bool = False  # every customer and the run-wide part done

    @property
    def changed(self) -> bool:
        return any(self.counts.values())

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "customers": self.customers, "batches": self.batches,
                "finished": self.finished,
                "counts": {k: v for k, v in sorted(self.counts.items()) if v}}


def purge(*, dry_run: bool = False, batch_size: int = BATCH_SIZE, max_batches: int | None = None,
          commit: Callable[[], None] | None = None, today: date | None = None,
          started: Callable[[int], None] | None = None,
          progress: Callable[[int], None] | None = None) -> PurgeReport:
    """Remove (or, dry, count) what goes; `commit` is the caller's, called once per batch.

    `max_batches` stops after that many customer batches (the run-wide part waits for a run
    that reaches the end). PurgeRefused before the date.
    """
    allowed = check_allowed(current_app.config, today or utcnow().date())
    commit = commit or db.session.commit
    report = PurgeReport(dry_run=dry_run)
    run = _Run(report, allowed, commit)
    remaining = db.session.execute(
        select(func.count()).where(Customer.purged_at.is_(None))).scalar_one()
    if started:
        started(remaining)
    after = 0
    while max_batches is None or report.batches < max_batches:
        ids = db.session.execute(
            select(Customer.id).where(Customer.purged_at.is_(None), Customer.id > after)
            .order_by(Customer.id).limit(batch_size)).scalars().all()
        if not ids:
            break
        after = ids[-1]
        batch = _purge_customers(ids, dry_run)
        report.customers += len(ids)
        report.batches += 1
        report.counts.update(batch)
        run.batch_done(mark=ids)
        if progress:
            progress(len(ids))
    else:
        if db.session.execute(select(func.count()).where(
                Customer.purged_at.is_(None), Customer.id > after)).scalar_one():
            run.finish(complete=False)
            return report
    report.counts.update(_purge_run_wide(dry_run))
    report.counts.update(files.purge_files(dry_run))
    report.finished = True
    run.finish(complete=True)
    return report


class _Run:
    """The run's audit row: made with the first change, updated with each commit."""

    def __init__(self, report: PurgeReport, allowed: date, commit: Callable[[], None]):
        self.report, self.allowed, self.commit = report, allowed, commit
        self.event: AuditEvent | None = None

    def _record(self) -> None:
        if self.report.dry_run or not self.report.changed:
            return
        details = {**self.report.as_dict(), "purge_date": self.allowed.isoformat()}
        if self.event is None:
            self.event = audit.record(ACTOR, "purge", None, details=details)
        else:
            self.event.details = details  # a new dict: JSON columns see reassignment only

    def batch_done(self, mark: list[int]) -> None:
        if self.report.dry_run:
            return
        db.session.execute(update(Customer).where(Customer.id.in_(mark))
                           .values(purged_at=utcnow()))
        self._record()
        self.commit()

    def finish(self, complete: bool) -> None:
        if self.report.dry_run:
            return
        self._record()
        self.commit()


# -- per customer ------------------------------------------------------------------------------
def _filled(column):
    """SQL: 1 where the column holds something to remove, else 0."""
    cond = column.isnot(None)
    if isinstance(column.type, String):
        cond = and_(cond, column != "")
    return case((cond, 1), else_=0)


def _purge_customers(ids: list[int], dry_run: bool) -> Counter:
    counts: Counter = Counter()
    _names_in_audit_reasons(ids, dry_run, counts)
    for model, names in CUSTOMER_COLUMNS.items():
        owner = model.id if model is Customer else model.customer_id
        columns = [getattr(model, n) for n in names]
        row = db.session.execute(select(*(func.sum(_filled(c)) for c in columns))
                                 .where(owner.in_(ids))).one()
        for name, n in zip(names, row, strict=True):
            counts[f"{model.__tablename__}.{name}"] += int(n or 0)
        if model is Email:
            counts["emails.cancelled_unsent"] += db.session.execute(
                select(func.count()).where(owner.in_(ids), Email.status.in_(UNSENT))
            ).scalar_one()
        if dry_run:
            continue
        values = {n: ("" if not getattr(model, n).nullable else None) for n in names}
        if model is Email:
            db.session.execute(update(Email).where(owner.in_(ids), Email.status.in_(UNSENT))
                               .values(status="cancelled"))
        db.session.execute(update(model).where(owner.in_(ids)).values(**values))
    events = db.session.execute(
        select(CustomerEvent.id, CustomerEvent.details)
        .where(CustomerEvent.customer_id.in_(ids))).all()
    changed = [(eid, scrub(details)) for eid, details in events if scrub(details) != details]
    counts["customer_events.details"] += len(changed)
    if not dry_run:
        for eid, details in changed:
            db.session.execute(update(CustomerEvent).where(CustomerEvent.id == eid)
                               .values(details=details))
    return counts


def _names_in_audit_reasons(ids: list[int], dry_run: bool, counts: Counter) -> None:
    """A reason typed about a customer (the row targets their legacy id) may name them."""
    names = {legacy: name for legacy, name in db.session.execute(
        select(Customer.legacy_id, Customer.name).where(Customer.id.in_(ids))) if name}
    if not names:
        return
    for event in db.session.execute(select(AuditEvent).where(
            AuditEvent.target.in_(names), AuditEvent.reason.isnot(None))).scalars():
        name = names[event.target]
        if len(name) >= 3 and name.lower() in event.reason.lower():
            counts["audit_events.reason"] += 1
            if not dry_run:
                event.reason = re.sub(re.escape(name), REMOVED, event.reason, flags=re.I)


def scrub(value, keep: frozenset[str] = frozenset()):
    """`value` without personal keys, and with email addresses (other than `keep`) replaced."""
    if isinstance(value, dict):
        return {k: scrub(v, keep) for k, v in value.items() if k not in PERSONAL_KEYS}
    if isinstance(value, list):
        return [scrub(v, keep) for v in value]
    if isinstance(value, str):
        return redact(value, keep)
    return value


def redact(text: str | None, keep: frozenset[str] = frozenset()) -> str | None:
    if not text or "@" not in text:
        return text
    return EMAIL_ADDRESS.sub(lambda m: m.group(0) if m.group(0).lower() in keep else REMOVED,
                             text)


# -- once per run ------------------------------------------------------------------------------
def _purge_run_wide(dry_run: bool) -> Counter:
    counts: Counter = Counter()
    staff = frozenset(e.lower() for e in db.session.execute(select(StaffUser.email)).scalars())
    _audit_trail(staff, dry_run, counts)

    bounces = db.session.execute(select(Bounce).where(
        ~Bounce.address.startswith("removed-"))).scalars().all()
    counts["email_bounces.address"] += len(bounces)
    counts["email_bounces.reason"] += sum(1 for b in bounces if b.reason)
    if not dry_run:
        for bounce in bounces:
            bounce.address, bounce.reason = f"removed-{bounce.id}", None

    # Processed events keep type, object id and outcome; their payload (billing details: a
    # name, an address, a card's last 4) goes. A JSON null is already empty.
    payloads = (StripeEvent.processed_at.isnot(None),
                func.coalesce(cast(StripeEvent.payload, String), "null") != "null")
    counts["stripe_events.payload"] += db.session.execute(
        select(func.count()).where(*payloads)).scalar_one()
    if not dry_run:
        db.session.execute(update(StripeEvent).where(*payloads).values(payload=null()))

    for run in db.session.execute(select(ImportRun)).scalars():
        errors = [] if run.errors else run.errors
        message = redact(run.message)
        if run.errors:
            counts["import_runs.errors"] += 1
        if message != run.message:
            counts["import_runs.message"] += 1
        if run.report_path:
            counts["import_runs.report_path"] += 1
            # One under instance/import-reports/ is counted with that folder (files.py).
            if not files.in_instance(run.report_path, "import-reports"):
                counts["files.import_reports"] += files.remove(run.report_path, dry_run)
        if not dry_run:
            run.errors, run.message, run.report_path = errors, message, None
    return counts


def _audit_trail(staff: frozenset[str], dry_run: bool, counts: Counter) -> None:
    """IPs go; addresses and personal keys in targets, reasons and details are replaced. The
    rows, actors (staff), actions and times stay: the trail itself is kept."""
    after = 0
    while True:
        rows = db.session.execute(
            select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id)
            .limit(BATCH_SIZE)).scalars().all()
        if not rows:
            return
        after = rows[-1].id
        for event in rows:
            target, reason = redact(event.target, staff), redact(event.reason, staff)
            details = scrub(event.details or {}, staff)
            for name, old, new in (("ip", event.ip, None), ("target", event.target, target),
                                   ("reason", event.reason, reason),
                                   ("details", event.details or {}, details)):
                if old != new:
                    counts[f"audit_events.{name}"] += 1
            if not dry_run:
                event.ip, event.target, event.reason = None, target, reason
                if details != (event.details or {}):
                    event.details = details

