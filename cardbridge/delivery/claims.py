"""Claiming outbox rows for one worker, and releasing the rows of workers that died.

The guarantee is *at most once* per email, and here is the whole argument:

1. A worker claims a batch in one committed UPDATE (`queued` → `sending`, with its claim
   token); the UPDATE only matches `queued` rows, so two workers never hold the same row.
   The claim row also records `in_flight_through`: the highest id that may go on the wire
   before the worker's next commit (the first MAIL_COMMIT_EVERY emails; default 1).
2. The worker sends in id order over one connection. After each group it commits the group's
   outcomes (`sent`, back to `queued`, `failed`) and moves `in_flight_through` on to the next
   group, all in one commit, before the next group's first email goes (delivery/outbox.py).
3. So when a worker dies, only its `sending` rows with id ≤ `in_flight_through` can have
   reached the SMTP server. The reaper marks those `failed` ("may have been delivered") and
   never resends them; every other row of the dead claim goes back to `queued`. With the
   default MAIL_COMMIT_EVERY of 1 that is at most one email: never twice, give up one.

Every commit is an ordinary, durable commit of the database (SQLite or PostgreSQL).

A claim is dead when its worker ran on this host and that process is gone, or when its
heartbeat (bumped at every commit) is older than MAIL_CLAIM_LEASE_SECONDS. A slow worker
that lost its claim notices at its next commit (its conditional UPDATE matches nothing) and
stops; it never sends past the `in_flight_through` it committed, so nothing goes twice.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, delete, insert, or_, select, update

from cardbridge import metrics
from cardbridge.campaigns import service as campaigns
from cardbridge.campaigns import throttle
from cardbridge.email.emails import CustomerRow, LinkRow, OutboxEmail
from cardbridge.email.pending import TASK_CHUNK, deliver_after_commit
from cardbridge.extensions import db
from cardbridge.models import Customer, Email, EmailClaim, Link, MigratedCard
from cardbridge.models.types import utcnow

log = logging.getLogger(__name__)

_EMAILS, _CLAIMS, _CUSTOMERS = Email.__table__, EmailClaim.__table__, Customer.__table__
_LINKS, _CARDS = Link.__table__, MigratedCard.__table__

MAYBE_DELIVERED = ("worker stopped while handing this email to the SMTP server; it may have "
                   "been delivered, so it is not sent again automatically")


@dataclass
class Report:
    sent: int = 0
    failed: int = 0
    cancelled: int = 0
    retrying: int = 0
    stopped: bool = False  # the connection failed or the claim was lost: try again later
    retry_at: datetime | None = None  # when the ids still queued are next due
    throttled_until: datetime | None = None
    sent_ids: list[int] = field(default_factory=list)
    claimed: int = 0  # rows taken by this delivery's claims (cancelled ones included)
    drained: bool = False  # the last claim took fewer rows than it could: none left due


def _cfg(name: str, default):
    return current_app.config.get(name, default)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def backoff(attempts: int) -> timedelta:
    base = float(_cfg("MAIL_RETRY_BASE_SECONDS", 60))
    cap = float(_cfg("MAIL_RETRY_MAX_SECONDS", 3600))
    seconds = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(1.0, 1.1))  # spread a herd of retries


# -- recovering from dead workers ----------------------------------------------------------------
def _pid_gone(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap_dead_claims(now: datetime | None = None) -> list[int]:
    """Release the rows of dead claims (see the module docstring); returns the requeued ids."""
    now = now or utcnow()
    lease = timedelta(seconds=float(_cfg("MAIL_CLAIM_LEASE_SECONDS", 120)))
    host_prefix = socket.gethostname() + ":"
    candidates = db.session.execute(
        select(EmailClaim).where(
            or_(EmailClaim.heartbeat_at < now - lease, EmailClaim.worker.startswith(host_prefix))
        )
    ).scalars().all()
    requeued: list[int] = []
    for claim in candidates:
        if claim.heartbeat_at >= now - lease and not _pid_gone(claim.worker):
            continue
        token, worker, through = claim.token, claim.worker, claim.in_flight_through
        # Deleting first makes two reapers (or a reaper and the owner) take turns on one claim.
        if not db.session.execute(delete(EmailClaim).where(EmailClaim.token == token)).rowcount:
            continue
        requeued += _release(token, now, worker, through)
    # Rows whose claim row vanished (should not happen; a hand-edited database) go the same way.
    orphans = db.session.execute(
        select(Email.claim_token).where(
            Email.status == "sending", Email.updated_at < now - lease,
            ~select(EmailClaim.id).where(EmailClaim.token == Email.claim_token).exists(),
        ).distinct()
    ).scalars().all()
    for token in orphans:
        requeued += _release(token, now, "unknown", None)
    if requeued:
        deliver_after_commit(db.session(), requeued)
    return requeued


def _release(token: str | None, now: datetime, worker: str, through: int | None) -> list[int]:
    """Give up the rows that may be on the wire (id ≤ `through`; the lowest if unknown) and
    put the others back in the queue; returns the requeued ids."""
    ids = db.session.execute(
        select(Email.id).where(Email.claim_token == token, Email.status == "sending")
        .order_by(Email.id)
    ).scalars().all()
    if not ids:
        return []
    through = ids[0] if through is None else through
    maybe = [i for i in ids if i <= through]
    rest = [i for i in ids if i > through]
    log.warning("reaping claim of dead worker %s: %d email(s) maybe delivered, %d requeued",
                worker, len(maybe), len(rest))
    if maybe:
        db.session.execute(
            update(Email).where(Email.id.in_(maybe))
            .values(status="failed", last_error=MAYBE_DELIVERED, claim_token=None,
                    attempts=Email.attempts + 1, updated_at=now)
        )
        metrics.count_after_commit(db.session(), metrics.EMAILS_FAILED.labels("maybe_delivered"),
                                   len(maybe))
    if rest:
        db.session.execute(
            update(Email).where(Email.id.in_(rest))
            .values(status="queued", claim_token=None, next_attempt_at=now, updated_at=now)
        )
    return rest


# -- claiming ------------------------------------------------------------------------------------
@dataclass
class Claim:
    token: str
    emails: list[Email]
    paced: bool = False  # each email waits for a slot from the campaign throttle
    group: int = 1  # emails sent between two commits
    rates: dict = field(default_factory=dict)  # wave id → its own rate per minute


def _claim_statement(among_ids: bool):
    """The claim's UPDATE (Core, built once: building it per claim cost more than running it):
    the first `c_batch` due rows (among `c_ids`), still queued, become this claim's."""
    chosen = select(_EMAILS.c.id).where(
        _EMAILS.c.status == "queued", _EMAILS.c.next_attempt_at <= bindparam("c_due"),
        _EMAILS.c.throttled == bindparam("c_throttled"))
    if among_ids:
        chosen = chosen.where(_EMAILS.c.id.in_(bindparam("c_ids", expanding=True)))
    # Chosen once, as a materialized CTE: as a plain IN (subquery), PostgreSQL may run the
    # locking subquery again for the UPDATE's rows and take more than c_batch of them.
    chosen = chosen.order_by(_EMAILS.c.id).limit(bindparam("c_batch")) \
        .with_for_update(skip_locked=True).cte("chosen") \
        .prefix_with("MATERIALIZED", dialect="postgresql")
    return (update(_EMAILS).where(_EMAILS.c.id.in_(select(chosen.c.id)),
                                  _EMAILS.c.status == "queued")
            .values(status="sending", claim_token=bindparam("c_token"),
                    updated_at=bindparam("c_now"))
            .returning(_EMAILS.c.id))


