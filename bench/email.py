"""Throughput of campaign email through the worker against raw smtplib, to one SMTP sink.

    .venv/bin/python bench/email.py [-n 5000] [--processes 2] [--workers 2] [--rounds 3]
                                    [--commit-every 1]
                                    [--database-url URL] [--redis-url URL]

Both sides send to the same aiosmtpd sink, which runs in its own process:

* ours: N customers in a fresh database; a wave queues N link emails (one transaction, tasks
  on the SQLite Huey queue, or RedisHuey with --redis-url); then the worker's burst mode (the
  code `flask worker --burst --processes 2 --workers 2` runs, here in two processes forked
  from this one) claims them in batches, issues and
  signs each link, renders the text and HTML templates in the customer's language (each
  email rendered and CSS-inlined whole), builds an `EmailMessage`, sends over one smtplib
  connection per batch, and commits the outcomes every `--commit-every` emails
  (MAIL_COMMIT_EVERY; the default 1 is the production default).
* raw: smtplib on one connection sending N prebuilt messages: 40 of ours, byte for byte as
  our transport sends them to this sink, in turn.

It prints both rates and ours / raw for each of --rounds rounds (default 3), and the median
ratio. Each round's raw rate is the mean of the raw runs before and after it, so a machine
that slows down during the run does not flatter either side.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on sys.path and "email.py" would shadow
# the standard library's email package (smtplib needs it): take the folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import smtplib  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the sink: `python bench/email.py --sink PORT` -------------------------------------------------
def serve_sink(port: int) -> None:
    from aiosmtpd.controller import Controller

    class Count:
        n = 0

        async def handle_DATA(self, server, session, envelope):
            Count.n += 1
            return f"250 2.0.0 Ok: queued as B{Count.n}"

    controller = Controller(Count(), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)
    sys.stdin.read()
    controller.stop()
    print(Count.n, flush=True)


class Sink:
    def __enter__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--sink", str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "READY":
            raise SystemExit("the SMTP sink did not start")
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.received = int(self.proc.stdout.readline() or 0)
        self.proc.wait(timeout=10)


# -- ours ----------------------------------------------------------------------------------------
def make_app(instance: Path, port: int, database_url: str | None, commit_every: int,
             redis_url: str | None = None):
    from app import create_app

    return create_app({
        "REDIS_URL": redis_url,
        "TESTING": True, "INSTANCE_PATH": str(instance), "SECRET_KEY": "bench-secret",
        "LINK_SECRET_KEYS": ["bench-link-key"], "PUBLIC_BASE_URL": "https://cards.example.com",
        "SQLALCHEMY_DATABASE_URI": database_url or f"sqlite:///{instance / 'bench.db'}",
        "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "QUEUE_IMMEDIATE": False,
        "QUEUE_NAME": f"bench{int(time.time())}", "CAMPAIGN_RATE_PER_MINUTE": 0,
        "MAIL_COMMIT_EVERY": commit_every,
    })


def seed(app, n: int) -> None:
    from sqlalchemy import insert

    from cardbridge.extensions import db
    from cardbridge.models import Customer
    from cardbridge.models.types import utcnow

    now = utcnow()
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.execute(insert(Customer), [
            {"legacy_id": f"B-{i:07d}", "email": f"customer{i}@example.com",
             "name": f"Customer {i}", "locale": "fr" if i % 4 == 0 else "en",
             "status": "needs_update", "card_brand": "visa", "card_last4": f"{i % 10000:04d}",
             "card_exp_month": 1 + i % 12, "card_exp_year": 2025, "created_at": now,
             "updated_at": now} for i in range(n)])
        db.session.commit()


def run_ours(app, n: int, workers: int, processes: int = 1) -> tuple[float, int]:
    from sqlalchemy import func, select

    from cardbridge.campaigns import service as campaigns
    from cardbridge.delivery.queue import run_burst
    from cardbridge.extensions import db, huey
    from cardbridge.models import Email

    started = time.perf_counter()
    with app.app_context():
        campaigns.launch_wave("needs_update", created_by="bench")
        db.session.commit()  # queues the delivery tasks
        run_burst(huey, workers=workers, processes=processes)
    elapsed = time.perf_counter() - started
    with app.app_context():
        sent = db.session.execute(
            select(func.count()).where(Email.status == "sent")).scalar_one()
    return elapsed, sent


def sample_messages(app, count: int = 40) -> list[bytes]:
    """Messages exactly as our pipeline puts them on the wire to this sink (which takes
    8BITMIME), from transient rows: the raw side sends these same bytes."""
    from datetime import timedelta

    from sqlalchemy import select

    from cardbridge.campaigns import service as campaigns
    from cardbridge.email import mailer
    from cardbridge.email.emails import compose
    from cardbridge.extensions import db
    from cardbridge.models import Customer, Email, Link
    from cardbridge.models.types import utcnow

    now, messages = utcnow(), []
    with app.app_context():
        for n, customer in enumerate(db.session.execute(select(Customer).limit(count)).scalars()):
            link = Link(public_id="p" * 22, customer_id=customer.id, created_at=now,
                        expires_at=now + timedelta(days=14))
            email = Email(id=n + 1, customer=customer, link=link, kind="link",
                          to_address=customer.email, created_at=now)
            subject, text, html = compose(email, campaigns.signed_url(link))
            msg = mailer.build(email.to_address, subject, text, html,
                               message_id=mailer.message_id_for(email.id))
            messages.append(msg.as_bytes(policy=mailer.SMTP_POLICY))
        db.session.rollback()
    return messages


# -- raw -----------------------------------------------------------------------------------------
def run_raw(port: int, n: int, samples: list[bytes]) -> float:
    messages = [(f"customer{i}@example.com", samples[i % len(samples)]) for i in range(n)]
    smtp = smtplib.SMTP("127.0.0.1", port)
    started = time.perf_counter()
    for rcpt, message in messages:
        smtp.sendmail("billing@example.com", [rcpt], message,
                      mail_options=() if message.isascii() else ("BODY=8BITMIME",))
    elapsed = time.perf_counter() - started
    smtp.quit()
    return elapsed


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        serve_sink(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="emails (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes, each with --workers threads (default 2: one "
                             "per core of the machine the figures in docs/benchmarks.md come from)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--redis-url", default=None, help="queue on RedisHuey (default: SQLite)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of ours, each between two raw runs (default 3; the "
                             "median ratio is the figure)")
    parser.add_argument("--commit-every", type=int, default=1,
                        help="MAIL_COMMIT_EVERY: emails sent between two commits (default 1)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, Sink() as sink:
        app = make_app(Path(tmp), sink.port, args.database_url, args.commit_every,
                       args.redis_url)
        seed(app, args.n)
        samples = sample_messages(app)
        size = sum(map(len, samples)) // len(samples)
        run_raw(sink.port, max(50, args.n // 50), samples)  # warm the sink's code paths
        # raw, ours, raw, ours, …, raw: each round of ours is compared with the mean of the
        # raw runs either side of it, so a machine that slows down flatters neither side.
        raws = [run_raw(sink.port, args.n, samples)]
        rounds = []
        for number in range(args.rounds):
            if number:
                seed(app, args.n)
            ours, sent = run_ours(app, args.n, args.workers, args.processes)
            if sent != args.n:
                raise SystemExit(f"only {sent} of {args.n} emails were sent")
            raws.append(run_raw(sink.port, args.n, samples))
            raw = (raws[-2] + raws[-1]) / 2
            rounds.append((raw / ours, ours, raw))
        if args.redis_url:
            from cardbridge.extensions import huey

            huey.flush()
    print(f"emails: {args.n}, mean size {size} bytes, worker processes: {args.processes} of "
          f"{args.workers} thread(s), "
          f"commit every {args.commit_every} email(s), "
          f"database: {'SQLite' if not args.database_url else args.database_url.split(':')[0]}, "
          f"queue: {'Redis' if args.redis_url else 'SQLite'}")
    for number, (ratio, ours, raw) in enumerate(rounds, 1):
        print(f"round {number}: ours (queue → claim → link → render → sign → SMTP → commit) "
              f"{args.n / ours:.0f} emails/s; raw smtplib, one connection, prebuilt messages "
              f"{args.n / raw:.0f} emails/s; ratio {ratio:.2f}")
    ratios = sorted(r for r, _, _ in rounds)
    print(f"ratio ours/raw: {ratios[len(ratios) // 2]:.2f} (median of {len(ratios)} rounds; "
          f"range {ratios[0]:.2f}–{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
