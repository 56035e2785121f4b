"""Staff and API actions on a customer's links, each written to the audit trail.

The console and /api/v1 both call these, so a link made either way is made and recorded the
same way. The caller commits.
"""

from __future__ import annotations

from flask import current_app
from limits import parse_many

from cardbridge.email.emails import send_link_email
from cardbridge.extensions import limiter
from cardbridge.links.service import IssuedLink, issue_link, revoke_links
from cardbridge.models import Customer
from cardbridge.staff import audit


def take_link_slot(customer_id: int) -> bool:
    """One of a customer's link actions (make or send), from the console or /api/v1 alike:
    False once STAFF_CUSTOMER_LINK_LIMIT is spent, so no path can flood one inbox."""
    limits = parse_many(current_app.config.get("STAFF_CUSTOMER_LINK_LIMIT", "10 per hour"))
    strategy = limiter.limiter  # Flask-Limiter's storage: Redis when REDIS_URL is set
    key = str(customer_id)
    if not all(strategy.test(item, "customer-links", key) for item in limits):
        return False
    return all([strategy.hit(item, "customer-links", key) for item in limits])


def give_link(
    customer: Customer,
    *,
    actor: str,
    ip: str | None,
    reason: str | None,
    send: bool,
    days: int | None = None,
) -> IssuedLink:
    """A fresh link (older unused ones stop working); emailed to the customer when `send`."""
    issued = issue_link(customer, created_by=actor, channel="email" if send else "generated",
                        days=days)
    details = {"link": issued.link.public_id, "expires_at": issued.link.expires_at.isoformat()}
    audit.record(actor, "link.generated", customer.legacy_id, ip=ip, reason=reason,
                 details=details)
    if send:

        send_link_email(customer, issued.link)
        audit.record(actor, "link.sent", customer.legacy_id, ip=ip, reason=reason,
                     details={"link": issued.link.public_id, "to": customer.email})
    return issued


def revoke_all(customer: Customer, *, actor: str, ip: str | None, reason: str | None) -> int:
    count = revoke_links(customer, by=actor)
    audit.record(actor, "link.revoked", customer.legacy_id, ip=ip, reason=reason,
                 details={"count": count})
    return count
