"""`flask links create|revoke` and `flask demo`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import load_link
from cardbridge.models import AuditEvent, Customer, Link


def test_links_create_prints_the_url_last_and_invites(app, runner, make_customer):
    customer = make_customer(legacy_id="L-1")
    result = runner.invoke(args=["links", "create", "L-1"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith("https://cards.example.test/u/")
    with app.app_context():
        assert db.session.get(Customer, customer.id).status == "invited"
        audit = db.session.execute(select(AuditEvent)).scalar_one()
        assert audit.action == "link.generated" and audit.target == "L-1"
        assert url.split("/u/")[1] not in str(audit.details)  # the token is never stored


def test_links_create_accepts_a_stripe_customer_id(app, runner, make_customer):
    make_customer(legacy_id="L-1", stripe_customer_id="cus_other")
    wanted = make_customer(legacy_id="L-2", stripe_customer_id="cus_abc")
    result = runner.invoke(args=["links", "create", "cus_abc", "--days", "3"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1].split("/u/")[1]
    with app.app_context():
        assert load_link(token).customer_id == wanted.id  # the link is the cus_ customer's


def test_links_create_send_writes_the_email(app, runner, make_customer):
    make_customer(legacy_id="L-3", email="l3@example.com")
    result = runner.invoke(args=["links", "create", "L-3", "--send"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    mails = list((Path(app.instance_path) / "outbox").glob("*.eml"))
    assert len(mails) == 1
    assert url in mails[0].read_text().replace("=\n", "")


def test_unknown_customer_is_a_one_line_error(runner):
    result = runner.invoke(args=["links", "create", "nobody"])
    assert result.exit_code != 0
    assert "no customer with id 'nobody'" in result.output


def test_too_many_days_is_refused(runner, make_customer):
    make_customer(legacy_id="L-4")
    result = runner.invoke(args=["links", "create", "L-4", "--days", "99"])
    assert result.exit_code != 0
    assert "LINK_MAX_AGE_DAYS" in result.output


def test_links_revoke_revokes_every_live_link(app, runner, make_customer):
    customer = make_customer(legacy_id="L-5")
    runner.invoke(args=["links", "create", "L-5"])
    result = runner.invoke(args=["links", "revoke", "L-5"])
    assert result.exit_code == 0
    assert "revoked 1 link(s)" in result.output
    with app.app_context():
        assert db.session.get(Customer, customer.id).status == "needs_update"
        assert all(link.revoked_at for link in db.session.execute(select(Link)).scalars())


def test_demo_seeds_every_status_and_prints_two_links(app, runner):
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    links = [line for line in result.output.splitlines() if "/u/" in line]
    assert len(links) == 2
    assert "(en français)" in links[1] and "français" not in links[0]
    with app.app_context():
        statuses = set(db.session.execute(select(Customer.status)).scalars())
    assert statuses == {"ready", "needs_update", "invited", "updated"}
    again = runner.invoke(args=["demo"])
    assert "0 created" in again.output
