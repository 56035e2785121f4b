""""Email me a fresh link": the request does the same work for any address; the worker re-sends
a link that still works instead of replacing it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cardbridge.extensions import db, huey
from cardbridge.models import Customer, Email, Link
from cardbridge.models.types import utcnow
from tests.blueprints.test_customer_page import _variable_free, ask_fresh, link_for, snapshot


@pytest.fixture
def queued_app(make_app, make_customer):
    """The queue is real (SQLite in instance/): nothing runs until a worker does. (Made after
    `make_customer`'s app: the queue is one object, configured by the last app made.)"""
    return make_app(QUEUE_IMMEDIATE=False)


def _pending(app) -> list[tuple[str, tuple]]:
    with app.app_context():
        return [(task.name, tuple(task.args)) for task in huey.pending()]


def _run_worker(app) -> None:
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output


def test_known_and_unknown_addresses_do_the_same_work_in_the_request(queued_app, make_customer):
    make_customer(email="known@example.com")
    before = snapshot(queued_app)
    known = ask_fresh(queued_app.test_client(), "known@example.com")
    unknown = ask_fresh(queued_app.test_client(), "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert _variable_free(known) == _variable_free(unknown)
    assert snapshot(queued_app) == before  # nothing written by either request
    assert [name for name, _ in _pending(queued_app)] == ["send_fresh_link"] * 2
    with queued_app.app_context():
        assert db.session.execute(select(func.count(Email.id))).scalar() == 0


def test_a_live_link_is_sent_again_not_replaced(queued_app, make_customer):
    customer = make_customer(email="live@example.com", status="invited")
    _, public_id = link_for(queued_app, customer.id)
    ask_fresh(queued_app.test_client(), "live@example.com")
    _run_worker(queued_app)
    with queued_app.app_context():
        links = db.session.execute(select(Link)).scalars().all()
        assert [link.public_id for link in links] == [public_id]
        assert links[0].revoked_at is None
        email = db.session.execute(select(Email)).scalar_one()
        assert (email.kind, email.link_id) == ("fresh_link", links[0].id)


def test_an_unknown_address_gets_nothing(queued_app, make_customer):
    make_customer(email="someone@example.com")
    ask_fresh(queued_app.test_client(), "nobody@example.com")
    _run_worker(queued_app)
    with queued_app.app_context():
        assert db.session.execute(select(Email)).first() is None
        assert db.session.execute(select(Link)).first() is None


def test_a_customer_whose_link_expired_gets_a_new_one(queued_app, make_customer):
    customer = make_customer(email="late@example.com", status="invited")
    _, old_id = link_for(queued_app, customer.id)
    with queued_app.app_context():
        link = db.session.execute(select(Link)).scalar_one()
        link.expires_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    ask_fresh(queued_app.test_client(), "late@example.com")
    _run_worker(queued_app)
    with queued_app.app_context():
        links = db.session.execute(select(Link).order_by(Link.id)).scalars().all()
        assert len(links) == 2 and links[1].public_id != old_id
        email = db.session.execute(select(Email)).scalar_one()
        assert email.link_id == links[1].id
        assert db.session.get(Customer, customer.id).status == "invited"
