"""Legacy subscriptions moving to Stripe: the verified prices, the price map, the ledger (one row
per legacy subscription, from import to live), and the open invoices paid after a new card."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cardbridge.extensions import db
from cardbridge.models.customers import Customer
from cardbridge.models.types import UTCDateTime, utcnow

# SPEC's subscription states; each ledger row is in exactly one.
SUBSCRIPTION_STATES = ("planned", "waiting_for_card", "needs_review", "skipped", "scheduled",
                       "live", "held")
LEGACY_STATUSES = ("active", "trialing", "past_due", "paused", "non_renewing", "canceled")
# States whose plan may still change: the planner decides them again on every run.
OPEN_STATES = ("planned", "waiting_for_card", "needs_review", "held")


class StripePrice(db.Model):
    """A Stripe price as read from Stripe (once), with the facts the planner checks."""

    __tablename__ = "stripe_prices"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # price_…
    product: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    recurring: Mapped[bool] = mapped_column(default=True)
    interval: Mapped[str | None] = mapped_column(String(10))
    interval_count: Mapped[int | None]
    currency: Mapped[str] = mapped_column(String(3))
    unit_amount: Mapped[int | None] = mapped_column(BigInteger)
    livemode: Mapped[bool] = mapped_column(default=False)
    lookup_key: Mapped[str | None] = mapped_column(String(255), index=True)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PriceMapEntry(db.Model):
    """legacy plan (and currency) → Stripe price: from the price map file, or found on Stripe
    by lookup_key (source), or known to be missing (stripe_price_id None, source 'missing')."""

    __tablename__ = "price_map"
    __table_args__ = (UniqueConstraint("legacy_plan_id", "currency"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    legacy_plan_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(12))  # file | lookup_key | missing
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LegacySubscription(db.Model):
    """One legacy subscription: what the legacy file said, the plan, and what exists on Stripe.

    The ledger of the move: `stripe_schedule_id` / `stripe_subscription_id` are written in the
    same transaction that moves `state`, and `attempt_key` is committed before any create is
    sent, so a run killed at any point knows which rows may already exist on Stripe.
    """

    __tablename__ = "legacy_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    legacy_id: Mapped[str] = mapped_column(String(255), unique=True)
    legacy_customer_id: Mapped[str] = mapped_column(String(255), index=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    legacy_status: Mapped[str] = mapped_column(String(20))
    next_billing_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA zone when --timezone named one
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    anchor_day: Mapped[int | None]
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resume_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    currency: Mapped[str | None] = mapped_column(String(3))
    interval: Mapped[str | None] = mapped_column(String(10))
    interval_count: Mapped[int | None]
    # [{"legacy_plan_id" | "price", "quantity", "unit_amount"}] as the file gave them
    items: Mapped[list] = mapped_column(JSON, default=list)
    coupon: Mapped[str | None] = mapped_column(String(255))
    collection_method: Mapped[str | None] = mapped_column(String(30))
    days_until_due: Mapped[int | None]
    automatic_tax: Mapped[bool | None]
    default_tax_rate: Mapped[str | None] = mapped_column(String(255))
    past_due_amount: Mapped[int | None] = mapped_column(BigInteger)
    extra_metadata: Mapped[dict] = mapped_column(JSON, default=dict)

    # -- the plan
    state: Mapped[str] = mapped_column(String(20), index=True, default="needs_review")
    reason: Mapped[str | None] = mapped_column(String(300))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mode: Mapped[str | None] = mapped_column(String(12))  # schedule | subscription
    plan: Mapped[dict] = mapped_column(JSON, default=dict)  # resolved items, anchor, trial, …
    plan_revision: Mapped[int] = mapped_column(default=0)
    mrr: Mapped[int | None] = mapped_column(BigInteger)  # monthly, minor units of `currency`
    covered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # first planned with a card

    # -- on Stripe
    attempt_key: Mapped[str | None] = mapped_column(String(100))  # set before a create is sent
    # A process applying this row holds it until then (a killed one's claim runs out).
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stripe_schedule_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    live_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_invoice: Mapped[str | None] = mapped_column(String(10))  # paid | failed
    legacy_cancel_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    held_count: Mapped[int] = mapped_column(default=0)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    customer: Mapped[Customer | None] = relationship()

    def __repr__(self) -> str:
        return f"<LegacySubscription {self.legacy_id} {self.state}>"


class InvoicePayment(db.Model):
    """An open invoice cardbridge paid (or tried to) with a card a customer just saved."""

    __tablename__ = "invoice_payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    payment_method_id: Mapped[int | None] = mapped_column(
        ForeignKey("payment_methods.id", ondelete="SET NULL"))
    stripe_invoice_id: Mapped[str] = mapped_column(String(255), index=True)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    outcome: Mapped[str] = mapped_column(String(10))  # paid | declined
    message: Mapped[str | None] = mapped_column(String(300))  # Stripe's own decline text
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
