"""Queue entry points: each takes ids (or nothing), runs in the app context, calls one service.

Delivery commits once per email rather than once per task: that commit is what bounds a crash
to the one email on the wire (cardbridge/delivery/outbox.py). Everything else commits once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from flask import current_app
from huey import crontab

from cardbridge import after_commit
from cardbridge.campaigns import service as campaigns
from cardbridge.delivery import outbox
from cardbridge.email.pending import PENDING_KEY, TASK_CHUNK, URGENT
from cardbridge.extensions import db, huey
from cardbridge.imports import jobs as import_jobs
from cardbridge.links import fresh as fresh_links
from cardbridge.models.types import utcnow
from cardbridge.payments import drift, webhook_events
from cardbridge.staff import audit
from cardbridge.stripe_gateway import StripeGateway, StripeRejected, StripeUnavailable
from cardbridge.subscriptions import apply as subscription_apply
from cardbridge.subscriptions import guard, invoices, planner
from cardbridge.subscriptions.budget import Budget

log = logging.getLogger(__name__)

PUMP_GRACE = timedelta(minutes=5)  # a due row older than this has lost its task (or waits)


@huey.task()
def deliver_emails(email_ids: list[int]) -> None:
    """Send these outbox rows if they are still due; come back later for any that must wait."""
    with huey.app_context():
        report = outbox.deliver(list(email_ids), commit=db.session.commit)
        if report.retry_at is not None:
            deliver_emails.schedule(args=(list(email_ids),), eta=report.retry_at)


STRIPE_RETRY = timedelta(minutes=1)


@huey.task(priority=URGENT)
def process_stripe_event(row_id: int) -> None:
    """A stored webhook event, processed off the web request; Stripe down: again later."""
    with huey.app_context():
        try:
            webhook_events.process(row_id, current_app.extensions["stripe_gateway"])
            db.session.commit()
        except (StripeUnavailable, StripeRejected):
            db.session.rollback()
            log.warning("stripe event %s waits: Stripe unavailable or refusing", row_id)
            process_stripe_event.schedule(args=(row_id,), eta=utcnow() + STRIPE_RETRY)


@huey.task(priority=URGENT)
def send_fresh_link(email: str, public_id: str | None) -> None:
    """A customer asked for a fresh link: the lookup happens here, not in the request."""
    with huey.app_context():
        fresh_links.send_fresh_link(email, public_id)
        db.session.commit()


@huey.task(priority=URGENT)
def settle_invoices(saved_id: int) -> None:
    """Pay the open invoices of a customer who just saved a card; Stripe down: again later."""
    with huey.app_context():
        try:
            invoices.settle(saved_id, current_app.extensions["stripe_gateway"])
            db.session.commit()
        except (StripeUnavailable, StripeRejected):
            db.session.rollback()
            log.warning("open invoices of saved card %s wait: Stripe unavailable", saved_id)
            settle_invoices.schedule(args=(saved_id,), eta=utcnow() + STRIPE_RETRY)


@huey.task()
def plan_subscriptions(actor: str) -> None:
    """The console's "Plan again" button: the same work as `flask subscriptions plan`."""
    with huey.app_context():
        try:
            changes = planner.plan(bulk_gateway())
        except (StripeUnavailable, StripeRejected) as exc:
            db.session.rollback()
            audit.record(f"worker for {actor}", "subscription.plan",
                         details={"error": f"Stripe unavailable: {exc}"[:200]})
            db.session.commit()
            return
        audit.record(f"worker for {actor}", "subscription.plan", details=dict(changes))
        db.session.commit()


@huey.task()
def apply_subscriptions(actor: str) -> None:
    """The console's "Apply on Stripe" button: the same work as `flask subscriptions apply`."""
    with huey.app_context():
        report = subscription_apply.apply(bulk_gateway())
        audit.record(f"worker for {actor}", "subscription.apply",
                     details={**dict(report.counts), "seconds": round(report.seconds, 1)})
        db.session.commit()
        log.info("subscriptions applied for %s: %s", actor, dict(report.counts))


