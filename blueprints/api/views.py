"""POST /api/v1/links, GET /api/v1/customers/<legacy_id>, GET /api/v1/openapi.json."""

from __future__ import annotations

from flask import current_app, g, jsonify, request

from blueprints.api import bp
from blueprints.api.auth import ApiError
from blueprints.api.openapi import document
from cardbridge.customers import lookup as customer_lookup
from cardbridge.extensions import db
from cardbridge.links import actions as link_actions
from cardbridge.models import Customer

LINK_FIELDS = {"customer", "send", "days", "reason"}


def _iso(value):
    return value.isoformat().replace("+00:00", "Z") if value else None


def _actor() -> str:
    return f"api:{g.api_token.name}"


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request", message, field=field)


def _link_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "Send a JSON object with Content-Type: "
                                            "application/json.")
    unknown = sorted(set(body) - LINK_FIELDS)
    if unknown:
        raise _invalid(unknown[0], f"Unknown field {unknown[0]!r}.")
    customer = body.get("customer")
    if not isinstance(customer, str) or not 1 <= len(customer) <= 255:
        raise _invalid("customer", "customer must be a legacy id or cus_ id (1–255 characters).")
    send = body.get("send", False)
    if not isinstance(send, bool):
        raise _invalid("send", "send must be true or false.")
    days = body.get("days")
    if isinstance(days, float) and days.is_integer():
        days = int(days)  # JSON has one number type: 4.0 is the integer 4
    max_days = current_app.config["LINK_MAX_AGE_DAYS"]
    if days is not None and (isinstance(days, bool) or not isinstance(days, int)
                             or not 1 <= days <= max_days):
        raise _invalid("days", f"days must be a whole number from 1 to {max_days}.")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise _invalid("reason", "reason must be a string of at most 500 characters.")
    return {"customer": customer, "send": send, "days": days, "reason": reason}


def _find(ref: str) -> Customer:
    customer = customer_lookup.find_by_ref(ref)
    if customer is None:
        raise ApiError(404, "customer_not_found", "No customer has that legacy id or cus_ id.")
    return customer


@bp.post("/links")
def create_link():
    body = _link_body()
    customer = _find(body["customer"])
    if not link_actions.take_link_slot(customer.id):  # the same budget as the console's
        raise ApiError(429, "rate_limited", "Too many links for this customer; try later.")
    issued = link_actions.give_link(customer, actor=_actor(), ip=request.remote_addr,
                                    reason=body["reason"], send=body["send"], days=body["days"])
    db.session.commit()
    return jsonify(url=issued.url, link_id=issued.link.public_id,
                   expires_at=_iso(issued.link.expires_at), customer=customer.legacy_id,
                   status=customer.status, sent=body["send"]), 201


@bp.get("/customers/<path:legacy_id>")
def customer_detail(legacy_id: str):
    file = customer_lookup.customer_file(_find(legacy_id), event_limit=0)
    c = file.customer
    latest = file.payment_methods[0] if file.payment_methods else None
    return jsonify(
        legacy_id=c.legacy_id, email=c.email, name=c.name, status=c.status,
        stripe_customer_id=c.stripe_customer_id,
        payment_method_id=latest.stripe_payment_method_id if latest else None,
        updated_at=_iso(c.updated_at),
        links=[{
            "link_id": row.link.public_id, "state": row.state, "channel": row.link.channel,
            "created_by": row.link.created_by, "created_at": _iso(row.link.created_at),
            "expires_at": _iso(row.link.expires_at), "opened_at": _iso(row.link.opened_at),
            "used_at": _iso(row.link.used_at), "revoked_at": _iso(row.link.revoked_at),
        } for row in file.links],
    )


@bp.get("/openapi.json")
def openapi():
    return jsonify(document(current_app.config["LINK_MAX_AGE_DAYS"],
                            current_app.config["PUBLIC_BASE_URL"]))
