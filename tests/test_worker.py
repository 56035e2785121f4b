"""The queue and `flask worker`: outages, a worker killed mid-batch, two workers, dead claims."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from smtp_sink import SmtpSink, drain, free_port, mail_config, queue_link_emails, worker_command
from sqlalchemy import select, update

from cardbridge.delivery import outbox
from cardbridge.extensions import db, huey
from cardbridge.models import Customer, Email, EmailClaim
from cardbridge.models.types import utcnow

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


@pytest.fixture
def sink():
    with SmtpSink() as running:
        yield running


def rows(app) -> list[Email]:
    with app.app_context():
        found = db.session.execute(select(Email).order_by(Email.id)).scalars().all()
        db.session.expunge_all()
        return found


def test_emails_wait_in_sqlite_huey_under_instance_until_a_worker_runs(make_app,
                                                                       make_customer, sink):
    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer()])
    assert huey.backend == "sqlite"
    assert (Path(app.instance_path) / "huey.db").exists()
    assert huey.pending_count() == 1 and sink.received == []
    assert drain(app) >= 1
    assert len(sink.received) == 1 and rows(app)[0].status == "sent"


def test_an_email_someone_waits_for_jumps_ahead_of_a_wave(make_app, make_customer):
    app = make_app(**mail_config())
    for _ in range(3):
        make_customer()
    waiting = make_customer(status="invited")
    assert app.test_cli_runner().invoke(args=["campaign", "send"]).exit_code == 0
    (fresh,) = queue_link_emails(app, [waiting], kind="fresh_link")
    assert [task.args[0] for task in huey.pending()][0] == [fresh]


def test_a_rolled_back_request_queues_nothing(make_app, make_customer):
    app = make_app(**mail_config())
    customer = make_customer()
    with app.app_context():
        from cardbridge.email.emails import send_link_email
        from cardbridge.links.service import issue_link

        fresh = db.session.get(Customer, customer.id)
        send_link_email(fresh, issue_link(fresh, created_by="test").link)
        db.session.rollback()
    assert huey.pending_count() == 0 and rows(app) == []


def test_server_down_keeps_emails_queued_then_sends_each_exactly_once(make_app, make_customer):
    port = free_port()  # nothing listens yet: the mail server is down
    app = make_app(**mail_config(port=port, MAIL_RETRY_BASE_SECONDS=1.5))
    customers = [make_customer() for _ in range(4)]
    queue_link_emails(app, customers)
    drain(app)
    down = rows(app)
    assert [e.status for e in down] == ["queued"] * 4
    assert all(e.attempts == 1 and e.sent_at is None for e in down)
    assert all("cannot reach the SMTP server" in e.last_error for e in down)
    assert all(e.next_attempt_at > e.updated_at for e in down)  # backoff, not a busy loop

    with SmtpSink(port) as sink:
        drain(app)  # back up, but the retry is not due yet
        assert sink.received == []
        time.sleep(max(e.next_attempt_at for e in down).timestamp() - time.time() + 0.05)
        drain(app)
        drain(app)  # running again sends nothing more
        assert sorted(sink.recipients()) == sorted(c.email for c in customers)
    up = rows(app)
    assert [e.status for e in up] == ["sent"] * 4
    assert all(e.attempts == 2 and e.last_error is None for e in up)


@pytest.mark.parametrize("group,given_up", [(1, [3]), (2, [3, 4])])
def test_worker_killed_mid_batch_rerun_sends_the_rest_without_duplicates(
        make_app, make_customer, sink, group, given_up):
    """MAIL_COMMIT_EVERY=1 gives up only the email on the wire; 2 gives up its whole group."""
    app = make_app(**mail_config(sink, MAIL_COMMIT_EVERY=group))
    customers = [make_customer() for _ in range(6)]
    queue_link_emails(app, customers)
    sink.hold_at = 3  # the third message arrives, then the worker waits for "250" forever
    log = Path(app.instance_path) / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(worker_command(app, "--burst", "--workers", "1"), cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            assert sink.holding.wait(30), log.read_text()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    sink.release.set()
    assert [e.status for e in rows(app)] == ["sent", "sent"] + ["sending"] * 4

    drain(app)  # the rerun: finds the dead worker's claim, sends the rest
    counts = Counter(sink.recipients())
    assert set(counts.values()) == {1}  # nobody twice
    after = rows(app)
    assert [i + 1 for i, e in enumerate(after) if e.status == "failed"] == given_up
    assert all("may have been delivered" in after[i - 1].last_error for i in given_up)
    assert {e.status for i, e in enumerate(after, 1) if i not in given_up} == {"sent"}
    assert sorted(counts) == sorted(c.email for i, c in enumerate(customers, 1)
                                    if i not in given_up or i == 3)  # 3 did arrive
    with app.app_context():
        assert db.session.execute(select(EmailClaim)).scalars().all() == []


@pytest.mark.redis
def test_two_worker_processes_on_redis_send_each_email_once(make_app, make_customer, sink):
    app = make_app(**mail_config(sink, REDIS_URL=TEST_REDIS_URL, MAIL_BATCH_SIZE=4))
    assert huey.backend == "redis"
    customers = [make_customer() for _ in range(40)]
    try:
        queue_link_emails(app, customers)
        # Each worker's catch-up also queues every due row, so both chase the same rows.
        procs = [subprocess.Popen(worker_command(app, "--burst", "--workers", "2"), cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(2)]
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
    finally:
        huey.flush()
    counts = Counter(sink.recipients())
    assert len(counts) == 40 and set(counts.values()) == {1}
    assert {e.status for e in rows(app)} == {"sent"}


def test_many_threads_racing_on_one_batch_send_each_email_once(make_app, make_customer, sink):
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=3))
    customers = [make_customer() for _ in range(24)]
    ids = queue_link_emails(app, customers)
    from cardbridge.delivery.tasks import enqueue_delivery

    with app.app_context():
        enqueue_delivery([(ids, None, False)] * 4)  # four tasks for the same 24 rows
    drain(app, workers=4)
    counts = Counter(sink.recipients())
    assert len(counts) == 24 and set(counts.values()) == {1}


def test_a_burst_in_several_processes_sends_each_email_once(make_app, make_customer, sink,
                                                            monkeypatch):
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=4))
    customers = [make_customer() for _ in range(20)]
    for start in range(0, 20, 5):  # four tasks, for the processes to share
        queue_link_emails(app, customers[start:start + 5])
    pids = Path(app.instance_path) / "delivered-by"
    real = outbox.deliver

    def slow_deliver(*args, **kwargs):  # a second each: the other process takes the next task
        with open(pids, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(outbox, "deliver", slow_deliver)
    assert drain(app, processes=2) == 4
    delivered_by = set(pids.read_text().split())
    assert len(delivered_by) == 2 and str(os.getpid()) not in delivered_by
    counts = Counter(sink.recipients())
    assert sorted(counts) == sorted(c.email for c in customers)
    assert set(counts.values()) == {1}
    assert {e.status for e in rows(app)} == {"sent"}


def test_worker_processes_stop_together(make_app, make_customer, sink):
    """`flask worker --processes 2`: both consumers deliver; SIGTERM to the parent stops the
    child too, each after its current task."""
    app = make_app(**mail_config(sink))
    customers = [make_customer() for _ in range(6)]
    queue_link_emails(app, customers)
    log = Path(app.instance_path) / "worker.log"
    name = app.config["QUEUE_NAME"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(worker_command(app, "--processes", "2", "--workers", "1"),
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            sink.wait_for(6, timeout=30)
            time.sleep(0.3)
            alive = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True)
            assert len(alive.stdout.split()) == 2, log.read_text()  # parent and child
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
    deadline = time.time() + 10
    while subprocess.run(["pgrep", "-f", name], capture_output=True).returncode == 0:
        assert time.time() < deadline, "a worker process outlived its parent"
        time.sleep(0.1)
    assert "2 process(es) of 1 thread(s)" in log.read_text()
    assert Counter(sink.recipients()) == Counter(c.email for c in customers)


def test_each_outcome_is_committed_before_the_next_body_goes(make_app, make_customer, sink):
    """Each email's outcome, and how far the next may go, are committed before the next
    message's body reaches the server (the at-most-once bound)."""
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=10))
    ids = queue_link_emails(app, [make_customer() for _ in range(5)])
    seen: list[tuple] = []
    real = sink.handle_DATA

    async def check(server, session, envelope):
        number = int(envelope.content.split(b"X-Cardbridge-Email: ")[1].split(b"\r\n")[0])
        with app.app_context():
            statuses = dict(db.session.execute(select(Email.id, Email.status)).all())
            bound = db.session.execute(select(EmailClaim.in_flight_through)).scalar()
            db.session.rollback()
        seen.append((number, [statuses[i] for i in ids if i < number], bound))
        return await real(server, session, envelope)

    sink.handle_DATA = check
    drain(app)
    assert [n for n, _, _ in seen] == ids
    for number, before, bound in seen:
        assert set(before) <= {"sent"}, (number, before)  # every earlier one recorded
        assert bound is not None and bound >= number


