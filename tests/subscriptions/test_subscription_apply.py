"""Apply against the project's fake Stripe (localstripe + devtools/fake_billing/): schedules
made as the design says, nothing made twice (re-run, kill -9, a 429 storm, a foreign duplicate),
the guard, the webhook moves, and the fake's own strictness."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
import requests
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import AuditEvent, LegacySubscription
from cardbridge.payments import webhook_events
from cardbridge.stripe_gateway import StripeGateway
from cardbridge.subscriptions import apply as applying
from cardbridge.subscriptions import guard, loading, planner
from cardbridge.subscriptions.budget import Budget
from tests.conftest import ROOT, TEST_DATABASE_URL, TEST_REDIS_URL, fake_stripe
from tests.stripe_helpers import TEST_SECRET_KEY, ls

HEADER = "legacy_subscription_id,legacy_customer_id,status,next_billing_at,legacy_plan_id,quantity"


def start_in(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).isoformat()


def world(app, make_customer, url: str, count: int, *, customers: int | None = None) -> dict:
    """`count` legacy subscriptions of ready customers that exist on the fake, a price mapped
    from plan gold; imported and planned. Returns {legacy id: customer id on Stripe}."""
    price = ls(url, "POST", "/v1/prices", {"currency": "usd", "unit_amount": 2500,
                                           "recurring[interval]": "month",
                                           "product": "prod_gold"})
    owners, lines = {}, [HEADER]
    for n in range(customers or count):
        cus = ls(url, "POST", "/v1/customers", {"email": f"c{n}@example.com"})["id"]
        make_customer(legacy_id=f"C{n}", stripe_customer_id=cus, status="ready")
        owners[f"C{n}"] = cus
    subs = {}
    for n in range(count):
        owner = f"C{n % len(owners)}"
        lines.append(f"S{n},{owner},active,{start_in(10)},gold,2")
        subs[f"S{n}"] = owners[owner]
    csv = io.BytesIO(("\n".join(lines) + "\n").encode())
    prices = io.BytesIO(f"legacy_plan_id,currency,stripe_price_id\ngold,usd,{price['id']}\n"
                        .encode())
    with app.app_context():
        gateway = app.extensions["stripe_gateway"]
        loading.import_prices(prices, gateway=gateway, name="prices.csv")
        loading.import_subscriptions(csv, name="subs.csv")
        planner.plan(gateway)
        db.session.commit()
    return subs


def schedules_on(url: str) -> list[dict]:
    return ls(url, "GET", "/v1/subscription_schedules?limit=100")["data"]


@pytest.fixture
def billing_app(make_app, localstripe_url):
    return make_app(STRIPE_API_BASE=localstripe_url, STRIPE_SECRET_KEY=TEST_SECRET_KEY,
                    STRIPE_WRITE_RATE=0, STRIPE_READ_RATE=0)


def test_apply_makes_one_schedule_each_as_designed_and_a_rerun_makes_none(
        billing_app, make_customer, localstripe_url):
    before = {s["id"] for s in schedules_on(localstripe_url)}
    subs = world(billing_app, make_customer, localstripe_url, 3)
    with billing_app.app_context():
        report = applying.apply(billing_app.extensions["stripe_gateway"])
        assert report.counts["scheduled"] == 3
        rows = db.session.execute(select(LegacySubscription)).scalars().all()
        assert {r.state for r in rows} == {"scheduled"}
        rows = [(r.legacy_id, r.stripe_schedule_id, r.start_at, r.plan) for r in rows]
        again = applying.apply(billing_app.extensions["stripe_gateway"])
        assert again.counts == {}
    made = [s for s in schedules_on(localstripe_url) if s["id"] not in before]
    assert sorted(s["metadata"]["legacy_subscription_id"] for s in made) == sorted(subs)
    one = made[0]
    legacy_id, _, start_at, plan = next(r for r in rows if r[1] == one["id"])
    assert one["customer"] == subs[legacy_id]
    assert one["phases"][0]["start_date"] == int(start_at.timestamp())
    assert one["end_behavior"] == "release"
    phase = one["phases"][0]
    assert phase["billing_cycle_anchor"] == "phase_start"
    assert phase["proration_behavior"] == "none"
    assert phase["items"] == [{"price": plan["items"][0]["price"], "quantity": "2"}]
    assert "default_payment_method" not in phase  # the customer's default, set by cardbridge


def test_a_trial_is_applied_as_a_subscription_in_stripes_shape_and_never_made_twice(
        billing_app, make_customer, localstripe_url):
    url = localstripe_url
    price = ls(url, "POST", "/v1/prices", {"currency": "usd", "unit_amount": 2500,
                                           "recurring[interval]": "month", "product": "prod_t"})
    cus = ls(url, "POST", "/v1/customers", {"email": "trial@example.com"})["id"]
    make_customer(legacy_id="CT", stripe_customer_id=cus, status="ready")
    trial_end = start_in(10)
    rows = io.BytesIO(f"{HEADER},trial_end,metadata.source\n"
                      f"S-T,CT,trialing,{trial_end},gold,2,{trial_end},legacybill\n".encode())
    prices = io.BytesIO(f"legacy_plan_id,currency,stripe_price_id\ngold,usd,{price['id']}\n"
                        .encode())
    with billing_app.app_context():
        gateway = billing_app.extensions["stripe_gateway"]
        loading.import_prices(prices, gateway=gateway, name="prices.csv")
        loading.import_subscriptions(rows, name="subs.csv")
        planner.plan(gateway)
        db.session.commit()
        assert applying.apply(gateway).counts == {"live": 1}
        row = db.session.execute(select(LegacySubscription)).scalar_one()
        assert (row.mode, row.state) == ("subscription", "live")
        sub_id, attempt = row.stripe_subscription_id, row.attempt_key
        assert applying.apply(gateway).counts == {}  # the ledger: nothing left to do
        # An answer lost after Stripe made it: the row is planned again, the listing finds it.
        row.state, row.stripe_subscription_id = "planned", None
        db.session.commit()
        assert applying.apply(gateway).counts == {"adopted": 1}
        row = db.session.execute(select(LegacySubscription)).scalar_one()
        assert (row.state, row.stripe_subscription_id) == ("live", sub_id)
    made = ls(url, "GET", f"/v1/subscriptions?customer={cus}&status=all")["data"]
    assert [s["id"] for s in made] == [sub_id]
    sub = made[0]
    assert [(i["price"]["id"], i["quantity"]) for i in sub["items"]["data"]] == [
        (price["id"], 2)]
    assert sub["status"] == "trialing"
    assert sub["trial_end"] == int(datetime.fromisoformat(trial_end).timestamp())
    assert sub["metadata"] == {"source": "legacybill", "legacy_subscription_id": "S-T",
                               "cardbridge_attempt": attempt, "cardbridge_revision": "1"}
    assert ls(url, "GET", f"/v1/invoices/{sub['latest_invoice']}")["total"] == 0


def test_a_schedule_for_the_legacy_id_made_by_someone_else_sends_the_row_to_review(
        billing_app, make_customer, localstripe_url):
    subs = world(billing_app, make_customer, localstripe_url, 1)
    with billing_app.app_context():
        price = db.session.execute(select(LegacySubscription)).scalar_one().plan["items"][0]
    ls(localstripe_url, "POST", "/v1/subscription_schedules", {
        "customer": subs["S0"], "start_date": str(int(time.time()) + 86400 * 9),
        "metadata[legacy_subscription_id]": "S0", "phases[0][items][0][price]": price["price"]})
    with billing_app.app_context():
        report = applying.apply(billing_app.extensions["stripe_gateway"])
        sub = db.session.execute(select(LegacySubscription)).scalar_one()
    assert report.counts == {"duplicate_on_stripe": 1}
    assert sub.state == "needs_review" and "already exists" in sub.reason


def test_a_429_storm_is_retried_and_nothing_is_made_twice(make_app, make_customer, tmp_path):
    with fake_stripe(tmp_path, "--rate-limit", "4") as url:
        app = make_app(STRIPE_API_BASE=url, STRIPE_SECRET_KEY=TEST_SECRET_KEY,
                       STRIPE_WRITE_RATE=0, STRIPE_READ_RATE=0)  # no pacing: a storm of 429s
        world(app, make_customer, url, 12, customers=2)
        with app.app_context():
            gateway = StripeGateway.from_config(app.config, rate_limit_retries=8)
            report = applying.apply(gateway, concurrency=8)
            states = db.session.execute(select(LegacySubscription.state)).scalars().all()
        made = schedules_on(url)
    assert report.counts["scheduled"] == 12 and states == ["scheduled"] * 12
    assert sorted(s["metadata"]["legacy_subscription_id"] for s in made) == sorted(
        f"S{n}" for n in range(12))


def test_apply_holds_no_pool_connection_through_the_budget_wait_and_the_create(
        make_app, make_customer, localstripe_url):
    # As many threads as the pool has connections: a thread that kept its session's
    # connection while the budget asked the pool for one more starved them all.
    app = make_app(STRIPE_API_BASE=localstripe_url, STRIPE_SECRET_KEY=TEST_SECRET_KEY,
                   STRIPE_WRITE_RATE=50, STRIPE_READ_RATE=0, SQLALCHEMY_ENGINE_OPTIONS={
                       "pool_size": 2, "max_overflow": 0, "pool_timeout": 3})
    world(app, make_customer, localstripe_url, 6, customers=2)
    with app.app_context():
        report = applying.apply(app.extensions["stripe_gateway"], concurrency=2)
    assert report.counts == {"scheduled": 6}


def test_apply_killed_with_kill_9_and_run_again_creates_nothing_twice(
        make_app, make_customer, tmp_path):
    # The subprocess uses make_app's database: its SQLite file, or the test PostgreSQL.
    database = TEST_DATABASE_URL or f"sqlite:///{tmp_path / 'cardbridge.db'}"
    with fake_stripe(tmp_path, "--latency-ms", "150") as url:
        app = make_app(STRIPE_API_BASE=url, STRIPE_SECRET_KEY=TEST_SECRET_KEY)
        world(app, make_customer, url, 40, customers=5)
        env = {**os.environ, "DATABASE_URL": database, "FLASK_APP": "app.py",
               "SECRET_KEY": "kill-test", "STRIPE_API_BASE": url,
               "STRIPE_SECRET_KEY": TEST_SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": "pk_test_x",
               "STRIPE_WRITE_RATE": "20", "SUBSCRIPTION_APPLY_CONCURRENCY": "4"}
        flask = [sys.executable, "-m", "flask", "subscriptions", "apply"]
        proc = subprocess.Popen(flask, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while len(schedules_on(url)) < 8 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial = len(schedules_on(url))
        assert 0 < partial < 40
        subprocess.run(flask, cwd=ROOT, env={**env, "STRIPE_WRITE_RATE": "0"}, check=True,
                       capture_output=True, timeout=120)
        on_fake = schedules_on(url)
        made = [s["metadata"]["legacy_subscription_id"] for s in on_fake]
        with app.app_context():
            db.session.remove()
            rows = db.session.execute(select(LegacySubscription)).scalars().all()
    assert sorted(made) == sorted(f"S{n}" for n in range(40))  # each exactly once
    assert {r.state for r in rows} == {"scheduled"}
    assert {r.stripe_schedule_id for r in rows} == {s["id"] for s in on_fake}


def test_the_guard_cancels_unconfirmed_schedules_and_plans_them_one_cycle_later(
        billing_app, make_customer, localstripe_url):
    world(billing_app, make_customer, localstripe_url, 2)
    with billing_app.app_context():
        applying.apply(billing_app.extensions["stripe_gateway"])
        confirmed = guard.confirm_cancelled(io.BytesIO(b"legacy_subscription_id\nS1\nS9\n"),
                                            actor="cli")
        db.session.commit()
        assert confirmed["confirmed"] == 1 and confirmed["problems"][0][1] == "S9"
        listing = io.StringIO()
        assert guard.cancel_list(listing) == 1 and "S0," in listing.getvalue()
        s0 = db.session.execute(select(LegacySubscription).where(
            LegacySubscription.legacy_id == "S0")).scalar_one()
        schedule_id, start = s0.stripe_schedule_id, s0.start_at
        counts = guard.run_guard(billing_app.extensions["stripe_gateway"],
                                 now=start - timedelta(hours=11))
        rows = {r.legacy_id: r for r in db.session.execute(select(LegacySubscription)).scalars()}
        actions = db.session.execute(select(AuditEvent.action)).scalars().all()
    assert counts == {"held": 1}
    assert rows["S0"].state == "held" and rows["S0"].stripe_schedule_id is None
    assert rows["S0"].start_at.month == (start.month % 12) + 1  # one monthly cycle later
    assert rows["S1"].state == "scheduled"  # confirmed: left alone
    assert ls(localstripe_url, "GET", f"/v1/subscription_schedules/{schedule_id}")[
        "status"] == "canceled"
    assert "subscription.held" in actions and "subscription.legacy_cancel_confirmed" in actions


def test_webhooks_move_the_ledger_from_scheduled_to_live_and_record_the_first_invoice(
        billing_app, make_customer, localstripe_url):
    world(billing_app, make_customer, localstripe_url, 1)
    with billing_app.app_context():
        applying.apply(billing_app.extensions["stripe_gateway"])
        sub = db.session.execute(select(LegacySubscription)).scalar_one()
        events = [
            {"id": "evt_1", "object": "event", "type": "subscription_schedule.updated",
             "data": {"object": {"id": sub.stripe_schedule_id, "object": "subscription_schedule",
                                 "status": "active", "subscription": "sub_started"}}},
            {"id": "evt_2", "object": "event", "type": "invoice.paid",
             "data": {"object": {"id": "in_1", "object": "invoice",
                                 "subscription": "sub_started"}}},
        ]
        for event in events:
            row = webhook_events.store(event)
            db.session.commit()
            webhook_events.process(row.id, billing_app.extensions["stripe_gateway"])
            db.session.commit()
        sub = db.session.execute(select(LegacySubscription)).scalar_one()
    assert (sub.state, sub.stripe_subscription_id, sub.first_invoice) == (
        "live", "sub_started", "paid")


@pytest.mark.parametrize(("data", "param", "code"), [
    ({"customer": "cus_x", "phases[0][items][0][price]": "price_x", "colour": "red"},
     "colour", "parameter_unknown"),
    ({"customer": "cus_x", "phases[0][items][0][price]": "price_x",
      "phases[0][proration_behavior]": "sometimes"},
     "phases[0][proration_behavior]", "parameter_invalid_string"),
    ({"customer": "cus_x", "phases[0][items][0][price]": "price_x",
      "phases[0][items][0][quantity]": "two"},
     "phases[0][items][0][quantity]", "parameter_invalid_integer"),
    ({"customer": "cus_x", "phases[0][proration_behavior]": "none"},
     "phases[0][items]", "parameter_missing"),
])
def test_the_fake_refuses_what_stripe_refuses(localstripe_url, data, param, code):
    response = requests.post(f"{localstripe_url}/v1/subscription_schedules", data=data,
                             headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


def test_the_fake_counts_reads_and_writes_apart_and_answers_429_past_the_limit(tmp_path):
    with fake_stripe(tmp_path, "--rate-limit", "3") as url:
        auth = {"Authorization": f"Bearer {TEST_SECRET_KEY}"}
        time.sleep(1 - time.monotonic() % 1)  # the start of a one-second window
        reads = [requests.get(f"{url}/v1/prices", headers=auth, timeout=5).status_code
                 for _ in range(4)]
        write = requests.post(f"{url}/v1/prices", headers=auth, timeout=5, data={
            "currency": "usd", "unit_amount": "100", "product": "prod_x"})
    assert reads[:3] == [200, 200, 200] and reads[3] == 429
    assert write.status_code == 200  # writes have their own budget


def test_the_shared_budget_spaces_writes_at_the_rate_across_takers(app):
    with app.app_context():
        slept: list[float] = []
        budget = Budget({"write": 10.0}, None, db.engine, sleep=slept.append)
        for _ in range(5):
            budget.take("write")
    # five slots a tenth of a second apart: the last waited about 0.4 s for its turn
    assert len(slept) >= 4 and 0.3 <= max(slept) <= 0.45


@pytest.mark.redis
def test_the_budget_in_redis_is_one_budget_for_every_process():
    """Two takers (two processes' Budgets) on one Redis: their slots interleave a fifth of a
    second apart at 5 a second, as if there were one taker."""
    redis.Redis.from_url(TEST_REDIS_URL).delete("cardbridge:stripe-budget:write")
    waits: list[float] = []
    first = Budget({"write": 5.0}, TEST_REDIS_URL, sleep=waits.append)
    second = Budget({"write": 5.0}, TEST_REDIS_URL, sleep=waits.append)
    for _ in range(3):
        first.take("write")
        second.take("write")
    # the first slot is free at once (no sleep); the other five wait 0.2, 0.4 … 1.0 s
    assert len(waits) == 5
    for got, want in zip(sorted(waits), (0.2, 0.4, 0.6, 0.8, 1.0), strict=True):
        assert want - 0.08 < got <= want  # less only by the time the takes themselves took
