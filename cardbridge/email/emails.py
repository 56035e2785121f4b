"""Which emails exist and what they say: queueing outbox rows, composing each kind, bounces.

Callers (CLI, console, API, campaigns, the card recording path) queue rows here and commit; a
worker sends them after the commit (cardbridge/delivery/outbox.py). Nothing here talks to SMTP.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from cardbridge import metrics
from cardbridge.email.mailer import Language, language, pick_locale, render
from cardbridge.email.pending import deliver_after_commit
from cardbridge.extensions import db
from cardbridge.models import Bounce, Customer, CustomerEvent, Email, Link, SavedPaymentMethod
from cardbridge.models.customers import known_card
from cardbridge.models.links import link_state
from cardbridge.models.types import utcnow

log = logging.getLogger(__name__)

BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express",
          "american express": "American Express", "discover": "Discover",
          "diners": "Diners Club", "jcb": "JCB", "unionpay": "UnionPay"}
_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}")


# -- queueing ------------------------------------------------------------------------------------
def is_bounced(address: str) -> bool:
    return bool(db.session.execute(
        select(exists().where(Bounce.address == address.strip().lower()))
    ).scalar())


def queue_email(customer: Customer, kind: str, *, link_id: int | None = None,
                wave_id: int | None = None, series_id: int | None = None,
                step: str | None = None, payment_method_id: int | None = None,
                throttled: bool = False, dedupe_key: str | None = None,
                at: datetime | None = None) -> Email | None:
    """Add one outbox row (sent after the caller commits); None if `dedupe_key` already exists."""
    now = utcnow()
    email = Email(customer_id=customer.id, kind=kind, to_address=customer.email,
                  link_id=link_id, wave_id=wave_id, series_id=series_id, step=step,
                  payment_method_id=payment_method_id, throttled=throttled,
                  dedupe_key=dedupe_key, created_at=now, next_attempt_at=at or now)
    if customer.purged_at is not None or not customer.email:
        email.status, email.last_error = "cancelled", "no address: personal data purged"
    elif is_bounced(customer.email):
        email.status, email.last_error = "cancelled", "address bounced"
    try:
        with db.session.begin_nested():
            db.session.add(email)
            db.session.flush()
    except IntegrityError:
        return None  # the same reminder step or confirmation was queued by someone else
    if email.status == "queued":
        metrics.count_after_commit(db.session(), metrics.EMAILS_QUEUED.labels(kind))
        deliver_after_commit(db.session(), [email.id], eta=at if at and at > now else None,
                             urgent=not throttled)
    return email


def send_link_email(customer: Customer, link: Link, *, kind: str = "link") -> int:
    """Queue the link email (kind="link") or the one asked for from a dead link ("fresh_link").

    Returns the outbox row id; the email leaves once the caller commits and a worker runs.
    """
    if kind not in ("link", "fresh_link"):
        raise ValueError(f"not a link email: {kind!r}")
    email = queue_email(customer, kind, link_id=link.id)
    assert email is not None  # no dedupe key: always a new row
    return email.id


def queue_confirmation_email(customer_id: int, payment_method_id: int) -> int | None:
    """Queue "your Visa ending 4242 will be charged from now on", once per saved card."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise ValueError(f"no customer {customer_id}")
    email = queue_email(customer, "confirmation", payment_method_id=payment_method_id,
                        dedupe_key=f"confirmation:{payment_method_id}")
    return email.id if email is not None else None


# -- bounces -------------------------------------------------------------------------------------
def mark_bounced(address: str, *, source: str, reason: str | None = None,
                 provider_message_id: str | None = None) -> tuple[Bounce, int]:
    """Stop all email to `address`: record the bounce, cancel what is still queued for it.

    Returns the bounce and how many queued emails were cancelled. Marking twice keeps the first.
    """
    address = address.strip().lower()
    if "@" not in address or len(address) > 320:
        raise ValueError("not an email address")
    bounce = db.session.execute(
        select(Bounce).where(Bounce.address == address)
    ).scalar_one_or_none()
    if bounce is None:
        bounce = Bounce(address=address, source=source, reason=(reason or "")[:500] or None,
                        provider_message_id=provider_message_id, at=utcnow())
        db.session.add(bounce)
        customers = db.session.execute(
            select(Customer.id).where(Customer.email == address)
        ).scalars().all()
        for customer_id in customers:
            db.session.add(CustomerEvent(customer_id=customer_id, kind="email_bounced",
                                         details={"source": source}))
    cancelled = 0
    for email in db.session.execute(
        select(Email).where(Email.to_address == address, Email.status == "queued")
    ).scalars():
        email.status, email.last_error = "cancelled", "address bounced"
        cancelled += 1
    db.session.flush()
    return bounce, cancelled


@dataclass(frozen=True)
class NeedsHuman:
    customer_id: int
    legacy_id: str
    email: str
    status: str
    reason: str
    at: datetime


