"""The customer's path through Stripe: a Stripe customer on first need, one open SetupIntent
or Checkout Session per link, and finishing from whatever Stripe says happened."""

from __future__ import annotations

import logging

from flask import current_app

from cardbridge import metrics
from cardbridge.extensions import db
from cardbridge.models import Customer, CustomerEvent, Link
from cardbridge.payments.recording import (
    Recorded,
    SetupNotFinished,
    SetupNotOurs,
    check_setup_intent,
    link_named_by,
    record_setup,
)
from cardbridge.stripe_gateway import CardDeclined, NotFound, StripeGateway

log = logging.getLogger(__name__)

OPEN_SETUP_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action")


def ensure_stripe_customer(customer: Customer, gateway: StripeGateway) -> str:
    """Customers the migration did not create get one now; the key makes a retry reuse it."""
    if not customer.stripe_customer_id:
        customer.stripe_customer_id = gateway.create_customer(
            legacy_id=customer.legacy_id, email=customer.email, name=customer.name
        )
        db.session.add(
            CustomerEvent(customer_id=customer.id, kind="stripe_customer_created",
                          details={"stripe_customer_id": customer.stripe_customer_id})
        )
    return customer.stripe_customer_id


def open_setup_intent(link: Link, gateway: StripeGateway) -> dict:
    """The link's open SetupIntent, reused when still open, else a new one."""
    customer_id = ensure_stripe_customer(link.customer, gateway)
    if link.setup_intent_id:
        try:
            current = gateway.retrieve_setup_intent(link.setup_intent_id)
        except NotFound:
            current = None
        if current and current.get("status") in OPEN_SETUP_STATUSES + ("processing", "succeeded"):
            return current  # succeeded: the browser lost our answer; the caller finishes it
    created = gateway.create_setup_intent(
        customer_id=customer_id, link_id=link.public_id, replaces=link.setup_intent_id
    )
    if created["id"] != link.setup_intent_id:
        link.setup_intent_id = created["id"]
        db.session.add(
            CustomerEvent(customer_id=link.customer_id, link_id=link.id, kind="setup_started",
                          details={"setup_intent": created["id"]})
        )
        metrics.count_after_commit(db.session(), metrics.SETUPS_STARTED.labels("setup_intent"))
    return created


def open_checkout_session(link: Link, gateway: StripeGateway) -> dict:
    """A Checkout Session in setup mode for this link (reused while it is still open)."""
    customer_id = ensure_stripe_customer(link.customer, gateway)
    if link.checkout_session_id:
        try:
            current = gateway.retrieve_checkout_session(link.checkout_session_id)
        except NotFound:
            current = None
        if current and current.get("status") == "open" and current.get("url"):
            return current
    base = current_app.config["PUBLIC_BASE_URL"]
    created = gateway.create_checkout_session(
        customer_id=customer_id,
        link_id=link.public_id,
        currency=current_app.config["CHECKOUT_CURRENCY"],
        success_url=f"{base}/u/checkout/return?session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{base}/u/resume",
        replaces=link.checkout_session_id,
        locale=link.customer.locale,
    )
    if created["id"] != link.checkout_session_id:
        link.checkout_session_id = created["id"]
        db.session.add(
            CustomerEvent(customer_id=link.customer_id, link_id=link.id, kind="setup_started",
                          details={"checkout_session": created["id"]})
        )
        metrics.count_after_commit(db.session(), metrics.SETUPS_STARTED.labels("checkout"))
    return created


def finish_setup_intent(
    seti_id: str, gateway: StripeGateway, *, via: str, link: Link | None = None
) -> Recorded:
    """Record a SetupIntent after reading it back from Stripe.

    With `link` (browser paths) the SetupIntent must name that link; without it (webhooks)
    the link is found from the SetupIntent's own metadata, and one that names no link of
    ours raises SetupNotOurs.
    """
    setup_intent = gateway.retrieve_setup_intent(seti_id)
    named = link_named_by(setup_intent.get("metadata"))
    if named is None or (link is not None and named.id != link.id):
        raise SetupNotOurs("setup intent names no link of ours")
    try:
        return record_setup(named, setup_intent, via=via, gateway=gateway)
    except CardDeclined:
        # Attaching the card or making it the default can still be refused by the bank.
        metrics.SETUPS_FAILED.labels(via, "declined").inc()
        raise


def finish_checkout_session(session_id: str, gateway: StripeGateway, *, via: str) -> Recorded:
    """Record a completed Checkout Session (setup mode) through its SetupIntent."""
    session = gateway.retrieve_checkout_session(session_id)
    if session.get("mode") != "setup":
        raise SetupNotOurs("not a setup-mode session")
    named = link_named_by(session.get("metadata"))
    if named is None:
        raise SetupNotOurs("session names no link of ours")
    if session.get("status") != "complete":
        raise SetupNotFinished(session.get("status") or "unknown")
    seti = session.get("setup_intent")
    if isinstance(seti, dict):
        seti = seti.get("id")
    if not seti:
        raise SetupNotFinished("no_setup_intent")
    return finish_setup_intent(seti, gateway, via=via, link=named)


__all__ = [
    "OPEN_SETUP_STATUSES",
    "SetupNotFinished",
    "SetupNotOurs",
    "check_setup_intent",
    "ensure_stripe_customer",
    "finish_checkout_session",
    "finish_setup_intent",
    "open_checkout_session",
    "open_setup_intent",
]
