"""`flask purge` (retention/purge.py): refused before its date, dry run, real run, resumed,
idempotent; nothing personal left in any table or file; the link page after it.

Runs on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set (CI)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import (
    AuditEvent,
    Bounce,
    Customer,
    CustomerEvent,
    Email,
    ImportRun,
    MigratedCard,
    SavedPaymentMethod,
    StaffUser,
    StripeEvent,
)
from cardbridge.models.types import utcnow
from cardbridge.retention import purge as purging

CUTOVER = date.today() - timedelta(days=120)
NAME, EMAIL, IP = "Zelda Quimby", "zelda.quimby@example.org", "203.0.113.77"
LAST4S = ("9431", "8802", "7719")
FINGERPRINT = "fpZeldaQuimby01"
PERSONAL = (NAME, EMAIL, IP, FINGERPRINT, *LAST4S)
KEPT = ("cus_ZQ1", "pm_ZQ1", "card_migrated_ZQ1", "legacy-zq", "updated")


@pytest.fixture
def app(make_app):
    return make_app(CUTOVER_DATE=CUTOVER, RETENTION_DAYS=90)


@pytest.fixture
def seeded(ctx):
    """One customer whose personal data is everywhere cardbridge can hold it, and two more."""
    instance = Path(ctx.instance_path)
    c = Customer(legacy_id="legacy-zq", email=EMAIL, name=NAME, status="updated",
                 stripe_customer_id="cus_ZQ1", locale="en", card_brand="visa",
                 card_last4=LAST4S[0], card_exp_month=4, card_exp_year=2031)
    others = [Customer(legacy_id=f"legacy-{n}", email=f"other{n}@example.net", name=f"Other {n}",
                       status="needs_update") for n in range(2)]
    db.session.add_all([c, *others])
    db.session.flush()
    db.session.add(MigratedCard(customer_id=c.id, old_card_id="card_old_1",
                                stripe_id="card_migrated_ZQ1", fingerprint=FINGERPRINT,
                                brand="visa", last4=LAST4S[1], exp_month=5, exp_year=2030))
    db.session.add(SavedPaymentMethod(customer_id=c.id, stripe_payment_method_id="pm_ZQ1",
                                      setup_intent_id="seti_ZQ1", brand="visa",
                                      last4=LAST4S[2], exp_month=1, exp_year=2033,
                                      fingerprint=FINGERPRINT, recorded_via="browser"))
    db.session.add(Email(customer_id=c.id, kind="link", to_address=EMAIL, status="failed",
                         last_error=f"550 <{EMAIL}>: no such user"))
    db.session.add(Email(customer_id=others[0].id, kind="link", to_address=others[0].email,
                         status="queued"))
    db.session.add(CustomerEvent(customer_id=c.id, kind="card_saved",
                                 details={"via": "browser", "brand": "visa",
                                          "last4": LAST4S[2], "exp_month": 1}))
    db.session.add(StaffUser(email="agent@shop.test", password_hash="x", role="agent"))
    db.session.add_all([
        AuditEvent(actor="agent@shop.test", action="link.sent", target="legacy-zq", ip=IP,
                   reason=f"{NAME} called, asked for a new link",
                   details={"link": "abc", "to": EMAIL}),
        AuditEvent(actor="webhook:email", action="email.bounced", target=EMAIL, ip=IP),
        AuditEvent(actor="cli", action="staff.created", target="agent@shop.test"),
    ])
    db.session.add(Bounce(address=EMAIL, reason=f"550 {EMAIL} unknown", source="smtp"))
    db.session.add(StripeEvent(event_id="evt_1", type="setup_intent.succeeded", object_id="x",
                               outcome="recorded", processed_at=utcnow(),
                               payload={"billing_details": {"email": EMAIL, "name": NAME}}))
    reports = instance / "import-reports"
    reports.mkdir(parents=True)
    report = reports / "20260101-roster.csv"
    report.write_text(f"line,customer,kind,problem\n3,legacy-zq,email,{EMAIL} {NAME}\n")
    db.session.add(ImportRun(kind="roster", file_name="roster.csv", sha256="0" * 64,
                             status="succeeded", counts={"created": 3}, error_count=1,
                             errors=[{"line": 3, "customer": "legacy-zq",
                                      "problem": f"bad email {EMAIL}"}],
                             report_path=str(report)))
    outbox = instance / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "00000001-link.eml").write_text(f"To: {NAME} <{EMAIL}>\n\nCard ending {LAST4S[0]}")
    link = issue_link(c, created_by="test").token
    db.session.commit()
    return {"token": link, "customer_id": c.id}


def every_value() -> list[tuple[str, str, str]]:
    """(table, column, text) for every value in every table of the metadata."""
    found = []
    with db.engine.connect() as conn:
        for table in db.metadata.sorted_tables:
            for row in conn.execute(table.select()).mappings():
                for column, value in row.items():
                    if value is not None:
                        found.append((table.name, column, str(value)))
    return found


def every_file(instance: Path) -> list[tuple[str, str]]:
    return [(str(p), p.read_text(errors="replace")) for p in instance.rglob("*")
            if p.is_file() and p.suffix not in (".db", ".db-wal", ".db-shm")
            and p.name != "secret_key"]


def leftovers(instance: Path) -> list:
    values = every_value() + [("file", path, text) for path, text in every_file(instance)]
    return [(t, c, s) for t, c, s in values for p in PERSONAL if p.lower() in s.lower()]


def test_refused_before_the_date_and_without_a_cutover(make_app):
    app = make_app(CUTOVER_DATE=date.today() - timedelta(days=10), RETENTION_DAYS=90)
    result = app.test_cli_runner().invoke(args=["purge"])
    assert result.exit_code != 0
    assert "too early" in result.output
    assert (date.today() + timedelta(days=80)).isoformat() in result.output
    app2 = make_app(CUTOVER_DATE=None)
    result = app2.test_cli_runner().invoke(args=["purge", "--dry-run"])
    assert result.exit_code != 0 and "CUTOVER_DATE is not set" in result.output


def test_dry_run_reports_counts_and_changes_nothing(app, seeded, runner):
    before = sorted(every_value())
    files_before = every_file(Path(app.instance_path))
    result = runner.invoke(args=["purge", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: 3 customers" in result.output
    for line in ("customers.name: 3", "customers.email: 3", "customers.card_last4: 1",
                 "migrated_cards.last4: 1", "payment_methods.fingerprint: 1",
                 "emails.to_address: 2", "emails.cancelled_unsent: 1", "audit_events.ip: 2",
                 "email_bounces.address: 1", "stripe_events.payload: 1",
                 "files.outbox: 1", "files.import_reports: 1", "customer_events.details: 1"):
        assert line in result.output
    with app.app_context():
        assert sorted(every_value()) == before
    assert every_file(Path(app.instance_path)) == files_before


def test_purge_leaves_nothing_personal_and_keeps_ids_statuses_counts(app, seeded, runner):
    instance = Path(app.instance_path)
    with app.app_context():
        assert leftovers(instance)  # the scan does find the seeded values before
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0, result.output
    assert "recorded in the audit trail" in result.output
    with app.app_context():
        assert leftovers(instance) == []
        text = " ".join(v for _t, _c, v in every_value())
        for kept in KEPT:
            assert kept in text
        zq = db.session.execute(select(Customer).filter_by(legacy_id="legacy-zq")).scalar_one()
        assert zq.status == "updated" and zq.purged_at is not None and zq.email == ""
        run = db.session.execute(select(ImportRun)).scalar_one()
        assert run.counts == {"created": 3} and run.error_count == 1
        assert db.session.execute(select(Email.status).where(
            Email.customer_id != zq.id)).scalar_one() == "cancelled"
        trail = db.session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
        assert [e.action for e in trail] == ["link.sent", "email.bounced", "staff.created",
                                             "purge"]
        assert trail[2].target == "agent@shop.test"  # staff stay
        assert trail[0].details == {"link": "abc"}
        assert trail[-1].details["counts"]["customers.email"] == 3
        assert trail[-1].details["finished"] is True


def test_second_run_changes_nothing(app, seeded, runner):
    assert runner.invoke(args=["purge"]).exit_code == 0
    with app.app_context():
        before = sorted(every_value())
    result = runner.invoke(args=["purge"])
    assert result.exit_code == 0
    assert "nothing: no personal data is left to purge" in result.output
    with app.app_context():
        assert sorted(every_value()) == before  # not even a second audit row


def test_stopped_after_a_batch_then_resumed(app, seeded, runner):
    result = runner.invoke(args=["purge", "--batch-size", "1", "--max-batches", "1"])
    assert "run `flask purge` again" in result.output
    with app.app_context():
        purged = db.session.execute(select(Customer.id).where(
            Customer.purged_at.isnot(None))).scalars().all()
        assert len(purged) == 1
        first = db.session.execute(select(AuditEvent).filter_by(action="purge")).scalar_one()
        assert first.details["finished"] is False and first.details["customers"] == 1
    result = runner.invoke(args=["purge", "--batch-size", "2"])
    assert result.exit_code == 0 and "2 customers in 1 batches" in result.output
    with app.app_context():
        assert leftovers(Path(app.instance_path)) == []


def test_a_crash_between_batches_keeps_the_committed_ones(app, seeded):
    calls = []

    def commit():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        db.session.commit()

    with app.app_context():
        with pytest.raises(RuntimeError):
            purging.purge(batch_size=1, commit=commit)
        db.session.rollback()
        assert db.session.execute(select(Customer.id).where(
            Customer.purged_at.isnot(None))).scalars().all() == [seeded["customer_id"]]
        report = purging.purge(batch_size=1)
        assert report.finished and report.customers == 2
        assert leftovers(Path(app.instance_path)) == []


def test_link_page_after_purge_is_expired_with_no_fresh_link_offer(app, seeded, runner, client):
    page = client.get(f"/u/{seeded['token']}")
    assert page.status_code == 200 and NAME in page.get_data(as_text=True)
    assert runner.invoke(args=["purge"]).exit_code == 0
    page = client.get(f"/u/{seeded['token']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 410
    assert "This link has expired" in html
    assert "fresh-form" not in html and "Email me a fresh link" not in html
    assert NAME not in html and LAST4S[0] not in html


def test_after_purge_no_fresh_link_and_no_email_can_be_queued(app, seeded, runner):
    from cardbridge.email.emails import queue_email
    from cardbridge.links.fresh import send_fresh_link
    from cardbridge.links.service import public_id_of

    assert runner.invoke(args=["purge"]).exit_code == 0
    with app.app_context():
        assert send_fresh_link(EMAIL, public_id_of(seeded["token"])) == 0
        assert send_fresh_link("", None) == 0
        customer = db.session.get(Customer, seeded["customer_id"])
        email = queue_email(customer, "link")
        assert email.status == "cancelled" and email.to_address == ""


def test_waves_skip_purged_customers(app, seeded, runner):
    from cardbridge.campaigns.service import plan_wave

    with app.app_context():
        assert plan_wave("needs_update").customer_ids  # one other has an email pending
    assert runner.invoke(args=["purge"]).exit_code == 0
    with app.app_context():
        assert plan_wave("needs_update").customer_ids == []
