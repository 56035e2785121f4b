"""The queue and `flask worker`: outages, a worker killed mid-batch, two workers, dead claims."""

from __future__ import annotations

import os
import signal
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
    """The worker overlaps its commit with the server's reply to the next MAIL command; the
    commit must still land before the next message's body (the at-most-once bound)."""
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


def test_a_claim_lost_while_the_next_mail_command_waits_sends_nothing_more(make_app,
                                                                           make_customer, sink):
    """The commit that runs during the next email's MAIL command finds the claim taken over:
    that email's body never goes (RSET), and the worker stops."""
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
    assert len(sink.received) == 1  # the second email got as far as MAIL FROM, then RSET
    assert [e.status for e in rows(app)] == ["failed", "sending", "sending"]


def test_a_commit_failing_during_the_next_mail_command_is_not_a_lost_connection(
        make_app, make_customer, sink, monkeypatch):
    """A database error in the overlapped commit (even an OSError such as a timeout) ends the
    delivery with nothing more sent and the claim as last committed, for the reaper."""
    app = make_app(**mail_config(sink, MAIL_BATCH_SIZE=10))
    ids = queue_link_emails(app, [make_customer() for _ in range(3)])

    def timing_out(*args, **kwargs):
        raise TimeoutError("database timed out")

    monkeypatch.setattr(outbox, "_advance", timing_out)
    with app.app_context(), pytest.raises(TimeoutError):
        outbox.deliver(ids, commit=db.session.commit)
    assert len(sink.received) == 1  # the second email got MAIL FROM, then RSET
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
    real, calls = mailer.to_bytes, []

    def failing_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("cannot encode")
        return real(*args, **kwargs)

    monkeypatch.setattr(mailer, "to_bytes", failing_second)
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
        claim.worker = f"{outbox.socket.gethostname()}:{gone.pid}"  # heartbeat still fresh
        db.session.commit()
        assert outbox.reap_dead_claims() == ids[1:]


def test_worker_burst_command_drains_and_reports(make_app, make_customer, sink):
    app = make_app(**mail_config(sink))
    queue_link_emails(app, [make_customer() for _ in range(3)])
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert "0 queued, 0 sending, 3 sent, 0 failed" in result.output
    assert len(sink.received) == 3


# -- commits flushed to disk once per MAIL_DURABLE_EVERY emails (SQLite) -------------------------
def _watch_commits(app) -> list[int]:
    """The `synchronous` level each commit of the worker runs at, in order (SQLite)."""
    from sqlalchemy import event

    levels: list[int] = []

    def on_commit(conn):
        levels.append(int(conn.exec_driver_sql("PRAGMA synchronous").scalar()))

    with app.app_context():
        event.listen(db.engine, "commit", on_commit)
    return levels


@pytest.mark.skipif(os.environ.get("TEST_DATABASE_URL") is not None, reason="SQLite only")
@pytest.mark.skipif(outbox.boot_id() is None, reason="needs /proc/sys/kernel/random/boot_id")
def test_on_sqlite_one_commit_in_mail_durable_every_is_flushed_to_disk(make_app, make_customer,
                                                                      sink):
    app = make_app(**mail_config(sink, MAIL_DURABLE_EVERY=3))
    customers = [make_customer() for _ in range(7)]
    queue_link_emails(app, customers)
    with app.app_context():
        full = int(db.session.connection().exec_driver_sql("PRAGMA synchronous").scalar())
        db.session.rollback()
    assert full >= 2  # FULL (or EXTRA) everywhere else
    levels = _watch_commits(app)
    drain(app)
    assert len(sink.received) == 7 and {e.status for e in rows(app)} == {"sent"}
    relaxed = [level for level in levels if level < full]
    # One claim of seven: its commit covers emails 1–3, the commits after emails 3 and 6 are
    # flushed and move the bound on; the other five outcomes are not flushed.
    assert len(relaxed) == 5 and set(relaxed) == {1}  # NORMAL
    with app.app_context():  # the pool hands out connections at the configured level again
        assert int(db.session.connection().exec_driver_sql("PRAGMA synchronous").scalar()) \
            == full
        db.session.rollback()


def test_a_delivery_keeps_one_connection_for_all_its_commits(make_app, make_customer, sink):
    """Each per-email commit starts the next transaction on the same pooled connection: the
    pool is visited a fixed number of times per delivery, not once per email."""
    from sqlalchemy import event

    app = make_app(**mail_config(sink, MAIL_DURABLE_EVERY=3))
    ids = queue_link_emails(app, [make_customer() for _ in range(8)])
    checkouts: list[int] = []
    with app.app_context():
        event.listen(db.engine, "checkout", lambda *args: checkouts.append(1))
        report = outbox.deliver(ids, commit=db.session.commit)  # returns: nothing raised
        assert report.sent == 8 and report.sent_ids == ids and not report.stopped
        db.session.rollback()
    assert len(sink.received) == 8 and {e.status for e in rows(app)} == {"sent"}
    assert len(checkouts) <= 4  # reaper, the held connection, the tail queries; not 8+
    with app.app_context():  # and nothing was left relaxed or half-open on it
        level = int(db.session.connection().exec_driver_sql("PRAGMA synchronous").scalar()) \
            if db.engine.dialect.name == "sqlite" else 2
        assert level >= 2
        assert db.session.execute(select(EmailClaim)).first() is None
        db.session.rollback()


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


