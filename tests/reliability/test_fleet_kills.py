"""kill -9 in a running fleet (issue 16, point 3): gunicorn, two queue workers, PostgreSQL,
Redis, the fake Stripe (devtools/fleet.py, as `make fleet` runs it) and a counting SMTP sink.
A queue worker killed mid-batch: the other carries on, nothing is sent twice, nothing is left
stuck. A gunicorn worker killed mid-request: the master replaces it, the customers whose
request it held press Save again, and each has exactly one record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
from sqlalchemy import create_engine, text

from devtools.fleet import Fleet
from tests.conftest import ROOT, TEST_DATABASE_URL, TEST_REDIS_URL
from tests.reliability.test_database_cut import Browser
from tests.smtp_sink import SmtpSink

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.localstripe]


def fleet_database() -> str:
    parts = urlsplit(TEST_DATABASE_URL or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    return urlunsplit(parts._replace(path="/cardbridge_fleet_test"))


@pytest.fixture
def fleet(tmp_path):
    sink = SmtpSink().start()
    running = Fleet(web_workers=2, threads=4, queue_workers=2, latency_ms=100,
                    database_url=fleet_database(), redis_url=TEST_REDIS_URL,
                    smtp_port=sink.port, logs=tmp_path / "fleet",
                    extra_env={"MAIL_CLAIM_LEASE_SECONDS": "4", "MAIL_REAP_EVERY_SECONDS": "1"})
    try:
        running.start()
        yield running, sink
    finally:
        running.stop()
        sink.stop()


def seed(fleet: Fleet, tmp_path, customers: int, wave: int) -> list[tuple[str, str]]:
    out = tmp_path / "seed.json"
    subprocess.run([sys.executable, "-m", "bench.load_fleet", "seed", str(out), "--customers",
                    str(customers), "--wave", str(wave)], cwd=ROOT, check=True,
                   env={**fleet.env(), "DATABASE_URL": fleet.database_url}, capture_output=True)
    return json.loads(out.read_text())["urls"]


def email_statuses(fleet: Fleet) -> Counter:
    engine = create_engine(fleet.database_url)
    with engine.connect() as conn:
        found = Counter(dict(conn.execute(text(
            "SELECT status, count(*) FROM emails GROUP BY status")).all()))
    engine.dispose()
    return found


def test_a_queue_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(fleet, tmp_path):
    running, sink = fleet
    seed(running, tmp_path, 0, 300)
    running.flask("campaign", "send", "--status", "needs_update")
    sink.wait_for(40, timeout=60)
    os.killpg(running.procs["worker0"].pid, signal.SIGKILL)  # mid-batch, claims held
    running.procs["worker0"].wait()

    deadline = time.monotonic() + 120
    while (now := email_statuses(running)).get("queued", 0) + now.get("sending", 0):
        assert time.monotonic() < deadline, f"emails left stuck: {dict(now)}"
        time.sleep(0.5)
    counts = Counter(sink.recipients())
    assert set(counts.values()) == {1}, "someone got the same email twice"
    failed = now.get("failed", 0)
    assert now["sent"] + failed == 300
    # Only what was on the wire when the worker died is given up, marked "may have been
    # delivered" (it may have arrived: never sent again, so never twice).
    assert failed <= 4 and now["sent"] <= len(counts) <= now["sent"] + failed


def test_a_gunicorn_worker_killed_mid_request_is_replaced_and_each_customer_records_once(
        fleet, tmp_path):
    running, _ = fleet
    links = seed(running, tmp_path, 16, 0)
    master = psutil.Process(running.procs["web"].pid)
    before = {p.pid for p in master.children()}
    outcomes: dict[str, int] = {}

    def customer(url: str, legacy_id: str) -> None:
        token = url.rsplit("/u/", 1)[1]
        browser = Browser(running.url, running.stripe_url, token)
        for attempt in range(1, 6):  # a customer whose Save failed presses it again
            try:
                assert browser.page().status_code == 200
                browser.finish()
                outcomes[legacy_id] = attempt
                return
            except Exception:  # noqa: BLE001 (a reset connection, a 502: try again)
                time.sleep(0.5)

    threads = [threading.Thread(target=customer, args=pair) for pair in links]
    for t in threads:
        t.start()
    time.sleep(0.6)  # requests in flight on both workers (each Stripe call takes 100 ms)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == sorted(legacy for _, legacy in links), "a customer could not finish"
    deadline = time.monotonic() + 20
    while len(master.children()) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.2)
    assert victim not in {p.pid for p in master.children()}

    engine = create_engine(running.database_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.status, count(p.id) FROM customers c LEFT JOIN payment_methods p "
            "ON p.customer_id = c.id GROUP BY c.id, c.status")).all()
    engine.dispose()
    assert Counter(rows) == Counter({("updated", 1): 16})
