"""Delivering the outbox: claim due rows, send them in order, recover from dead workers.

The guarantee is *at most once* per email, and here is the whole argument:

1. A worker claims a batch in one committed UPDATE (`queued` → `sending`, with its claim
   token); the UPDATE only matches `queued` rows, so two workers never hold the same row.
   The claim row also records `in_flight_through`: the highest id that may go on the wire
   before the worker's next commit (the first MAIL_COMMIT_EVERY emails; default 1).
2. The worker sends in id order over one connection. After each group it commits the group's
   outcomes (`sent`, back to `queued`, `failed`) and moves `in_flight_through` on to the next
   group, all in one commit, before the next group's first email goes.
3. So when a worker dies, only its `sending` rows with id ≤ `in_flight_through` can have
   reached the SMTP server. The reaper marks those `failed` ("may have been delivered") and
   never resends them; every other row of the dead claim goes back to `queued`.

On SQLite, flushing every one of those commits to disk would cost more than sending the email,
so the worker flushes one commit in MAIL_DURABLE_EVERY emails (default 50; the claim's own
commit is one) and lets the commits in between reach the operating system only
(`synchronous=NORMAL` for that one transaction). Each flushed commit also records
`durable_through`: the highest id that may go on the wire before the next flushed commit.
A commit that reached the operating system survives the death of the worker process, so the
bound above holds whenever the machine stays up. If the machine itself goes down, commits
since the last flushed one may be lost, but never a flushed one, and never one without all
those before it. The claim row names the boot of the worker's machine: a reaper that finds
the same boot (the same machine, not restarted since) trusts `in_flight_through`; any other uses
`durable_through`, and gives up at most MAIL_DURABLE_EVERY emails, still never sending one
twice. PostgreSQL commits are always flushed (its asynchronous commits can be lost when only
the database server restarts, which a reaper could not tell), and so is every commit of paced
(throttled) mail and wherever the boot cannot be read.

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
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from flask import current_app
from sqlalchemy import bindparam, delete, event, func, insert, or_, select, update

from cardbridge.bulk import DriverStatement
from cardbridge.campaigns import service as campaigns
from cardbridge.campaigns import throttle
from cardbridge.email import mailer
from cardbridge.email.emails import CustomerRow, LinkRow, OutboxEmail, compose, mark_bounced
from cardbridge.email.pending import TASK_CHUNK, deliver_after_commit
from cardbridge.extensions import db
from cardbridge.models import Customer, Email, EmailClaim, Link, MigratedCard
from cardbridge.models.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

# The worker's statements use the tables (Core): an ORM entity anywhere in a statement sends it
# through the ORM's machinery, which costs more per email than the SQL itself.
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


@lru_cache(maxsize=1)
def boot_id() -> str | None:
    """This machine's boot (Linux), or None where it cannot be read: it changes at every start
    of the operating system, which is when unflushed commits can have been lost."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:36] or None
    except OSError:
        return None


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
        token, worker, through = claim.token, claim.worker, _bound(claim)
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


def _bound(claim: EmailClaim) -> int | None:
    """The highest id of a dead claim that may have reached the SMTP server (module docstring):
    `in_flight_through` if none of its commits can have been lost, else `durable_through`.

    A boot id is random per start of a machine: the same one means the claim was made on this
    machine, which has not restarted since, so the SQLite file's unflushed commits are intact."""
    if claim.boot_id is not None and claim.boot_id == boot_id():
        return claim.in_flight_through
    bounds = [b for b in (claim.in_flight_through, claim.durable_through) if b is not None]
    return max(bounds, default=None)


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
    window: int = 1  # emails sent between two commits flushed to disk (a multiple of group)
    durable_through: int | None = None  # as committed by the last flushed commit


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
    window = group
    if not paced and _can_relax():
        every = max(group, int(_cfg("MAIL_DURABLE_EVERY", 50)))
        window = every - every % group
    durable_through = live[min(window, len(live)) - 1].id
    db.session.execute(insert(_CLAIMS).values(
        token=token, worker=worker_name(), claimed_at=now, heartbeat_at=now,
        in_flight_through=live[min(group, len(live)) - 1].id, durable_through=durable_through,
        boot_id=boot_id()))
    return Claim(token, live, paced, group, rates, window, durable_through)


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


# -- commits that are not flushed to disk (SQLite) -----------------------------------------------
_SYNC_KEY = "cardbridge.synchronous"  # the level to restore, on the pooled connection's info


