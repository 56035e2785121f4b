"""Invoices for the fake's price subscriptions, built from localstripe's own Invoice and
InvoiceItem (so localstripe's list, retrieve, void and webhooks treat them as any other), and
the two invoice routes the app uses that localstripe lacks:

- `POST /v1/invoices/{id}/pay` with `payment_method` (it must be attached to the invoice's
  customer): pays with that card; a card that declines (4000000000000341 attaches but fails
  every charge) answers Stripe's 402 `card_error` with `decline_code` and leaves the invoice
  open; a card that needs 3-D Secure answers `authentication_required`;
- `GET /v1/invoices?status=open`: localstripe's list, filtered by status.
"""

from __future__ import annotations

from aiohttp import web
from localstripe import resources, server, webhooks
from localstripe.errors import UserError

from devtools.fake_billing.clocks import now_for
from devtools.fake_billing.store import PRICES
from devtools.fake_billing.strict import invalid, page, request_data

# localstripe's cards that attach but fail when charged → the decline code Stripe gives.
DECLINE_CODES = {"4000008260003178": "insufficient_funds"}
DECLINE_MESSAGES = {"insufficient_funds": "Your card has insufficient funds."}
PAYABLE = ("draft", "open")


def bill(sub, lines: list[tuple[int, str, int, int]], extras: list[dict], *,
         creating: bool) -> resources.Invoice:
    """Invoice `lines` (amount, description, period start, end) and one-off `extras` (Stripe's
    add_invoice_items) for `sub`, finalize it and collect it as its collection method says."""
    now = now_for(sub.customer)
    items = [resources.InvoiceItem(amount=amount, currency=sub.currency, customer=sub.customer,
                                   subscription=sub.id, period_start=start, period_end=end,
                                   description=text)
             for amount, text, start, end in lines]
    for extra in extras:
        price = extra.get("price_data") or PRICES[extra.get("price")]
        items.append(resources.InvoiceItem(
            amount=int(price["unit_amount"]) * int(extra.get("quantity", 1)),
            currency=price["currency"], customer=sub.customer, subscription=sub.id,
            description="One-off item"))
    invoice = resources.Invoice(
        customer=sub.customer, subscription=sub.id, items=items, date=now,
        default_tax_rates=[t.id for t in sub.default_tax_rates] or None)
    invoice.billing_reason = "subscription_create" if creating else "subscription_cycle"
    invoice.collection_method = sub.collection_method
    invoice.due_date = (now + sub.days_until_due * 86400
                        if sub.collection_method == "send_invoice" else None)
    invoice._finalize()
    if invoice.status == "paid":  # nothing to pay: a trial's 0 invoice
        invoice._on_payment_success()
    elif sub.collection_method == "send_invoice":
        sub.status = "active" if sub.status == "incomplete" else sub.status
    else:
        customer = resources.Customer._api_retrieve(sub.customer)
        card = sub.default_payment_method or getattr(
            customer._get_default_payment_method_or_source(), "id", None)
        if card:
            _charge(invoice, card)
        if invoice.status != "paid":
            sub.status = "incomplete" if creating and not sub.schedule else "past_due"
    return invoice


def _charge(invoice: resources.Invoice, pm_id: str) -> resources.PaymentIntent:
    """One attempt to collect the invoice with this card, as localstripe charges."""
    intent = resources.PaymentIntent(amount=invoice.total, currency=invoice.currency,
                                     customer=invoice.customer, payment_method=pm_id)
    invoice.payment_intent, intent.invoice = intent.id, invoice.id
    invoice.attempted = True
    intent._confirm(on_failure_now=lambda: None)
    return intent


async def pay_invoice(request: web.Request) -> web.Response:
    data = await request_data(request)  # checked against InvoicePayParams by the middleware
    for key in ("forgive", "mandate", "paid_out_of_band", "source"):
        if key in data:
            raise invalid(key, "parameter_unknown", f"The fake does not implement {key}.")
    invoice = resources.Invoice._api_retrieve(request.match_info["id"])
    if invoice.status == "paid":
        raise invalid("", "invoice_already_paid", "Invoice is already paid")
    if invoice.status not in PAYABLE:
        raise invalid("", "invoice_not_editable",
                      f"You can only pay an invoice that is open; this one is {invoice.status}.")
    if invoice.status == "draft":
        invoice._finalize()
    if invoice.total <= 0:
        invoice._on_payment_success()
        return server.json_response(invoice._export())
    customer = resources.Customer._api_retrieve(invoice.customer)
    pm_id = data.get("payment_method")
    if pm_id:
        card = resources.PaymentMethod._api_retrieve(pm_id)
        if card.customer != invoice.customer:
            raise invalid("payment_method", "payment_method_not_attached",
                          f"The PaymentMethod {pm_id} is not attached to the invoice's "
                          f"customer {invoice.customer}.")
    else:
        card = customer._get_default_payment_method_or_source()
        if card is None:
            raise invalid("", "invoice_no_payment_method",
                          "This customer has no attached payment source or default payment "
                          "method.")
    invoice.attempt_count = (invoice.attempt_count or 0) + 1
    intent = _charge(invoice, card.id)
    if invoice.status == "paid":
        return server.json_response(invoice._export())
    webhooks.schedule_webhook(resources.Event("invoice.payment_failed", invoice))
    raise _card_error(card, intent)


def _card_error(card, intent) -> UserError:
    if intent.status == "requires_action":
        code = decline = "authentication_required"
        message = "Your card was declined. This transaction requires authentication."
    else:
        code = "card_declined"
        decline = DECLINE_CODES.get(getattr(card, "_card_number", ""), "generic_decline")
        message = DECLINE_MESSAGES.get(decline, "Your card was declined.")
    error = UserError(402, message, {
        "code": code, "decline_code": decline,
        "charge": intent.latest_charge.id if intent.latest_charge else None,
        "payment_intent": {"id": intent.id, "object": "payment_intent",
                           "status": intent.status},
        "payment_method": {"id": card.id, "object": "payment_method"}})
    error.body["error"]["type"] = "card_error"
    return error


async def list_invoices(request: web.Request) -> web.Response:
    data = await request_data(request)  # checked against InvoiceListParams by the middleware
    found = resources.Invoice._api_list_all(
        None, customer=data.get("customer"), subscription=data.get("subscription"))._list
    status = data.get("status")
    exported = [i._export() for i in found if status in (None, i.status)]
    return page(exported, data)