_CLAIM_ANY, _CLAIM_AMONG = _claim_statement(False), _claim_statement(True)


def claim(ids: list[int] | None, *, throttled: bool, now: datetime | None = None,
          report: Report | None = None) -> Claim | None:
    """Take due rows for this worker (caller commits), or None: up to MAIL_BATCH_SIZE, and
    for throttled mail only what this worker can send soon at the campaign rate."""
    now = now or utcnow()
    batch = int(_cfg("MAIL_BATCH_SIZE", TASK_CHUNK))  # a task's ids: one claim
    if throttled:
        backlog = throttle.throttle_backlog()
        horizon = float(_cfg("MAIL_THROTTLE_HORIZON_SECONDS", 10))
        if backlog > horizon:  # other workers already hold the next `horizon` seconds
            if report is not None:
                wait = max(backlog, throttle.queue_wait(min(ids) if ids else None)) - horizon
                report.throttled_until = now + timedelta(seconds=wait)
            return None
        batch = throttle.claim_size(batch)
    token = uuid.uuid4().hex
    params = {"c_due": now, "c_throttled": throttled, "c_batch": batch, "c_token": token,
              "c_now": now}
    if ids is not None:
        params["c_ids"] = ids
    claimed = db.session.execute(_CLAIM_ANY if ids is None else _CLAIM_AMONG, params) \
        .scalars().all()
    if report is not None:
        report.claimed += len(claimed)
        report.drained = len(claimed) < batch  # the UPDATE took every row due now
    if not claimed:
        return None
    emails = _load(claimed)
    live = _prepare(emails, now)
    if report is not None:
        report.cancelled += len(emails) - len(live)
    if not live:
        return None
    # Paced mail waits between emails: commit each one, so a crash costs at most one.
    rates = throttle.wave_rates({e.wave_id for e in live if e.wave_id}) if throttled else {}
    paced = throttled and throttle.paced(rates.values())
    group = 1 if paced else max(1, int(_cfg("MAIL_COMMIT_EVERY", 1)))
    db.session.execute(insert(_CLAIMS).values(
        token=token, worker=worker_name(), claimed_at=now, heartbeat_at=now,
        in_flight_through=live[min(group, len(live)) - 1].id))
    return Claim(token, live, paced, group, rates)