def _can_relax() -> bool:
    """Whether this worker may skip the disk flush of some commits (module docstring)."""
    engine = db.engine
    if engine.dialect.name != "sqlite" or boot_id() is None:
        return False
    if not event.contains(engine, "checkin", _restore_synchronous):
        event.listen(engine, "checkin", _restore_synchronous)
    return True


def _relax_next_commit() -> bool:
    """Let the session's next commit reach the operating system without a disk flush. SQLite
    only changes this outside a transaction: call it before the transaction's first write.
    The level comes back right after that commit (`_Held`), and in any case when the
    connection returns to the pool, so nothing else (a web request, the next claim) ever
    commits this way."""
    conn = db.session.connection()
    dbapi = conn.connection.dbapi_connection  # straight to sqlite3: this runs once per email
    if dbapi.in_transaction:
        return False  # something already wrote: this commit is flushed, which is always safe
    if _SYNC_KEY not in conn.info:
        conn.info[_SYNC_KEY] = int(dbapi.execute("PRAGMA synchronous").fetchone()[0])
    dbapi.execute("PRAGMA synchronous=NORMAL")
    conn.info[_RELAXED_KEY] = True
    return True


_RELAXED_KEY = "cardbridge.relaxed"  # set while the open transaction will commit unflushed


class _Held:
    """One pooled connection kept for all of a delivery's transactions.

    The session releases its connection to the pool at every commit; the worker commits once
    per email, and each round trip through the pool (checkout, reset, checkin, on PostgreSQL
    a pre-ping) costs more than the commit itself. Each new session transaction starts on
    this connection instead (`attach`, right after every commit). It goes back to the pool
    at the end (`release`), whose checkin restores its `synchronous` level as before."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def attach(self) -> None:
        """Begin the session's next transaction on the held connection (no SQL is sent)."""
        session = db.session()
        if not session.in_transaction():
            session.connection(bind_arguments={"bind": self.conn})

    def committing(self, commit: Callable[[], None]) -> Callable[[], None]:
        info = self.conn.info

        def held_commit() -> None:
            commit()
            if info.pop(_RELAXED_KEY, False):  # only the commit just made was unflushed
                self.conn.connection.dbapi_connection.execute(
                    f"PRAGMA synchronous={info[_SYNC_KEY]}")
            self.attach()

        return held_commit

    def release(self) -> None:
        session = db.session()
        if session.in_transaction():
            # The transaction `attach` began after the last commit: nothing in it when all
            # went well, and after an exception the caller would roll it back anyway (and
            # find the connection gone): end it while it still has its connection.
            session.rollback()
        self.conn.info.pop(_RELAXED_KEY, None)
        self.conn.close()


def _restore_synchronous(dbapi_conn, record) -> None:
    level = record.info.pop(_SYNC_KEY, None)
    if level is not None:
        dbapi_conn.execute(f"PRAGMA synchronous={level}")


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


# -- sending -------------------------------------------------------------------------------------
def deliver(ids: list[int] | None, *, commit: Callable[[], None],
            sleep: Callable[[float], None] = time.sleep) -> Report:
    """Send the due emails among `ids` (all due emails when None); `report.retry_at` says
    when to come back for those that must wait.

    `commit` is the caller's: it is called after each claim and after each group of outcomes,
    which is what bounds what a crash can cost (module docstring).
    """
    report = Report()
    if _reap_due():
        reap_dead_claims()
        commit()
    session = db.session()
    # The batch's rows were read fresh when claimed; reloading every one of them after each
    # per-email commit would cost more than sending it.
    expire, session.expire_on_commit = session.expire_on_commit, False
    transport = mailer.open_transport()
    conn = _Held(db.engine.connect())
    try:
        conn.attach()
        held_commit = conn.committing(commit)
        wanted = len(set(ids)) if ids is not None else None
        for throttled in (False, True):
            # Every one of the ids already claimed: asking again (twice, and the throttle)
            # would only find nothing.
            while not report.stopped and (wanted is None or report.claimed < wanted):
                held = claim(ids, throttled=throttled, report=report)
                held_commit()
                if held is None:
                    break
                _send_claim(held, transport, held_commit, report, sleep)
                if report.drained:  # the next claim of this kind would find nothing due
                    break
    finally:
        transport.close()
        session.expire_on_commit = expire
        conn.release()
    if ids and report.throttled_until is not None:
        # Waiting for the throttle is not being overdue: the pump must not queue these again.
        db.session.execute(
            update(Email).where(Email.id.in_(ids), Email.status == "queued",
                                Email.next_attempt_at < report.throttled_until)
            .values(next_attempt_at=report.throttled_until)
            .execution_options(synchronize_session=False))
        commit()
    if ids:
        report.retry_at = db.session.execute(
            select(Email.next_attempt_at).where(Email.id.in_(ids), Email.status == "queued")
            .order_by(Email.next_attempt_at).limit(1)
        ).scalar_one_or_none()
        if report.throttled_until and report.retry_at is not None:
            report.retry_at = max(report.retry_at, report.throttled_until)
    return report


