""""Email me a fresh link": answers the same whether or not the address exists."""

from __future__ import annotations

import logging

from flask import current_app, request
from sqlalchemy import select

from blueprints.customer import bp
from blueprints.customer.i18n import _, render
from extensions import db, limiter
from models import Customer
from security import link_page
from services.emails import send_link_email
from services.links import LinkError, issue_link, load_link

log = logging.getLogger(__name__)

NEEDS_CARD = ("needs_update", "invited")


def normalize_email(value: str) -> str:
    return (value or "").strip().lower()


def _email_key() -> str:
    return "fresh-email:" + normalize_email(request.form.get("email", ""))[:320]


def _recipients(email: str, token: str) -> list[Customer]:
    """Customers to send a fresh link to: only ever at the address already on file."""
    if token:
        try:
            link = load_link(token, allow_spent=True)
        except LinkError as err:
            link = err.link
        if link is not None and link.customer.email == email:
            return [link.customer] if link.customer.status in NEEDS_CARD else []
    return list(
        db.session.execute(
            select(Customer).where(Customer.email == email, Customer.status.in_(NEEDS_CARD))
        ).scalars()
    )


@bp.post("/fresh")
@link_page
@limiter.limit(lambda: current_app.config["FRESH_LINK_RATE_LIMIT"])
@limiter.limit("3 per hour", key_func=_email_key)
def fresh_link():
    email = normalize_email(request.form.get("email", ""))
    token = request.form.get("token", "")[:512]
    if "@" not in email or len(email) > 320:
        return render("customer/invalid.html", reason="form", token=token,
                      form_error=_("Enter the email address we have on file.")), 400
    for customer in _recipients(email, token):
        issued = issue_link(customer, created_by="customer:fresh-link", channel="email")
        send_link_email(customer, issued, kind="fresh_link")
        log.info("fresh link sent customer=%s link=%s", customer.legacy_id,
                 issued.link.public_id)
    db.session.commit()
    return render("customer/fresh_sent.html")
