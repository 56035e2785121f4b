"""Begin charging the ones who were waiting: after a card is saved, every open invoice of the
customer's billable subscriptions is paid with it; paid and declined both reach the timeline.
Stripe's answers come from a recorded-response server, which pins the exact calls made; the
fake Stripe's own invoices.pay with a card is pinned in tests/fakes/test_fake_billing.py."""

from __future__ import annotations

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import CustomerEvent, InvoicePayment, SavedPaymentMethod
from cardbridge.models.types import utcnow
from cardbridge.stripe_gateway import StripeGateway
from cardbridge.subscriptions import invoices


def test_open_invoices_are_paid_with_the_new_card_and_a_decline_is_recorded(
        app, make_customer, fault):
    customer = make_customer(stripe_customer_id="cus_w", status="updated")
    with app.app_context():
        saved = SavedPaymentMethod(customer_id=customer.id, stripe_payment_method_id="pm_new",
                                   setup_intent_id="seti_new", recorded_via="browser",
                                   created_at=utcnow())
        db.session.add(saved)
        db.session.commit()
        fault.then(200, {"object": "list", "has_more": False, "data": [
            {"id": "sub_1", "object": "subscription", "status": "past_due"},
            {"id": "sub_old", "object": "subscription", "status": "canceled"}]})
        fault.then(200, {"object": "list", "has_more": False, "data": [
            {"id": "in_1", "object": "invoice", "subscription": "sub_1", "status": "open",
             "amount_remaining": 1500, "currency": "usd"},
            {"id": "in_2", "object": "invoice", "subscription": "sub_1", "status": "open",
             "amount_remaining": 900, "currency": "usd"},
            {"id": "in_3", "object": "invoice", "subscription": "sub_old", "status": "open",
             "amount_remaining": 100, "currency": "usd"}]})
        fault.then(200, {"id": "in_1", "object": "invoice", "status": "paid"})
        fault.then(402, {"error": {"type": "card_error", "code": "card_declined",
                                   "decline_code": "insufficient_funds",
                                   "message": "Your card has insufficient funds."}})
        gateway = StripeGateway.from_config({**app.config, "STRIPE_API_BASE": fault.url})
        invoices.settle(saved.id, gateway)
        db.session.commit()
        assert invoices.settle(saved.id, gateway) == []  # once per card
        outcomes = {p.stripe_invoice_id: (p.outcome, p.message) for p in db.session.execute(
            select(InvoicePayment)).scalars()}
        kinds = db.session.execute(select(CustomerEvent.kind).where(
            CustomerEvent.customer_id == customer.id)).scalars().all()
    assert outcomes == {"in_1": ("paid", None),
                        "in_2": ("declined", "Your card has insufficient funds.")}
    assert sorted(kinds) == ["invoice_declined", "invoice_paid"]
    paid = [r for r in fault.requests if r["path"].endswith("/pay")]
    assert [r["path"] for r in paid] == ["/v1/invoices/in_1/pay", "/v1/invoices/in_2/pay"]
    assert len(fault.requests) == 4  # the cancelled subscription's invoice is left alone