def bulk_gateway():
    """A gateway for bulk work: more patient with 429s than a customer's request can be."""
    return StripeGateway.from_config(current_app.config, rate_limit_retries=8)


@huey.periodic_task(crontab(minute="*/5"))
def guard_subscriptions() -> None:
    """Never billed twice: hold what is about to start without a confirmed legacy cancel."""
    with huey.app_context():
        counts = guard.run_guard(bulk_gateway())
    if counts:
        log.warning("subscription guard: %s", dict(counts))


@huey.periodic_task(crontab(minute="17", hour="4"))
def scan_drift() -> None:
    """Every day, read-only: list where Stripe differs from cardbridge (the dashboard's count);
    continues a scan an earlier run or a Stripe outage left unfinished."""
    with huey.app_context():
        try:
            report = drift.reconcile(bulk_gateway(), Budget.from_config(), fix=False,
                                     actor="worker")
        except (StripeUnavailable, StripeRejected):
            log.warning("drift scan stopped: Stripe unavailable; the next run continues")
            return
        log.info("drift scan %s: %s", report.scan.id, dict(report.counts))


@huey.task()
def run_console_import(job_id: str) -> None:
    """A file a staff member uploaded in the console: imported here, never in a web process."""
    with huey.app_context():
        import_jobs.run_job(job_id)


def _pump(grace: timedelta) -> int:
    """Release dead workers' rows and ask again for due rows nobody is sending; the same for
    stored webhook events whose task was lost."""
    with huey.app_context():
        outbox.reap_dead_claims()
        db.session.commit()  # the reaper's own requeued rows are enqueued by this commit
        ids = outbox.overdue_ids(utcnow() - grace)
        events = webhook_events.unprocessed_ids(utcnow() - grace)
        unsettled = invoices.unsettled_ids(utcnow() - grace)
    if ids:
        enqueue_delivery([(ids, None, False)])
    for row_id in events:
        process_stripe_event(row_id)
    for saved_id in unsettled:
        settle_invoices(saved_id)
    return len(ids)


def _plan_reminders() -> int:
    with huey.app_context():
        queued = campaigns.plan_reminders()
        db.session.commit()
    if queued:
        log.info("queued %d reminders", queued)
    return queued


@huey.periodic_task(crontab(minute="*"))
def pump_outbox() -> None:
    _pump(PUMP_GRACE)


@huey.periodic_task(crontab(minute="*/10"))
def plan_reminders() -> None:
    _plan_reminders()


def catch_up() -> None:
    """What the periodic tasks do, all at once and with no grace (for `flask worker --burst`)."""
    _plan_reminders()
    _pump(timedelta(0))
    guard_subscriptions.call_local()


# -- "deliver these ids once this transaction commits" -------------------------------------------
def install_commit_hook() -> None:
    """Hand committed emails to the queue (called by create_app through queue.init_app); the
    ids of a transaction that rolls back never reach it."""
    after_commit.on_commit(PENDING_KEY, _deliver_committed)


def _deliver_committed(pending: list) -> None:
    grouped: dict[tuple, list[int]] = {}
    for ids, eta, urgent in pending:  # one task per chunk, however many calls queued them
        grouped.setdefault((eta, urgent), []).extend(ids)
    enqueue_delivery([(ids, eta, urgent) for (eta, urgent), ids in grouped.items()])


def enqueue_delivery(batches: Iterable[tuple[list[int], datetime | None, bool]]) -> int:
    """Put delivery tasks on the queue; a failure here only delays mail (the pump finds it)."""
    count = 0
    try:
        for ids, eta, urgent in batches:
            for start in range(0, len(ids), TASK_CHUNK):
                chunk = ids[start:start + TASK_CHUNK]
                task = deliver_emails.s(chunk, eta=eta, priority=URGENT if urgent else None)
                deliver_emails.huey.enqueue(task)
                count += 1
    except Exception:  # a queue outage must not fail the request that already committed
        log.exception("could not enqueue email delivery; the minute pump will pick it up")
    return count
