"""The planner's rules (issue "Begin charging on Stripe", point 2), each on its own row, through
the real import of a legacy subscriptions file and the real planner. Prices are stored as
Stripe would have answered them; nothing here talks to Stripe."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.imports.files import ImportFileError
from cardbridge.models import Customer, LegacySubscription, PriceMapEntry, StripePrice
from cardbridge.stripe_gateway import StripeGateway
from cardbridge.subscriptions import loading, planner, revenue

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
HEADER = ("legacy_subscription_id,legacy_customer_id,status,next_billing_at,legacy_plan_id,"
          "quantity,currency,interval,interval_count,unit_amount,anchor_day_of_month,trial_end,"
          "past_due_amount,resume_at")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.fixture
def plan_world(app, make_customer):
    """Two prices (gold monthly usd 2500, gold yearly usd 25000) mapped from legacy plans, and
    customers: C-card (ready, on Stripe), C-nocard (needs_update, on Stripe)."""
    make_customer(legacy_id="C-card", stripe_customer_id="cus_card", status="ready")
    make_customer(legacy_id="C-nocard", stripe_customer_id="cus_nocard", status="needs_update")
    with app.app_context():
        for pid, interval, amount, currency in (("price_gold_m", "month", 2500, "usd"),
                                                ("price_gold_y", "year", 25000, "usd"),
                                                ("price_gold_eur", "month", 2300, "eur")):
            db.session.add(StripePrice(id=pid, product="prod_gold", active=True, recurring=True,
                                       interval=interval, interval_count=1, currency=currency,
                                       unit_amount=amount, livemode=False, fetched_at=NOW))
        for plan, cur, pid in (("gold-monthly", "usd", "price_gold_m"),
                               ("gold-yearly", "usd", "price_gold_y"),
                               ("gold-euro", "eur", "price_gold_eur")):
            db.session.add(PriceMapEntry(legacy_plan_id=plan, currency=cur, stripe_price_id=pid,
                                         source="file", updated_at=NOW))
        db.session.commit()
    return app


def load(app, *rows: str, zone: str | None = None, bill_arrears: bool = False):
    """Import these CSV rows (after HEADER), plan at NOW, return {legacy id: row}."""
    app.config["SUBSCRIPTION_BILL_ARREARS"] = bill_arrears
    body = (HEADER + "\n" + "\n".join(rows) + "\n").encode()
    with app.app_context():
        result = loading.import_subscriptions(io.BytesIO(body), name="subs.csv", zone=zone,
                                              now=NOW)
        db.session.commit()
        planner.plan(gateway=None, now=NOW)
        db.session.commit()
        subs = {s.legacy_id: s for s in db.session.execute(select(LegacySubscription)).scalars()}
        for sub in subs.values():
            db.session.expunge(sub)
        return subs, result


def row(legacy_id, *, customer="C-card", status="active", next_at="2026-12-20T15:00:00-05:00",
        plan="gold-monthly", quantity="1", currency="usd", interval="month", count="1",
        amount="", anchor="", trial_end="", past_due="", resume=""):
    return ",".join((legacy_id, customer, status, next_at, plan, quantity, currency, interval,
                     count, amount, anchor, trial_end, past_due, resume))


def test_starts_at_the_legacy_next_charge_keeping_its_hour(plan_world):
    subs, _ = load(plan_world, row("S1"))
    s = subs["S1"]
    assert (s.state, s.mode) == ("planned", "schedule")
    assert s.start_at == at("2026-12-20T20:00:00+00:00")  # 15:00 at -05:00, never a midnight
    assert s.plan["items"] == [{"price": "price_gold_m", "quantity": 1}]
    assert s.mrr == 2500
    with plan_world.app_context():
        assert revenue.mrr_by_state()["planned"] == {"usd": 2500}
        assert revenue.by_state()["planned"] == 1


def test_a_charge_inside_the_buffer_stays_legacy_and_the_start_rolls_one_interval(plan_world):
    subs, _ = load(plan_world, row("S1", next_at="2026-12-06T10:00:00Z"))  # 22 h away < 48 h
    assert subs["S1"].start_at == at("2027-01-06T10:00:00+00:00")
    assert subs["S1"].plan["rolled"] == 1


def test_anchor_day_31_is_kept_through_february_with_an_anchored_subscription(plan_world):
    subs, _ = load(plan_world, row("S31", next_at="2027-02-28T15:00:00Z", anchor="31"),
                   row("S31jan", next_at="2027-01-31T15:00:00Z"))
    assert subs["S31"].mode == "subscription"
    assert subs["S31"].plan["anchor_config"] == {"day_of_month": 31, "hour": 15, "minute": 0,
                                                 "second": 0}
    assert subs["S31jan"].mode == "schedule"  # Jan 31 itself: phase_start keeps day 31


def test_rolling_from_the_31st_into_february_lands_on_its_last_day(plan_world):
    subs, _ = load(plan_world, row("S1", next_at="2026-12-06T09:00:00Z", anchor="31"))
    # Legacy charges Dec 6 once more (odd legacy data, anchored on the 31st): next is Jan 31.
    assert subs["S1"].start_at == at("2027-01-31T09:00:00+00:00")


def test_leap_day_anchor_of_a_yearly_plan(plan_world):
    subs, _ = load(plan_world, row("SY", plan="gold-yearly", interval="year",
                                   next_at="2027-02-28T12:00:00Z", anchor="29"))
    s = subs["SY"]
    assert s.mode == "subscription"
    assert s.plan["anchor_config"] == {"day_of_month": 29, "month": 2, "hour": 12, "minute": 0,
                                       "second": 0}
    assert s.mrr == round(25000 / 12)


def test_local_times_keep_their_local_hour_across_daylight_saving(plan_world):
    plan_world.config["SUBSCRIPTION_START_BUFFER_HOURS"] = 24 * 40
    # 09:00 in New York on Jan 10; 40 days of buffer roll it to Feb 10, 09:00 there.
    subs, _ = load(plan_world, row("SNY", next_at="2027-01-10T09:00:00"),
                   zone="America/New_York")
    assert subs["SNY"].start_at == at("2027-02-10T09:00:00-05:00")
    # 09:00 on Mar 10 (EST, 14:00Z); 100 days of buffer roll it to Apr 10, after the clocks
    # changed on Mar 14: 13:00Z, still 09:00 in New York.
    plan_world.config["SUBSCRIPTION_START_BUFFER_HOURS"] = 24 * 100
    subs, _ = load(plan_world, row("SNY2", next_at="2027-03-10T09:00:00"),
                   zone="America/New_York")
    assert subs["SNY2"].start_at == at("2027-04-10T09:00:00-04:00")


def test_a_bare_date_or_a_time_without_offset_is_a_row_error_that_says_so(plan_world):
    subs, result = load(plan_world, row("SB", next_at="2026-12-20"),
                        row("SN", next_at="2026-12-20T10:00:00"), row("SOK"))
    problems = {p.customer: p.problem for p in result.errors}
    assert "bare date" in problems["SB"] and "--timezone" in problems["SB"]
    assert "no offset" in problems["SN"]
    assert set(subs) == {"SOK"}


def test_a_bare_date_with_a_timezone_means_the_charge_hour_there(plan_world):
    subs, _ = load(plan_world, row("SB", next_at="2026-12-20"), zone="Europe/Paris")
    assert subs["SB"].start_at == at("2026-12-20T10:00:00+01:00")


def test_a_local_time_that_daylight_saving_skips_is_refused(plan_world):
    _, result = load(plan_world, row("SGAP", next_at="2027-03-14T02:30:00"),
                     zone="America/New_York")
    assert "happens twice or never" in result.errors[0].problem


def test_a_trial_in_progress_is_carried_with_trial_end(plan_world):
    subs, _ = load(plan_world, row("ST", status="trialing", next_at="2026-12-25T12:00:00Z",
                                   trial_end="2026-12-25T12:00:00Z"))
    s = subs["ST"]
    assert (s.state, s.mode) == ("planned", "subscription")
    assert s.plan["trial_end"] == int(at("2026-12-25T12:00:00+00:00").timestamp())


def test_past_due_arrears_go_to_review_unless_the_business_opts_in(plan_world):
    subs, _ = load(plan_world, row("SP", status="past_due", past_due="2500"))
    assert subs["SP"].state == "needs_review"
    assert "SUBSCRIPTION_BILL_ARREARS" in subs["SP"].reason
    subs, _ = load(plan_world, row("SP2", status="past_due", past_due="2500"), bill_arrears=True)
    assert subs["SP2"].state == "planned"
    assert subs["SP2"].plan["add_invoice_items"] == [{"price_data": {
        "product": "prod_gold", "currency": "usd", "unit_amount": 2500}, "quantity": 1}]


def test_paused_ones_start_when_they_resume(plan_world):
    subs, _ = load(plan_world, row("SZ", status="paused", resume="2027-02-01T08:00:00Z"),
                   row("SZ0", status="paused"))
    assert subs["SZ"].start_at == at("2027-02-01T08:00:00+00:00")
    assert subs["SZ0"].state == "needs_review" and "resume_at" in subs["SZ0"].reason


def test_canceled_and_non_renewing_are_skipped(plan_world):
    subs, _ = load(plan_world, row("SC", status="canceled", next_at=""),
                   row("SR", status="non_renewing"))
    assert subs["SC"].state == subs["SR"].state == "skipped"


@pytest.mark.parametrize(("fields", "reason"), [
    ({"currency": "eur"}, "currency mismatch"),
    ({"amount": "2900"}, "price mismatch"),
    ({"interval": "year"}, "billing interval mismatch"),
    ({"customer": "C-nobody"}, "not in the roster"),
])
def test_mismatches_and_strangers_go_to_review(plan_world, fields, reason):
    subs, _ = load(plan_world, row("SX", **fields))
    assert subs["SX"].state == "needs_review"
    assert reason in subs["SX"].reason


def test_an_unknown_plan_is_looked_up_by_lookup_key_and_reviewed_when_missing(plan_world, fault):
    gateway = StripeGateway.from_config({**plan_world.config, "STRIPE_API_BASE": fault.url})
    fault.then(200, {"object": "list", "data": [], "has_more": False})
    body = (HEADER + "\n" + row("SU", plan="platinum") + "\n").encode()
    with plan_world.app_context():
        loading.import_subscriptions(io.BytesIO(body), now=NOW)
        planner.plan(gateway, now=NOW)
        db.session.commit()
        sub = db.session.execute(select(LegacySubscription)).scalar_one()
        assert sub.state == "needs_review" and "unknown plan platinum" in sub.reason
    assert fault.requests[0]["path"].startswith("/v1/prices")
    assert "lookup_keys" in fault.requests[0]["path"]


def test_no_usable_card_waits_and_is_planned_the_moment_a_card_is_saved(plan_world):
    subs, _ = load(plan_world, row("SW", customer="C-nocard"))
    assert subs["SW"].state == "waiting_for_card" and subs["SW"].start_at is not None
    with plan_world.app_context():
        customer = db.session.execute(select(Customer).where(
            Customer.legacy_id == "C-nocard")).scalar_one()
        customer.status = "updated"
        assert planner.plan_customer(customer, NOW) == 1
        assert db.session.execute(select(LegacySubscription.state)).scalar_one() == "planned"


def test_a_second_import_of_the_same_rows_changes_nothing(plan_world):
    load(plan_world, row("S1"), row("S2", quantity="3"))
    with plan_world.app_context():
        before = [(s.legacy_id, s.plan_revision, s.start_at) for s in db.session.execute(
            select(LegacySubscription).order_by(LegacySubscription.id)).scalars()]
    subs, result = load(plan_world, row("S1"), row("S2", quantity="3"))
    assert result.skipped
    assert [(s.legacy_id, s.plan_revision, s.start_at) for s in subs.values()] == before


def test_a_file_with_an_unknown_column_changes_nothing(plan_world):
    body = b"legacy_subscription_id,legacy_customer_id,status,next_billing_at,legacy_plan_id," \
           b"colour\nS1,C-card,active,2026-12-20T15:00:00Z,gold-monthly,red\n"
    with plan_world.app_context(), pytest.raises(ImportFileError, match="unknown column"):
        loading.import_subscriptions(io.BytesIO(body), now=NOW)
