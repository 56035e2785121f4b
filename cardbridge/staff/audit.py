"""The staff audit trail: one function writes a row, one query reads them back filtered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select

from cardbridge.extensions import db
from cardbridge.models import AuditEvent
from cardbridge.models.types import utcnow

# What staff, tools and operators do, named once so filters and tests agree.
ACTIONS = (
    "staff.login",
    "staff.login_failed",
    "staff.logout",
    "staff.session_expired",
    "staff.2fa_enrolled",
    "staff.2fa_reset",
    "staff.password_changed",
    "staff.created",
    "staff.disabled",
    "staff.enabled",
    "staff.role_changed",
    "staff.sessions_ended",
    "link.generated",
    "link.sent",
    "link.revoked",
    "import.roster",
    "import.mapping",
    "export.csv",
    "api_token.created",
    "api_token.revoked",
    "campaign.wave",
    "email.bounced",
    "import.prices",
    "import.subscriptions",
    "subscription.plan",
    "subscription.apply",
    "subscription.plan_queued",
    "subscription.apply_queued",
    "subscription.legacy_cancel_confirmed",
    "subscription.held",
    "stripe.replay",
    "purge",
    "drift.scan",
    "drift.fixed",
    "drift.accepted",
)


def _clean(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, and no database takes a lone surrogate (JSON can carry
    # one): a typed-in value must never make the audit write fail.
    if not text:
        return text
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def record(
    actor: str,
    action: str,
    target: str | None = None,
    *,
    ip: str | None = None,
    reason: str | None = None,
    details: dict | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add one audit row to the session (the caller commits with the change it describes)."""
    actor, target, reason = _clean(actor) or "unknown", _clean(target), _clean(reason)
    event = AuditEvent(
        actor=actor[:255],
        action=action[:60],
        target=target[:255] if target else None,
        ip=ip[:64] if ip else None,
        reason=(reason.strip()[:500] or None) if reason else None,
        details=details or {},
        at=at or utcnow(),
    )
    db.session.add(event)
    return event


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    action: str = ""
    target: str = ""
    since: datetime | None = None
    until: datetime | None = None


def query(f: AuditFilter) -> Select:
    """Newest first; exact matches on actor and target, prefix on action ("link." = all)."""
    stmt = select(AuditEvent)
    f = AuditFilter(actor=_clean(f.actor) or "", action=_clean(f.action) or "",
                    target=_clean(f.target) or "", since=f.since, until=f.until)
    if f.actor:
        stmt = stmt.where(AuditEvent.actor == f.actor.strip())
    if f.action:
        stmt = stmt.where(AuditEvent.action.startswith(f.action.strip(), autoescape=True))
    if f.target:
        stmt = stmt.where(AuditEvent.target == f.target.strip())
    if f.since:
        stmt = stmt.where(AuditEvent.at >= f.since)
    if f.until:
        stmt = stmt.where(AuditEvent.at < f.until)
    return stmt.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())


def page(f: AuditFilter, page_no: int, per_page: int = 50) -> tuple[list[AuditEvent], bool]:
    """One page of events and whether there is another after it."""
    rows = db.session.execute(
        query(f).offset((page_no - 1) * per_page).limit(per_page + 1)
    ).scalars().all()
    return list(rows[:per_page]), len(rows) > per_page
