"""Sending a claim's emails: compose, hand each to the transport, commit its outcome.

Why this order makes delivery *at most once*, and what a crash can cost, is in
delivery/claims.py: a group's outcomes and how far the next group may go are committed
before the next group's first email goes on the wire. Messages are `Message`s sent over
one smtplib connection per delivery (email/mailer.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message

from flask import current_app
from sqlalchemy import bindparam, delete, func, select, update

from cardbridge import metrics
from cardbridge.campaigns import service as campaigns
from cardbridge.campaigns import throttle
from cardbridge.customers.statuses import INVITE, event_insert
from cardbridge.delivery.claims import (  # noqa: F401  (the delivery's public names)
    MAYBE_DELIVERED,
    Claim,
    Report,
    _cfg,
    backoff,
    claim,
    overdue_ids,
    reap_dead_claims,
    worker_name,
)
from cardbridge.email import mailer
from cardbridge.email.emails import compose, mark_bounced
from cardbridge.extensions import db
from cardbridge.models import Email, EmailClaim
from cardbridge.models.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

_EMAILS, _CLAIMS = Email.__table__, EmailClaim.__table__


def deliver(ids: list[int] | None, *, commit: Callable[[], None],
            sleep: Callable[[float], None] = time.sleep) -> Report:
    """Send the due emails among `ids` (all due emails when None); `report.retry_at` says
    when to come back for those that must wait.

    `commit` is the caller's: it is called after each claim and after each group of outcomes,
    which is what bounds what a crash can cost (delivery/claims.py).
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
    try:
        wanted = len(set(ids)) if ids is not None else None
        for throttled in (False, True):
            # Every one of the ids already claimed: asking again (twice, and the throttle)
            # would only find nothing.
            while not report.stopped and (wanted is None or report.claimed < wanted):
                held = claim(ids, throttled=throttled, report=report)
                commit()
                if held is None:
                    break
                _send_claim(held, transport, commit, report, sleep)
                if report.drained:  # the next claim of this kind would find nothing due
                    break
    finally:
        transport.close()
        session.expire_on_commit = expire
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
    go, are committed before the next group's first email goes on the wire."""
    lease = float(_cfg("MAIL_CLAIM_LEASE_SECONDS", 120))

    def wait_for_slot(email: Email) -> None:
        # The throttle spaces the sends themselves.
        slot = throttle.reserve_send_slot(held.rates.get(email.wave_id))
        if slot is not None and slot - time.time() > lease / 4:
            _heartbeat(held.token)
        commit()
        if slot is not None and slot > time.time():
            sleep(slot - time.time())

    emails = held.emails
    for start in range(0, len(emails), held.group):
        done: list[tuple[Email, Outcome]] = []
        for index in range(start, min(start + held.group, len(emails))):
            email, now = emails[index], utcnow()
            try:
                outcome = _send_one(email, _compose(email, now), transport,
                                    wait_for_slot if held.paced else None)
            except mailer.ConnectionLost as exc:
                _record(held.token, done, report)
                _requeue_rest(held, index, now, str(exc), report)
                _finish(held.token)
                commit()
                report.stopped = True
                return
            done.append((email, outcome))
        if not _record(held.token, done, report):
            commit()  # what still matched was ours and went; the rest is the reaper's now
            log.warning("claim %s was taken over; stopping this batch", held.token)
            report.stopped = True
            return
        following = start + held.group
        if following < len(emails):
            _advance(held.token, emails[min(following + held.group, len(emails)) - 1].id)
        else:
            _finish(held.token)
        commit()


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | retry | failed | bounced
    detail: str  # provider id when sent, else the error
    message_id: str | None = None
    at: datetime = field(default_factory=utcnow)  # when the transport answered


def _compose(email: Email, now: datetime) -> tuple[Message, str] | Outcome:
    """The message for `email`, or a failed Outcome when it cannot be composed (a template
    bug fails this email, not the whole batch)."""
    try:
        url = campaigns.signed_url(email.link) if email.link is not None else None
        subject, text, html = compose(email, url, now=now, first_sent=email.first_sent)
        message_id = mailer.message_id_for(email.id)
        return mailer.build(email.to_address, subject, text, html, message_id=message_id,
                            headers={"X-Cardbridge-Email": str(email.id)}), message_id
    except Exception as exc:  # a template bug fails this email, not the whole batch
        log.exception("could not compose email %s", email.id)
        return Outcome("failed", f"could not compose: {type(exc).__name__}")


