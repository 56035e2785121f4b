"""Admin pages: staff accounts, API tokens, the audit trail, imports in the background, export."""

from __future__ import annotations

import io
import re
import time

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import ApiToken, AuditEvent, Customer, ImportRun, StaffUser
from cardbridge.staff import api_tokens
from tests.support.staff_helpers import create_staff, post, sign_in

REASON = "new support hire, ticket 42"


def audit(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.execute(select(AuditEvent).where(AuditEvent.action == action)
                                  ).scalars().all()
        db.session.expunge_all()
    return rows


# -- staff ---------------------------------------------------------------------------------------
def test_admin_creates_an_agent_who_can_sign_in_with_the_one_time_password(app, admin_client,
                                                                           admin):
    response = post(admin_client, "/support/admin/staff",
                    {"email": "New.Agent@example.com", "role": "agent", "reason": REASON})
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    password = re.search(r'id="new-password" type="text" readonly value="([^"]+)"',
                         response.get_data(as_text=True)).group(1)
    assert len(password) >= 20
    [row] = audit(app, "staff.created")
    assert (row.actor, row.target, row.reason) == (admin.email, "new.agent@example.com", REASON)
    from tests.support.staff_helpers import Staff

    fresh = app.test_client()
    assert sign_in(fresh, Staff(0, "new.agent@example.com", password, "agent")).status_code \
        == 303
    assert password not in admin_client.get("/support/admin/staff").get_data(as_text=True)


def test_duplicate_or_bad_staff_email_is_refused(admin_client, agent):
    response = post(admin_client, "/support/admin/staff",
                    {"email": agent.email, "role": "agent", "reason": REASON})
    assert response.status_code == 400 and "already exists" in response.get_data(as_text=True)


def _staff_id(app, email: str) -> int:
    with app.app_context():
        return db.session.execute(select(StaffUser.id).where(StaffUser.email == email)
                                  ).scalar_one()


def test_disabling_an_agent_from_the_console_ends_their_session(app, admin_client,
                                                                agent_client, agent):
    assert agent_client.get("/support/").status_code == 200
    response = post(admin_client, f"/support/admin/staff/{agent.id}",
                    {"action": "disable", "reason": "left the company"})
    assert response.status_code == 303
    assert agent_client.get("/support/").status_code == 303
    [row] = audit(app, "staff.disabled")
    assert row.target == agent.email and row.reason == "left the company"


def test_promoting_an_agent_ends_their_sessions_and_grants_admin_pages(app, admin_client,
                                                                       agent_client, agent):
    post(admin_client, f"/support/admin/staff/{agent.id}",
         {"action": "make_admin", "reason": "team lead"})
    assert agent_client.get("/support/").status_code == 303  # signs in again for new rights
    client = app.test_client()
    sign_in(client, agent)
    assert client.get("/support/admin/staff").status_code == 200


def test_the_last_admin_cannot_be_disabled_or_demote_themselves(app, admin_client, admin):
    response = post(admin_client, f"/support/admin/staff/{admin.id}",
                    {"action": "make_agent", "reason": "oops"})
    assert response.status_code == 409
    other = create_staff(app, "admin2@example.com", "admin")
    create_staff(app, "x@example.com")
    assert post(admin_client, f"/support/admin/staff/{other.id}",
                {"action": "disable", "reason": "cleanup"}).status_code == 303
    with app.app_context():
        assert db.session.get(StaffUser, admin.id).role == "admin"


def test_reset_two_factor(app, admin_client):
    staff = create_staff(app, "lost.phone@example.com", totp=True)
    post(admin_client, f"/support/admin/staff/{staff.id}",
         {"action": "reset_2fa", "reason": "lost phone"})
    with app.app_context():
        assert db.session.get(StaffUser, staff.id).totp_secret is None
    assert len(audit(app, "staff.2fa_reset")) == 1


# -- API tokens ----------------------------------------------------------------------------------
def test_token_created_in_the_console_is_shown_once_stored_hashed_and_revocable(
        app, admin_client, admin):
    response = post(admin_client, "/support/admin/tokens", {"name": "helpdesk",
                                                            "reason": "helpdesk bot"})
    secret = re.search(r'id="token-secret" type="text" readonly value="([^"]+)"',
                       response.get_data(as_text=True)).group(1)
    with app.app_context():
        token = db.session.execute(select(ApiToken)).scalar_one()
        assert token.token_hash == api_tokens.hash_secret(secret) and secret not in (
            token.token_hash, token.prefix)
        token_id = token.id
    listing = admin_client.get("/support/admin/tokens").get_data(as_text=True)
    assert "helpdesk" in listing and secret not in listing
    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/customers/nobody", headers=headers).status_code == 404
    post(admin_client, f"/support/admin/tokens/{token_id}/revoke", {"reason": "rotated"})
    refused = client.get("/api/v1/customers/nobody", headers=headers)
    assert refused.status_code == 401 and refused.json["error"] == "token_revoked"
    actions = [r.action for r in audit(app, "api_token.created") + audit(app, "api_token.revoked")]
    assert actions == ["api_token.created", "api_token.revoked"]


# -- audit trail ---------------------------------------------------------------------------------
def test_audit_page_filters_by_actor_action_target_and_day(app, admin_client, admin):
    from cardbridge.staff import audit as audit_service

    with app.app_context():
        audit_service.record("a@example.com", "link.generated", "L-1", ip="1.2.3.4", reason="r1")
        audit_service.record("b@example.com", "link.revoked", "L-2", reason="r2")
        audit_service.record("b@example.com", "staff.created", "c@example.com")
        db.session.commit()

    def rows(**args) -> str:
        page = admin_client.get("/support/admin/audit", query_string=args).get_data(as_text=True)
        return page.split("<tbody>")[1].split("</tbody>")[0] if "<tbody>" in page else ""

    assert "L-1" in rows(actor="a@example.com") and "L-2" not in rows(actor="a@example.com")
    assert "L-1" in rows(action="link.") and "L-2" in rows(action="link.")
    assert "c@example.com" not in rows(action="link.")
    assert "L-2" in rows(target="L-2") and "L-1" not in rows(target="L-2")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert "L-1" in rows(since=today, until=today)
    assert "L-1" not in rows(until="2000-01-01")
    assert "1.2.3.4" in rows() and "r1" in rows()


# -- imports and export ----------------------------------------------------------------------
ROSTER = (b"legacy_customer_id,email,name\n"
          b"R-1,one@example.com,One\n"
          b"R-2,not-an-email,Two\n"
          b"R-3,three@example.com,Three\n")


def wait_for_run(app, seconds: float = 20) -> ImportRun:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with app.app_context():
            run = db.session.execute(select(ImportRun)).scalar_one_or_none()
            if run is not None:
                db.session.expunge(run)
                return run
        time.sleep(0.05)
    raise AssertionError("the background import did not finish")


def test_roster_upload_imports_in_the_background_and_shows_counts_and_row_errors(
        app, admin_client, admin):
    response = post(admin_client, "/support/admin/imports", {
        "kind": "roster", "reason": "first roster",
        "file": (io.BytesIO(ROSTER), "roster.csv")}, content_type="multipart/form-data")
    assert response.status_code == 303
    run = wait_for_run(app)
    assert (run.kind, run.file_name, run.status, run.error_count) == (
        "roster", "roster.csv", "succeeded", 1)
    with app.app_context():
        assert set(db.session.execute(select(Customer.legacy_id)).scalars()) == {"R-1", "R-3"}
    for _ in range(100):  # the job file says done a moment after the commit
        page = admin_client.get("/support/admin/imports").get_data(as_text=True)
        if "data-poll" not in page:
            break
        time.sleep(0.05)
    assert "roster.csv" in page and "Succeeded" in page and "1 row not applied" in page
    assert "line 3" in page
    [row] = audit(app, "import.roster")
    assert (row.actor, row.target, row.reason) == (admin.email, "roster.csv", "first roster")


def test_a_file_the_import_refuses_shows_why(app, admin_client):
    post(admin_client, "/support/admin/imports", {
        "kind": "roster", "reason": "wrong file",
        "file": (io.BytesIO(b"id,mail\n1,a@example.com\n"), "bad.csv")},
        content_type="multipart/form-data")
    run = wait_for_run(app)
    assert run.status == "failed"
    page = admin_client.get("/support/admin/imports").get_data(as_text=True)
    assert "Failed" in page and "legacy_customer_id" in page


def test_upload_needs_a_kind_a_file_and_a_reason(admin_client):
    response = post(admin_client, "/support/admin/imports", {"kind": "roster", "reason": "x y z"},
                    content_type="multipart/form-data")
    assert response.status_code == 400 and "Choose a file" in response.get_data(as_text=True)


def test_export_downloads_the_spec_csv_and_is_audited(app, admin_client, make_customer):
    customer = make_customer(legacy_id="E-1", stripe_customer_id="cus_E1", status="ready")
    make_customer(legacy_id="E-2", stripe_customer_id="cus_E2", status="ready")
    with app.app_context():
        from cardbridge.extensions import db
        from cardbridge.models import MigratedCard

        db.session.add(MigratedCard(customer_id=customer.id, old_card_id="c1",
                                    stripe_id="card_E1", exp_month=12, exp_year=2099))
        db.session.commit()
    refused = post(admin_client, "/support/admin/export.csv", {"reason": ""})
    assert refused.status_code == 400 and "Say why you are exporting" in refused.get_data(
        as_text=True)
    response = post(admin_client, "/support/admin/export.csv", {"reason": "billing sync"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    lines = response.get_data(as_text=True).splitlines()
    response.close()
    assert lines[0] == "legacy_customer_id,stripe_customer_id,status,payment_method_id,updated_at"
    assert lines[1].startswith("E-1,cus_E1,ready,card_E1,")
    # brought up to date first, as `flask export` does: no usable card → needs_update
    assert lines[2].startswith("E-2,cus_E2,needs_update,")
    [row] = audit(app, "export.csv")
    assert (row.actor, row.reason) == ("admin@example.com", "billing sync")


def test_the_page_polls_a_bare_fragment_while_an_import_runs(app, admin_client):
    from cardbridge.imports import jobs as import_jobs

    with app.app_context():
        path = import_jobs.jobs_dir() / "20260101000000-running.json"
    path.write_text('{"id": "20260101000000-running", "kind": "roster", "file": "big.csv", '
                    '"actor": "a@example.com", "state": "running", "rows": 1500, "bytes": 50, '
                    '"size": 100, "run_id": null, "message": "", '
                    '"created_at": "2026-01-01T00:00:00+00:00"}')
    page = admin_client.get("/support/admin/imports").get_data(as_text=True)
    assert 'data-poll="/support/admin/imports?partial=runs"' in page
    fragment = admin_client.get("/support/admin/imports?partial=runs")
    assert fragment.headers["X-Import-Running"] == "1"
    body = fragment.get_data(as_text=True)
    assert "1,500 rows read" in body and "50% of the file" in body and "<html" not in body
    path.write_text(path.read_text().replace('"running"', '"failed"'))
    assert admin_client.get("/support/admin/imports?partial=runs").headers[
        "X-Import-Running"] == "0"


def test_a_console_upload_is_imported_by_the_worker_not_the_web_request(make_app):
    from tests.support.staff_helpers import FAST_HASH, create_staff, sign_in

    app = make_app(STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH,
                   QUEUE_IMMEDIATE=False)
    client = app.test_client()
    assert sign_in(client, create_staff(app, "ops@example.com", "admin")).status_code == 303
    response = post(client, "/support/admin/imports", {
        "kind": "roster", "reason": "first roster",
        "file": (io.BytesIO(ROSTER), "roster.csv")}, content_type="multipart/form-data")
    assert response.status_code == 303
    time.sleep(0.3)  # nothing runs behind the request's back either
    with app.app_context():
        assert db.session.execute(select(ImportRun)).first() is None
        assert db.session.execute(select(Customer)).first() is None
    assert "Queued" in client.get("/support/admin/imports").get_data(as_text=True)
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        run = db.session.execute(select(ImportRun)).scalar_one()
        assert (run.kind, run.status) == ("roster", "succeeded")
        assert set(db.session.execute(select(Customer.legacy_id)).scalars()) == {"R-1", "R-3"}
