"""`make fleet`: cardbridge as it runs in production, on this machine.

    python -m devtools.fleet [--web-workers 3] [--threads 8] [--queue-workers 2]
        [--latency-ms 150] [--port 8000] [--database-url URL] [--redis-url URL]

Starts, each in its own process group with its log under instance/fleet/:
- the fake Stripe (localstripe + devtools/fake_billing) with `--latency-ms` on every answer,
  its webhooks registered to the app's /webhooks/stripe, signed with the fleet's secret;
- an SMTP sink (aiosmtpd, accepts and drops every message);
- the app on PostgreSQL and Redis: `flask db upgrade`, then gunicorn (several workers, gthread);
- `flask worker` processes (the queue's consumers).
It prints where each is, and Ctrl-C stops them all. bench/load.py and tests/reliability/ drive
the same class (`Fleet`), pointing it at proxies they own when they cut a dependency.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_cardbridge_fleet"
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/cardbridge_fleet"
DEFAULT_REDIS = "redis://127.0.0.1:6379/3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database the URL names when it does not exist yet."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgresql"):
        return
    name = parts.path.lstrip("/")
    admin = urlunsplit(("postgresql", parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(f'CREATE DATABASE "{name}"')


@dataclass
class Fleet:
    web_workers: int = 3
    threads: int = 8
    queue_workers: int = 2
    latency_ms: int = 150
    port: int = 0
    database_url: str = DEFAULT_DATABASE
    redis_url: str | None = DEFAULT_REDIS
    # What the app reaches for each dependency (a test's proxy in front of the real one).
    app_database_url: str | None = None
    app_redis_url: str | None = None
    app_stripe_url: str | None = None
    smtp_port: int = 0  # a mail server already listening (a test's counting sink); else a sink
    logs: Path = ROOT / "instance" / "fleet"
    extra_env: dict = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.own_smtp = not self.smtp_port
        self.stripe_port, self.smtp_port = free_port(), self.smtp_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stripe_url = f"http://127.0.0.1:{self.stripe_port}"

    # -- the environment every app process shares ----------------------------------------------
    def env(self) -> dict[str, str]:
        stripe = self.app_stripe_url or self.stripe_url
        env = {
            **os.environ, "FLASK_APP": "app:create_app", "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.app_database_url or self.database_url,
            "SECRET_KEY": "fleet-secret-key-not-for-production",
            "LINK_SECRET_KEYS": "fleet-link-key",
            "STRIPE_API_BASE": stripe, "STRIPE_JS_URL": f"{self.stripe_url}/js.stripe.com/v3/",
            "STRIPE_SECRET_KEY": "sk_test_cardbridge_fleet",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_cardbridge_fleet",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "PUBLIC_BASE_URL": self.url,
            "CARD_FORM": "card_element", "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(self.smtp_port), "LOG_FORMAT": "json",
            "WEB_CONCURRENCY": str(self.web_workers), "GUNICORN_THREADS": str(self.threads),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}", "STAFF_REQUIRE_2FA": "false",
            # A connection per gunicorn thread, a few more for a peak: no thread waits on the
            # pool, and 3 workers × 36 stays far under PostgreSQL's 100 connections.
            "DATABASE_POOL_SIZE": str(self.threads), "DATABASE_MAX_OVERFLOW": "4",
            # /metrics on loopback, one view of gunicorn's workers and the queue workers: they
            # share one multiprocess directory (gunicorn wipes it when it starts).
            "METRICS_ENABLED": "true", "PROMETHEUS_MULTIPROC_DIR": str(self.logs / "metrics"),
        }
        redis_url = self.app_redis_url or self.redis_url
        if redis_url:
            env["REDIS_URL"] = redis_url
        else:
            env.pop("REDIS_URL", None)
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    # -- starting and stopping ------------------------------------------------------------------
    def start(self, *, fresh: bool = True, say=lambda text: None) -> Fleet:
        py = sys.executable
        self._spawn("stripe", [py, "-m", "devtools.localstripe_server", "--port",
                               str(self.stripe_port), "--from-scratch",
                               "--latency-ms", str(self.latency_ms)])
        if self.own_smtp:
            self._spawn("smtp", [py, "-m", "aiosmtpd", "-n", "-l",
                                 f"127.0.0.1:{self.smtp_port}", "-c", "aiosmtpd.handlers.Sink"])
        ensure_database(self.database_url)
        if fresh:
            self.reset_database()
        say("migrating the database…")
        subprocess.run([py, "-m", "flask", "db", "upgrade"], cwd=ROOT, check=True,
                       env={**self.env(), "DATABASE_URL": self.database_url},
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_http(f"{self.stripe_url}/js.stripe.com/v3/", "fake Stripe")
        requests.post(f"{self.stripe_url}/_config/webhooks/fleet", timeout=5, data={
            "url": f"{self.url}/webhooks/stripe", "secret": WEBHOOK_SECRET}).raise_for_status()
        self._spawn("web", [py, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"])
        # The queue workers after gunicorn is up: it wipes the metrics directory they share.
        self._wait_http(f"{self.url}/healthz", "gunicorn")
        for n in range(self.queue_workers):
            self.start_queue_worker(n)
        return self

    def start_queue_worker(self, n: int) -> subprocess.Popen:
        return self._spawn(f"worker{n}", [sys.executable, "-m", "flask", "worker"])

    def reset_database(self) -> None:
        """An empty schema: the fake Stripe starts from scratch, so old cus_ ids would dangle."""
        engine = create_engine(self.database_url)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        if self.redis_url:
            redis.Redis.from_url(self.redis_url).flushdb()

    def _wait_http(self, url: str, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not answer at {url} within {seconds:.0f} s "
                           f"(logs: {self.logs})")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def flask(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """Run `flask …` against the fleet's database and Stripe (seeding, reports)."""
        return subprocess.run([sys.executable, "-m", "flask", *args], cwd=ROOT, env={
            **self.env(), "DATABASE_URL": self.database_url}, check=check,
            capture_output=True, text=True, **kwargs)

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--queue-workers", type=int, default=2)
    parser.add_argument("--latency-ms", type=int, default=150)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database-url", default=os.environ.get("FLEET_DATABASE_URL",
                                                                  DEFAULT_DATABASE))
    parser.add_argument("--redis-url", default=os.environ.get("FLEET_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args()
    fleet = Fleet(web_workers=args.web_workers, threads=args.threads,
                  queue_workers=args.queue_workers, latency_ms=args.latency_ms, port=args.port,
                  database_url=args.database_url, redis_url=args.redis_url or None)
    try:
        fleet.start(say=print)
        print(f"""== cardbridge fleet ==
app (gunicorn, {fleet.web_workers} workers × {fleet.threads} threads): {fleet.url}
  health {fleet.url}/healthz · ready {fleet.url}/readyz · metrics {fleet.url}/metrics
  console {fleet.url}/support/
queue workers: {fleet.queue_workers} × `flask worker`
database: {fleet.database_url}
redis: {fleet.redis_url or "(none: the database carries the queue and the limits)"}
fake Stripe: {fleet.stripe_url} (+{fleet.latency_ms} ms an answer; webhooks → the app)
SMTP sink: 127.0.0.1:{fleet.smtp_port}
logs: {fleet.logs}/ (one JSON object a line)
Seed customers: FLASK_APP=app:create_app DATABASE_URL={fleet.database_url} flask demo --links 5
Ctrl-C stops them all.""")
        while all(p.poll() is None for p in fleet.procs.values()):
            time.sleep(0.5)
        dead = [name for name, p in fleet.procs.items() if p.poll() is not None]
        print(f"stopped: {', '.join(dead)} exited (see {fleet.logs}/)", file=sys.stderr)
    except KeyboardInterrupt:
        print()
    finally:
        fleet.stop()
        print("fleet stopped")


if __name__ == "__main__":
    main()
