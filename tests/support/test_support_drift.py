"""The console's drift page (admins only) and the dashboard's count of open differences."""

from __future__ import annotations

from markupsafe import escape

from cardbridge.extensions import db
from cardbridge.models import DriftFinding, DriftScan
from cardbridge.payments import drift


def seed(app, make_customer):
    a = make_customer(stripe_customer_id="cus_drift_a")
    b = make_customer(stripe_customer_id="cus_drift_b")
    with app.app_context():
        scan = DriftScan(actor="worker", counts={"customers": 2}, last_customer_id=b.id)
        db.session.add(scan)
        db.session.flush()
        db.session.add_all([
            DriftFinding(customer_id=a.id, kind="default_changed", ours="pm_ours",
                         theirs="pm_theirs", status="open", scan_id=scan.id),
            DriftFinding(customer_id=b.id, kind="ledger_missing", object_id="L-<7>",
                         ours="live sub_1", status="open", scan_id=scan.id),
            DriftFinding(customer_id=b.id, kind="subscription_default", object_id="sub_9",
                         ours="pm_ours", theirs="pm_newer", status="accepted",
                         scan_id=scan.id),
        ])
        db.session.commit()
    return a, b


def test_admins_see_each_open_difference_with_its_meaning(app, make_customer, admin_client):
    a, b = seed(app, make_customer)
    page = admin_client.get("/support/admin/drift")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-drift-open="2"' in html
    assert a.legacy_id in html and "pm_theirs" in html
    assert str(escape(drift.MEANINGS["default_changed"])) in html
    assert "L-&lt;7&gt;" in html  # escaped
    assert "sub_9" not in html  # accepted: not open
    assert "not finished" in html and f"customer #{b.id}" in html
    accepted = admin_client.get("/support/admin/drift?status=accepted").get_data(as_text=True)
    assert "sub_9" in accepted and "pm_theirs" not in accepted
    assert admin_client.get("/support/admin/drift?status=bogus").status_code == 200


def test_agents_may_not_open_it_and_the_dashboard_shows_the_count(app, make_customer,
                                                                   agent_client, admin_client):
    seed(app, make_customer)
    assert agent_client.get("/support/admin/drift").status_code == 403
    html = agent_client.get("/support/").get_data(as_text=True)
    assert 'data-drift-open="2"' in html and "/support/admin/drift" not in html
    html = admin_client.get("/support/").get_data(as_text=True)
    assert 'data-drift-open="2"' in html and "/support/admin/drift" in html
