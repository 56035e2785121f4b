# ruff: noqa: I001  (Locust first: it patches the standard library as it is imported)
"""Load, as customers really arrive: Locust (headless, bounded) against a fleet
(devtools/fleet.py: gunicorn on PostgreSQL and Redis, two queue workers, the fake Stripe with
realistic latency, an SMTP sink).

    python -m bench.load [--users 200] [--duration 60] [--think 1.0] [--latency-ms 150]
        [--web-workers 3] [--threads 8] [--sweep 200,400,700,1000]

Each simulated customer does what the browser does on the Card Element form: opens the page,
tells the server a person opened it, asks for the SetupIntent with the page's CSRF token,
confirms the card at the fake Stripe with the publishable key (as Stripe.js does), tells the
server, and opens the done page; then takes the next link. Meanwhile a wave of emails goes out
(`flask campaign send`) and staff search the console. It prints requests per second and
p50/p95/p99 per step, errors by kind, the CPU each part of the fleet used, and checks the
database against the fake Stripe: every customer who finished is `updated` with exactly one
saved card, the default on Stripe. The aim: 0 errors and page p95 ≤ 100 ms; the floor it is
measured against in the same run is an empty request to the same gunicorn (/healthz).
"""

from __future__ import annotations

# Locust patches the standard library with gevent as it is imported: first, before anything.
import gevent
from locust import HttpUser, between, events, task
from locust.env import Environment

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import requests

from devtools.fleet import Fleet

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
PK = re.compile(r'data-publishable-key="([^"]+)"')
WARM_UP = 10  # seconds of load before the figures start
STATE: dict = {"urls": [], "finished": [], "stripe": "", "staff": None, "think": 1.0}


class Customer(HttpUser):
    """One customer at a time per simulated user: a link, the card form, done."""

    wait_time = between(0, 0)

    def think(self) -> None:
        gevent.sleep(random.uniform(0.5, 1.5) * STATE["think"])

    @task
    def save_a_card(self) -> None:
        if not STATE["urls"]:
            gevent.sleep(1)  # every link used: this customer waits out the run
            return
        url, legacy_id = STATE["urls"].pop()
        path = url.split("://", 1)[1].split("/", 1)[1]
        page = self.client.get(f"/{path}", name="1 page")
        csrf = CSRF.search(page.text)
        if page.status_code != 200 or not csrf:
            return
        headers = {"X-CSRFToken": csrf.group(1)}
        self.client.post(f"/{path}/opened", json={}, headers=headers, name="2 opened")
        self.think()  # typing the card
        intent = self.client.post(f"/{path}/intent", json={}, headers=headers, name="3 intent")
        if intent.status_code != 200:
            return
        secret = intent.json()["client_secret"]
        seti = secret.split("_secret_")[0]
        pk = PK.search(page.text)
        with self.client.post(
                f"{STATE['stripe']}/v1/setup_intents/{seti}/confirm", name="4 stripe confirm",
                json={"key": pk.group(1) if pk else "pk_test_cardbridge_fleet",
                      "client_secret": secret, "use_stripe_sdk": True,
                      "payment_method_data": {"type": "card", "card": {
                          "number": "4242424242424242", "exp_month": "12", "exp_year": "2030",
                          "cvc": "123"}}}, catch_response=True) as confirmed:
            if confirmed.status_code != 200 or confirmed.json().get("status") != "succeeded":
                confirmed.failure(f"confirm: {confirmed.status_code}")
                return
        done = self.client.post(f"/{path}/complete", json={"setup_intent": seti},
                                headers=headers, name="5 complete")
        if done.status_code == 200:
            self.client.get(done.json()["redirect"], name="6 done page")
            STATE["finished"].append(legacy_id)
        self.think()


class Staff(HttpUser):
    """A support agent searching the console while customers arrive."""

    wait_time = between(1, 3)
    weight = 0  # placed by fixed_count below

    def on_start(self) -> None:
        login = self.client.get("/support/login", name="staff login page")
        email, password = STATE["staff"]
        self.client.post("/support/login", name="staff login", data={
            "email": email, "password": password,
            "csrf_token": CSRF.search(login.text).group(1) if CSRF.search(login.text) else ""})

    @task
    def search(self) -> None:
        n = random.randrange(0, 10_000)
        self.client.get(f"/support/customers?q=load{n}@example.com", name="staff search")


PARTS = (("gunicorn", "web (gunicorn)"), ("flask worker", "queue workers"),
         ("localstripe", "fake Stripe"), ("aiosmtpd", "SMTP sink"), ("bench.load", "Locust"),
         ("postgres", "PostgreSQL"), ("redis-server", "Redis"))


def cpu_by_part() -> dict[str, float]:
    """CPU seconds used so far by each part of the fleet (processes born mid-run included:
    PostgreSQL starts a backend per connection)."""
    used: dict[str, float] = {}
    for proc in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        line = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
        times = proc.info["cpu_times"]
        if times is None:
            continue
        for needle, part in PARTS:
            if needle in line:
                used[part] = used.get(part, 0.0) + times.user + times.system
                break
    return used


def percentile(stats, p: float) -> float:
    return stats.get_response_time_percentile(p) if stats.num_requests else 0.0


