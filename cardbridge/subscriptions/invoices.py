"""Begin charging the ones who were waiting: once a customer saves a card, every open invoice
of their billable subscriptions is paid with it (`invoices.pay`), because Stripe does not retry
an invoice that had no payment method, and waits for a new card after a hard decline.

Runs on the worker, found by its minute pump (a card whose `invoices_settled_at` is empty);
each outcome, paid or declined with Stripe's own message, is an
InvoicePayment row and an event on the customer's timeline.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import CustomerEvent, InvoicePayment, SavedPaymentMethod
from cardbridge.models.types import utcnow
from cardbridge.stripe_gateway import CardDeclined, NotFound

log = logging.getLogger(__name__)

def unsettled_ids(saved_before: datetime, limit: int = 500) -> list[int]:
    return list(db.session.execute(
        select(SavedPaymentMethod.id)
        .where(SavedPaymentMethod.invoices_settled_at.is_(None),
               SavedPaymentMethod.created_at < saved_before)
        .order_by(SavedPaymentMethod.id).limit(limit)).scalars())


def settle(saved_id: int, gateway, now: datetime | None = None) -> list[InvoicePayment]:
    """Pay the open invoices of the customer's billable subscriptions with this card, once."""
    now = now or utcnow()
    saved = db.session.get(SavedPaymentMethod, saved_id, with_for_update=True)
    if saved is None or saved.invoices_settled_at is not None:
        return []
    customer = saved.customer
    billable = {s["id"] for s in gateway.billable_subscriptions(customer.stripe_customer_id)}
    paid: list[InvoicePayment] = []
    for invoice in gateway.open_invoices(customer.stripe_customer_id):
        if _subscription_of(invoice) not in billable:
            continue
        paid.append(_pay(invoice, saved, gateway, now))
    saved.invoices_settled_at = now
    return paid


def _subscription_of(invoice: dict) -> str | None:
    sub = invoice.get("subscription") or (
        (invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    return sub.get("id") if isinstance(sub, dict) else sub


def _pay(invoice: dict, saved: SavedPaymentMethod, gateway, now: datetime) -> InvoicePayment:
    amount, currency = invoice.get("amount_remaining", invoice.get("amount_due")), \
        invoice.get("currency")
    try:
        gateway.pay_invoice(invoice["id"], saved.stripe_payment_method_id)
        outcome, message = "paid", None
    except CardDeclined as exc:
        outcome, message = "declined", exc.message[:300]
    except NotFound:
        outcome, message = "declined", "the invoice is no longer open"
    row = InvoicePayment(customer_id=saved.customer_id, payment_method_id=saved.id,
                         stripe_invoice_id=invoice["id"], amount=amount, currency=currency,
                         outcome=outcome, message=message, at=now)
    db.session.add(row)
    db.session.add(CustomerEvent(
        customer_id=saved.customer_id, kind=f"invoice_{outcome}", at=now,
        details={"invoice": invoice["id"], "amount": amount, "currency": currency,
                 "message": message}))
    log.info("open invoice %s of customer %s: %s", invoice["id"], saved.customer_id, outcome)
    return row