class _ClaimLost(Exception):
    """The claim was taken over: what this worker still held is recorded; send no more."""


def _reap_due() -> bool:
    """Whether this delivery starts by reaping dead claims: the first delivery of each process
    does (a rerun after a crash sends the rest at once), later ones at most every
    MAIL_REAP_EVERY_SECONDS (a wave is hundreds of deliveries, and the minute pump reaps
    regardless)."""
    state = current_app.extensions.setdefault("cardbridge.outbox", {})
    now, last = time.monotonic(), state.get("reaped_at")
    if last is not None and now - last < float(_cfg("MAIL_REAP_EVERY_SECONDS", 5)):
        return False
    state["reaped_at"] = now
    return True


def _send_claim(held: Claim, transport, commit, report: Report, sleep) -> None:
    """Send a claim's emails in groups; each group's outcomes, and how far the next group may
    go, are committed before the next group's first email goes on the wire.

    Over SMTP that commit runs while the server answers the next email's MAIL command, and
    the next email is composed while the server answers the current body: the worker's
    database and template work overlaps the server's, and the order that bounds a crash
    (outcomes and bound committed, then the next body) is unchanged."""
    lease = float(_cfg("MAIL_CLAIM_LEASE_SECONDS", 120))

    def wait_for_slot(email: Email) -> None:
        # Between composing and sending: the throttle spaces the sends themselves.
        slot = throttle.reserve_send_slot(held.rates.get(email.wave_id))
        if slot is not None and slot - time.time() > lease / 4:
            _heartbeat(held.token)
        commit()
        if slot is not None and slot > time.time():
            sleep(slot - time.time())

    emails = held.emails
    overlap = getattr(transport, "overlaps", False) and not held.paced
    composed: dict[int, mailer.OutgoingMessage | Outcome] = {}
    pending: _Flush | None = None  # the last group's commit, run during the next MAIL

    def compose_next(index: int) -> Callable[[], None] | None:
        if not overlap or index + 1 >= len(emails):
            return None
        following = emails[index + 1]
        return lambda: composed.__setitem__(following.id, _compose(following, utcnow()))

    try:
        for start in range(0, len(emails), held.group):
            done: list[tuple[Email, Outcome]] = []
            for index in range(start, min(start + held.group, len(emails))):
                email, now = emails[index], utcnow()
                msg = composed.pop(email.id, None)
                if msg is None:  # not composed ahead (the first, or after an overlap-less send)
                    msg = _compose(email, now)
                try:
                    outcome = _send_one(email, msg, transport,
                                        wait_for_slot if held.paced else None,
                                        before_data=pending, after_body=compose_next(index))
                except mailer.ConnectionLost as exc:
                    if pending is not None:
                        pending()  # the group before this one went: record it first
                    _record(held.token, done, report)
                    _requeue_rest(held, index, now, str(exc), report)
                    _finish(held.token)
                    commit()
                    report.stopped = True
                    return
                except _ClaimLost:
                    raise
                except Exception:
                    # Anything else ends the delivery; the group before this one went, and
                    # its record must not wait for the reaper (a no-op if it already ran).
                    if pending is not None:
                        pending()
                    raise
                if pending is not None:
                    pending()  # a no-op if the transport ran it during the MAIL command
                    pending = None
                done.append((email, outcome))
            flush = _Flush(held, done, start + held.group, commit, report)
            if overlap and flush.through is not None:
                pending = flush
            else:
                flush()
    except _ClaimLost:
        log.warning("claim %s was taken over; stopping this batch", held.token)
        report.stopped = True


