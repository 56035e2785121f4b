"""/webhooks/email/bounce — an email provider reports bounced addresses: CSRF-exempt, shared secret.

The provider sends the secret (BOUNCE_WEBHOOK_SECRET) as `Authorization: Bearer <secret>` or
an `X-Webhook-Secret` header, and a JSON body: one event, a list of events, or
`{"bounces": [...]}`. An event names the address (`email`, `recipient` or `address`) or the
message (`message_id`, as our Message-ID or the provider's id). Soft bounces are acknowledged
and ignored: the outbox already retries those.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request

from cardbridge.email.emails import email_for_provider_id, mark_bounced
from cardbridge.extensions import csrf, db
from cardbridge.models import AuditEvent

log = logging.getLogger(__name__)
bp = Blueprint("hooks_email", __name__, url_prefix="/webhooks/email")

MAX_BODY = 256 * 1024
MAX_EVENTS = 1000
SOFT = {"soft", "transient", "temporary", "delayed"}


def _given_secret() -> str:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("X-Webhook-Secret", "")


def _events(payload) -> list | None:
    if isinstance(payload, dict) and isinstance(payload.get("bounces"), list):
        payload = payload["bounces"]
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or len(payload) > MAX_EVENTS:
        return None
    return [e for e in payload if isinstance(e, dict)]


def _text(event: dict, *keys: str) -> str | None:
    for key in keys:
        value = event.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:500]
    return None


@bp.post("/bounce")
@csrf.exempt
def bounce():
    secret = current_app.config.get("BOUNCE_WEBHOOK_SECRET")
    if not secret:
        return jsonify(error="not_configured", message="BOUNCE_WEBHOOK_SECRET is not set"), 503
    if not hmac.compare_digest(_given_secret().encode(), secret.encode()):
        return jsonify(error="unauthorized", message="wrong or missing secret"), 401
    if (request.content_length or 0) > MAX_BODY:
        return jsonify(error="too_large", message="body too large"), 413
    events = _events(request.get_json(silent=True))
    if events is None:
        return jsonify(error="bad_request", message=f"send a JSON event or a list of at most "
                                                    f"{MAX_EVENTS}"), 400
    marked, ignored = [], 0
    for event in events:
        kind = (_text(event, "type", "bounce_type", "event") or "hard").lower()
        address = _text(event, "email", "recipient", "address")
        message_id = _text(event, "message_id", "provider_message_id")
        if address is None and message_id is not None:
            found = email_for_provider_id(message_id)
            address = found.to_address if found is not None else None
        if kind in SOFT or address is None:
            ignored += 1
            continue
        try:
            bounced, _ = mark_bounced(address, source="webhook", provider_message_id=message_id,
                                      reason=_text(event, "reason", "diagnostic", "description"))
        except ValueError:
            ignored += 1
            continue
        marked.append(bounced.address)
    if marked:
        db.session.add(AuditEvent(actor="webhook:email", action="email.bounced",
                                  target=f"{len(marked)} address(es)",
                                  ip=request.remote_addr, details={"count": len(marked)}))
    db.session.commit()
    log.info("bounce webhook: %d marked, %d ignored", len(marked), ignored)
    return jsonify(marked=len(marked), ignored=ignored)
