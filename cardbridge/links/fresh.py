""""Email me a fresh link", the worker's half: who gets an email, and with which link.

The web request only checks the form and queues `send_fresh_link` for every request, known
address or not, so both take the same time and do the same work (nothing there tells which
addresses exist). Here, a customer who still has a live link gets that link again (the same
link id in a new email) rather than a replacement; one whose links are all dead gets a new one.
Only ever at the address already on file.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from cardbridge.email.emails import queue_email, send_link_email
from cardbridge.extensions import db
from cardbridge.links.service import find_link, issue_link
from cardbridge.models import Customer, Link
from cardbridge.models.links import is_live
from cardbridge.models.types import utcnow

log = logging.getLogger(__name__)

NEEDS_CARD = ("needs_update", "invited")


def _recipients(email: str, public_id: str | None) -> list[Customer]:
    if public_id:
        link = find_link(public_id)
        if (link is not None and link.customer.purged_at is None
                and link.customer.email == email):
            return [link.customer] if link.customer.status in NEEDS_CARD else []
    return list(db.session.execute(
        select(Customer).where(Customer.email == email, Customer.status.in_(NEEDS_CARD),
                               Customer.purged_at.is_(None))
    ).scalars())


def _live_link(customer: Customer) -> Link | None:
    now = utcnow()
    return db.session.execute(
        select(Link).where(Link.customer_id == customer.id, is_live(now))
        .order_by(Link.created_at.desc()).limit(1)
    ).scalar_one_or_none()


def send_fresh_link(email: str, public_id: str | None) -> int:
    """Queue a link email for each customer at `email` who needs a card; returns how many."""
    sent = 0
    for customer in _recipients(email, public_id):
        live = _live_link(customer)
        if live is not None:
            queue_email(customer, "fresh_link", link_id=live.id)
            log.info("fresh link: live link re-sent customer=%s link=%s", customer.legacy_id,
                     live.public_id)
        else:
            issued = issue_link(customer, created_by="customer:fresh-link", channel="email")
            send_link_email(customer, issued.link, kind="fresh_link")
            log.info("fresh link sent customer=%s link=%s", customer.legacy_id,
                     issued.link.public_id)
        sent += 1
    return sent