def needs_human(limit: int = 500) -> list[NeedsHuman]:
    """Customers who still need a card but whom email cannot reach: a bounced address, or
    an email that failed for good (refused, or maybe delivered) with nothing sent since."""
    needs = Customer.status.in_(("needs_update", "invited"))
    rows: dict[int, NeedsHuman] = {}
    for customer, bounce in db.session.execute(
        select(Customer, Bounce).join(Bounce, Bounce.address == Customer.email).where(needs)
        .order_by(Bounce.at.desc()).limit(limit)
    ).all():
        reason = f"address bounced ({bounce.source})" + (f": {bounce.reason}" if bounce.reason
                                                         else "")
        rows[customer.id] = NeedsHuman(customer.id, customer.legacy_id, customer.email,
                                       customer.status, reason, bounce.at)
    later = aliased(Email)
    for email, customer in db.session.execute(
        select(Email, Customer).join(Customer, Customer.id == Email.customer_id)
        .where(Email.status == "failed", needs,
               ~exists().where(later.customer_id == Email.customer_id, later.id > Email.id,
                               later.status.in_(("queued", "sending", "sent"))))
        .order_by(Email.updated_at.desc()).limit(limit)
    ).all():
        if customer.id not in rows:
            rows[customer.id] = NeedsHuman(
                customer.id, customer.legacy_id, customer.email, customer.status,
                f"{email.kind} email failed: {email.last_error or 'unknown error'}",
                email.updated_at)
    return sorted(rows.values(), key=lambda r: r.at, reverse=True)[:limit]


def email_for_provider_id(provider_message_id: str) -> Email | None:
    value = provider_message_id.strip().strip("<>")
    return db.session.execute(
        select(Email).where(
            (Email.provider_message_id == value) | (Email.message_id == f"<{value}>")
        ).limit(1)
    ).scalar_one_or_none()


# -- what a worker reads of the emails it claimed --------------------------------------------------
# Plain rows, not ORM objects: a worker reads thousands of them once and writes them back with
# one statement per email; identity maps and attribute history would cost more than the SQL.
# They have the attributes compose() and the outbox read of Email, Customer and Link.
@dataclass(slots=True)
class LinkRow:
    id: int
    public_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        return link_state(self, now)


@dataclass(slots=True)
class CustomerRow:
    id: int
    name: str | None
    legacy_id: str
    locale: str | None
    status: str
    card_brand: str | None
    card_last4: str | None
    card_exp_month: int | None
    card_exp_year: int | None
    migrated_cards: list = field(default_factory=list)  # rows with brand, last4, exp_*

    def known_card(self) -> dict | None:
        return known_card(self.migrated_cards, self)


@dataclass(slots=True)
class OutboxEmail:
    id: int
    customer_id: int
    kind: str
    step: str | None
    to_address: str
    wave_id: int | None
    series_id: int | None
    payment_method_id: int | None
    attempts: int
    created_at: datetime
    link_id: int | None
    customer: CustomerRow
    link: LinkRow | None = None
    first_sent: datetime | None = None  # a reminder's: when its series' first email went


# -- composing -----------------------------------------------------------------------------------
def card_label(lang: Language, brand: str | None, last4: str | None) -> str | None:
    """"Visa ending 4242" in `lang`, or None when we know no digits."""
    if not last4:
        return None
    name = BRANDS.get((brand or "").lower()) or (brand or "").capitalize() \
        or lang.gettext("Card")
    return lang.gettext("%(brand)s ending %(last4)s", brand=name, last4=last4)


def cutover_deadline(now: datetime) -> date | None:
    cutover = current_app.config.get("CUTOVER_DATE")
    return cutover if cutover and cutover > now.date() else None


def compose(email: Email, url: str | None, *, now: datetime | None = None,
            first_sent: datetime | None = None) -> tuple[str, str, str]:
    """(subject, text, html) of `email` in its customer's language; `url` is its signed link."""
    now = now or utcnow()
    customer = email.customer
    cfg = current_app.config
    lang = language(pick_locale(customer.locale))
    company = cfg["COMPANY_NAME"]
    deadline = cutover_deadline(now)
    context = {
        "name": customer.name, "reference": customer.legacy_id, "url": url,
        "site": cfg["PUBLIC_BASE_URL"], "site_host": urlsplit(cfg["PUBLIC_BASE_URL"]).netloc,
        "deadline": lang.day(deadline) if deadline else None,
        "expires": lang.day(email.link.expires_at) if email.link is not None else None,
        "brand_color": cfg["BRAND_COLOR"] if _COLOR.fullmatch(cfg["BRAND_COLOR"] or "")
        else "#3b4cca",
    }
    if email.kind == "confirmation":
        pm = db.session.get(SavedPaymentMethod, email.payment_method_id) \
            if email.payment_method_id else None
        context["card"] = (card_label(lang, pm.brand, pm.last4) if pm else None) \
            or lang.gettext("new card")
        subject = lang.gettext("Your card for %(company)s is updated", company=company)
    else:
        known = customer.known_card() or {}
        context["card"] = card_label(lang, known.get("brand"), known.get("last4"))
        if context["card"] and known.get("exp_month") and known.get("exp_year"):
            context["card"] += " · " + lang.gettext(
                "expires %(month)02d/%(year)d", month=known["exp_month"], year=known["exp_year"])
        subject = _subject(lang, email, company, context)
    if email.kind == "reminder":
        context["final"] = email.step == "cutover"
        context["first_sent"] = lang.day(first_sent or email.created_at)
    context["title"] = subject
    text, html = render(email.kind, lang.code, **context)
    return subject, text, html


def _subject(lang: Language, email: Email, company: str, context: dict) -> str:
    if email.kind == "fresh_link":
        return lang.gettext("Your new card update link from %(company)s", company=company)
    if email.kind == "reminder":
        if email.step == "cutover" and context.get("deadline"):
            return lang.gettext(
                "Last reminder: update your card for %(company)s before %(date)s",
                company=company, date=context["deadline"])
        return lang.gettext("Reminder: please update your card for %(company)s",
                            company=company)
    return lang.gettext("Action needed: add your card again for %(company)s", company=company)
