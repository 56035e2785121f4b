"""Finding customers and acting on their links from the console, each action audited."""

from __future__ import annotations

import re

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link, load_link
from cardbridge.models import AuditEvent, Customer, CustomerEvent, Email, Link, SavedPaymentMethod
from tests.support.staff_helpers import post

REASON = "customer phoned: email never arrived"


def link_audit(db) -> list[AuditEvent]:
    return list(db.session.execute(
        select(AuditEvent).where(AuditEvent.action.startswith("link."))
        .order_by(AuditEvent.id)).scalars())


def search(client, q: str, **args):
    return client.get("/support/customers", query_string={"q": q, **args})


def test_search_by_legacy_id_opens_the_customer(agent_client, make_customer):
    c = make_customer(legacy_id="L-1001")
    response = search(agent_client, "L-1001")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/support/customers/{c.id}"


def test_search_by_email_ignores_case(agent_client, make_customer):
    c = make_customer(email="pat.doe@example.com")
    response = search(agent_client, "  Pat.DOE@Example.com ")
    assert response.headers["Location"] == f"/support/customers/{c.id}"


def test_search_by_stripe_customer_id(agent_client, make_customer):
    c = make_customer(stripe_customer_id="cus_Abc123")
    assert search(agent_client, "cus_Abc123").headers["Location"] == f"/support/customers/{c.id}"


def test_search_by_prefix_lists_matches_exact_first(agent_client, make_customer):
    make_customer(legacy_id="A-100")
    make_customer(legacy_id="A-1000")
    make_customer(legacy_id="B-1")
    page = search(agent_client, "A-100").get_data(as_text=True)
    assert page.index("A-100<") < page.index("A-1000<")
    assert "B-1<" not in page


def test_search_is_paginated(agent_client, make_customer):
    for n in range(30):
        make_customer(legacy_id=f"P-{n:03d}")
    first = search(agent_client, "P-").get_data(as_text=True)
    assert first.count('href="/support/customers/') == 25
    assert "page=2" in first
    second = search(agent_client, "P-", page=2).get_data(as_text=True)
    assert second.count('href="/support/customers/') == 5
    assert "P-029" in second and "P-000" not in second


def test_search_with_no_match_says_so(agent_client):
    assert "No customer matches" in search(agent_client, "nobody").get_data(as_text=True)


def test_search_survives_odd_input(agent_client, make_customer):
    make_customer(legacy_id="X%_1")
    assert search(agent_client, "%").status_code == 200  # LIKE wildcards are escaped
    assert "No customer matches" in search(agent_client, "_").get_data(as_text=True)
    assert search(agent_client, "a\x00b").status_code == 200


def test_customer_page_shows_everything_we_know(app, agent_client, make_customer):
    c = make_customer(legacy_id="L-7", stripe_customer_id="cus_Seven", name="Pat Seven")
    with app.app_context():
        customer = db.session.get(Customer, c.id)
        issued = issue_link(customer, created_by="ops@example.com")
        db.session.add(CustomerEvent(customer_id=c.id, link_id=issued.link.id,
                                     kind="page_opened"))
        token, url = issued.token, issued.url
        db.session.add(SavedPaymentMethod(customer_id=c.id, stripe_payment_method_id="pm_New1",
                                          setup_intent_id="seti_1", brand="visa", last4="4242",
                                          exp_month=1, exp_year=2031, recorded_via="browser"))
        db.session.commit()
    page = agent_client.get(f"/support/customers/{c.id}").get_data(as_text=True)
    for expected in ("Pat Seven", "L-7", "cus_Seven", "pm_New1", "Visa ending 4242",
                     "ops@example.com", "page opened", "link created", "Invited", "Emails"):
        assert expected in page, expected
    assert token not in page and url not in page  # a link is shown only once


def test_generate_link_shows_it_once_and_audits_who_when_where_why(app, agent_client, agent,
                                                                  make_customer):
    c = make_customer()
    response = post(agent_client, f"/support/customers/{c.id}/link", {"reason": REASON},
                    environ_overrides={"REMOTE_ADDR": "198.51.100.7"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    url = re.search(r'id="issued-url" type="text" readonly value="([^"]+)"', page).group(1)
    assert url.startswith("https://cards.example.test/u/")
    assert "shown only once" in page and 'data-copy-from="issued-url"' in page
    with app.app_context():
        link = load_link(url.rsplit("/", 1)[1])
        assert link.customer_id == c.id and link.created_by == agent.email
        assert db.session.get(Customer, c.id).status == "invited"
        [row] = link_audit(db)
        assert (row.actor, row.action, row.target, row.ip, row.reason) == (
            agent.email, "link.generated", c.legacy_id, "198.51.100.7", REASON)
        assert row.details["link"] == link.public_id and row.at is not None
    assert url not in agent_client.get(f"/support/customers/{c.id}").get_data(as_text=True)


def test_every_action_needs_a_reason(app, agent_client, make_customer):
    c = make_customer()
    for action in ("link", "send", "revoke"):
        response = post(agent_client, f"/support/customers/{c.id}/{action}", {"reason": "  "})
        assert response.status_code == 400
        assert 'aria-invalid="true"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.execute(select(Link)).first() is None
        assert link_audit(db) == []


def test_email_a_link_queues_the_email_and_audits_it(app, agent_client, agent, make_customer):
    c = make_customer(email="mail.me@example.com")
    response = post(agent_client, f"/support/customers/{c.id}/send", {"reason": REASON})
    assert response.status_code == 303
    page = agent_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "A link email to mail.me@example.com is queued" in page
    with app.app_context():
        [link] = db.session.execute(select(Link)).scalars().all()
        assert link.channel == "email"
        [email] = db.session.execute(select(Email)).scalars().all()
        assert (email.customer_id, email.link_id, email.kind) == (c.id, link.id, "link")
        assert [row.action for row in link_audit(db)] == ["link.generated", "link.sent"]
    assert "mail.me@example.com" in page and "Emails" in page


def test_revoke_all_links_kills_live_links_and_audits(app, agent_client, make_customer):
    c = make_customer()
    with app.app_context():
        link_id = issue_link(db.session.get(Customer, c.id), created_by="cli").link.id
        db.session.commit()
    response = post(agent_client, f"/support/customers/{c.id}/revoke", {"reason": REASON})
    assert response.status_code == 303
    assert "Revoked 1 live link" in agent_client.get(response.headers["Location"]).get_data(
        as_text=True)
    with app.app_context():
        assert db.session.get(Link, link_id).revoked_at is not None
        assert db.session.get(Customer, c.id).status == "needs_update"
        [row] = link_audit(db)
        assert (row.action, row.details) == ("link.revoked", {"count": 1})


def test_link_actions_are_rate_limited_per_customer(make_app, make_customer):
    from tests.support.staff_helpers import FAST_HASH, create_staff, sign_in

    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   STAFF_CUSTOMER_LINK_LIMIT="2 per hour")
    client = app.test_client()
    sign_in(client, create_staff(app, "busy@example.com"))
    c = make_customer()
    for _ in range(2):
        assert post(client, f"/support/customers/{c.id}/link", {"reason": REASON}).status_code \
            == 200
    response = post(client, f"/support/customers/{c.id}/send", {"reason": REASON})
    assert response.status_code == 429 and "Retry-After" in response.headers


def test_unknown_customer_is_404(agent_client):
    assert agent_client.get("/support/customers/999999").status_code == 404
    assert post(agent_client, "/support/customers/999999/link",
                {"reason": REASON}).status_code == 404
