"""The email outbox: one row per email, workers' claims on them, waves, bounces, throttles."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cardbridge.extensions import db
from cardbridge.models.customers import Customer
from cardbridge.models.links import Link
from cardbridge.models.types import UTCDateTime, utcnow

EMAIL_KINDS = ("link", "reminder", "fresh_link", "confirmation")
# queued → sending → sent | failed; `cancelled` when the email stopped being needed before it went
# (the customer updated their card, the address bounced, the cutover passed).
EMAIL_STATUSES = ("queued", "sending", "sent", "failed", "cancelled")
# Campaign mail (first link emails of a wave, reminders) shares CAMPAIGN_RATE_PER_MINUTE;
# the rest is a customer or a staff member waiting for it and goes first, unthrottled.
THROTTLED_KINDS = ("link", "reminder")


class Wave(db.Model):
    """One launch of first link emails to a slice of a status (CLI or console)."""

    __tablename__ = "waves"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by: Mapped[str] = mapped_column(String(255))
    status_filter: Mapped[str] = mapped_column(String(20))
    limit_count: Mapped[int | None]
    percent: Mapped[int | None]
    queued: Mapped[int] = mapped_column(default=0)
    rate_per_minute: Mapped[int | None]  # None: CAMPAIGN_RATE_PER_MINUTE alone caps it
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Email(db.Model):
    """One email to one customer; the row is the truth, the queue only says "look at row N"."""

    __tablename__ = "emails"
    __table_args__ = (
        Index("ix_emails_due", "status", "next_attempt_at"),
        Index("ix_emails_customer_kind", "customer_id", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    link_id: Mapped[int | None] = mapped_column(ForeignKey("links.id", ondelete="SET NULL"))
    wave_id: Mapped[int | None] = mapped_column(
        ForeignKey("waves.id", ondelete="SET NULL"), index=True
    )
    payment_method_id: Mapped[int | None] = mapped_column(
        ForeignKey("payment_methods.id", ondelete="SET NULL")
    )
    # Reminders point at the first link email of their series (the one the cadence counts from).
    series_id: Mapped[int | None] = mapped_column(
        ForeignKey("emails.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    step: Mapped[str | None] = mapped_column(String(20))  # reminder step: day3, …, cutover
    to_address: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(12), default="queued")
    throttled: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    message_id: Mapped[str | None] = mapped_column(String(255))  # our RFC 5322 Message-ID
    provider_message_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # Two planners or two clicks cannot queue the same email twice (reminder step, confirmation).
    dedupe_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    claim_token: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    customer: Mapped[Customer] = relationship()
    link: Mapped[Link | None] = relationship()

    def __repr__(self) -> str:
        return f"<Email {self.id} {self.kind} {self.status}>"


class EmailClaim(db.Model):
    """A worker's hold on a batch of `sending` emails (rows carry its token).

    Of a dead claim's rows, only those with id ≤ `in_flight_through` can have reached the SMTP
    server (delivery/claims.py explains why).
    """

    __tablename__ = "email_claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(32), unique=True)
    worker: Mapped[str] = mapped_column(String(255))  # host:pid, to spot a dead local worker
    # The highest email id that may be on the wire before the worker's next commit.
    in_flight_through: Mapped[int | None]
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Bounce(db.Model):
    """An address that bounced: nothing more is sent to it; its customers need a human."""

    __tablename__ = "email_bounces"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased
    reason: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(20))  # cli | webhook | smtp
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SendBucket(db.Model):
    """Shared state every worker sees: the campaign throttle and the wave-launch lock.

    `next_free_at` (epoch seconds) is the generic cell rate algorithm's theoretical arrival
    time: the earliest moment the next throttled email may go.
    """

    __tablename__ = "send_buckets"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    next_free_at: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = ["EMAIL_KINDS", "EMAIL_STATUSES", "THROTTLED_KINDS", "Bounce", "Email", "EmailClaim",
           "SendBucket", "Wave"]
