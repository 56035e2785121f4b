"""Console pages for email: the wave launcher (admins), each wave's funnel, "needs a human"."""

from __future__ import annotations

from sqlalchemy import select

import blueprints.support.campaigns  # noqa: F401  (routes register on import)
from cardbridge.email.emails import mark_bounced
from cardbridge.extensions import db
from cardbridge.models import AuditEvent, Email, Wave
from tests.support.staff_helpers import post


def test_staff_see_the_waves_but_only_admins_get_the_launcher(app, agent_client,
                                                              admin_client):
    page = agent_client.get("/support/campaigns")
    assert page.status_code == 200
    assert "Waves and their funnel" in page.get_data(as_text=True)
    assert "Launch a wave" not in page.get_data(as_text=True)
    assert "Launch a wave" in admin_client.get("/support/campaigns").get_data(as_text=True)
    refused = post(agent_client, "/support/campaigns",
                   {"status": "needs_update", "amount": "1", "action": "launch",
                    "reason": "try"})
    assert refused.status_code == 403


def test_preview_changes_nothing_and_launch_needs_a_reason(app, admin_client, make_customer):
    for _ in range(4):
        make_customer()
    form = {"status": "needs_update", "size": "percent", "amount": "50"}
    preview = post(admin_client, "/support/campaigns", {**form, "action": "preview"})
    assert preview.status_code == 200
    assert 'data-preview="2"' in preview.get_data(as_text=True)
    no_reason = post(admin_client, "/support/campaigns", {**form, "action": "launch"})
    assert no_reason.status_code == 400
    with app.app_context():
        assert db.session.execute(select(Email)).scalars().all() == []
    launched = post(admin_client, "/support/campaigns",
                    {**form, "action": "launch", "reason": "first half before the rest"})
    assert launched.status_code == 303
    with app.app_context():
        wave = db.session.execute(select(Wave)).scalar_one()
        assert (wave.queued, wave.percent, wave.created_by) == (2, 50, "admin@example.com")
        assert len(db.session.execute(select(Email)).scalars().all()) == 2
        audit = db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "campaign.wave")).scalar_one()
        assert audit.reason == "first half before the rest"
    page = admin_client.get("/support/campaigns").get_data(as_text=True)
    assert 'data-funnel="queued">2<' in page


def test_a_bad_amount_is_explained(app, admin_client):
    response = post(admin_client, "/support/campaigns",
                    {"status": "needs_update", "amount": "lots", "action": "preview"})
    assert response.status_code == 400
    assert "Amount must be a whole number." in response.get_data(as_text=True)


def test_needs_a_human_lists_customers_whose_address_bounced(app, agent_client, make_customer):
    bounced, fine = make_customer(), make_customer()
    with app.app_context():
        mark_bounced(bounced.email, source="webhook", reason="550 mailbox unavailable")
        db.session.commit()
    page = agent_client.get("/support/needs-human").get_data(as_text=True)
    assert bounced.legacy_id in page and "550 mailbox unavailable" in page
    assert fine.legacy_id not in page
