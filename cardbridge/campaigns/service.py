"""Who gets which email when: waves of first link emails, the reminder cadence, the funnel.

A wave emails customers of one status who have no emailed live link and nothing pending.
Reminders count from the last first-link email a customer was sent (REMINDER_DAYS after it,
and a last one REMINDER_BEFORE_CUTOVER_DAYS before CUTOVER_DATE), and stop when the customer
is updated, their links are revoked, their address bounces, or the cutover comes. Campaign
email shares one throttle across all workers (campaigns/throttle.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from flask import current_app
from sqlalchemy import and_, distinct, exists, func, insert, or_, select

from cardbridge import metrics
from cardbridge.campaigns import throttle
from cardbridge.customers.statuses import sweep_expired_invitations
from cardbridge.email.emails import LinkRow, OutboxEmail, queue_email
from cardbridge.email.pending import deliver_after_commit
from cardbridge.extensions import db
from cardbridge.links import service as link_service
from cardbridge.models import Bounce, Customer, CustomerEvent, Email, Link, Wave
from cardbridge.models.links import is_live
from cardbridge.models.types import utcnow

WAVE_STATUSES = ("needs_update", "invited")
NEEDS_CARD = ("needs_update", "invited")
REUSE_LINK_FOR = timedelta(days=2)  # a reminder never carries a link about to die
QUIET_AFTER_EMAIL = timedelta(hours=20)  # no reminder right after another email to them


# -- links for campaign emails -------------------------------------------------------------------
def signed_url(link: Link) -> str:
    """The link's URL, signed as of the link's creation: the same token `issue_link` returned
    (so the URL printed by `flask links create --send` is the one in the email)."""
    return link_service.url_for_token(link_service.token_for(link))


_LINKS, _EVENTS = Link.__table__, CustomerEvent.__table__
_LINK_ROW = (_LINKS.c.id, _LINKS.c.public_id, _LINKS.c.created_at, _LINKS.c.expires_at,
             _LINKS.c.used_at, _LINKS.c.revoked_at)  # LinkRow's fields, in order


def _newest_live_links(customer_ids: set[int], now: datetime) -> dict[int, LinkRow]:
    rows = db.session.execute(
        select(_LINKS.c.customer_id, *_LINK_ROW)
        .where(_LINKS.c.customer_id.in_(customer_ids), is_live(now))
        .order_by(_LINKS.c.created_at, _LINKS.c.id))
    return {row[0]: LinkRow(*row[1:]) for row in rows}  # the last one wins: the newest


def prepare_batch(emails: list[OutboxEmail], now: datetime) -> dict[int, str]:
    """Just before a claimed batch goes: why any email should no longer go (email id → reason),
    and a live link on every link email that still goes (reused, or made here; the caller
    writes the new link ids). A handful of queries for the whole batch, whatever its size."""
    customer_ids = {e.customer_id for e in emails}
    bounced = set(db.session.execute(
        select(Bounce.__table__.c.address)
        .where(Bounce.__table__.c.address.in_({e.to_address for e in emails}))
    ).scalars())
    revoked = dict(db.session.execute(
        select(_EVENTS.c.customer_id, func.max(_EVENTS.c.at))
        .where(_EVENTS.c.customer_id.in_(customer_ids), _EVENTS.c.kind == "links_revoked")
        .group_by(_EVENTS.c.customer_id)
    ).all())
    emails_t = Email.__table__
    series = {e.series_id for e in emails if e.series_id}
    starts = dict(db.session.execute(
        select(emails_t.c.id, emails_t.c.sent_at).where(emails_t.c.id.in_(series))).all()) \
        if series else {}
    live = _newest_live_links(customer_ids, now)
    reasons: dict[int, str] = {}
    wanted: dict[int, str] = {}  # customer id → created_by of the link to make
    needs_link: list[OutboxEmail] = []
    for email in emails:
        if email.kind == "reminder" and email.series_id:
            email.first_sent = starts.get(email.series_id)
        start = starts.get(email.series_id) or email.created_at
        reason = _reason_not_to_send(email, now, revoked.get(email.customer_id), start)
        if reason is None and email.to_address in bounced:
            reason = "address bounced"
        if reason is None and email.kind in ("link", "reminder", "fresh_link"):
            link = _link_for(email, now, live.get(email.customer_id))
            if link is not None:
                email.link_id, email.link = link.id, link
            elif email.wave_id is None and email.kind != "reminder":
                reason = "link no longer live"  # the caller's own link died: a newer one went
            else:
                wanted.setdefault(email.customer_id,
                                  f"wave:{email.wave_id}" if email.wave_id else "reminder")
                needs_link.append(email)
        if reason is not None:
            reasons[email.id] = reason
    made_ids = link_service.issue_links(wanted, now=now)
    by_public = {row.public_id: LinkRow(*row) for row in db.session.execute(
        select(*_LINK_ROW).where(_LINKS.c.public_id.in_(list(made_ids.values()))))}
    made = {cid: by_public[public_id] for cid, public_id in made_ids.items()}
    for email in needs_link:
        email.link_id, email.link = made[email.customer_id].id, made[email.customer_id]
    for email in emails:  # issue_links moved them on in the database
        if email.customer_id in made and email.customer.status == "needs_update":
            email.customer.status = "invited"
    return reasons


def _link_for(email: Email, now: datetime, newest_live: Link | None) -> Link | None:
    """The link an email carries: its own if the caller chose one, else a live one, else None
    (a new one is made for it)."""
    if email.wave_id is None and email.kind != "reminder":
        link = email.link
        return link if link is not None and link.state(now) == "live" else None
    min_life = REUSE_LINK_FOR if email.kind == "reminder" else timedelta(hours=1)
    for link in (email.link, newest_live):
        if link is not None and link.state(now) == "live" and link.expires_at > now + min_life:
            return link
    return None


def _revoked_since(customer_id: int, since: datetime) -> bool:
    return bool(db.session.execute(select(exists().where(
        CustomerEvent.customer_id == customer_id, CustomerEvent.kind == "links_revoked",
        CustomerEvent.at > since,
    ))).scalar())


def cutover_start() -> datetime | None:
    cutover: date | None = current_app.config.get("CUTOVER_DATE")
    return datetime.combine(cutover, time(0), UTC) if cutover else None


def _reason_not_to_send(email: Email, now: datetime, revoked_at: datetime | None,
                        series_start: datetime) -> str | None:
    if email.kind == "confirmation":
        return None
    if email.customer.status not in NEEDS_CARD:
        return "customer no longer needs a card"
    if email.kind == "reminder":
        cut = cutover_start()
        if cut is not None and now >= cut:
            return "cutover date has passed"
    if (email.kind == "reminder" or email.wave_id is not None) and revoked_at is not None \
            and revoked_at > series_start:
        return "links revoked by staff"
    return None


# -- waves ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WavePlan:
    status: str
    in_status: int  # customers in that status
    eligible: int  # of whom can be emailed now
    customer_ids: list[int]  # the ones this wave takes


def _pending_or_emailed_live(now: datetime):
    pending = exists().where(Email.customer_id == Customer.id,
                             Email.status.in_(("queued", "sending")),
                             Email.kind != "confirmation")
    emailed_live = exists().where(
        Email.customer_id == Customer.id, Email.status == "sent", Email.link_id == Link.id,
        is_live(now))
    return pending | emailed_live


def plan_wave(status: str = "needs_update", *, limit: int | None = None,
              percent: int | None = None, now: datetime | None = None) -> WavePlan:
    """Who a wave would email: `limit` customers, or `percent` of the status, eligible first."""
    if status not in WAVE_STATUSES:
        raise ValueError(f"a wave emails customers who need a card: status must be one of "
                         f"{', '.join(WAVE_STATUSES)}")
    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")
    if percent is not None and not 1 <= percent <= 100:
        raise ValueError("a percentage is 1 to 100")
    now = now or utcnow()
    sweep_expired_invitations(now)  # "invited" must mean a live link before we filter on it
    in_status = db.session.execute(
        select(func.count()).where(Customer.status == status)
    ).scalar_one()
    eligible_q = select(Customer.id).where(
        Customer.status == status, Customer.purged_at.is_(None), ~_pending_or_emailed_live(now),
        ~exists().where(Bounce.address == Customer.email),
    )
    eligible = db.session.execute(
        select(func.count()).select_from(eligible_q.subquery())
    ).scalar_one()
    take = eligible
    if percent is not None:
        take = min(take, math.ceil(in_status * percent / 100))
    if limit is not None:
        take = min(take, limit)
    ids = db.session.execute(eligible_q.order_by(Customer.id).limit(take)).scalars().all()
    return WavePlan(status, in_status, eligible, list(ids))


def launch_wave(status: str = "needs_update", *, created_by: str, limit: int | None = None,
                percent: int | None = None, at: datetime | None = None,
                rate_per_minute: int | None = None) -> tuple[Wave, WavePlan]:
    """Queue the first link email for each customer the plan takes (the caller commits)."""
    now = utcnow()
    if at is not None and at.tzinfo is None:
        raise ValueError("a scheduled time needs a timezone")
    if rate_per_minute is not None and rate_per_minute < 1:
        raise ValueError("a rate is at least 1 email per minute")
    throttle.lock()
    plan = plan_wave(status, limit=limit, percent=percent, now=now)
    wave = Wave(created_by=created_by, status_filter=status, limit_count=limit, percent=percent,
                queued=len(plan.customer_ids), rate_per_minute=rate_per_minute,
                scheduled_for=at, created_at=now)
    db.session.add(wave)
    db.session.flush()
    if plan.customer_ids:
        emails = dict(db.session.execute(
            select(Customer.id, Customer.email).where(Customer.id.in_(plan.customer_ids))
        ).all())
        due = at if at is not None and at > now else now
        # One executemany, then the wave's ids: RETURNING in parameter order costs SQLite one
        # statement per row.
        db.session.execute(
            insert(Email.__table__),
            [{"customer_id": cid, "kind": "link", "to_address": emails[cid], "wave_id": wave.id,
              "throttled": True, "status": "queued", "attempts": 0, "created_at": now,
              "next_attempt_at": due, "updated_at": now} for cid in plan.customer_ids])
        ids = db.session.execute(
            select(Email.id).where(Email.wave_id == wave.id).order_by(Email.id)).scalars().all()
        deliver_after_commit(db.session(), ids, eta=due if due > now else None)
        metrics.count_after_commit(db.session(), metrics.EMAILS_QUEUED.labels("link"), len(ids))
    return wave, plan


# -- reminders -----------------------------------------------------------------------------------
def reminder_steps(first_sent: datetime) -> list[tuple[str, datetime]]:
    """The cadence for one series: (step, due at), never at or after the cutover."""
    cfg = current_app.config
    steps = [(f"day{d}", first_sent + timedelta(days=d))
             for d in sorted(set(cfg.get("REMINDER_DAYS") or [])) if d > 0]
    cut = cutover_start()
    if cut is not None:
        last = cut - timedelta(days=max(0, int(cfg.get("REMINDER_BEFORE_CUTOVER_DAYS", 2))))
        # The "last reminder" is the last one: steps it would follow are dropped.
        steps = [(name, at) for name, at in steps if at < min(last, cut)]
        if first_sent < last < cut:
            steps.append(("cutover", last))
    return steps


def plan_reminders(now: datetime | None = None) -> int:
    """Queue the reminder each series is due for now (the latest step due, once); the caller
    commits. Safe to run any time, from any number of workers."""
    now = now or utcnow()
    cut = cutover_start()
    if cut is not None and now >= cut:
        return 0
    sweep_expired_invitations(now)
    could_be_due = _could_be_due(now)
    if could_be_due is None:
        return 0
    throttle.lock()
    latest = (select(Email.customer_id, func.max(Email.id).label("anchor_id"))
              .where(Email.kind == "link", Email.status == "sent").group_by(Email.customer_id)
              .subquery())
    anchors = db.session.execute(
        select(Email).join(latest, latest.c.anchor_id == Email.id)
        .join(Customer, Customer.id == Email.customer_id)
        .where(Customer.status.in_(NEEDS_CARD), Customer.purged_at.is_(None),
               ~exists().where(Bounce.address == Customer.email), could_be_due)
    ).scalars().all()
    queued = 0
    for anchor in anchors:
        if _queue_due_reminder(anchor, now):
            queued += 1
    return queued


def _could_be_due(now: datetime):
    """A condition on an anchor email's `sent_at` that every series with a reminder due now
    meets (None: no series can have one). Each step of `reminder_steps` falls a cadence day
    after the first email, or at the fixed "last reminder" moment before the cutover; a
    series whose first email is younger than the shortest cadence, while that moment is still
    ahead, has nothing due, and the planner (every ten minutes) skips it without a query."""
    cfg = current_app.config
    days = [d for d in (cfg.get("REMINDER_DAYS") or []) if d > 0]
    conditions = []
    if days:
        conditions.append(Email.sent_at <= now - timedelta(days=min(days)))
    cut = cutover_start()
    if cut is not None:
        last = cut - timedelta(days=max(0, int(cfg.get("REMINDER_BEFORE_CUTOVER_DAYS", 2))))
        if last <= now:
            conditions.append(Email.sent_at < last)
    return or_(*conditions) if conditions else None


def _queue_due_reminder(anchor: Email, now: datetime) -> bool:

    steps = reminder_steps(anchor.sent_at)
    names = [name for name, _ in steps]
    done = set(db.session.execute(
        select(Email.step).where(Email.series_id == anchor.id, Email.kind == "reminder")
    ).scalars())
    after = max((names.index(s) for s in done if s in names), default=-1)
    due = [i for i, (_, at) in enumerate(steps) if at <= now and i > after]
    if not due:
        return False
    customer_id = anchor.customer_id
    busy = db.session.execute(select(exists().where(
        Email.customer_id == customer_id, Email.kind != "confirmation",
        (Email.status.in_(("queued", "sending")))
        | and_(Email.status == "sent", Email.sent_at > now - QUIET_AFTER_EMAIL),
    ))).scalar()
    if busy or _revoked_since(customer_id, anchor.sent_at):
        return False
    step = steps[due[-1]][0]  # several overdue (workers were down): send only the latest
    email = queue_email(anchor.customer, "reminder", series_id=anchor.id, step=step,
                        throttled=True, dedupe_key=f"reminder:{anchor.id}:{step}")
    return email is not None


# -- funnel per wave -----------------------------------------------------------------------------
def wave_funnel(limit: int = 20) -> list[dict]:
    """Per wave, newest first: queued, sent, then customers who opened the page, started a card
    setup and saved a card after their wave email went."""
    waves = db.session.execute(select(Wave).order_by(Wave.id.desc()).limit(limit)).scalars().all()
    if not waves:
        return []
    ids = [w.id for w in waves]
    sent = dict(db.session.execute(
        select(Email.wave_id, func.count()).where(Email.wave_id.in_(ids), Email.status == "sent")
        .group_by(Email.wave_id)
    ).all())
    stages = {}
    for kind in ("page_opened", "setup_started", "updated"):
        stages[kind] = dict(db.session.execute(
            select(Email.wave_id, func.count(distinct(Email.customer_id)))
            .join(CustomerEvent, and_(CustomerEvent.customer_id == Email.customer_id,
                                      CustomerEvent.kind == kind,
                                      CustomerEvent.at >= Email.sent_at))
            .where(Email.wave_id.in_(ids), Email.status == "sent")
            .group_by(Email.wave_id)
        ).all())
    return [{"wave": w, "queued": w.queued, "sent": sent.get(w.id, 0),
             "opened": stages["page_opened"].get(w.id, 0),
             "started": stages["setup_started"].get(w.id, 0),
             "updated": stages["updated"].get(w.id, 0)} for w in waves]
