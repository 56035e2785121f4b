"""Signed customer links: issue, verify, revoke, consume.

The token is an itsdangerous signature over one opaque random id and nothing else; the
`links` row behind it is what makes a link expire, die when used, or die when revoked.
Tokens never reach a log: log `link.public_id`.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import joinedload

from cardbridge.customers.statuses import INVITE, event_insert, refresh_link_status
from cardbridge.extensions import db
from cardbridge.models import Customer, CustomerEvent, Link
from cardbridge.models.types import UTCDateTime, utcnow
from cardbridge.stripe_gateway import GatewayError

log = logging.getLogger(__name__)

SALT = "cardbridge.customer-link.v1"
MAX_TOKEN_LENGTH = 256  # real tokens are ~75 characters; refuse anything huge before parsing
TOKEN_SHAPE = re.compile(r"\.?[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


class LinkError(Exception):
    """A link that cannot be used; `reason` is tampered | expired | revoked | used."""

    def __init__(self, reason: str, link: Link | None = None, *, locale: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.link = link
        # Whose link it was, when we know: the friendly page speaks their language.
        self.locale = locale if locale is not None else (link.customer.locale if link else None)


@dataclass(frozen=True)
class IssuedLink:
    link: Link
    url: str
    token: str


def _serializer() -> URLSafeTimedSerializer:
    # itsdangerous signs with the last key and verifies with all: LINK_SECRET_KEYS is newest last.
    return _serializer_for(tuple(current_app.config["LINK_SECRET_KEYS"]))


def _serializer_for(keys: tuple[str, ...]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(keys), salt=SALT)


def _max_age_seconds() -> int:
    return current_app.config["LINK_MAX_AGE_DAYS"] * 86400


def url_for_token(token: str) -> str:
    """Links are built from PUBLIC_BASE_URL only, never from a request's Host."""
    return f"{current_app.config['PUBLIC_BASE_URL']}/u/{token}"


def issue_link(
    customer: Customer,
    *,
    created_by: str,
    channel: str = "generated",
    days: int | None = None,
    now: datetime | None = None,
) -> IssuedLink:
    """Make a fresh link for `customer`; older unused links of theirs stop working."""
    now = now or utcnow()
    public_id = issue_links({customer.id: created_by}, channel=channel, days=days, now=now)[
        customer.id]
    # The batch wrote through Core: what this session holds of the customer and their links
    # is stale (status, older links' revoked_at), so it is read again.
    db.session.expire(customer)
    for held in list(db.session.identity_map.values()):
        if isinstance(held, Link) and held.customer_id == customer.id:
            db.session.expire(held)
    link = db.session.execute(select(Link).where(Link.public_id == public_id)).scalar_one()
    token = token_for(link)  # signed as of the link's creation: emails sign it the same way
    return IssuedLink(link=link, url=url_for_token(token), token=token)


def issue_links(
    wanted: dict[int, str],
    *,
    channel: str = "email",
    days: int | None = None,
    now: datetime | None = None,
) -> dict[int, str]:
    """The one place links are made: a new link for each customer id in `wanted` (→ created_by),
    for one customer or a campaign batch alike. Each customer's older unused links are
    superseded (their open setups closed at Stripe), a `link_created` event is written, and a
    customer who needed a card becomes `invited`. Returns customer id → the new public id.
    Writes are executemany Core statements: a batch costs a handful of round trips."""
    now = now or utcnow()
    max_days = current_app.config["LINK_MAX_AGE_DAYS"]
    days = max_days if days is None else days
    if not 1 <= days <= max_days:
        raise ValueError(f"a link can live 1 to {max_days} days (LINK_MAX_AGE_DAYS)")
    if not wanted:
        return {}
    ids = sorted(wanted)
    public = {cid: secrets.token_urlsafe(16) for cid in ids}
    close_open_setups(ids)
    db.session.execute(_SUPERSEDE, [{"l_customer": cid, "l_now": now} for cid in ids])
    db.session.execute(_NEW_LINK, [
        {"l_public": public[cid], "l_customer": cid, "l_by": wanted[cid], "l_channel": channel,
         "l_now": now, "l_expires": now + timedelta(days=days)} for cid in ids])
    link_ids = dict(db.session.execute(
        select(_LINKS.c.public_id, _LINKS.c.id).where(_LINKS.c.public_id.in_(public.values()))
    ).all())
    db.session.execute(_LINK_CREATED, [
        {"v_customer": cid, "v_link": link_ids[public[cid]], "v_at": now,
         "v_details": {"by": wanted[cid], "channel": channel, "days": days}} for cid in ids])
    db.session.execute(INVITE, [{"c_id": cid, "c_now": now} for cid in ids])
    return public


_LINKS = Link.__table__
_SUPERSEDE = (
    update(_LINKS).where(_LINKS.c.customer_id == bindparam("l_customer"),
                         _LINKS.c.used_at.is_(None), _LINKS.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("l_now", type_=UTCDateTime)))
_NEW_LINK = insert(_LINKS).values(
    public_id=bindparam("l_public"), customer_id=bindparam("l_customer"),
    created_by=bindparam("l_by"), channel=bindparam("l_channel"),
    created_at=bindparam("l_now", type_=UTCDateTime),
    expires_at=bindparam("l_expires", type_=UTCDateTime))
_LINK_CREATED = event_insert("link_created")


