"""payments/drift.py and `flask stripe reconcile` against a real localstripe: each kind of
drift is made by changing the fake Stripe behind cardbridge's back."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select
from stripe_helpers import active_subscription, confirm_setup_intent, ls
from stripe_helpers import customer as stripe_customer
from stripe_helpers import subscription as stripe_subscription

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import (
    AuditEvent,
    Customer,
    CustomerEvent,
    DriftFinding,
    DriftScan,
    LegacySubscription,
)
from cardbridge.payments import card_setup, drift
from cardbridge.stripe_gateway import StripeUnavailable

pytestmark = pytest.mark.localstripe


class Budget:
    """Counts the slots taken; never waits."""

    def __init__(self):
        self.taken = Counter()

    def take(self, kind: str = "write") -> float:
        self.taken[kind] += 1
        return 0.0


@pytest.fixture
def env(stripe_app):
    with stripe_app.app_context():
        yield stripe_app.extensions["stripe_gateway"]


@pytest.fixture
def saved(env, make_customer, localstripe_url):
    """saved(subscription=False, older=False) → (customer, saved card id, subscription or None):
    a customer who saved a card through cardbridge; `older` dates the save an hour back, so a
    card the test sets on Stripe afterwards is newer."""

    def make(subscription: bool = False, older: bool = False):
        customer = db.session.get(Customer, make_customer().id)
        link = issue_link(customer, created_by="test").link
        db.session.commit()
        seti = card_setup.open_setup_intent(link, env)
        sub = (active_subscription(localstripe_url, customer.stripe_customer_id)
               if subscription else None)
        confirm_setup_intent(localstripe_url, seti["id"])
        row = card_setup.finish_setup_intent(seti["id"], env, via="browser",
                                             link=link).payment_method
        if older:
            row.created_at -= timedelta(hours=1)
        db.session.commit()
        return customer, row.stripe_payment_method_id, sub

    return make


def ledger_row(customer: Customer, legacy_id: str, state: str, **ids) -> LegacySubscription:
    row = LegacySubscription(legacy_id=legacy_id, legacy_customer_id=customer.legacy_id,
                             customer_id=customer.id, legacy_status="active", state=state, **ids)
    db.session.add(row)
    db.session.commit()
    return row


def another_card(base: str, customer: Customer, *, default: bool = True) -> str:
    pm = ls(base, "POST", "/v1/payment_methods/pm_card_visa/attach",
            {"customer": customer.stripe_customer_id})
    if default:
        ls(base, "POST", f"/v1/customers/{customer.stripe_customer_id}",
           {"invoice_settings[default_payment_method]": pm["id"]})
    return pm["id"]


def kinds(customer: Customer) -> dict[tuple[str, str], DriftFinding]:
    return {(f.kind, f.object_id): f for f in db.session.execute(
        select(DriftFinding).where(DriftFinding.customer_id == customer.id)).scalars()}


def test_in_agreement_nothing_is_found_and_every_read_takes_a_budget_slot(env, saved):
    customer, pm_id, sub = saved(subscription=True)
    budget = Budget()
    report = drift.reconcile(env, budget)
    assert report.finished and report.counts["customers"] == 1
    assert kinds(customer) == {}
    # customer, saved card, one page of subscriptions
    assert budget.taken == {"read": 3}
    assert db.session.execute(select(AuditEvent.action)).scalars().all()[-1] == "drift.scan"


def test_each_kind_of_drift_is_listed_with_what_it_means(env, saved, localstripe_url):
    deleted, _, _ = saved()
    ls(localstripe_url, "DELETE", f"/v1/customers/{deleted.stripe_customer_id}")

    changed, pm_changed, _ = saved(older=True)
    newer = another_card(localstripe_url, changed)

    detached, pm_detached, _ = saved()
    ls(localstripe_url, "POST", f"/v1/payment_methods/{pm_detached}/detach")

    subbed, pm_subbed, sub = saved(subscription=True)
    old_card = stripe_subscription(localstripe_url, sub["id"])  # ours, set by record_setup
    assert old_card["default_payment_method"] == pm_subbed
    legacy_card = sub["default_payment_method"]  # the card before the customer saved theirs
    ls(localstripe_url, "POST", f"/v1/subscriptions/{sub['id']}",
       {"default_payment_method": legacy_card})

    ledgered, _, _ = saved()
    other = active_subscription(localstripe_url, ledgered.stripe_customer_id)
    ls(localstripe_url, "POST", f"/v1/customers/{ledgered.stripe_customer_id}",
       {"invoice_settings[default_payment_method]": drift.saved_card(
           ledgered).stripe_payment_method_id})
    ls(localstripe_url, "POST", f"/v1/subscriptions/{other['id']}",
       {"default_payment_method": drift.saved_card(ledgered).stripe_payment_method_id})
    ls(localstripe_url, "DELETE", f"/v1/subscriptions/{other['id']}")
    ledger_row(ledgered, "L-cancelled", "live", stripe_subscription_id=other["id"])
    ledger_row(ledgered, "L-missing", "live", stripe_subscription_id="sub_doesnotexist")
    ledger_row(ledgered, "L-sched-missing", "scheduled", stripe_schedule_id="sub_sched_nothere")

    report = drift.reconcile(env, Budget())
    assert report.counts["customers"] == 5
    assert set(kinds(deleted)) == {("customer_deleted", "")}
    found = kinds(changed)
    assert set(found) == {("default_changed", "")}
    assert (found["default_changed", ""].ours, found["default_changed", ""].theirs) == \
        (pm_changed, newer)
    found = kinds(detached)
    assert ("card_detached", "") in found and found["card_detached", ""].theirs is None
    assert set(kinds(subbed)) == {("subscription_default", sub["id"])}
    assert kinds(subbed)["subscription_default", sub["id"]].theirs == legacy_card
    assert set(kinds(ledgered)) == {("ledger_cancelled", "L-cancelled"),
                                    ("ledger_missing", "L-missing"),
                                    ("ledger_missing", "L-sched-missing")}
    assert all(f.status == "open" for f in db.session.execute(select(DriftFinding)).scalars())
    assert drift.open_count() == len(db.session.execute(select(DriftFinding)).all())

    # The command says the same, as text and as JSON; read-only, nothing changes on Stripe.
    runner = env_runner()
    result = runner.invoke(args=["stripe", "reconcile", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    listed = {(d["customer"], d["kind"]) for d in body["differences"]}
    assert (deleted.legacy_id, "customer_deleted") in listed
    assert (changed.legacy_id, "default_changed") in listed
    assert all(d["meaning"] == drift.MEANINGS[d["kind"]] for d in body["differences"])
    text = runner.invoke(args=["stripe", "reconcile"])
    assert "changed on Stripe" in text.output and "detached" in text.output
    assert stripe_customer(localstripe_url, changed.stripe_customer_id)[
        "invoice_settings"]["default_payment_method"] == newer


def env_runner():
    from flask import current_app

    return current_app.test_cli_runner()


def test_fix_reapplies_ours_keeps_a_newer_card_and_audits_each(env, saved, localstripe_url):
    # Ours was replaced by an older card (the legacy one) on the customer and its subscription.
    ours_replaced, pm_ours, sub = saved(subscription=True)
    legacy_card = sub["default_payment_method"]  # made before the customer saved theirs
    ls(localstripe_url, "POST", f"/v1/customers/{ours_replaced.stripe_customer_id}",
       {"invoice_settings[default_payment_method]": legacy_card})
    ls(localstripe_url, "POST", f"/v1/subscriptions/{sub['id']}",
       {"default_payment_method": legacy_card})
    # Someone set a newer card on Stripe after the customer saved theirs.
    business, pm_business, _ = saved(older=True)
    newer = another_card(localstripe_url, business)
    # The saved card was detached: nothing to set back.
    detached, pm_detached, _ = saved()
    ls(localstripe_url, "POST", f"/v1/payment_methods/{pm_detached}/detach")
    other = another_card(localstripe_url, detached)
    # A ledger subscription cancelled on Stripe.
    ledgered, _, _ = saved()
    gone = active_subscription(localstripe_url, ledgered.stripe_customer_id)
    for target in (f"/v1/customers/{ledgered.stripe_customer_id}",):
        ls(localstripe_url, "POST", target, {"invoice_settings[default_payment_method]":
                                             drift.saved_card(ledgered).stripe_payment_method_id})
    ls(localstripe_url, "DELETE", f"/v1/subscriptions/{gone['id']}")
    ledger = ledger_row(ledgered, "L-1", "live", stripe_subscription_id=gone["id"])

    budget = Budget()
    report = drift.reconcile(env, budget, fix=True, actor="ops@example.com")
    assert report.counts["fixed"] == 3 and report.counts["accepted"] == 1
    assert budget.taken["write"] == 2

    assert stripe_customer(localstripe_url, ours_replaced.stripe_customer_id)[
        "invoice_settings"]["default_payment_method"] == pm_ours
    assert stripe_subscription(localstripe_url, sub["id"])["default_payment_method"] == pm_ours
    assert {f.status for f in kinds(ours_replaced).values()} == {"fixed"}

    assert stripe_customer(localstripe_url, business.stripe_customer_id)[
        "invoice_settings"]["default_payment_method"] == newer  # the business's change wins
    assert kinds(business)["default_changed", ""].status == "accepted"
    kept = db.session.execute(select(CustomerEvent).where(
        CustomerEvent.customer_id == business.id, CustomerEvent.kind == "stripe_card_kept")
    ).scalar_one()
    assert kept.details["on_stripe"] == newer

    assert stripe_customer(localstripe_url, detached.stripe_customer_id)[
        "invoice_settings"]["default_payment_method"] == other  # not set to a detached card
    assert {f.status for f in kinds(detached).values()} == {"open"}

    db.session.refresh(ledger)
    assert ledger.state == "needs_review" and "cancelled on Stripe" in ledger.reason
    assert kinds(ledgered)["ledger_cancelled", "L-1"].status == "fixed"

    audits = Counter(db.session.execute(select(AuditEvent.action).where(
        AuditEvent.action.startswith("drift."))).scalars())
    assert audits == {"drift.fixed": 3, "drift.accepted": 1, "drift.scan": 1}

    # The next scan: what was fixed agrees now, the accepted card stays accepted, no new audit.
    again = drift.reconcile(env, Budget(), fix=True)
    assert again.counts.get("fixed", 0) == 0 and again.counts.get("accepted", 0) == 0
    assert kinds(business)["default_changed", ""].status == "accepted"
    assert {f.status for f in kinds(ours_replaced).values()} == {"fixed"}  # stays the record
    assert drift.open_count() == 2  # the detached card and its default


class Flaky:
    """The gateway, with Stripe unavailable once when this customer is read."""

    def __init__(self, gateway, fail_on: str):
        self.gateway, self.fail_on, self.read = gateway, fail_on, []

    def __getattr__(self, name):
        return getattr(self.gateway, name)

    def retrieve_customer(self, customer_id):
        self.read.append(customer_id)
        if customer_id == self.fail_on:
            self.fail_on = None
            raise StripeUnavailable("Stripe could not be reached")
        return self.gateway.retrieve_customer(customer_id)


def test_an_interrupted_scan_resumes_after_the_last_customer_it_finished(env, saved,
                                                                        localstripe_url):
    first, second, third = (saved()[0] for _ in range(3))
    ls(localstripe_url, "DELETE", f"/v1/customers/{first.stripe_customer_id}")
    flaky = Flaky(env, second.stripe_customer_id)
    with pytest.raises(StripeUnavailable):
        drift.reconcile(flaky, Budget())
    scan = db.session.execute(select(DriftScan)).scalar_one()
    assert scan.finished_at is None and scan.last_customer_id == first.id
    assert kinds(first)  # kept although the run stopped

    report = drift.reconcile(flaky, Budget())
    assert report.resumed and report.resumed_after == first.id
    assert report.counts["customers"] == 2
    assert flaky.read == [first.stripe_customer_id, second.stripe_customer_id,
                          second.stripe_customer_id, third.stripe_customer_id]
    assert report.scan.id == scan.id and report.scan.finished_at is not None
    assert report.scan.counts["customers"] == 3
    scans = db.session.execute(select(AuditEvent.details).where(
        AuditEvent.action == "drift.scan").order_by(AuditEvent.id)).scalars().all()
    assert [s["finished"] for s in scans] == [False, True]

    # A finished scan is not resumed; --restart abandons an unfinished one.
    assert not drift.reconcile(env, Budget()).resumed
    flaky.fail_on = third.stripe_customer_id
    with pytest.raises(StripeUnavailable):
        drift.reconcile(flaky, Budget())
    fresh = drift.reconcile(env, Budget(), restart=True)
    assert not fresh.resumed and fresh.counts["customers"] == 3
    abandoned = db.session.get(DriftScan, fresh.scan.id - 1)
    assert abandoned.counts.get("abandoned") is True


def test_the_daily_worker_scan_is_read_only(env, saved, localstripe_url):
    from cardbridge.delivery import tasks

    customer, pm_id, _ = saved(older=True)
    legacy = another_card(localstripe_url, customer)
    tasks.scan_drift.call_local()
    db.session.expire_all()
    assert kinds(customer)["default_changed", ""].status == "open"
    assert stripe_customer(localstripe_url, customer.stripe_customer_id)[
        "invoice_settings"]["default_payment_method"] == legacy
    assert db.session.execute(select(DriftScan.actor)).scalar() == "worker"


def test_a_difference_that_goes_away_is_resolved_and_reopens_if_it_comes_back(env, saved,
                                                                             localstripe_url):
    customer, pm_id, _ = saved()
    legacy = another_card(localstripe_url, customer)
    drift.reconcile(env, Budget())
    assert kinds(customer)["default_changed", ""].status == "open"
    ls(localstripe_url, "POST", f"/v1/customers/{customer.stripe_customer_id}",
       {"invoice_settings[default_payment_method]": pm_id})
    drift.reconcile(env, Budget())
    finding = kinds(customer)["default_changed", ""]
    assert finding.status == "resolved" and finding.resolved_at is not None
    ls(localstripe_url, "POST", f"/v1/customers/{customer.stripe_customer_id}",
       {"invoice_settings[default_payment_method]": legacy})
    drift.reconcile(env, Budget())
    db.session.refresh(finding)
    assert finding.status == "open" and finding.resolved_at is None
