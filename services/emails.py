"""Composers for customer emails: one function per email a feature sends.

Callers (CLI, console, API, campaigns) use these and never build messages themselves.
"""

from __future__ import annotations

from flask import current_app

from models import Customer
from services.links import IssuedLink
from services.mailer import send_email


def send_link_email(customer: Customer, issued: IssuedLink, *, kind: str = "link") -> str:
    """The first link email (kind="link") or the one asked for from a dead link ("fresh_link")."""
    company = current_app.config["COMPANY_NAME"]
    subject = (f"Your new card update link from {company}" if kind == "fresh_link"
               else f"Action needed: update your card for {company}")
    return send_email(customer.email, kind, subject, customer=customer, url=issued.url,
                      expires_at=issued.link.expires_at, card=customer.known_card())
