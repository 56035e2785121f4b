"""A real SMTP server for tests: aiosmtpd on a free port that records every message it accepts.

It can be stopped and started again on the same port (a mail server outage), refuse given
recipients with 550, answer 451 a given number of times, hold the Nth message after receiving
it (so a test can kill the worker while that message is on the wire), or drop the connection
after a message's body arrived.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    rcpt: str
    raw: bytes
    peer: tuple
    at: float
    mail_options: list = field(default_factory=list)  # MAIL FROM parameters (BODY=8BITMIME)

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=default_policy)

    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()


class SmtpSink:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[Received] = []
        self.refuse: set[str] = set()  # RCPT → 550
        self.tempfail: dict[str, int] = {}  # address → how many more 451s on DATA
        self.hold_at: int | None = None  # hold the Nth message (1-based) after receiving it
        self.holding = threading.Event()
        self.release = threading.Event()
        self.drop_after_data: set[str] = set()  # receive the body, then hang up
        self.offer_8bitmime = True  # False: a server that only takes 7-bit bodies
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    # aiosmtpd handler hooks
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not self.offer_8bitmime:
            responses = [r for r in responses if r[4:].upper() != "8BITMIME"]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        rcpt = envelope.rcpt_tos[0]
        with self._lock:
            if self.tempfail.get(rcpt, 0) > 0:
                self.tempfail[rcpt] -= 1
                return "451 4.3.0 try again later"
            self.received.append(Received(rcpt, envelope.content, session.peer, time.time(),
                                          list(envelope.mail_options)))
            number = len(self.received)
        if rcpt in self.drop_after_data:
            server.transport.close()
            return "250 OK"
        if self.hold_at == number:
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        return f"250 2.0.0 Ok: queued as CB{number:06d}"

    def start(self) -> SmtpSink:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self.release.set()
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def recipients(self) -> list[str]:
        with self._lock:
            return [r.rcpt for r in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while len(self.received) < count:
            if time.time() > deadline:
                raise AssertionError(f"sink got {len(self.received)} of {count} messages")
            time.sleep(0.01)


# -- helpers the email tests share ---------------------------------------------------------------
def mail_config(sink: SmtpSink | None = None, *, port: int | None = None, **extra) -> dict:
    """make_app(**mail_config(sink)) → an app with a real queue and SMTP to the sink (or the
    .eml outbox when neither sink nor port is given)."""
    import uuid

    config = {"QUEUE_IMMEDIATE": False, "QUEUE_NAME": f"test{uuid.uuid4().hex[:10]}",
              "MAIL_TIMEOUT_SECONDS": 10}
    if sink is not None or port is not None:
        config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=port or sink.port)
    config.update(extra)
    return config


def drain(app, workers: int = 1, processes: int = 1) -> int:
    """`flask worker --burst` in this process (and `processes` forks of it): periodic jobs
    once, then every due task."""
    from cardbridge.delivery.queue import run_burst
    from cardbridge.extensions import huey

    with app.app_context():
        return run_burst(huey, workers=workers, processes=processes)


def queue_link_emails(app, customers, kind: str = "link") -> list[int]:
    """A live link and a queued link email for each customer (as `links create --send` does)."""
    from cardbridge.email.emails import send_link_email
    from cardbridge.extensions import db
    from cardbridge.links.service import issue_link
    from cardbridge.models import Customer

    ids = []
    with app.app_context():
        for made in customers:
            customer = db.session.get(Customer, made.id)
            issued = issue_link(customer, created_by="test", channel="email")
            ids.append(send_link_email(customer, issued.link, kind=kind))
        db.session.commit()
    return ids


WORKER_CONFIG_KEYS = ("TESTING", "SECRET_KEY", "LINK_SECRET_KEYS", "SQLALCHEMY_DATABASE_URI",
                      "PUBLIC_BASE_URL", "QUEUE_IMMEDIATE", "QUEUE_NAME", "REDIS_URL",
                      "RATELIMIT_STORAGE_URI", "CAMPAIGN_RATE_PER_MINUTE", "STRIPE_API_BASE")


def worker_command(app, *args: str) -> list[str]:
    """The real `flask worker …` for another process, on this test app's database and queue."""
    import sys

    config = {k: v for k, v in app.config.items() if v is not None
              and (k in WORKER_CONFIG_KEYS or k.startswith("MAIL_"))
              and isinstance(v, str | int | float | bool | list)}
    config["INSTANCE_PATH"] = app.instance_path
    return [sys.executable, "-m", "flask", "--app", f"app:create_app({config!r})", "worker",
            *args]


# -- the same sink in its own process: timings free of this process's GIL ------------------------
class SinkProcess:
    """`python tests/smtp_sink.py PORT` in a child process; `.received` fills with
    (arrival time, recipient) as the child reports each message it accepted."""

    def __init__(self, port: int | None = None, *, quiet: bool = False):
        self.port = port or free_port()
        self.quiet = quiet  # report only a count (for benchmarks)
        self.received: list[tuple[float, str]] = []
        self.count = 0
        self._proc = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> SinkProcess:
        import subprocess
        import sys

        args = [sys.executable, __file__, str(self.port)] + (["--quiet"] if self.quiet else [])
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                      text=True, bufsize=1)
        if self._proc.stdout.readline().strip() != "READY":
            raise RuntimeError("the SMTP sink process did not start")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            at, _, rcpt = line.strip().partition(" ")
            if rcpt == "*count*":
                self.count = int(at)
                continue
            self.received.append((float(at), rcpt))
            self.count += 1

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while self.count < count:
            if time.time() > deadline:
                raise AssertionError(f"sink got {self.count} of {count} messages")
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._proc.stdin.close()
        self._proc.wait(timeout=10)
        self._proc.stdout.close()
        self._reader.join(timeout=5)


def _serve(port: int, quiet: bool) -> None:
    import sys

    class Report:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Report.count += 1
            if quiet:
                if Report.count % 500 == 0:
                    print(f"{Report.count} *count*", flush=True)
            else:
                print(f"{time.time()} {envelope.rcpt_tos[0]}", flush=True)
            return f"250 2.0.0 Ok: queued as CB{Report.count:06d}"

    controller = Controller(Report(), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    controller.stop()
    print(f"{Report.count} *count*", flush=True)


if __name__ == "__main__":
    import sys

    _serve(int(sys.argv[1]), "--quiet" in sys.argv)
