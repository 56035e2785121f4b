"""Stripe's webhook events: stored once per event id by the web request, processed by the worker.

Stripe asks for a quick 2xx: the request only verifies, deduplicates and stores the event
(`store`); the queue's worker then runs its handler (`process`), which re-reads the object
from Stripe, so duplicates and out-of-order delivery end in the same state. Events about
objects that are not ours are recorded as such and change nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cardbridge import metrics
from cardbridge.extensions import db
from cardbridge.models import CustomerEvent, StripeEvent
from cardbridge.models.types import utcnow
from cardbridge.payments import card_setup, same_card
from cardbridge.payments.recording import SetupNotFinished, SetupNotOurs, link_named_by
from cardbridge.stripe_gateway import NotFound, StripeGateway, StripeRejected
from cardbridge.subscriptions import events as subscription_events

log = logging.getLogger(__name__)

QUEUED = "queued"
GIVE_UP_AFTER = timedelta(days=3)


def _object_id(event: dict) -> str | None:
    obj = (event.get("data") or {}).get("object") or {}
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


def _setup_succeeded(event: dict, gateway: StripeGateway) -> str:
    recorded = card_setup.finish_setup_intent(_object_id(event) or "", gateway, via="webhook")
    return "recorded" if recorded.created else "already_recorded"


def _checkout_completed(event: dict, gateway: StripeGateway) -> str:
    recorded = card_setup.finish_checkout_session(_object_id(event) or "", gateway, via="webhook")
    return "recorded" if recorded.created else "already_recorded"


def _setup_failed(event: dict, gateway: StripeGateway) -> str:
    setup_intent = gateway.retrieve_setup_intent(_object_id(event) or "")
    link = link_named_by(setup_intent.get("metadata"))
    if link is None:
        return "not_ours"
    error = setup_intent.get("last_setup_error") or {}
    db.session.add(
        CustomerEvent(
            customer_id=link.customer_id, link_id=link.id, kind="setup_failed",
            details={"setup_intent": setup_intent["id"], "code": error.get("code"),
                     "decline_code": error.get("decline_code")},
        )
    )
    metrics.count_after_commit(db.session(),
                               metrics.SETUPS_FAILED.labels("webhook", "setup_failed"))
    return "failure_recorded"


def _card_auto_updated(event: dict, gateway: StripeGateway) -> str:
    # Stripe's card updater changed a card in place; the handler re-reads it from Stripe.
    return same_card.card_auto_updated(_object_id(event) or "", gateway)


HANDLERS = {
    "setup_intent.succeeded": _setup_succeeded,
    "checkout.session.completed": _checkout_completed,
    "setup_intent.setup_failed": _setup_failed,
    "payment_method.automatically_updated": _card_auto_updated,
    # The ledger of subscriptions moved to Stripe (these handlers need no Stripe call).
    **{name: (lambda event, _gateway, move=move: move(event))
       for name, move in subscription_events.HANDLERS.items()},
}


def seen(event_id: str) -> bool:
    return db.session.execute(
        select(StripeEvent.id).where(StripeEvent.event_id == event_id)
    ).first() is not None


def store(event: dict) -> StripeEvent | None:
    """The event's row, waiting for the worker; None when this event id is already stored."""
    event_type = str(event["type"])
    handled = event_type in HANDLERS
    row = StripeEvent(event_id=event["id"], type=event_type[:100], object_id=_object_id(event),
                      outcome=QUEUED if handled else "ignored",
                      payload=event if handled else None,
                      processed_at=None if handled else utcnow())
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        return None  # the same event delivered twice at once: the other delivery stored it
    return row


def process(row_id: int, gateway: StripeGateway) -> str | None:
    """Run a stored event's handler once; StripeUnavailable goes up (the caller retries)."""
    row = db.session.get(StripeEvent, row_id)
    if row is None or row.processed_at is not None:
        return None
    handler = HANDLERS.get(row.type)
    try:
        outcome = handler(row.payload or {}, gateway) if handler else "ignored"
    except (SetupNotOurs, NotFound):
        db.session.rollback()
        outcome = "not_ours"
    except SetupNotFinished as exc:
        db.session.rollback()
        outcome = f"not_finished:{exc.status}"[:40]
    except StripeRejected:
        # A refusal can be ours to fix (a revoked key, a wrong account): keep the event and
        # try again, for as long as Stripe itself retries a webhook (three days).
        db.session.rollback()
        row = db.session.get(StripeEvent, row_id)
        if utcnow() - row.received_at < GIVE_UP_AFTER:
            raise
        log.warning("webhook event %s still refused by Stripe after 3 days", row.event_id)
        outcome = "refused_by_stripe"
    row = db.session.get(StripeEvent, row_id)
    row.outcome, row.processed_at, row.payload = outcome, utcnow(), None
    log.info("webhook %s %s -> %s", row.type, row.event_id, outcome)
    return outcome


def unprocessed_ids(stored_before: datetime, limit: int = 1000) -> list[int]:
    """Events whose task was lost (or waits for Stripe): the pump queues them again."""
    return list(db.session.execute(
        select(StripeEvent.id)
        .where(StripeEvent.processed_at.is_(None), StripeEvent.received_at < stored_before)
        .order_by(StripeEvent.id).limit(limit)
    ).scalars())
