"""/webhooks/stripe — CSRF-exempt, signature-verified, idempotent per event id, answered fast.

The request verifies the signature, deduplicates and stores the event, and answers 2xx; the
task queue's worker processes it (payments/webhook_events.py), as Stripe recommends: a slow
Stripe or a busy database never makes Stripe wait, time out and retry for days.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from cardbridge.delivery.tasks import process_stripe_event
from cardbridge.extensions import csrf, db
from cardbridge.payments import webhook_events
from cardbridge.stripe_gateway import BadSignature, StripeGateway

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.post("/stripe")
@csrf.exempt
def stripe_webhook():

    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        return jsonify(error="not_configured", message="STRIPE_WEBHOOK_SECRET is not set"), 503
    payload = request.get_data(cache=False)  # the raw bytes the signature covers
    try:
        event = StripeGateway.parse_webhook(payload, request.headers.get("Stripe-Signature"),
                                            secret)
    except BadSignature as exc:
        log.warning("webhook refused: %s", exc)
        return jsonify(error="bad_signature"), 400
    if webhook_events.seen(event["id"]):
        return jsonify(received=True, duplicate=True)
    row = webhook_events.store(event)
    if row is None:
        db.session.rollback()
        return jsonify(received=True, duplicate=True)
    db.session.commit()
    if row.processed_at is None:
        process_stripe_event(row.id)
    return jsonify(received=True)
