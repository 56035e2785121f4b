"""Bulk apply of planned subscriptions against the fake Stripe's rate limit, in the same run.

    .venv/bin/python bench/stripe_bulk.py [--count 3000] [--rate-limit 100] [--latency-ms 150]
                                          [--concurrency N] [--database-url URL]

Starts the project's fake Stripe (devtools/localstripe_server.py) with `--from-scratch
--rate-limit R --latency-ms M`: at most R writes a second in one-second windows, a 429 past
that, and M ms before every answer. Everything runs against that one fake:

* the floor, run for --floor-seconds (default 10) before ours and again after it: bare
  stripe-python on 32 threads creating Prices as fast as it can, every 429 retried after 20 ms,
  no database, no pacing: the most writes a second the fake gives any client (Prices, because
  their cost in the fake does not grow with what it holds; its Customers' does). A run of S
  seconds can catch parts of S + 1 of the fake's one-second windows, so the floor may read up
  to (S + 1) / S of the limit;
* setup (not timed): N Stripe customers made the same way, then put into a fresh database
  (SQLite in a temp dir, or --database-url) as `ready` with one migrated card each, as the
  roster and mapping imports leave them;
* a subscriptions CSV of N rows (one per customer, starts spread over the coming weeks) goes
  through the real `import_subscriptions`, then `plan`;
* ours, timed: `apply` with STRIPE_WRITE_RATE = R (the shared budget paces the writes) on
  SUBSCRIPTION_APPLY_CONCURRENCY threads (--concurrency; default the app's), from the first
  row claimed to the last committed, including its listing of what is on Stripe.

It prints rows, seconds, writes/s, the 429s the fake answered (counted on the wire by the
gateway's HTTP client, retries included), ours / R (the aim: ≥ 0.9) and ours / the mean of the
two floors, the rows that did not end `scheduled` (must be 0), and then checks the fake: it
lists every schedule and requires exactly one per legacy id, the one the row records.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ heads sys.path, and bench/email.py would shadow the standard library
# (urllib and smtplib import it): take the folder off the path before anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import io  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

SECRET_KEY = "sk_test_cardbridge_bench"
HEADER = "legacy_subscription_id,legacy_customer_id,status,next_billing_at,legacy_plan_id,quantity"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeStripe:
    """The fake on a free port, its log in `folder`."""

    def __init__(self, folder: Path, rate_limit: int, latency_ms: int):
        self.flags = ["--rate-limit", str(rate_limit), "--latency-ms", str(latency_ms)]
        self.log_path = folder / "localstripe.log"

    def __enter__(self) -> str:
        port = free_port()
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.localstripe_server", "--port", str(port),
             "--from-scratch", *self.flags], cwd=str(ROOT), stdout=self.log,
            stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/js.stripe.com/v3/", timeout=1).read()
                return url
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise SystemExit(
                        f"the fake Stripe did not start; see {self.log_path}") from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


class Progress:
    """One line rewritten in place, on a terminal only."""

    def __init__(self, what: str):
        self.what, self.shown = what, sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.shown and (done == total or done % 50 == 0):
            end = "\n" if done == total else ""
            print(f"\r  {self.what}: {done}/{total}", end=end, file=sys.stderr, flush=True)


def counting_http_client(timeout: float = 30):
    """stripe-python's requests client, counting the 429s it receives (one per answer, so a
    request the gateway retries three times counts three)."""
    import stripe

    class Counting(stripe.RequestsClient):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lock, self.status = threading.Lock(), Counter()

        def request(self, method, url, headers, post_data=None, **kwargs):
            content, status, response_headers = super().request(method, url, headers,
                                                                post_data, **kwargs)
            with self.lock:
                self.status[status] += 1
            return content, status, response_headers

    return Counting(timeout=timeout)


# -- the floor, and setup ------------------------------------------------------------------------
def client_for(url: str):
    import stripe

    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": url}, max_network_retries=0,
                               http_client=stripe.RequestsClient(timeout=30))


def hammer(url: str, create, count: int | None, seconds: float | None, what: str,
           threads: int = 32) -> tuple[int, float, int]:
    """`create(client, i)` on `threads` threads, each 429 retried after 20 ms, until `count`
    are made or `seconds` have passed: (made, seconds, 429s)."""
    import stripe

    client = client_for(url)
    client.v1.prices.list({"limit": 1})  # the SDK imported and a connection made first
    time.sleep(1.1)  # and that read's window closed
    lock, made, limited, numbers = threading.Lock(), [0], [0], iter(range(10**9))
    progress = Progress(what) if count else None
    started = time.perf_counter()
    deadline = started + (seconds or 10**9)
    ended = [started]

    def work() -> None:
        while True:
            with lock:
                i = next(numbers)
            if (count and i >= count) or time.perf_counter() > deadline:
                return
            while True:
                try:
                    create(client, i)
                    break
                except stripe.RateLimitError:
                    with lock:
                        limited[0] += 1
                    time.sleep(0.02)
            with lock:
                made[0] += 1
                ended[0] = time.perf_counter()
                if progress:
                    progress(made[0], count)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    return made[0], ended[0] - started, limited[0]


def floor(url: str, seconds: float) -> tuple[float, int]:
    """Writes a second the fake gives bare stripe-python on 32 threads that do nothing but
    create Prices (a dict insert in the fake: its cost does not grow with what it holds, unlike
    its Customers), with every 429 retried after 20 ms: (writes/s, 429s)."""
    def create(client, i: int) -> None:
        client.v1.prices.create({"currency": "usd", "unit_amount": 100 + i,
                                 "product": "prod_floor"})

    made, elapsed, limited = hammer(url, create, None, seconds, "floor")
    return made / elapsed, limited


def create_customers(url: str, n: int) -> list[str]:
    """N Stripe customers, as fast as the fake allows (setup, not timed)."""
    ids: list[str] = [""] * n

    def create(client, i: int) -> None:
        ids[i] = client.v1.customers.create(
            {"email": f"customer{i}@example.com",
             "metadata": {"legacy_customer_id": f"C{i:06d}"}}).id

    hammer(url, create, n, None, "Stripe customers (setup)")
    return ids


def make_app(instance: Path, url: str, database_url: str | None, rate: int,
             concurrency: int | None):
    from app import create_app

    config = {
        "TESTING": True, "INSTANCE_PATH": str(instance), "SECRET_KEY": "bench-secret",
        "LINK_SECRET_KEYS": ["bench-link-key"], "PUBLIC_BASE_URL": "https://cards.example.com",
        "SQLALCHEMY_DATABASE_URI": database_url or f"sqlite:///{instance / 'bench.db'}",
        "STRIPE_API_BASE": url, "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_MAX_RETRIES": 0,
        "STRIPE_WRITE_RATE": rate, "STRIPE_READ_RATE": rate,
    }
    if concurrency:
        config["SUBSCRIPTION_APPLY_CONCURRENCY"] = concurrency
    return create_app(config)


def seed(app, stripe_ids: list[str]) -> None:
    """The customers as the roster and mapping imports leave them: ready, one migrated card."""
    from sqlalchemy import insert, select

    from cardbridge.extensions import db
    from cardbridge.models import Customer, MigratedCard
    from cardbridge.models.types import utcnow

    now = utcnow()
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.execute(insert(Customer), [
            {"legacy_id": f"C{i:06d}", "email": f"customer{i}@example.com",
             "name": f"Customer {i}", "locale": "en", "status": "ready",
             "stripe_customer_id": cus, "card_brand": "visa", "card_last4": f"{i % 10000:04d}",
             "card_exp_month": 1 + i % 12, "card_exp_year": 2030, "mapped_at": now,
             "created_at": now, "updated_at": now} for i, cus in enumerate(stripe_ids)])
        ids = dict(db.session.execute(select(Customer.legacy_id, Customer.id)).all())
        db.session.execute(insert(MigratedCard), [
            {"customer_id": ids[f"C{i:06d}"], "old_card_id": f"card_old{i}",
             "stripe_id": f"card_{i:014d}", "brand": "visa", "last4": f"{i % 10000:04d}",
             "exp_month": 1 + i % 12, "exp_year": 2030} for i in range(len(stripe_ids))])
        db.session.commit()


def import_and_plan(app, url: str, n: int) -> Counter:
    """Prices on the fake and in the map; N legacy subscriptions imported and planned."""
    import stripe
    from sqlalchemy import func, select

    from cardbridge.extensions import db
    from cardbridge.models import LegacySubscription
    from cardbridge.subscriptions import loading, planner

    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": url})
    plans = {}
    for plan, amount in (("gold", 2500), ("silver", 1200)):
        plans[plan] = client.v1.prices.create(
            {"currency": "usd", "unit_amount": amount, "recurring": {"interval": "month"},
             "product": f"prod_{plan}"}).id
    prices = "legacy_plan_id,currency,stripe_price_id\n" + "".join(
        f"{plan},usd,{price}\n" for plan, price in plans.items())
    today = datetime.now(UTC).replace(microsecond=0)
    lines = [HEADER] + [
        f"S{i:06d},C{i:06d},active,{(today + timedelta(days=5 + i % 25)).isoformat()},"
        f"{'gold' if i % 3 else 'silver'},{1 + i % 3}" for i in range(n)]
    with app.app_context():
        gateway = app.extensions["stripe_gateway"]
        loading.import_prices(io.BytesIO(prices.encode()), gateway=gateway, name="prices.csv")
        result = loading.import_subscriptions(io.BytesIO(("\n".join(lines) + "\n").encode()),
                                              name="subscriptions.csv")
        planner.plan(gateway)
        db.session.commit()
        states = Counter(dict(db.session.execute(
            select(LegacySubscription.state, func.count()).group_by(LegacySubscription.state))
            .all()))
    if states != Counter(planned=n):
        raise SystemExit(f"the plan is not {n} planned rows: {dict(states)} ({result})")
    return states


# -- ours ----------------------------------------------------------------------------------------
def run_apply(app, concurrency: int | None):
    from cardbridge.stripe_gateway import StripeGateway
    from cardbridge.subscriptions import apply as applying

    http = counting_http_client()
    with app.app_context():
        gateway = StripeGateway.from_config(app.config, http_client=http)
        report = applying.apply(gateway, progress=Progress("apply"), concurrency=concurrency)
    return report, http.status


def check_fake(app, url: str) -> tuple[int, list[str]]:
    """Every schedule on the fake, against the rows: (schedules, problems)."""
    from sqlalchemy import select

    from cardbridge.extensions import db
    from cardbridge.models import LegacySubscription
    from cardbridge.stripe_gateway import StripeGateway

    gateway = StripeGateway.from_config(app.config, rate_limit_retries=10)
    by_legacy: dict[str, list[str]] = {}
    schedules = 0
    for schedule in gateway.schedules():
        schedules += 1
        legacy = (schedule.get("metadata") or {}).get("legacy_subscription_id", "")
        by_legacy.setdefault(legacy, []).append(schedule["id"])
    problems = []
    with app.app_context():
        rows = db.session.execute(select(LegacySubscription.legacy_id,
                                         LegacySubscription.stripe_schedule_id)).all()
    for legacy_id, schedule_id in rows:
        found = by_legacy.pop(legacy_id, [])
        if found != [schedule_id]:
            problems.append(f"{legacy_id}: row says {schedule_id}, the fake has {found}")
    problems += [f"{legacy or '(no legacy id)'}: on the fake, no row: {found}"
                 for legacy, found in by_legacy.items()]
    return schedules, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="subscriptions (default 3000)")
    parser.add_argument("--rate-limit", type=int, default=100,
                        help="the fake's writes (and reads) a second (default 100)")
    parser.add_argument("--latency-ms", type=int, default=150,
                        help="the fake's latency on every answer (default 150)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="apply threads (default: the app's SUBSCRIPTION_APPLY_CONCURRENCY)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--floor-seconds", type=float, default=10,
                        help="how long each floor run hammers the fake (default 10)")
    args = parser.parse_args()
    n, limit = args.count, args.rate_limit

    with tempfile.TemporaryDirectory() as tmp, \
            FakeStripe(Path(tmp), limit, args.latency_ms) as url:
        before = floor(url, args.floor_seconds)
        stripe_ids = create_customers(url, n)
        app = make_app(Path(tmp), url, args.database_url, limit, args.concurrency)
        seed(app, stripe_ids)
        import_and_plan(app, url, n)
        time.sleep(1.5)  # the setup's last windows close before the clock starts
        report, statuses = run_apply(app, args.concurrency)
        schedules, problems = check_fake(app, url)
        after = floor(url, args.floor_seconds)

    threads = args.concurrency or app.config["SUBSCRIPTION_APPLY_CONCURRENCY"]
    failed = n - report.counts["scheduled"]
    database = "SQLite" if not args.database_url else args.database_url.split(":")[0]
    print(f"fake Stripe: --rate-limit {limit} --latency-ms {args.latency_ms}; database: "
          f"{database}; apply: {threads} threads, STRIPE_WRITE_RATE={limit}")
    raw = (before[0] + after[0]) / 2
    print(f"floor, bare stripe-python Price creates on 32 threads for {args.floor_seconds:g} s "
          f"before and after ours: {before[0]:.1f} and {after[0]:.1f} writes/s "
          f"({before[1]} and {after[1]} 429s)")
    print(f"ours, apply: {n} rows in {report.seconds:.1f} s, {report.writes} writes, "
          f"{report.rate:.1f} writes/s, {statuses[429]} 429s of {sum(statuses.values())} "
          f"requests; outcomes {dict(report.counts)}")
    print(f"failed rows: {failed}; schedules on the fake: {schedules}, one per legacy id: "
          f"{'yes' if not problems else 'NO'}")
    for problem in problems[:10]:
        print(f"  {problem}")
    print(f"ratio writes/s ÷ limit: {report.rate / limit:.3f} (aim ≥ 0.9); "
          f"÷ floor: {report.rate / raw:.3f}")
    if failed or problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
