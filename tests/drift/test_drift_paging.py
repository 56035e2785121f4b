"""payments/drift.py against a scripted gateway: what localstripe cannot make (a schedule that
started, a deleted customer answered as Stripe answers it, many pages of subscriptions)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import (
    AuditEvent,
    Customer,
    DriftFinding,
    LegacySubscription,
    SavedPaymentMethod,
)
from cardbridge.payments import drift
from cardbridge.stripe_gateway import NotFound


class Budget:
    def __init__(self):
        self.taken = Counter()

    def take(self, kind="write"):
        self.taken[kind] += 1
        return 0.0


class Stripe:
    """One customer with 5 billable subscriptions, listed two a page; one schedule started."""

    def __init__(self, deleted=False):
        self.deleted, self.pages, self.set = deleted, [], []
        self.subs = [{"id": f"sub_{n}", "status": "active",
                      "default_payment_method": "pm_ours" if n != 3 else "pm_old"}
                     for n in range(5)]

    def retrieve_customer(self, customer_id):
        if self.deleted:
            return {"id": customer_id, "object": "customer", "deleted": True}
        return {"id": customer_id, "invoice_settings": {"default_payment_method": "pm_ours"}}

    def retrieve_payment_method(self, pm_id):
        if pm_id == "pm_ours":
            return {"id": pm_id, "customer": "cus_paging", "created": 1}
        return {"id": pm_id, "customer": "cus_paging", "created": 0}

    def subscriptions_page(self, customer_id, starting_after=None, limit=100):
        self.pages.append(starting_after)
        ids = [s["id"] for s in self.subs]
        start = ids.index(starting_after) + 1 if starting_after else 0
        return {"data": self.subs[start:start + 2], "has_more": start + 2 < len(self.subs)}

    def retrieve_schedule(self, schedule_id):
        if schedule_id == "sub_sched_started":
            return {"id": schedule_id, "status": "active", "subscription": "sub_started"}
        raise NotFound("subscription_schedule.retrieve: not found")

    def set_subscription_default(self, subscription_id, pm_id, *again):
        self.set.append((subscription_id, pm_id, again))


def seed(ctx):
    customer = Customer(legacy_id="paging-1", email="p@example.com", status="updated",
                        stripe_customer_id="cus_paging")
    db.session.add(customer)
    db.session.flush()
    db.session.add(SavedPaymentMethod(customer_id=customer.id, stripe_payment_method_id="pm_ours",
                                      setup_intent_id="seti_paging", recorded_via="browser"))
    db.session.add(LegacySubscription(legacy_id="L-started", legacy_customer_id="paging-1",
                                      customer_id=customer.id, legacy_status="active",
                                      state="scheduled", stripe_schedule_id="sub_sched_started"))
    db.session.commit()
    return customer


def test_every_page_is_read_within_the_budget_and_a_started_schedule_makes_its_row_live(ctx):
    customer = seed(ctx)
    stripe, budget = Stripe(), Budget()
    report = drift.reconcile(stripe, budget, fix=True)
    assert stripe.pages == [None, "sub_1", "sub_3"]
    # customer, saved card, three pages, the other card, the schedule
    assert budget.taken == {"read": 7, "write": 1}
    found = {(f.kind, f.object_id): f for f in db.session.execute(select(DriftFinding)).scalars()}
    assert set(found) == {("subscription_default", "sub_3"), ("ledger_state", "L-started")}
    assert stripe.set == [("sub_3", "pm_ours", (f"drift-{report.scan.id}",))]
    row = db.session.execute(select(LegacySubscription)).scalar_one()
    assert (row.state, row.stripe_subscription_id) == ("live", "sub_started")
    assert row.live_at is not None
    assert found["ledger_state", "L-started"].status == "fixed"
    assert drift.open_count() == 0
    assert customer.id == report.scan.last_customer_id
    fixed = db.session.execute(select(AuditEvent.details).where(
        AuditEvent.action == "drift.fixed")).scalars().all()
    assert {d["kind"] for d in fixed} == {"subscription_default", "ledger_state"}


def test_a_customer_stripe_answers_as_deleted_is_one_difference_and_nothing_is_fixed(ctx):
    customer = seed(ctx)
    stripe = Stripe(deleted=True)
    drift.reconcile(stripe, Budget(), fix=True)
    found = db.session.execute(select(DriftFinding)).scalar_one()
    assert (found.kind, found.status, found.customer_id) == ("customer_deleted", "open",
                                                             customer.id)
    assert stripe.set == [] and stripe.pages == []
