"""One card, known once: the same card saved twice, and cards Stripe updates by itself.

Stripe gives every card a fingerprint that follows its number. A customer who saves a card whose
fingerprint equals a card already on file that is still usable at cutover (one Stripe migrated,
or one they saved here before) has not given us a new card: `record_setup` records it as the
same card, changes no default Stripe already bills from, and sends no second confirmation.

Stripe's card account updater changes a saved card in place (new expiry, sometimes a new
number) and says so with `payment_method.automatically_updated`: what cardbridge shows follows,
and a customer who needed a card only because their migrated card expired is `ready` again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from cardbridge.customers.reporting import card_usable, cutover_date
from cardbridge.extensions import db
from cardbridge.models import Customer, CustomerEvent, MigratedCard, SavedPaymentMethod
from cardbridge.models.types import utcnow
from cardbridge.stripe_gateway import StripeGateway

log = logging.getLogger(__name__)

MIGRATED, SAVED = "migrated", "saved"
NEEDS_CARD = ("needs_update", "invited")


@dataclass(frozen=True)
class SameCard:
    kind: str  # MIGRATED or SAVED
    stripe_id: str  # that card's payment method id on Stripe


def find_same_card(customer: Customer, fingerprint: str | None, *, new_pm_id: str,
                   now: datetime | None = None) -> SameCard | None:
    """The usable card on file with this fingerprint: one saved here first (what cardbridge made
    the default), else a migrated one; None for a card we do not know."""
    if not fingerprint:
        return None
    cutover = cutover_date(now)
    saved = db.session.execute(
        select(SavedPaymentMethod)
        .where(SavedPaymentMethod.customer_id == customer.id,
               SavedPaymentMethod.fingerprint == fingerprint,
               SavedPaymentMethod.stripe_payment_method_id != new_pm_id)
        .order_by(SavedPaymentMethod.created_at, SavedPaymentMethod.id)
    ).scalars().all()
    for row in saved:
        if card_usable(row.exp_month, row.exp_year, cutover):
            return SameCard(SAVED, row.stripe_payment_method_id)
    migrated = db.session.execute(
        select(MigratedCard)
        .where(MigratedCard.customer_id == customer.id, MigratedCard.fingerprint == fingerprint)
        .order_by(MigratedCard.id)
    ).scalars().all()
    for card in migrated:
        if card_usable(card.exp_month, card.exp_year, cutover) and card.stripe_id != new_pm_id:
            return SameCard(MIGRATED, card.stripe_id)
    return None


def already_default(gateway: StripeGateway, customer_id: str, same: SameCard | None) -> bool:
    """True when Stripe already bills this customer from the same card: the customer's default
    is that card and no billable subscription pins another. Otherwise (a default set elsewhere,
    none at all as after a migration that left only `default_source`) the new card becomes the
    default as for any card: skipping it would leave Stripe billing from something else."""
    if same is None or gateway.customer_default(customer_id) != same.stripe_id:
        return False
    for sub in gateway.billable_subscriptions(customer_id):
        pinned = sub.get("default_payment_method")
        pinned = pinned.get("id") if isinstance(pinned, dict) else pinned
        if pinned not in (None, same.stripe_id):
            return False
    return True


# -- payment_method.automatically_updated --------------------------------------------------
def _expiry(month, year) -> str | None:
    return f"{month:02d}/{year}" if month and year else None


def card_auto_updated(pm_id: str, gateway: StripeGateway, now: datetime | None = None) -> str:
    """Bring every row naming this payment method in line with Stripe (re-read, so duplicate or
    out-of-order events end the same); returns the webhook outcome."""
    saved = db.session.execute(select(SavedPaymentMethod).where(
        SavedPaymentMethod.stripe_payment_method_id == pm_id)).scalars().all() if pm_id else []
    migrated = db.session.execute(select(MigratedCard).where(
        MigratedCard.stripe_id == pm_id)).scalars().all() if pm_id else []
    if not saved and not migrated:
        return "not_ours"
    pm = gateway.retrieve_payment_method(pm_id)
    owner = pm.get("customer")
    owner = owner.get("id") if isinstance(owner, dict) else owner
    card = pm.get("card") or {}
    now = now or utcnow()
    cutover = cutover_date(now)
    outcome = "unchanged"
    for customer_id in sorted({row.customer_id for row in (*saved, *migrated)}):
        customer = db.session.get(Customer, customer_id)
        if customer is None or not owner or customer.stripe_customer_id != owner:
            continue  # the card moved to another Stripe customer: not this customer's any more
        rows = [r for r in (*saved, *migrated) if r.customer_id == customer_id]
        before = {(r.last4, _expiry(r.exp_month, r.exp_year)) for r in rows}
        for row in rows:
            row.brand = card.get("brand") or row.brand
            row.last4 = card.get("last4") or row.last4
            row.exp_month = card.get("exp_month") or row.exp_month
            row.exp_year = card.get("exp_year") or row.exp_year
            row.fingerprint = card.get("fingerprint") or row.fingerprint
        after = (rows[0].last4, _expiry(rows[0].exp_month, rows[0].exp_year))
        moved = None
        if (customer.status in NEEDS_CARD
                and any(r in migrated for r in rows)
                and card_usable(rows[0].exp_month, rows[0].exp_year, cutover)):
            moved, customer.status = f"{customer.status} → ready", "ready"
        if before == {after} and moved is None:
            continue
        details = {"payment_method": pm_id, "last4": after[0], "expiry": after[1],
                   "was": ", ".join(sorted(f"{l4} {exp}" for l4, exp in before))}
        if moved:
            details["status"] = moved
        db.session.add(CustomerEvent(customer_id=customer_id, kind="card_auto_updated",
                                     at=now, details=details))
        log.info("card auto-updated customer=%s pm=%s moved=%s", customer.legacy_id, pm_id,
                 bool(moved))
        outcome = "card_updated"
    return outcome
