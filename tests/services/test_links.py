"""links/service.py: signing, expiry, rotation, single use, revocation (research §7–§8)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links import service as links
from cardbridge.links.service import (
    SALT,
    LinkError,
    issue_link,
    load_link,
    revoke_links,
)
from cardbridge.models import Customer, Link
from cardbridge.models.types import utcnow


@pytest.fixture
def customer(ctx, make_customer):
    made = make_customer()
    return db.session.get(Customer, made.id)


def issue(customer, **kw):
    issued = issue_link(customer, created_by="test", **kw)
    db.session.commit()
    return issued


def reason(token, **kw):
    with pytest.raises(LinkError) as err:
        load_link(token, **kw)
    return err.value.reason


def test_issued_link_loads_and_makes_customer_invited(customer):
    issued = issue(customer)
    assert load_link(issued.token).id == issued.link.id
    assert customer.status == "invited"


def test_url_uses_public_base_url_only(customer):
    issued = issue(customer)
    assert issued.url == f"https://cards.example.test/u/{issued.token}"


def test_payload_is_only_the_opaque_link_id(customer):
    issued = issue(customer)
    payload = issued.token.split(".")[0]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded == issued.link.public_id
    for secret in (customer.email, customer.legacy_id, customer.name):
        assert secret not in json.dumps(decoded)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: "",
        lambda t: ".",
        lambda t: t.split(".")[0],  # payload only
        # a character inside the signature: the last one may only carry padding bits
        lambda t: t[:-5] + ("A" if t[-5] != "A" else "B") + t[-4:],
        lambda t: ("B" if t[0] != "B" else "C") + t[1:],  # payload flipped
        lambda t: t + "=",
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+/",
        lambda t: t * 4,  # long
        lambda t: "A" * 9000,  # 8 KB+
        lambda t: "%2E".join(t.split(".")),  # URL-encoded dots
    ],
    ids=["empty", "dot", "payload-only", "sig-flip", "payload-flip", "padding", "plus-slash",
         "repeated", "huge", "url-encoded"],
)
def test_bad_tokens_are_refused_as_tampered(customer, mangle):
    token = issue(customer).token
    assert reason(mangle(token)) == "tampered"


def test_trailing_whitespace_from_email_clients_is_tolerated(customer):
    issued = issue(customer)
    assert load_link(issued.token + "\n ").id == issued.link.id


def test_token_signed_with_another_salt_is_refused(customer, app):
    issued = issue(customer)
    other = URLSafeTimedSerializer(app.config["LINK_SECRET_KEYS"], salt="cookie-session")
    assert reason(other.dumps(issued.link.public_id)) == "tampered"


def test_zlib_bomb_payload_fails_on_signature_first(customer):
    import zlib

    bomb = base64.urlsafe_b64encode(zlib.compress(b"0" * 5_000_000)).decode().rstrip("=")
    assert reason("." + bomb + ".AAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA") == "tampered"


def test_token_older_than_max_age_is_expired(customer, app, monkeypatch):
    issued = issue(customer)
    max_age = app.config["LINK_MAX_AGE_DAYS"] * 86400
    real_time = __import__("time").time
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: real_time() + max_age + 5)
    err = reason(issued.token)
    assert err == "expired"


def test_token_at_exactly_max_age_still_loads(customer, app, monkeypatch):
    issued = issue(customer, days=app.config["LINK_MAX_AGE_DAYS"])
    signed_at = URLSafeTimedSerializer(app.config["LINK_SECRET_KEYS"], salt=SALT).loads(
        issued.token, return_timestamp=True)[1].timestamp()
    max_age = app.config["LINK_MAX_AGE_DAYS"] * 86400
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: int(signed_at) + max_age)
    # the row's expiry is the same instant; check at that instant minus one second
    assert load_link(issued.token, now=issued.link.expires_at - timedelta(seconds=1))


def test_token_dated_in_the_future_is_refused(customer, app):
    import time

    from cardbridge.links import service

    issued = issue(customer)
    future = service._serializer_as_of(tuple(app.config["LINK_SECRET_KEYS"]),
                                       int(time.time()) + 3600).dumps(issued.link.public_id)
    assert reason(future) == "expired"


def test_row_expiry_applies_for_short_links(customer):
    issued = issue(customer, days=1)
    assert reason(issued.token, now=utcnow() + timedelta(days=1, seconds=1)) == "expired"


def test_days_above_max_is_refused(customer, app):
    with pytest.raises(ValueError):
        issue_link(customer, created_by="test", days=app.config["LINK_MAX_AGE_DAYS"] + 1)


def test_rotation_old_key_verifies_new_key_signs(customer, app):
    old = issue(customer)
    app.config["LINK_SECRET_KEYS"] = ["test-link-key", "newer-key"]
    new = issue(customer)  # revokes `old`, so check old's signature separately
    assert URLSafeTimedSerializer(["newer-key"], salt=SALT).loads(new.token) == new.link.public_id
    db.session.execute(
        Link.__table__.update().where(Link.id == old.link.id).values(revoked_at=None)
    )
    db.session.commit()
    assert load_link(old.token).id == old.link.id
    app.config["LINK_SECRET_KEYS"] = ["newer-key"]
    assert reason(old.token) == "tampered"


def test_new_link_revokes_older_unused_links(customer):
    first = issue(customer)
    second = issue(customer)
    assert reason(first.token) == "revoked"
    assert load_link(second.token).id == second.link.id


def test_revoke_all_returns_customer_to_needs_update(customer):
    issued = issue(customer)
    assert revoke_links(customer, by="test") == 1
    db.session.commit()
    assert reason(issued.token) == "revoked"
    assert customer.status == "needs_update"


def test_consume_is_single_use(customer):
    issued = issue(customer)
    assert links.consume(issued.link) is True
    assert links.consume(issued.link) is False
    db.session.commit()
    assert reason(issued.token) == "used"
    used = db.session.execute(select(Link.used_at).where(Link.id == issued.link.id)).scalar()
    assert used is not None


def test_allow_spent_returns_used_link(customer):
    issued = issue(customer)
    links.consume(issued.link)
    db.session.commit()
    assert load_link(issued.token, allow_spent=True).id == issued.link.id


def test_unknown_link_id_with_valid_signature_is_tampered(customer, app):
    forged = URLSafeTimedSerializer(app.config["LINK_SECRET_KEYS"], salt=SALT).dumps("nope")
    assert reason(forged) == "tampered"


def test_a_link_verifies_with_an_older_key_while_it_is_listed(app, make_customer):
    from flask import current_app

    with app.app_context():
        current_app.config["LINK_SECRET_KEYS"] = ["old-key"]
        issued = issue_link(db.session.get(Customer, make_customer().id), created_by="test")
        db.session.commit()
        current_app.config["LINK_SECRET_KEYS"] = ["old-key", "new-key"]  # rotation begins
        assert load_link(issued.token).id == issued.link.id
        current_app.config["LINK_SECRET_KEYS"] = ["new-key"]  # the old key is dropped
        with pytest.raises(LinkError) as err:
            load_link(issued.token)
        assert err.value.reason == "tampered"


def test_live_in_sql_and_in_python_are_the_same_rule(customer):
    from sqlalchemy import select

    from cardbridge.models import Link
    from cardbridge.models.links import is_live, link_state

    now = utcnow()
    # Each new link supersedes (revokes) the older ones: the live one is issued last.
    made = {state: issue(customer).link for state in ("used", "revoked", "expired", "live")}
    made["used"].used_at, made["used"].revoked_at = now, None
    made["expired"].expires_at, made["expired"].revoked_at = now - timedelta(seconds=1), None
    db.session.commit()
    live_in_sql = set(db.session.execute(select(Link.id).where(is_live(now))).scalars())
    live_in_python = {link.id for link in db.session.execute(select(Link)).scalars()
                      if link_state(link, now) == "live"}
    assert live_in_sql == live_in_python == {made["live"].id}