_EMAIL_ROW = (_EMAILS.c.id, _EMAILS.c.customer_id, _EMAILS.c.kind, _EMAILS.c.step,
              _EMAILS.c.to_address, _EMAILS.c.wave_id, _EMAILS.c.series_id,
              _EMAILS.c.payment_method_id, _EMAILS.c.attempts, _EMAILS.c.created_at,
              _EMAILS.c.link_id)  # OutboxEmail's fields, in order
_CUSTOMER_ROW = (_CUSTOMERS.c.id, _CUSTOMERS.c.name, _CUSTOMERS.c.legacy_id,
                 _CUSTOMERS.c.locale, _CUSTOMERS.c.status, _CUSTOMERS.c.card_brand,
                 _CUSTOMERS.c.card_last4, _CUSTOMERS.c.card_exp_month,
                 _CUSTOMERS.c.card_exp_year)  # CustomerRow's, before its cards
_LINK_ROW = (_LINKS.c.public_id, _LINKS.c.created_at, _LINKS.c.expires_at, _LINKS.c.used_at,
             _LINKS.c.revoked_at)  # LinkRow's after its id (the email's link_id)


def _load(ids: list[int]) -> list[OutboxEmail]:
    """The claimed rows with their customers, cards and links, in id order: two queries."""
    rows = db.session.execute(
        select(*_EMAIL_ROW, *_CUSTOMER_ROW, *_LINK_ROW)
        .join_from(_EMAILS, _CUSTOMERS, _CUSTOMERS.c.id == _EMAILS.c.customer_id)
        .outerjoin(_LINKS, _LINKS.c.id == _EMAILS.c.link_id)
        .where(_EMAILS.c.id.in_(ids)).order_by(_EMAILS.c.id)
    ).all()
    customers: dict[int, CustomerRow] = {}
    emails = []
    n_email, n_customer = len(_EMAIL_ROW), len(_CUSTOMER_ROW)
    for row in rows:
        customer = customers.get(row[1])
        if customer is None:
            customer = customers[row[1]] = CustomerRow(*row[n_email:n_email + n_customer])
        link_id, link = row[n_email - 1], None
        if link_id is not None:
            link = LinkRow(link_id, *row[n_email + n_customer:])
        emails.append(OutboxEmail(*row[:n_email], customer=customer, link=link))
    if customers:
        for card in db.session.execute(
            select(_CARDS.c.customer_id, _CARDS.c.brand, _CARDS.c.last4, _CARDS.c.exp_month,
                   _CARDS.c.exp_year)
            .where(_CARDS.c.customer_id.in_(customers)).order_by(_CARDS.c.id)
        ):
            customers[card.customer_id].migrated_cards.append(card)
    return emails


_CANCEL = (update(_EMAILS).where(_EMAILS.c.id == bindparam("e_id"))
           .values(status="cancelled", last_error=bindparam("e_error"), claim_token=None))
_SET_LINK = update(_EMAILS).where(_EMAILS.c.id == bindparam("e_id")) \
    .values(link_id=bindparam("e_link_id"))


def _prepare(emails: list[OutboxEmail], now: datetime) -> list[OutboxEmail]:
    """Cancel what is no longer wanted; give link emails a live link (written with the claim,
    so a row given up after a crash names the link it may have carried). Returns what goes."""
    before = {e.id: e.link_id for e in emails}
    reasons = campaigns.prepare_batch(emails, now)
    if reasons:
        db.session.execute(_CANCEL, [{"e_id": i, "e_error": r} for i, r in reasons.items()])
    moved = [{"e_id": e.id, "e_link_id": e.link_id} for e in emails
             if e.id not in reasons and e.link_id != before[e.id]]
    if moved:
        db.session.execute(_SET_LINK, moved)
    return [e for e in emails if e.id not in reasons]


def overdue_ids(due_before: datetime, limit: int = 10_000) -> list[int]:
    """Queued rows due before `due_before`: their task was lost, or workers are behind."""
    return list(db.session.execute(
        select(Email.id).where(Email.status == "queued", Email.next_attempt_at <= due_before)
        .order_by(Email.id).limit(limit)
    ).scalars())