def run_once(fleet: Fleet, users: int, duration: int, think: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="load-"))
    # Enough links that no user runs dry: a journey takes about 2 × think + Stripe's latency.
    journeys = int(users * (duration + WARM_UP) / max(0.5, 2 * think + 0.5)) + users
    env = {**fleet.env(), "DATABASE_URL": fleet.database_url}
    subprocess.run([sys.executable, "-m", "bench.load_fleet", "seed", str(work / "links.json"),
                    "--customers", str(journeys), "--wave", "2000"], check=True, env=env,
                   cwd=Path(__file__).resolve().parent.parent)
    seeded = json.loads((work / "links.json").read_text())
    STATE.update(urls=seeded["urls"], finished=[], stripe=fleet.stripe_url,
                 staff=seeded["staff"], think=think)
    Staff.fixed_count = 2
    environment = Environment(user_classes=[Customer, Staff], host=fleet.url,
                              events=events)
    runner = environment.create_local_runner()
    errors: Counter = Counter()
    environment.events.request.add_listener(
        lambda name, response, exception, **kw: exception and errors.update(
            [f"{name}: {type(exception).__name__} {str(exception)[:80]}"]))
    before = cpu_by_part()
    busy_before = psutil.cpu_times()
    wave = subprocess.Popen([sys.executable, "-m", "flask", "campaign", "send",
                             "--status", "needs_update", "--limit", "2000"],
                            env=env, cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runner.start(users + 2, spawn_rate=max(20, users / 5))
    # Figures from the steady state: the first seconds (users arriving, each gunicorn
    # thread's first connection and template compile) are load, but not measured.
    gevent.sleep(WARM_UP)
    environment.stats.reset_all()
    errors.clear()
    started = time.monotonic()
    gevent.spawn_later(duration, runner.quit)
    runner.greenlet.join()
    elapsed = time.monotonic() - started
    wave.wait(60)
    after = cpu_by_part()
    cpu = {part: 100 * (after.get(part, 0) - before.get(part, 0)) / elapsed
           for part in after}
    busy_after = psutil.cpu_times()
    idle = (busy_after.idle - busy_before.idle) / elapsed / psutil.cpu_count()
    cpu["machine busy (% of all cores)"] = 100 * (1 - idle)
    steps = {}
    for (name, _method), st in sorted(environment.stats.entries.items()):
        steps[name] = {"requests": st.num_requests, "failures": st.num_failures,
                       "rps": st.num_requests / elapsed, "p50": percentile(st, 0.5),
                       "p95": percentile(st, 0.95), "p99": percentile(st, 0.99)}
    for err in environment.stats.errors.values():
        errors[f"{err.name}: {err.error}"[:120]] += err.occurrences
    finished = list(STATE["finished"])
    (work / "finished.json").write_text(json.dumps(finished))
    check = subprocess.run([sys.executable, "-m", "bench.load_fleet", "verify",
                            str(work / "finished.json")], env=env, capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parent.parent)
    total = environment.stats.total
    return {"users": users, "seconds": elapsed, "rps": total.num_requests / elapsed,
            "steps": steps, "errors": dict(errors), "cpu": cpu,
            "verify": json.loads(check.stdout or "{}") or {"error": check.stderr[-500:]},
            "exact": check.returncode == 0}


def floor(fleet: Fleet, seconds: float = 5) -> float:
    """p95 of an empty request (/healthz) through the same gunicorn, one at a time."""
    times, end = [], time.monotonic() + seconds
    with requests.Session() as s:
        while time.monotonic() < end:
            t = time.perf_counter()
            s.get(f"{fleet.url}/healthz", timeout=5)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return times[int(0.95 * (len(times) - 1))]


def report(result: dict, healthz_p95: float) -> None:
    print(f"\n== {result['users']} customers at once, {result['seconds']:.0f} s: "
          f"{result['rps']:.1f} requests/s ==")
    print(f"  {'step':<22}{'requests':>9}{'fail':>6}{'rps':>7}{'p50':>7}{'p95':>7}{'p99':>7}")
    for name, s in result["steps"].items():
        print(f"  {name:<22}{s['requests']:>9}{s['failures']:>6}{s['rps']:>7.1f}"
              f"{s['p50']:>7.0f}{s['p95']:>7.0f}{s['p99']:>7.0f}")
    page = result["steps"].get("1 page", {}).get("p95", 0)
    print(f"  page p95 {page:.0f} ms (aim ≤ 100) · empty request p95 {healthz_p95:.1f} ms · "
          f"ratio {page / healthz_p95 if healthz_p95 else 0:.1f}×")
    print(f"  errors: {result['errors'] or 'none'}")
    print("  CPU over the run (% of one core; the machine has "
          f"{psutil.cpu_count()}): " + ", ".join(
        f"{k} {v:.0f}%" for k, v in sorted(result["cpu"].items(), key=lambda kv: -kv[1])))
    v = result["verify"]
    mark = " ✔" if result["exact"] else " ✘ " + str(v.get("problems"))
    print(f"  records: {v.get('exact')} of {v.get('finished')} finished customers exact{mark};"
          f" emails {v.get('emails')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--sweep", default="", help="comma-separated user counts, e.g. 200,500")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--think", type=float, default=8.0)
    parser.add_argument("--latency-ms", type=int, default=150)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--database-url", default=os.environ.get(
        "FLEET_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/cardbridge_load"))
    args = parser.parse_args()
    counts = [int(n) for n in args.sweep.split(",") if n] or [args.users]
    worst = 0
    for users in counts:
        fleet = Fleet(web_workers=args.web_workers, threads=args.threads,
                      latency_ms=args.latency_ms, database_url=args.database_url)
        try:
            fleet.start(say=print)
            base = floor(fleet)
            result = run_once(fleet, users, args.duration, args.think)
            report(result, base)
            page = result["steps"].get("1 page", {}).get("p95", 1e9)
            ok = result["exact"] and not result["errors"] and page <= 100
            print(f"  → {'held' if ok else 'NOT held'} at {users}")
            worst = worst or (0 if ok else 1)
        finally:
            fleet.stop()
    return worst


if __name__ == "__main__":
    sys.exit(main())
