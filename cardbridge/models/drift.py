"""Drift between cardbridge and Stripe: each run of `flask stripe reconcile` (a scan, resumable
from the last customer it finished) and each difference it found (a finding, one row per
customer, kind and Stripe object, reopened when the same difference comes back)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cardbridge.extensions import db
from cardbridge.models.customers import Customer
from cardbridge.models.types import UTCDateTime, utcnow

# open: still different on Stripe · fixed: cardbridge re-applied its own value · accepted: a
# newer card set on Stripe wins, recorded as such · resolved: the next check found no difference
FINDING_STATUSES = ("open", "fixed", "accepted", "resolved")


class DriftScan(db.Model):
    __tablename__ = "drift_scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(255))
    fix: Mapped[bool] = mapped_column(default=False)  # the last invocation that worked on it
    # Customers are checked in id order; a run that stops resumes after this one.
    last_customer_id: Mapped[int] = mapped_column(default=0)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class DriftFinding(db.Model):
    __tablename__ = "drift_findings"
    __table_args__ = (UniqueConstraint("customer_id", "kind", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    # The Stripe object (subscription id) or ledger row (legacy subscription id); "" when the
    # difference is about the customer itself.
    object_id: Mapped[str] = mapped_column(String(255), default="")
    ours: Mapped[str | None] = mapped_column(String(255))  # what cardbridge set or believes
    theirs: Mapped[str | None] = mapped_column(String(255))  # what Stripe holds
    status: Mapped[str] = mapped_column(String(10), index=True, default="open")
    scan_id: Mapped[int | None] = mapped_column(
        ForeignKey("drift_scans.id", ondelete="SET NULL"))  # the scan that saw it last
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    customer: Mapped[Customer] = relationship()