def _send_one(email: Email, composed: tuple[Message, str] | Outcome, transport,
              wait_for_slot: Callable[[Email], None] | None) -> Outcome:
    """Hand one composed email to the transport; ConnectionLost stops the batch."""
    if isinstance(composed, Outcome):
        return composed
    msg, message_id = composed
    if wait_for_slot is not None:
        wait_for_slot(email)
    try:
        provider_id = transport.send(msg, name=f"{email.id:08d}-{email.kind}",
                                     envelope=mailer.envelope_for(email.to_address))
    except mailer.MaybeDelivered as exc:
        return Outcome("failed", f"{exc}; it may have been delivered, so it is not sent again "
                                 "automatically", message_id)
    except mailer.Refused as exc:
        return Outcome("bounced" if exc.bounce else "failed", str(exc), message_id)
    except mailer.ConnectionLost:
        raise
    except mailer.Retry as exc:
        return Outcome("retry", str(exc), message_id)
    return Outcome("sent", provider_id, message_id)


_RECORD = (
    update(_EMAILS)
    .where(_EMAILS.c.id == bindparam("e_id"), _EMAILS.c.claim_token == bindparam("e_token"),
           _EMAILS.c.status == "sending")
    .values(status=bindparam("e_status"), claim_token=None, attempts=_EMAILS.c.attempts + 1,
            sent_at=bindparam("e_sent_at", type_=UTCDateTime),
            provider_message_id=bindparam("e_provider_id"),
            message_id=bindparam("e_message_id"), link_id=bindparam("e_link_id"),
            last_error=bindparam("e_error"), updated_at=bindparam("e_now", type_=UTCDateTime),
            next_attempt_at=func.coalesce(bindparam("e_next", type_=UTCDateTime),
                                          _EMAILS.c.next_attempt_at)))
_EMAILED = event_insert("emailed")
_INVITED = INVITE


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
    matched = db.session.execute(_RECORD, rows).rowcount
    sent = [(email, outcome) for (email, outcome), row in zip(done, rows, strict=True)
            if row["e_status"] == "sent"]
    report.sent += len(sent)
    report.sent_ids += [email.id for email, _ in sent]
    report.retrying += sum(1 for row in rows if row["e_status"] == "queued")
    report.failed += sum(1 for row in rows if row["e_status"] == "failed")
    _count_outcomes(done, rows)
    if matched != len(rows):
        return False
    if sent:
        db.session.execute(_EMAILED, [
            {"v_customer": email.customer_id, "v_link": email.link_id, "v_at": outcome.at,
             "v_details": {"email": email.id, "kind": email.kind, "wave": email.wave_id,
                           "step": email.step}}
            for email, outcome in sent])
    # The link was live when claimed and has just been emailed: SPEC's "invited".
    invited = [email.customer for email, _ in sent
               if email.link is not None and email.customer.status == "needs_update"]
    if invited:
        db.session.execute(_INVITED, [{"c_id": c.id, "c_now": now} for c in invited])
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
    metrics.count_after_commit(db.session(), metrics.EMAILS_DEFERRED, len(rest))


def _count_outcomes(done: list[tuple[Email, Outcome]], rows: list[dict]) -> None:
    """sent / deferred (back in the queue) / failed or bounced, once the group commits."""
    session = db.session()
    for (_, outcome), row in zip(done, rows, strict=True):
        if row["e_status"] == "sent":
            child = metrics.EMAILS_SENT
        elif row["e_status"] == "queued":
            child = metrics.EMAILS_DEFERRED
        else:
            child = metrics.EMAILS_FAILED.labels(
                "bounced" if outcome.status == "bounced" else "failed")
        metrics.count_after_commit(session, child)




def _heartbeat(token: str) -> None:
    db.session.execute(
        update(EmailClaim).where(EmailClaim.token == token).values(heartbeat_at=utcnow())
    )


def _advance(token: str, through_id: int) -> None:
    """The next group may go: up to `through_id` may be on the wire before the next commit."""
    db.session.execute(update(_CLAIMS).where(_CLAIMS.c.token == token)
                       .values(heartbeat_at=utcnow(), in_flight_through=through_id))


def _finish(token: str) -> bool:
    return bool(db.session.execute(delete(_CLAIMS).where(_CLAIMS.c.token == token)).rowcount)
