"""The customer aggregate: a legacy customer, its Stripe ids and the cards Stripe migrated."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cardbridge.extensions import db
from cardbridge.models.types import UTCDateTime, utcnow

STATUSES = ("ready", "needs_update", "invited", "updated")


def known_card(migrated, roster) -> dict | None:
    """The newest of `migrated` (in id order; anything with brand, last4, exp_month and
    exp_year), else the card of `roster` (anything with a customer's card_* fields)."""
    cards = sorted(migrated, key=lambda c: (c.exp_year or 0, c.exp_month or 0), reverse=True)
    if cards:
        c = cards[0]
        return {"brand": c.brand, "last4": c.last4, "exp_month": c.exp_month,
                "exp_year": c.exp_year}
    if roster.card_last4:
        return {"brand": roster.card_brand, "last4": roster.card_last4,
                "exp_month": roster.card_exp_month, "exp_year": roster.card_exp_year}
    return None


class Customer(db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    legacy_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)  # stored lower-cased
    name: Mapped[str | None] = mapped_column(String(255))
    locale: Mapped[str | None] = mapped_column(String(16))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="needs_update", index=True)
    # The card the legacy roster says is on file (shown on the page; not proof of a usable card).
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_exp_month: Mapped[int | None]
    card_exp_year: Mapped[int | None]
    # When a Stripe mapping file first named this customer (None: "not in mapping").
    mapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When `flask purge` removed this customer's personal data (name, email, card details):
    # the row stays for its counts, status and ids; links to it answer as expired.
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    migrated_cards: Mapped[list[MigratedCard]] = relationship(
        back_populates="customer", order_by="MigratedCard.id"
    )

    def known_card(self) -> dict | None:
        """The card we can name to the customer: the newest migrated card, else the roster's."""
        return known_card(self.migrated_cards, self)

    def __repr__(self) -> str:
        return f"<Customer {self.legacy_id} {self.status}>"


class MigratedCard(db.Model):
    """A card Stripe's Data Migrations team imported (one row of the mapping file)."""

    __tablename__ = "migrated_cards"
    __table_args__ = (UniqueConstraint("customer_id", "old_card_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    old_card_id: Mapped[str] = mapped_column(String(255))
    stripe_id: Mapped[str] = mapped_column(String(255), index=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    brand: Mapped[str | None] = mapped_column(String(32))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]

    customer: Mapped[Customer] = relationship(back_populates="migrated_cards")

