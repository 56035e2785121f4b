"""Turn a confirmed SetupIntent into a saved, default card: the one place a customer is `updated`.

`record_setup` is idempotent. The Stripe side effects (attach, customer default, every billable
subscription's default) are safe to repeat and keyed by our ids; the database side is one row
per SetupIntent, guarded by unique constraints, so the browser path and a webhook arriving at
the same moment produce exactly one record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cardbridge import metrics
from cardbridge.email.emails import queue_confirmation_email
from cardbridge.extensions import db
from cardbridge.links import service as link_service
from cardbridge.models import Customer, CustomerEvent, Link, SavedPaymentMethod
from cardbridge.models.types import utcnow
from cardbridge.payments import same_card
from cardbridge.stripe_gateway import StripeGateway
from cardbridge.subscriptions import planner

log = logging.getLogger(__name__)

LINK_METADATA_KEY = "cardbridge_link"


class SetupNotOurs(Exception):
    """The Stripe object does not belong to this link or customer: change nothing."""


class LinkRevoked(SetupNotOurs):
    """The link was revoked (or replaced) before this setup was recorded: record nothing."""


class SetupNotFinished(Exception):
    """The SetupIntent has not succeeded (yet); `status` says where it is."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Recorded:
    payment_method: SavedPaymentMethod
    created: bool  # False when an earlier call (browser or webhook) already recorded it


def link_named_by(metadata: dict | None) -> Link | None:
    public_id = (metadata or {}).get(LINK_METADATA_KEY)
    if not isinstance(public_id, str) or not public_id:
        return None
    return db.session.execute(
        select(Link).where(Link.public_id == public_id)
    ).scalar_one_or_none()


def check_setup_intent(setup_intent: dict, link: Link) -> None:
    """Never trust the browser's word: the SetupIntent must name this link and its customer."""
    customer = link.customer
    named = (setup_intent.get("metadata") or {}).get(LINK_METADATA_KEY)
    if named != link.public_id:
        raise SetupNotOurs("setup intent names another link")
    stripe_customer = setup_intent.get("customer")
    if isinstance(stripe_customer, dict):
        stripe_customer = stripe_customer.get("id")
    if not customer.stripe_customer_id or stripe_customer != customer.stripe_customer_id:
        raise SetupNotOurs("setup intent belongs to another customer")
    if setup_intent.get("status") != "succeeded":
        raise SetupNotFinished(setup_intent.get("status") or "unknown")


def existing_record(setup_intent_id: str) -> SavedPaymentMethod | None:
    return db.session.execute(
        select(SavedPaymentMethod).where(SavedPaymentMethod.setup_intent_id == setup_intent_id)
    ).scalar_one_or_none()


def _make_default_everywhere(gateway: StripeGateway, customer_id: str, pm_id: str) -> int:
    """The customer's default and every billable subscription's (a subscription's own default
    wins over the customer's); returns how many subscriptions changed."""
    gateway.set_customer_default(customer_id, pm_id)
    changed = 0
    for sub in gateway.billable_subscriptions(customer_id):
        current = sub.get("default_payment_method")
        if isinstance(current, dict):
            current = current.get("id")
        if current != pm_id:
            gateway.set_subscription_default(sub["id"], pm_id)
            changed += 1
    return changed


def _defaults_for(gateway: StripeGateway, customer_id: str, pm_id: str,
                  same: same_card.SameCard | None) -> tuple[int, bool]:
    """(subscriptions changed, whether the default changed): none for the same card as
    Stripe's default already, else the new card everywhere."""
    if same_card.already_default(gateway, customer_id, same):
        return 0, False
    return _make_default_everywhere(gateway, customer_id, pm_id), True


def record_setup(
    link: Link,
    setup_intent: dict,
    *,
    via: str,
    gateway: StripeGateway,
    now: datetime | None = None,
) -> Recorded:
    """Store the card, make it the default everywhere Stripe bills from, use the link."""
    if link.revoked_at is not None:
        # Revoking cancels the link's SetupIntent; one confirmed anyway (a race, or a fake
        # Stripe that confirms cancelled intents) must not make its card the default.
        raise LinkRevoked("link was revoked")
    check_setup_intent(setup_intent, link)
    seti_id = setup_intent["id"]
    found = existing_record(seti_id)
    if found is not None:
        return Recorded(found, created=False)

    customer: Customer = link.customer
    now = now or utcnow()
    pm = setup_intent.get("payment_method")
    if isinstance(pm, str):
        pm = gateway.retrieve_payment_method(pm)
    if not pm or not pm.get("id"):
        raise SetupNotFinished("no_payment_method")
    pm_id = pm["id"]
    owner = pm.get("customer")
    if isinstance(owner, dict):
        owner = owner.get("id")
    if owner is None:
        gateway.attach_payment_method(pm_id, customer.stripe_customer_id)
    elif owner != customer.stripe_customer_id:
        raise SetupNotOurs("payment method belongs to another customer")

    card = pm.get("card") or {}
    # The same card as one on file and already Stripe's default: nothing to change on Stripe.
    same = same_card.find_same_card(customer, card.get("fingerprint"), new_pm_id=pm_id, now=now)
    changed, default_changed = _defaults_for(gateway, customer.stripe_customer_id, pm_id, same)
    row = SavedPaymentMethod(
        customer_id=customer.id,
        link_id=link.id,
        stripe_payment_method_id=pm_id,
        setup_intent_id=seti_id,
        brand=card.get("brand"),
        last4=card.get("last4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
        fingerprint=card.get("fingerprint"),
        recorded_via=via,
        subscriptions_updated=changed,
        same_card_as=same.kind if same else None,
        same_card_of=same.stripe_id if same else None,
        created_at=now,
    )
    try:
        with db.session.begin_nested():
            db.session.add(row)
            db.session.flush()
    except IntegrityError:
        # Someone else (the webhook, or the browser) recorded this SetupIntent first.
        found = existing_record(seti_id)
        if found is None:
            raise
        return Recorded(found, created=False)

    link_service.consume(link, now=now)
    # The customer did what the link asked (even with the card we had): `updated`, link used.
    customer.status = "updated"
    details = {"via": via, "brand": row.brand, "last4": row.last4,
               "subscriptions_updated": changed}
    if same is not None:
        details.update(same_card=same.kind, default_changed=default_changed)
    db.session.add(
        CustomerEvent(customer_id=customer.id, link_id=link.id, kind="updated", at=now,
                      details=details)
    )
    # The confirmation email goes out after the caller's commit (queued once per saved card);
    # the same card again is nothing new to confirm.
    if same is None:
        queue_confirmation_email(customer.id, row.id)
    # Their subscriptions that waited for a card are planned now; their open invoices are paid
    # with it by the worker's minute pump (invoices_settled_at is still empty), never while a
    # request or a test holds this transaction.
    planner.plan_customer(customer, now)
    metrics.count_after_commit(db.session(), metrics.SETUPS_SUCCEEDED.labels(via))
    log.info("card recorded customer=%s link=%s via=%s subscriptions=%d same_card=%s",
             customer.legacy_id, link.public_id, via, changed, same.kind if same else "no")
    return Recorded(row, created=True)
