"""`flask report --final PATH [--json]`: the figures against a migration this test builds, one
self-contained HTML file (nothing fetched, no script, nothing personal), and the same figures
as JSON."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import (
    AuditEvent,
    Customer,
    CustomerEvent,
    Email,
    InvoicePayment,
    MigratedCard,
    SavedPaymentMethod,
    Wave,
)
from cardbridge.models.drift import DriftFinding, DriftScan
from cardbridge.models.types import utcnow
from tests.subscriptions.test_subscription_console import ledger_row


@pytest.fixture
def migration(app, make_customer):
    """10 customers: 4 ready, 3 updated (2 in the browser, 1 by webhook), 2 invited, 1 without
    a card; a wave of 5 emails (4 sent); subscriptions live, scheduled, waiting, in review;
    invoices paid and declined; a drift scan and fix; a purge."""
    now = utcnow()
    people = {}
    for n, status in enumerate(["ready"] * 4 + ["updated"] * 3 + ["invited"] * 2
                               + ["needs_update"]):
        people[n] = make_customer(legacy_id=f"F-{n}", status=status, name=f"Person Name{n}",
                                  email=f"person{n}@example.org")
    with app.app_context():
        for n in range(4):  # ready: a migrated card that outlives the cutover
            db.session.add(MigratedCard(customer_id=people[n].id, old_card_id=f"old_{n}",
                                        stripe_id=f"card_f{n}", last4="4242", exp_month=12,
                                        exp_year=now.year + 3))
        for n in (7, 8):  # invited: a live link
            issue_link(db.session.get(Customer, people[n].id), created_by="test")
        wave = Wave(created_by="ops@example.com", status_filter="needs_update", queued=5,
                    created_at=now - timedelta(days=6))
        db.session.add(wave)
        db.session.flush()
        for n in range(4, 9):
            db.session.add(Email(customer_id=people[n].id, wave_id=wave.id, kind="link",
                                 to_address=people[n].email,
                                 status="sent" if n < 8 else "queued",
                                 sent_at=now - timedelta(days=6)))
        for n, via in ((4, "browser"), (5, "browser"), (6, "webhook")):
            db.session.add(CustomerEvent(customer_id=people[n].id, kind="page_opened",
                                         at=now - timedelta(days=5)))
            db.session.add(CustomerEvent(customer_id=people[n].id, kind="updated",
                                         at=now - timedelta(days=n - 3)))
            db.session.add(SavedPaymentMethod(
                customer_id=people[n].id, stripe_payment_method_id=f"pm_f{n}",
                setup_intent_id=f"seti_f{n}", recorded_via=via, last4="4242",
                created_at=now - timedelta(days=n - 3)))
        db.session.add(CustomerEvent(customer_id=people[9].id, kind="setup_failed"))
        db.session.add_all([
            ledger_row(people[4].id, "S-live", "live", 5000),
            ledger_row(people[5].id, "S-sched", "scheduled", 2500),
            ledger_row(people[9].id, "S-wait", "waiting_for_card", 1200),
            ledger_row(None, "S-review", "needs_review", 900, reason="unknown plan"),
        ])
        db.session.add(InvoicePayment(customer_id=people[4].id, stripe_invoice_id="in_1",
                                      amount=5000, currency="usd", outcome="paid"))
        db.session.add(InvoicePayment(customer_id=people[9].id, stripe_invoice_id="in_2",
                                      amount=1200, currency="usd", outcome="declined"))
        scan = DriftScan(actor="cli", finished_at=now)
        db.session.add(scan)
        db.session.flush()
        for kind, status in (("default_changed", "fixed"), ("default_changed", "accepted"),
                             ("card_detached", "open")):
            db.session.add(DriftFinding(customer_id=people[4].id, kind=kind, status=status,
                                        object_id=f"{kind}-{status}", scan_id=scan.id))
        db.session.add(AuditEvent(actor="cli", action="purge", details={
            "customers": 10, "batches": 1, "finished": True, "purge_date": "2027-03-05",
            "counts": {"customers.email": 10, "customers.name": 10}}))
        db.session.commit()
    return people


def run(app, *args):
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["report", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_json_figures_match_the_migration(app, migration, tmp_path):
    out = tmp_path / "final.json"
    said = run(app, "--final", str(out), "--json")
    assert f"final report written to {out}" in said
    r = json.loads(out.read_text())
    assert r["customers"]["total"] == 10
    assert r["customers"]["by_status"] == {"ready": 4, "updated": 3, "invited": 2,
                                           "needs_update": 1}
    assert r["cards"]["saved_through_cardbridge"] == 3
    assert r["cards"]["saved_by_path"] == {"browser": 2, "webhook": 1}
    [wave] = r["waves"]
    assert (wave["queued"], wave["sent"], wave["opened"], wave["updated"]) == (5, 4, 3, 3)
    subs = r["subscriptions"]
    assert subs["revenue_moved"] == {"usd": 7500} and subs["revenue_lost"] == {"usd": 2100}
    assert (subs["invoices_paid"], subs["invoices_declined"]) == (1, 1)
    assert r["drift"]["found"] == 3 and r["drift"]["scans"] == 1
    assert list(r["drift"]["by_status"].items()) == [("fixed", 1), ("accepted", 1), ("open", 1)]
    assert r["drift"]["by_kind"] == {"default_changed": 2, "card_detached": 1}
    assert (r["purge"]["customers"], r["purge"]["values_removed"], r["purge"]["finished"]) == (
        10, 20, True)
    whats = [e["what"] for e in r["timeline"]]
    assert whats.index("email wave 1: 5 queued") < whats.index(
        "first card saved through cardbridge") < whats.index("personal data purged")
    html_out = tmp_path / "final.html"
    run(app, "--final", str(html_out))
    html = html_out.read_text()
    text = " ".join(html.split())
    assert ("3 differences found, 1 fixed by cardbridge, 1 accepted (a newer card set on "
            "Stripe), 1 still open. By kind: card detached 1, default changed 2.") in text
    assert "10 customers, 20 values removed" in html


def test_the_html_is_self_contained_and_holds_nothing_personal(app, migration, tmp_path):
    out = tmp_path / "final.html"
    run(app, "--final", str(out))
    html = out.read_text()
    assert html.startswith("<!doctype html>") and '<html lang="en">' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched
    assert "<script" not in html and "<link" not in html
    for n in range(10):
        assert f"person{n}@example.org" not in html and f"Name{n}" not in html
    assert "4242" not in html and "pm_f4" not in html
    assert 'data-figure="total">10<' in html and 'data-figure="updated">3<' in html
    assert "75.00 USD" in html and "21.00 USD" in html
    assert html.count("<svg") == 2  # cards per day, revenue at risk


def test_an_empty_migration_still_writes_a_clear_report(app, tmp_path):
    out = tmp_path / "final.html"
    run(app, "--final", str(out))
    html = out.read_text()
    assert "No email waves were sent." in html and "not yet purged" in html
    assert "no scan was run" in html
