"""/webhooks/stripe — CSRF-exempt, signature-verified, idempotent per event id.

Every handler re-reads the object from Stripe, so duplicates and out-of-order delivery end
in the same state. Events about objects that are not ours are acknowledged and ignored.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from extensions import csrf, db
from models import CustomerEvent, StripeEvent
from security import unmetered
from services import card_setup
from services.recording import SetupNotFinished, SetupNotOurs, link_named_by
from services.stripe_gateway import BadSignature, NotFound, StripeGateway, StripeUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

MAX_BODY = 1024 * 1024  # Stripe events are a few KB; refuse megabytes before hashing them


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
    return "failure_recorded"


HANDLERS = {
    "setup_intent.succeeded": _setup_succeeded,
    "checkout.session.completed": _checkout_completed,
    "setup_intent.setup_failed": _setup_failed,
}


@bp.post("/stripe")
@csrf.exempt
@unmetered
def stripe_webhook():
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        return jsonify(error="not_configured", message="STRIPE_WEBHOOK_SECRET is not set"), 503
    if (request.content_length or 0) > MAX_BODY:
        return jsonify(error="too_large"), 413
    payload = request.get_data(cache=False)  # the raw bytes the signature covers
    try:
        event = StripeGateway.parse_webhook(payload, request.headers.get("Stripe-Signature"),
                                            secret)
    except BadSignature as exc:
        log.warning("webhook refused: %s", exc)
        return jsonify(error="bad_signature"), 400

    event_id, event_type = event["id"], str(event.get("type", ""))
    seen = db.session.execute(
        select(StripeEvent.outcome).where(StripeEvent.event_id == event_id)
    ).scalar_one_or_none()
    if seen is not None:
        return jsonify(received=True, duplicate=True, outcome=seen)

    handler = HANDLERS.get(event_type)
    outcome = "ignored"
    if handler is not None:
        try:
            outcome = handler(event, current_app.extensions["stripe_gateway"])
        except (SetupNotOurs, NotFound):
            db.session.rollback()
            outcome = "not_ours"
        except SetupNotFinished as exc:
            db.session.rollback()
            outcome = f"not_finished:{exc.status}"
        except StripeUnavailable:
            db.session.rollback()
            log.warning("webhook %s deferred: Stripe unavailable", event_type)
            return jsonify(error="retry_later"), 503  # Stripe retries with backoff
    db.session.add(StripeEvent(event_id=event_id, type=event_type[:100],
                               object_id=_object_id(event), outcome=outcome))
    try:
        db.session.commit()
    except IntegrityError:
        # The same event delivered twice at once: the other delivery did the work.
        db.session.rollback()
        return jsonify(received=True, duplicate=True)
    log.info("webhook %s %s -> %s", event_type, event_id, outcome)
    return jsonify(received=True, outcome=outcome)