def test_a_claim_lost_before_the_next_email_sends_nothing_more(make_app, make_customer, sink):
    """The commit after an email finds the claim taken over: the worker stops there."""
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=10))
    ids = queue_link_emails(app, [make_customer() for _ in range(3)])
    real = sink.handle_DATA

    async def take_over(server, session, envelope):
        reply = await real(server, session, envelope)
        with app.app_context():  # a reaper gives the first email up while it is on the wire
            db.session.execute(update(Email).where(Email.id == ids[0])
                               .values(status="failed", claim_token=None))
            db.session.commit()
        return reply

    sink.handle_DATA = take_over
    with app.app_context():
        report = outbox.deliver(ids, commit=db.session.commit)
        db.session.rollback()
    assert report.stopped and report.sent == 1  # the first did go; its row is the reaper's
    assert len(sink.received) == 1  # the second email never started
    assert [e.status for e in rows(app)] == ["failed", "sending", "sending"]


def test_a_database_error_after_an_email_ends_the_delivery_for_the_reaper(
        make_app, make_customer, sink, monkeypatch):
    """A database error while recording an email (even an OSError such as a timeout) ends the
    delivery with nothing more sent and the claim as last committed, for the reaper."""
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=10))
    ids = queue_link_emails(app, [make_customer() for _ in range(3)])

    def timing_out(*args, **kwargs):
        raise TimeoutError("database timed out")

    monkeypatch.setattr(outbox, "_advance", timing_out)
    with app.app_context(), pytest.raises(TimeoutError):
        outbox.deliver(ids, commit=db.session.commit)
    assert len(sink.received) == 1  # nothing after the first
    with app.app_context():
        claim = db.session.execute(select(EmailClaim)).scalar_one()
        assert claim.in_flight_through == ids[0]  # as the claim committed it
        db.session.rollback()
    assert [e.status for e in rows(app)] == ["sending"] * 3
    with app.app_context():
        db.session.execute(update(EmailClaim).values(worker="another-host:1",
                                                      heartbeat_at=utcnow() - timedelta(hours=1)))
        db.session.commit()
        assert outbox.reap_dead_claims() == ids[1:]
        db.session.commit()
    assert [e.status for e in rows(app)] == ["failed", "queued", "queued"]