class _Flush:
    """A group's outcomes, and how far the next group may go, in one commit (run once)."""

    def __init__(self, held: Claim, done: list[tuple[Email, Outcome]], start: int,
                 commit: Callable[[], None], report: Report) -> None:
        emails = held.emails
        self.held, self.done, self.commit, self.report = held, done, commit, report
        self.through = emails[min(start + held.group, len(emails)) - 1].id \
            if start < len(emails) else None
        self.durable = None  # the next group goes past the last flushed bound: flush this one
        if self.through is not None and held.durable_through is not None \
                and self.through > held.durable_through:
            self.durable = emails[min(start + held.window, len(emails)) - 1].id
        self.ran = False

    def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        held = self.held
        if held.window > held.group and self.durable is None:
            _relax_next_commit()
        if not _record(held.token, self.done, self.report):
            self.commit()  # what still matched was ours and went; the rest is the reaper's now
            raise _ClaimLost(held.token)
        if self.through is not None:
            _advance(held.token, self.through, self.durable)
            if self.durable is not None:
                held.durable_through = self.durable
        else:
            _finish(held.token)
        self.commit()


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | retry | failed | bounced
    detail: str  # provider id when sent, else the error
    message_id: str | None = None
    at: datetime = field(default_factory=utcnow)  # when the transport answered


def _compose(email: Email, now: datetime) -> mailer.OutgoingMessage | Outcome:
    """The message for `email`, or a failed Outcome when it cannot be composed (never raises:
    it also runs while the server answers another email's body)."""
    try:
        url = campaigns.signed_url(email.link) if email.link is not None else None
        subject, text, html = compose(email, url, now=now, first_sent=email.first_sent)
        return mailer.build(email.to_address, subject, text, html,
                            message_id=mailer.message_id_for(email.id),
                            headers={"X-Cardbridge-Email": str(email.id)})
    except Exception as exc:  # a template bug fails this email, not the whole batch
        log.exception("could not compose email %s", email.id)
        return Outcome("failed", f"could not compose: {type(exc).__name__}")


def _send_one(email: Email, msg: mailer.OutgoingMessage | Outcome, transport, wait_for_slot,
              *, before_data: Callable[[], None] | None = None,
              after_body: Callable[[], None] | None = None) -> Outcome:
    """Hand one composed email to the transport; ConnectionLost stops the batch. The hooks go
    to a transport that `overlaps` (`SmtpTransport.send`), and only when given."""
    if isinstance(msg, Outcome):
        return msg
    if wait_for_slot is not None:
        wait_for_slot(email)
    hooks = {}
    if before_data is not None:
        hooks["before_data"] = before_data
    if after_body is not None:
        hooks["after_body"] = after_body
    try:
        provider_id = transport.send(msg, name=f"{email.id:08d}-{email.kind}", **hooks)
    except mailer.MaybeDelivered as exc:
        return Outcome("failed", f"{exc}; it may have been delivered, so it is not sent again "
                                 "automatically", msg.msgId)
    except mailer.Refused as exc:
        return Outcome("bounced" if exc.bounce else "failed", str(exc), msg.msgId)
    except mailer.ConnectionLost:
        raise
    except mailer.Retry as exc:
        return Outcome("retry", str(exc), msg.msgId)
    return Outcome("sent", provider_id, msg.msgId)


_RECORD = DriverStatement(
    update(_EMAILS)
    .where(_EMAILS.c.id == bindparam("e_id"), _EMAILS.c.claim_token == bindparam("e_token"),
           _EMAILS.c.status == "sending")
    .values(status=bindparam("e_status"), claim_token=None, attempts=_EMAILS.c.attempts + 1,
            sent_at=bindparam("e_sent_at"), provider_message_id=bindparam("e_provider_id"),
            message_id=bindparam("e_message_id"), link_id=bindparam("e_link_id"),
            last_error=bindparam("e_error"), updated_at=bindparam("e_now"),
            next_attempt_at=func.coalesce(bindparam("e_next", type_=UTCDateTime),
                                          _EMAILS.c.next_attempt_at)),
    {"e_id", "e_token", "e_status", "e_sent_at", "e_provider_id", "e_message_id", "e_link_id",
     "e_error", "e_now", "e_next"})


_EMAILED = campaigns.event_insert("emailed")
_INVITED = campaigns.INVITE


