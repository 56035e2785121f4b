"""The shared send budget every worker draws on, and the lock that serialises wave planning.

Campaign email (waves, reminders) leaves at most CAMPAIGN_RATE_PER_MINUTE across all workers
(a wave's own rate can only be slower). The budget is the generic cell rate algorithm over one
database row: `next_free_at` is the earliest moment the next campaign email may leave, and a
worker takes a slot with a compare-and-swap on it just before sending. Any engine, any number
of machines, no Redis needed.
"""

from __future__ import annotations

import time as clock

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from cardbridge.extensions import db
from cardbridge.models import Email, SendBucket, Wave
from cardbridge.models.types import utcnow

CAMPAIGN_BUCKET, LAUNCH_LOCK = "campaign", "wave-launch"


def _bucket(name: str) -> SendBucket:
    row = db.session.get(SendBucket, name, populate_existing=True)
    if row is None:
        try:
            with db.session.begin_nested():
                db.session.add(SendBucket(name=name, next_free_at=0.0, updated_at=utcnow()))
        except IntegrityError:
            pass  # another worker created it first
        row = db.session.get(SendBucket, name, populate_existing=True)
    return row


def lock(name: str = LAUNCH_LOCK) -> None:
    """Serialise wave launches and reminder planning (row lock / SQLite write lock to commit)."""
    _bucket(name)
    db.session.execute(update(SendBucket).where(SendBucket.name == name)
                       .values(updated_at=utcnow()))


def _interval(wave_rate: int | None) -> float:
    rates = [r for r in (current_app.config.get("CAMPAIGN_RATE_PER_MINUTE") or 0, wave_rate or 0)
             if r > 0]
    return 60.0 / min(rates) if rates else 0.0


def paced(wave_rates) -> bool:
    """Whether any rate applies to emails of these waves' rates (None: no wave rate)."""
    return any(_interval(rate) for rate in [*wave_rates, None])


def throttle_backlog() -> float:
    """Seconds until the next throttled email may leave (0 when it may leave now)."""
    row = db.session.get(SendBucket, CAMPAIGN_BUCKET, populate_existing=True)
    return max(0.0, (row.next_free_at if row else 0.0) - clock.time())


def queue_wait(first_id: int | None) -> float:
    """Roughly how long until throttled emails from `first_id` on get their turn: the
    throttled emails queued ahead of them, at the global rate (0 when unknown)."""
    rate = current_app.config.get("CAMPAIGN_RATE_PER_MINUTE") or 0
    if not rate or first_id is None:
        return 0.0
    ahead = db.session.execute(
        select(func.count()).where(Email.status == "queued", Email.throttled.is_(True),
                                   Email.id < first_id)
    ).scalar_one()
    return ahead * 60.0 / rate


def claim_size(batch: int) -> int:
    """How many throttled emails one worker should hold at a time: what it can send within
    MAIL_THROTTLE_HORIZON_SECONDS at the configured rate (the rest stay for other workers)."""
    rate = current_app.config.get("CAMPAIGN_RATE_PER_MINUTE") or 0
    if not rate:
        return batch
    horizon = float(current_app.config.get("MAIL_THROTTLE_HORIZON_SECONDS", 10))
    return max(1, min(batch, int(horizon * rate / 60)))


def reserve_send_slot(wave_rate: int | None) -> float | None:
    """The moment (epoch seconds) this throttled email may leave, taken from the shared
    budget; None when no rate applies. Call it just before sending: slots are never reused."""
    interval = _interval(wave_rate)
    if not interval:
        return None
    for _ in range(50):  # compare-and-swap: another worker may take the slot we saw
        seen = _bucket(CAMPAIGN_BUCKET).next_free_at
        slot = max(seen, clock.time())
        moved = db.session.execute(
            update(SendBucket)
            .where(SendBucket.name == CAMPAIGN_BUCKET, SendBucket.next_free_at == seen)
            .values(next_free_at=slot + interval, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        if moved:
            return slot
    raise RuntimeError("could not take a send slot: the throttle row is too contended")


def wave_rates(wave_ids: set[int]) -> dict[int, int | None]:
    if not wave_ids:
        return {}
    return dict(db.session.execute(
        select(Wave.id, Wave.rate_per_minute).where(Wave.id.in_(wave_ids))
    ).all())