def test_an_unexpected_error_before_the_next_email_still_records_the_last_one(
        make_app, make_customer, sink, monkeypatch):
    from cardbridge.email import mailer

    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=10))
    ids = queue_link_emails(app, [make_customer() for _ in range(3)])
    real, calls = mailer.SmtpTransport.send, []

    def failing_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("cannot encode")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mailer.SmtpTransport, "send", failing_second)
    with app.app_context(), pytest.raises(ValueError):
        outbox.deliver(ids, commit=db.session.commit)
    assert len(sink.received) == 1
    assert [e.status for e in rows(app)] == ["sent", "sending", "sending"]


def test_dead_claims_are_released_and_only_the_email_on_the_wire_is_given_up(make_app,
                                                                            make_customer):
    app = make_app(**mail_config(MAIL_CLAIM_LEASE_SECONDS=60))
    ids = queue_link_emails(app, [make_customer() for _ in range(5)])
    with app.app_context():
        held = outbox.claim(ids[:3], throttled=False)
        alive = outbox.claim(ids[3:], throttled=False)
        db.session.commit()
        # The first claim's worker ran elsewhere and went quiet past the lease.
        claim = db.session.execute(
            select(EmailClaim).where(EmailClaim.token == held.token)).scalar_one()
        claim.worker = "another-host:4242"
        claim.heartbeat_at = utcnow() - timedelta(seconds=61)
        db.session.commit()
        assert outbox.reap_dead_claims() == ids[1:3]
        db.session.commit()
        statuses = {e.id: e.status for e in db.session.execute(select(Email)).scalars()}
        assert statuses == {ids[0]: "failed", ids[1]: "queued", ids[2]: "queued",
                            ids[3]: "sending", ids[4]: "sending"}  # a live claim is left be
        # The quiet worker wakes up: its outcome for the first email is refused.
        first = db.session.get(Email, ids[0])
        assert not outbox._record(held.token, [(first, outbox.Outcome("sent", "x"))],
                                  outbox.Report())
        db.session.rollback()
        assert alive is not None