def _record(token: str, done: list[tuple[Email, Outcome]], report: Report) -> bool:
    """Write a group's outcomes, only for rows this worker still holds; False if any was lost."""
    if not done:
        return True
    now, max_attempts = utcnow(), int(_cfg("MAIL_MAX_ATTEMPTS", 12))
    rows = []
    for email, outcome in done:
        status, next_at = outcome.status, None
        if status == "retry" and email.attempts + 1 < max_attempts:
            status, next_at = "queued", now + backoff(email.attempts + 1)
        elif status != "sent":
            status = "failed"
        rows.append({"e_id": email.id, "e_token": token, "e_status": status,
                     "e_sent_at": outcome.at if status == "sent" else None,
                     "e_provider_id": outcome.detail[:255] if status == "sent" else None,
                     "e_message_id": outcome.message_id, "e_link_id": email.link_id,
                     "e_error": None if status == "sent" else outcome.detail[:500],
                     "e_now": now, "e_next": next_at})
    matched = _RECORD.run(rows)
    sent = [(email, outcome) for (email, outcome), row in zip(done, rows, strict=True)
            if row["e_status"] == "sent"]
    report.sent += len(sent)
    report.sent_ids += [email.id for email, _ in sent]
    report.retrying += sum(1 for row in rows if row["e_status"] == "queued")
    report.failed += sum(1 for row in rows if row["e_status"] == "failed")
    if matched != len(rows):
        return False
    if sent:
        _EMAILED.run([
            {"v_customer": email.customer_id, "v_link": email.link_id, "v_at": outcome.at,
             "v_details": {"email": email.id, "kind": email.kind, "wave": email.wave_id,
                           "step": email.step}}
            for email, outcome in sent])
    # The link was live when claimed and has just been emailed: SPEC's "invited".
    invited = [email.customer for email, _ in sent
               if email.link is not None and email.customer.status == "needs_update"]
    if invited:
        _INVITED.run([{"c_id": c.id, "c_now": now} for c in invited])
        for customer in invited:
            customer.status = "invited"
    for email, outcome in done:
        if outcome.status == "bounced":
            mark_bounced(email.to_address, source="smtp", reason=outcome.detail,
                         provider_message_id=outcome.message_id)
    return True


def _requeue_rest(held: Claim, index: int, now: datetime, error: str, report: Report) -> None:
    """The server is unreachable: this email and the rest of the batch wait and try again."""
    rest = [e.id for e in held.emails[index:]]
    attempts = max(e.attempts for e in held.emails[index:]) + 1
    db.session.execute(
        update(Email).where(Email.id.in_(rest), Email.claim_token == held.token,
                            Email.status == "sending")
        .values(status="queued", claim_token=None, attempts=Email.attempts + 1,
                last_error=error[:500], next_attempt_at=now + backoff(attempts), updated_at=now)
        .execution_options(synchronize_session=False)
    )
    report.retrying += len(rest)




def _heartbeat(token: str) -> None:
    db.session.execute(
        update(EmailClaim).where(EmailClaim.token == token).values(heartbeat_at=utcnow())
    )


_ADVANCE_SQL = (update(_CLAIMS).where(_CLAIMS.c.token == bindparam("c_token"))
                .values(heartbeat_at=bindparam("c_now"),
                        in_flight_through=bindparam("c_through")))
_ADVANCE = DriverStatement(_ADVANCE_SQL, {"c_token", "c_now", "c_through"})
_ADVANCE_DURABLE = DriverStatement(
    _ADVANCE_SQL.values(durable_through=bindparam("c_durable")),
                        {"c_token", "c_now", "c_through", "c_durable"})


def _advance(token: str, through_id: int, durable_through: int | None = None) -> None:
    """The next group may go: up to `through_id` may be on the wire before the next commit
    (and up to `durable_through` before the next flushed one, when this commit is flushed)."""
    params = {"c_token": token, "c_now": utcnow(), "c_through": through_id}
    if durable_through is None:
        _ADVANCE.run(params)
    else:
        _ADVANCE_DURABLE.run({**params, "c_durable": durable_through})


_FINISH = DriverStatement(delete(_CLAIMS).where(_CLAIMS.c.token == bindparam("c_token")),
                          {"c_token"})


def _finish(token: str) -> bool:
    return bool(_FINISH.run({"c_token": token}))


def overdue_ids(due_before: datetime, limit: int = 10_000) -> list[int]:
    """Queued rows due before `due_before`: their task was lost, or workers are behind."""
    return list(db.session.execute(
        select(Email.id).where(Email.status == "queued", Email.next_attempt_at <= due_before)
        .order_by(Email.id).limit(limit)
    ).scalars())
