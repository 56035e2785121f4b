"""Customer links: the server-side row behind every signed token (single use, revocable)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, and_
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cardbridge.extensions import db
from cardbridge.models.customers import Customer
from cardbridge.models.types import UTCDateTime, utcnow


class Link(db.Model):
    __tablename__ = "links"
    __table_args__ = (Index("ix_links_customer_live", "customer_id", "used_at", "revoked_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The only thing the signed token carries: random, meaningless, unguessable.
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(String(255), default="system")
    channel: Mapped[str] = mapped_column(String(20), default="generated")  # generated | email
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The open SetupIntent / Checkout Session of this link, reused instead of making a new one.
    setup_intent_id: Mapped[str | None] = mapped_column(String(255))
    checkout_session_id: Mapped[str | None] = mapped_column(String(255))
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    customer: Mapped[Customer] = relationship()

    def state(self, now: datetime) -> str:
        """live | used | revoked | expired — the first that applies, in that order of blame."""
        return link_state(self, now)


# "Live" is defined here once, twice over: `link_state` in Python, `is_live` in SQL (a test
# holds them equal). Every query for live links uses `is_live`.
def is_live(now: datetime):
    """SQL: the link is unused, unrevoked and unexpired (link_state(...) == "live")."""
    return and_(Link.used_at.is_(None), Link.revoked_at.is_(None), Link.expires_at > now)


def link_state(link, now: datetime) -> str:
    """Link.state for anything with a link's used_at, revoked_at and expires_at."""
    if link.used_at is not None:
        return "used"
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at <= now:
        return "expired"
    return "live"