def test_claims_of_a_dead_local_process_are_released_at_once(make_app, make_customer):
    app = make_app(**mail_config())
    ids = queue_link_emails(app, [make_customer() for _ in range(2)])
    gone = subprocess.Popen(["true"])
    gone.wait()
    with app.app_context():
        held = outbox.claim(ids, throttled=False)
        claim = db.session.execute(
            select(EmailClaim).where(EmailClaim.token == held.token)).scalar_one()
        claim.worker = f"{socket.gethostname()}:{gone.pid}"  # heartbeat still fresh
        db.session.commit()
        assert outbox.reap_dead_claims() == ids[1:]


def test_worker_burst_command_drains_and_reports(make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer() for _ in range(3)])
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert "0 queued, 0 sending, 3 sent, 0 failed" in result.output
    assert len(sink.received) == 3


def test_a_delivery_stops_claiming_once_its_ids_are_taken(make_app, make_customer, sink,
                                                          monkeypatch):
    """A task's ids all claimed (or a claim that took less than a batch): no empty claims."""
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=4))
    ids = queue_link_emails(app, [make_customer() for _ in range(6)])
    calls: list[bool] = []
    sizes: list[list] = []
    real_claim = outbox.claim

    def counting(*args, **kwargs):
        calls.append(kwargs["throttled"])
        held = real_claim(*args, **kwargs)
        if held is not None:
            sizes.append(held.emails)
        return held

    monkeypatch.setattr(outbox, "claim", counting)
    with app.app_context():
        report = outbox.deliver(ids, commit=db.session.commit)
        assert report.sent == 6 and report.claimed == 6
        assert [len(batch) for batch in sizes] == [4, 2]  # never more than the batch size
        assert calls == [False, False]  # 4, then 2: every id taken, the throttle not asked
        calls.clear()
        assert outbox.deliver(None, commit=db.session.commit).sent == 0
        assert calls == [False, True]  # nothing due of either kind: one look at each
    assert len(sink.received) == 6


def test_after_a_worker_crash_only_the_email_on_the_wire_is_given_up(make_app, make_customer):
    """A worker died after sending emails 1–2 (recorded) while email 3 was on the wire: the
    claim's committed bound is 3, so 3 is given up and 4–6 go back to the queue."""
    app = make_app(**mail_config())
    ids = queue_link_emails(app, [make_customer() for _ in range(6)])
    with app.app_context():
        held = outbox.claim(ids, throttled=False)
        db.session.commit()
        claim = db.session.execute(
            select(EmailClaim).where(EmailClaim.token == held.token)).scalar_one()
        assert claim.in_flight_through == ids[0]  # as claimed: only the first may go
        gone = subprocess.Popen(["true"])
        gone.wait()
        claim.worker = f"{socket.gethostname()}:{gone.pid}"
        claim.in_flight_through = ids[2]
        db.session.execute(update(Email).where(Email.id.in_(ids[:2]))
                           .values(status="sent", claim_token=None))
        db.session.commit()
        assert outbox.reap_dead_claims() == ids[3:]
        db.session.commit()
    assert [e.status for e in rows(app)] == ["sent", "sent", "failed", "queued", "queued",
                                             "queued"]


def test_a_burst_runs_queued_tasks_once_and_then_what_the_pump_finds(make_app, make_customer,
                                                                     sink):
    from cardbridge.extensions import huey

    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer() for _ in range(3)])  # one task
    assert drain(app) == 1  # not a second one from the pump for the same rows
    assert len(sink.received) == 3
    queue_link_emails(app, [make_customer()])
    assert huey.dequeue() is not None  # its task is lost
    assert drain(app) == 1  # the pump's
    assert len(sink.received) == 4


def test_deliveries_reap_dead_claims_at_most_every_few_seconds(make_app, make_customer,
                                                               monkeypatch):
    calls: list[int] = []
    real = outbox.reap_dead_claims
    monkeypatch.setattr(outbox, "reap_dead_claims", lambda: calls.append(1) or real())
    for every, expected in ((5, 1), (0, 3)):
        app = make_app(**mail_config(MAIL_REAP_EVERY_SECONDS=every))
        calls.clear()
        with app.app_context():
            for _ in range(3):
                outbox.deliver([], commit=db.session.commit)
            db.session.rollback()
        assert len(calls) == expected  # the first delivery of a process always reaps


def test_an_in_memory_queue_is_never_drained_in_forks(make_app, monkeypatch):
    """Each fork would drain its own copy of it: every task would run once per process."""
    from cardbridge.delivery import queue
    from cardbridge.extensions import huey

    make_app(QUEUE_IMMEDIATE=True)
    assert huey.backend == "immediate"
    monkeypatch.setattr(queue, "_drain_forked", lambda *a: pytest.fail("forked"))
    assert queue.run_burst(huey, processes=2) == 0
