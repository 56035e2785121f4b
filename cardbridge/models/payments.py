"""Payment methods customers saved through cardbridge (one row per confirmed SetupIntent)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cardbridge.extensions import db
from cardbridge.models.customers import Customer
from cardbridge.models.types import UTCDateTime, utcnow


class SavedPaymentMethod(db.Model):
    __tablename__ = "payment_methods"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    link_id: Mapped[int | None] = mapped_column(ForeignKey("links.id", ondelete="SET NULL"))
    # Both unique: the browser path and the webhook racing on one SetupIntent make one row.
    stripe_payment_method_id: Mapped[str] = mapped_column(String(255), unique=True)
    setup_intent_id: Mapped[str] = mapped_column(String(255), unique=True)
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    recorded_via: Mapped[str] = mapped_column(String(20))  # browser | webhook | return | cli
    subscriptions_updated: Mapped[int] = mapped_column(default=0)
    # The same card (equal fingerprint) was already on file: "migrated" (a usable card Stripe
    # migrated) or "saved" (saved here before); None for a new card. `same_card_of` is that
    # card's Stripe id. Recording it changed no default and sent no confirmation email.
    same_card_as: Mapped[str | None] = mapped_column(String(10))
    same_card_of: Mapped[str | None] = mapped_column(String(255))
    # When the open invoices of the customer's subscriptions were paid with this card (or
    # found none): None means the follow-up is still to do (the worker's pump finds it).
    invoices_settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    customer: Mapped[Customer] = relationship()