def _verify(token: str) -> tuple[str | None, str | None]:
    """(public_id, None) for a good token, (public_id or None, "expired") for a stale one.

    Raises LinkError("tampered") for anything that is not our signature.
    """
    token = (token or "").strip()
    if len(token) > MAX_TOKEN_LENGTH or not TOKEN_SHAPE.fullmatch(token):
        raise LinkError("tampered")  # URL-safe base64 only: no padding, no +/, no encodings
    serializer = _serializer()
    try:
        return serializer.loads(token, max_age=_max_age_seconds()), None
    except SignatureExpired as exc:
        # Signature good but too old (or dated in the future): the row still helps a kinder page.
        public_id = None
        if exc.payload is not None:
            try:
                public_id = serializer.load_payload(exc.payload)
            except BadSignature:
                public_id = None
        return public_id, "expired"
    except BadSignature as exc:
        raise LinkError("tampered") from exc


def public_id_of(token: str) -> str | None:
    """The public id a genuine token names, expired or not (LinkError for a forged one)."""
    public_id, _problem = _verify(token)
    return public_id if _plausible(public_id) else None


def load_link(token: str, *, now: datetime | None = None, allow_spent: bool = False) -> Link:
    """The live link behind `token`, or LinkError saying why not (no state is changed).

    `allow_spent` returns a genuine link whatever its state: finishing a setup that Stripe
    confirmed must work even if the webhook already used the link or it expired meanwhile.
    """
    now = now or utcnow()
    public_id, problem = _verify(token)
    link = _find(public_id)
    if problem:
        if allow_spent and link is not None and link.customer.purged_at is None:
            return link
        raise LinkError(problem, link)
    if link is None:
        raise LinkError("tampered")
    if link.customer.purged_at is not None:
        raise LinkError("expired", link)  # nothing personal is left to show or to save for
    state = link.state(now)
    if state != "live" and not allow_spent:
        raise LinkError(state, link)
    return link


def find_link(public_id: object) -> Link | None:
    """The link row with this public id (any state), or None."""
    return _find(public_id)


def token_for(link: Link) -> str:
    """The link's token, signed as of the link's creation: the very token `issue_link` gave,
    whose signed age is the link's age (emails, and a browser that kept only the public id)."""
    serializer = _serializer_as_of(tuple(current_app.config["LINK_SECRET_KEYS"]),
                                   int(link.created_at.timestamp()))
    return serializer.dumps(link.public_id)


class _SignedAsOf(TimestampSigner):
    """itsdangerous' timestamp signer with its clock fixed to the moment given (the link's
    creation): the one subclass links need, so a token made again is the token first given."""

    def __init__(self, *args, timestamp: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._timestamp = timestamp

    def get_timestamp(self) -> int:
        return self._timestamp


def _serializer_as_of(keys: tuple[str, ...], timestamp: int) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(keys), salt=SALT, signer=_SignedAsOf,
                                  signer_kwargs={"timestamp": timestamp})


def _plausible(public_id: object) -> bool:
    return isinstance(public_id, str) and len(public_id) <= 64  # what a links row can hold


def _find(public_id: object) -> Link | None:
    if not _plausible(public_id):
        return None
    # One round trip for what the page shows: the link, its customer and the migrated cards.
    # The one reader of a link, for the page (which changes nothing) and its POSTs alike.
    stmt = (select(Link).where(Link.public_id == public_id)
            .options(joinedload(Link.customer).joinedload(Customer.migrated_cards)))
    return db.session.execute(stmt).unique().scalar_one_or_none()


def revoke_links(
    customer: Customer,
    *,
    by: str,
    now: datetime | None = None,
    reason: str = "revoked",
    refresh: bool = True,
) -> int:
    """Revoke every unused, unrevoked link of `customer`; returns how many.

    A revoked link's open SetupIntent is cancelled and its Checkout Session expired at Stripe,
    so nothing more can be confirmed on them (and recording refuses a revoked link anyway).
    """
    now = now or utcnow()
    close_open_setups([customer.id])
    result = db.session.execute(
        update(Link)
        .where(Link.customer_id == customer.id, Link.used_at.is_(None), Link.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session="fetch")
    )
    count = result.rowcount or 0
    if count and reason != "superseded":
        db.session.add(
            CustomerEvent(customer_id=customer.id, kind="links_revoked", at=now,
                          details={"by": by, "count": count})
        )
    if refresh:
        refresh_link_status(customer, now)
    return count


def close_open_setups(customer_ids: list[int]) -> None:
    """Cancel the open SetupIntents and expire the Checkout Sessions of these customers' unused,
    unrevoked links, which the caller is about to revoke or supersede (one customer's revoke,
    or a campaign batch's new links). Best effort: one that already succeeded or is gone
    cannot be closed, and Stripe being down must not stop a revoke; the row's revoked_at is
    what recording obeys."""
    rows = db.session.execute(
        select(Link.public_id, Link.setup_intent_id, Link.checkout_session_id)
        .where(Link.customer_id.in_(customer_ids), Link.used_at.is_(None),
               Link.revoked_at.is_(None),
               Link.setup_intent_id.is_not(None) | Link.checkout_session_id.is_not(None))
    ).all()
    gateway = current_app.extensions["stripe_gateway"] if rows else None
    for public_id, seti_id, session_id in rows:
        for what, close, stripe_id in (("setup_intent", gateway.cancel_setup_intent, seti_id),
                                       ("checkout_session", gateway.expire_checkout_session,
                                        session_id)):
            if not stripe_id:
                continue
            try:
                close(stripe_id)
            except GatewayError as exc:
                log.warning("could not close %s of revoked link=%s: %s", what, public_id,
                            type(exc).__name__)


def consume(link: Link, *, now: datetime | None = None) -> bool:
    """Mark the link used, atomically: True for the one caller that wins."""
    now = now or utcnow()
    result = db.session.execute(
        update(Link)
        .where(Link.id == link.id, Link.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session="fetch")
    )
    return bool(result.rowcount)
