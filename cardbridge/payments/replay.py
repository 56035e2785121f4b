"""`flask stripe replay`: the events Stripe made that the webhook never brought us, read back
through the Events API and applied exactly as the webhook applies them.

Each event goes through the webhook's own steps (`webhook_events.store`, then
`webhook_events.process`), so the unique event id decides: an event the webhook (or an earlier
replay) already stored is skipped, and a replay racing a webhook that is delivering again
stores, and so applies, each event once.

Where it starts. `--since` when given; else a little before where the last completed replay
got to (its audit row, `stripe.replay`, keeps the newest event's `created`); else everything
Stripe still keeps (30 days). It does not start from the newest event the webhook stored:
once the endpoint is back, that one is newer than every event missed during the outage.
Events are read newest first (as Stripe lists them) and applied oldest first; only the types
the webhook handles are kept whole while reading.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import AuditEvent, StripeEvent
from cardbridge.payments import webhook_events
from cardbridge.staff import audit
from cardbridge.stripe_gateway import StripeGateway, StripeRejected, StripeUnavailable

ACTION = "stripe.replay"
# Stripe stamps `created` to the second and an event can show up in the list a moment after a
# newer one: each run starts this far before the last one's newest event (repeats are skipped).
OVERLAP_SECONDS = 300
PAGE = 100


@dataclass
class ReplayReport:
    since: int | None
    through: int | None = None
    seen: int = 0
    applied: int = 0
    already_processed: int = 0
    ignored: int = 0
    deferred: int = 0  # stored, but Stripe did not answer: the worker's pump retries them
    outcomes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"since": self.since, "through": self.through, "seen": self.seen,
                "applied": self.applied, "already_processed": self.already_processed,
                "ignored": self.ignored, "deferred": self.deferred,
                "outcomes": dict(self.outcomes)}


def default_since() -> int | None:
    """Where the last completed replay got to, less the overlap; None: never replayed."""
    details = db.session.execute(
        select(AuditEvent.details).where(AuditEvent.action == ACTION)
        .order_by(AuditEvent.id.desc()).limit(1)
    ).scalar_one_or_none() or {}
    through = details.get("through")
    return int(through) - OVERLAP_SECONDS if isinstance(through, int) else None


def parse_since(text: str) -> int:
    """An ISO 8601 date or time (UTC unless it says otherwise) as a Unix timestamp."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _kept(event: dict) -> dict:
    """What reading keeps of an event: whole when a handler needs it, else what `store` reads."""
    if event.get("type") in webhook_events.HANDLERS:
        return event
    obj = (event.get("data") or {}).get("object") or {}
    return {"id": event["id"], "type": event["type"], "created": event.get("created"),
            "data": {"object": {"id": obj.get("id")} if isinstance(obj, dict) else {}}}


def read_events(gateway: StripeGateway, since: int | None) -> list[dict]:
    """Every event Stripe keeps from `since` on, oldest first."""
    found: list[dict] = []
    after = None
    while True:
        page = gateway.list_events(created_gte=since, starting_after=after, limit=PAGE)
        data = page.get("data") or []
        found.extend(_kept(e) for e in data)
        if not page.get("has_more") or not data:
            break
        after = data[-1]["id"]
    found.reverse()
    return found


def apply_event(event: dict, gateway: StripeGateway) -> str:
    """The webhook's steps for one event: "applied", "already_processed", "ignored" or
    "deferred"; commits as the webhook request and its task do."""
    if webhook_events.seen(event["id"]):
        return "already_processed"
    row = webhook_events.store(event)
    if row is None:  # the webhook stored it between our check and our insert
        db.session.rollback()
        return "already_processed"
    db.session.commit()
    if row.processed_at is not None:
        return "ignored"
    try:
        outcome = webhook_events.process(row.id, gateway)
        db.session.commit()
    except (StripeUnavailable, StripeRejected):
        db.session.rollback()
        return "deferred"
    return "applied" if outcome is not None else "already_processed"


def replay(gateway: StripeGateway, since: int | None = None, *,
           progress: Callable[[int], None] | None = None,
           started: Callable[[int], None] | None = None) -> ReplayReport:
    """Read and apply; the audit row (the next run's start) is written only when every event
    was read and offered, so a run cut short starts from the same place again."""
    if since is None:
        since = default_since()
    report = ReplayReport(since=since)
    events = read_events(gateway, since)
    if started:
        started(len(events))
    for event in events:
        result = apply_event(event, gateway)
        report.seen += 1
        setattr(report, result, getattr(report, result) + 1)
        if result == "applied":
            report.outcomes[f"{event['type']}: {_outcome(event['id'])}"] += 1
        created = event.get("created")
        if isinstance(created, int) and (report.through is None or created > report.through):
            report.through = created
        if progress:
            progress(1)
    if report.through is None and since is not None:
        report.through = since + OVERLAP_SECONDS  # nothing new: start here again next time
    audit.record("cli", ACTION, details=report.as_dict())
    db.session.commit()
    return report


def _outcome(event_id: str) -> str:
    row = db.session.execute(
        select(StripeEvent.outcome).where(StripeEvent.event_id == event_id)
    ).scalar_one_or_none()
    return row or "unknown"