def _dead_claim_after_three_of_six(app, ids, boot: str | None) -> str:
    """The state a worker left after sending emails 1–3 of a claim of six, emails 1–2 recorded
    sent by commits that were not flushed, the bound flushed when claimed: 1–4."""
    with app.app_context():
        held = outbox.claim(ids, throttled=False)
        db.session.commit()
        claim = db.session.execute(
            select(EmailClaim).where(EmailClaim.token == held.token)).scalar_one()
        assert claim.boot_id == outbox.boot_id()
        # SQLite: the claim's flushed commit covers its first MAIL_DURABLE_EVERY emails;
        # PostgreSQL flushes every commit, so both bounds are the first email's.
        sqlite = db.engine.dialect.name == "sqlite" and outbox.boot_id() is not None
        assert claim.durable_through == (ids[-1] if sqlite else ids[0])
        assert claim.in_flight_through == ids[0]
        gone = subprocess.Popen(["true"])
        gone.wait()
        claim.worker = f"{outbox.socket.gethostname()}:{gone.pid}"
        claim.boot_id, claim.in_flight_through, claim.durable_through = boot, ids[2], ids[3]
        db.session.execute(update(Email).where(Email.id.in_([e.id for e in held.emails[:2]]))
                           .values(status="sent", claim_token=None))
        db.session.commit()
        return held.token


def test_after_a_worker_crash_only_the_email_on_the_wire_is_given_up(make_app, make_customer):
    app = make_app(**mail_config())
    ids = queue_link_emails(app, [make_customer() for _ in range(6)])
    _dead_claim_after_three_of_six(app, ids, outbox.boot_id())
    with app.app_context():
        if outbox.boot_id() is None:
            pytest.skip("needs /proc/sys/kernel/random/boot_id")
        assert outbox.reap_dead_claims() == ids[3:]
        db.session.commit()
    assert [e.status for e in rows(app)] == ["sent", "sent", "failed", "queued", "queued",
                                             "queued"]


@pytest.mark.parametrize("boot", ["another-boot", None])
def test_after_the_machine_restarted_the_whole_flushed_window_is_given_up(make_app,
                                                                         make_customer, boot):
    """Commits since the last flushed one may be lost with the machine: email 4 may have gone
    after a commit that no longer exists, so it is given up too; 5 and 6 had not."""
    app = make_app(**mail_config())
    ids = queue_link_emails(app, [make_customer() for _ in range(6)])
    _dead_claim_after_three_of_six(app, ids, boot)
    with app.app_context():
        assert outbox.reap_dead_claims() == ids[4:]
        db.session.commit()
    assert [e.status for e in rows(app)] == ["sent", "sent", "failed", "failed", "queued",
                                             "queued"]


# -- the worker's statements, run on the driver ---------------------------------------------------
def test_driver_level_statements_write_what_sqlalchemy_would(make_app, make_customer):
    from cardbridge.models import CustomerEvent

    app = make_app(**mail_config())
    customer = make_customer()
    at = utcnow().replace(microsecond=123456)
    with app.app_context():
        assert outbox._EMAILED.run({"v_customer": customer.id, "v_link": None, "v_at": at,
                                    "v_details": {"email": 7, "wave": None}}) == 1
        assert outbox._INVITED.run([{"c_id": customer.id, "c_now": at}]) == 1
        assert outbox._INVITED.run([{"c_id": customer.id, "c_now": at}]) == 0  # not twice
        db.session.commit()
        event = db.session.execute(select(CustomerEvent)
                                   .where(CustomerEvent.kind == "emailed")).scalar_one()
        assert (event.customer_id, event.at, event.details) == (customer.id, at,
                                                                {"email": 7, "wave": None})
        fresh = db.session.get(Customer, customer.id)
        assert (fresh.status, fresh.updated_at) == ("invited", at)


def test_a_driver_level_statement_must_be_given_every_computed_value(make_app):
    """A column SQLAlchemy fills in from Python (`onupdate=utcnow`) would silently be NULL."""
    app = make_app()
    from cardbridge.bulk import DriverStatement

    statement = DriverStatement(update(Customer.__table__).values(status="invited"), set())
    with app.app_context(), pytest.raises(RuntimeError, match="updated_at"):
        statement.run({})


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
