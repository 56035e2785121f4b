"""The task queue: one Huey whose storage create_app picks, and the ways to run its worker.

`huey` exists at import time so `delivery/tasks.py` can decorate functions; `init_app` gives it a
storage: SqliteHuey's storage in `instance/huey.db` when REDIS_URL is unset (one machine, no
extra server), RedisHuey's when it is set (many web and worker processes). Tasks run inside the
app context of the app that configured the queue.

Emails are queued by the web process inside its database transaction; the queue hears about
them only after that transaction commits (`deliver_after_commit`), so a worker never looks for
a row that is not there yet, and a rolled-back request queues nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable
from datetime import datetime

from flask import Flask, current_app, has_app_context
from huey import Huey, PriorityRedisHuey, SqliteHuey
from huey.storage import BlackHoleStorage, MemoryStorage, RedisStorage
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

PENDING_KEY = "cardbridge.deliver_after_commit"
# Email ids per delivery task: one SMTP connection and one claim (MAIL_BATCH_SIZE) per chunk.
# 200, not 50: a quarter of the connections, claims and batch queries for the same mail, which
# bench/email.py measured as 0.75 → 0.83 of raw smtplib (README, Throughput).
TASK_CHUNK = 200
URGENT = 10  # queue priority of tasks someone is waiting for (campaign tasks have none)


class _NotConfigured(BlackHoleStorage):
    def enqueue(self, data, priority=None):
        raise RuntimeError("the task queue is not configured: create_app() first")


class AppHuey(Huey):
    """Huey that exists before the app does; `init_app` chooses SQLite or Redis storage."""

    def __init__(self, name: str = "cardbridge"):
        super().__init__(name, results=False, utc=True, storage_class=_NotConfigured)
        self.app: Flask | None = None

    def init_app(self, app: Flask) -> None:
        self.name = app.config.get("QUEUE_NAME", "cardbridge")
        redis_url = app.config.get("REDIS_URL")
        immediate = app.config.get("QUEUE_IMMEDIATE")
        if immediate is None:  # tests of other features and `make demo` run no worker
            immediate = bool(app.config.get("TESTING") or app.config.get("DEMO"))
        self._immediate = bool(immediate)
        if self._immediate:
            # Huey's own immediate mode: a task runs in the process that queues it, at once
            # (for email: right after the request's commit). Same code path, no worker.
            self.storage = MemoryStorage(self.name)
        elif redis_url:
            # RedisHuey's priority flavour: a waiting customer's email jumps a wave's backlog.
            self.storage = PriorityRedisHuey.storage_class(self.name, url=redis_url)
        else:
            os.makedirs(app.instance_path, exist_ok=True)
            path = os.path.join(app.instance_path, "huey.db")
            self.storage = SqliteHuey.storage_class(self.name, filename=path)
        self.app = app
        app.extensions["huey"] = self

    @property
    def backend(self) -> str:
        if self._immediate:
            return "immediate"
        return "redis" if isinstance(self.storage, RedisStorage) else "sqlite"

    def app_context(self):
        """A fresh app context (own database session) of the app running this task."""
        if has_app_context():  # immediate mode, or a burst run from inside an app
            return current_app._get_current_object().app_context()
        if self.app is None:
            raise RuntimeError("the task queue is not configured: create_app() first")
        return self.app.app_context()


def init_app(app: Flask) -> None:
    """Bind the queue, Flask-Mail and Flask-Babel to `app` (called from register_extensions)."""
    from cardbridge.extensions import babel, huey, mail

    huey.init_app(app)
    # Flask-Mail stays silent when TESTING unless told otherwise; our tests talk to a real
    # SMTP server, and MAIL_SERVER unset already means "write .eml files instead".
    app.config.setdefault("MAIL_SUPPRESS_SEND", False)
    mail.init_app(app)
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    babel.init_app(app)
    # One paragraph per {% trans %} block, written across lines, read as one sentence.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    _install_commit_hook()
    from cardbridge.delivery import tasks  # noqa: F401  (registers the task functions with huey)


# -- "deliver these ids once this transaction commits" -------------------------------------------
_hook_installed = False
_hook_lock = threading.Lock()


def _install_commit_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
        _hook_installed = True


def deliver_after_commit(session: Session, email_ids: Iterable[int],
                         eta: datetime | None = None, *, urgent: bool = False) -> None:
    """Ask a worker for these emails once `session` commits (now, or at `eta`); `urgent`
    tasks (someone is waiting for the email) go ahead of campaign tasks in the queue."""
    session.info.setdefault(PENDING_KEY, []).append((list(email_ids), eta, urgent))


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: the rows are not committed yet
    pending = session.info.pop(PENDING_KEY, None)
    if pending:
        grouped: dict[tuple, list[int]] = {}
        for ids, eta, urgent in pending:  # one task per chunk, however many calls queued them
            grouped.setdefault((eta, urgent), []).extend(ids)
        enqueue_delivery([(ids, eta, urgent) for (eta, urgent), ids in grouped.items()])


def _after_rollback(session: Session) -> None:
    # Ids of rows that were never committed must not reach the queue. (A savepoint rolled
    # back: its rows never asked to be delivered; see queue_email.)
    if not session.in_nested_transaction():
        session.info.pop(PENDING_KEY, None)


def enqueue_delivery(batches: Iterable[tuple[list[int], datetime | None, bool]]) -> int:
    """Put delivery tasks on the queue; a failure here only delays mail (the pump finds it)."""
    from cardbridge.delivery.tasks import deliver_emails

    count = 0
    try:
        for ids, eta, urgent in batches:
            for start in range(0, len(ids), TASK_CHUNK):
                chunk = ids[start:start + TASK_CHUNK]
                task = deliver_emails.s(chunk, eta=eta, priority=URGENT if urgent else None)
                deliver_emails.huey.enqueue(task)
                count += 1
    except Exception:  # a queue outage must not fail the request that already committed
        log.exception("could not enqueue email delivery; the minute pump will pick it up")
    return count


# -- running the worker --------------------------------------------------------------------------
def run_burst(huey: AppHuey, *, workers: int = 1, processes: int = 1) -> int:
    """Run every task that is due and the periodic jobs once (with what they queue), then
    return how many tasks ran.

    For cron-style hosts and tests: nothing waits for a future task, and a retry scheduled for
    later stays on the schedule for the next run. `processes` > 1 drains in that many forked
    processes of `workers` threads each (`_drain_forked`).
    """
    from cardbridge.delivery import tasks

    # A burst never waits for work: Redis storage would otherwise block on an empty queue.
    huey.storage.blocking = False
    ran, caught_up = 0, False
    while True:
        for task in huey.read_schedule():
            huey.enqueue(task)
        # Forked children would each drain their own copy of an in-memory queue.
        forked = processes > 1 and huey.backend != "immediate"
        done = _drain_forked(huey, workers, processes) if forked else _drain(huey, workers)
        ran += done
        if not caught_up:
            # The periodic jobs after the queue's own tasks, not before: the pump would
            # otherwise queue a second task for every row a queued task already covers.
            tasks.catch_up()
            caught_up = True
        elif done == 0:
            return ran


def _drain(huey: AppHuey, workers: int) -> int:
    counts = [0] * max(1, workers)

    def loop(slot: int) -> None:
        while True:
            task = huey.dequeue()
            if task is None:
                return
            huey.execute(task)
            counts[slot] += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(counts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def _drain_forked(huey: AppHuey, threads: int, processes: int) -> int:
    """Drain the queue in `processes` forked children of `threads` threads each.

    Composing and recording an email is Python work, and one process's threads share one
    core (the GIL); a process per core is how a worker machine spends them all. Each claim is
    a committed UPDATE, so the children never hold the same email (README: at most once).
    The parent's queue and database connections are closed before the fork: every child
    opens its own, as SQLite and psycopg require."""
    ctx = multiprocessing.get_context("fork")
    counts = ctx.Array("i", processes)
    _reset_connections(huey)

    def child(slot: int) -> None:
        try:
            counts[slot] = _drain(huey, threads)
        finally:
            _reset_connections(huey)

    children = [ctx.Process(target=child, args=(i,), daemon=True) for i in range(processes)]
    for proc in children:
        proc.start()
    for proc in children:
        proc.join()
    failed = [proc.exitcode for proc in children if proc.exitcode]
    if failed:
        raise RuntimeError(f"{len(failed)} worker process(es) failed (exit codes {failed})")
    return sum(counts)


def _reset_connections(huey: AppHuey) -> None:
    """Close this process's queue and database connections; they reopen on next use."""
    from cardbridge.extensions import db

    huey.storage.close()
    for engine in db.engines.values():
        engine.dispose()


def run_consumer(huey: AppHuey, *, workers: int = 2, processes: int = 1) -> None:
    """The long-running worker: Huey's consumer with its scheduler (periodic tasks) on.

    `processes` > 1 forks that many consumers of `workers` threads each (see _drain_forked
    for why); only the first runs the periodic jobs. When this one stops (Ctrl-C, which
    reaches them all, or SIGTERM, Huey's immediate stop), the others are sent SIGINT, Huey's
    graceful stop: each finishes its current task, and this one waits for them."""
    from cardbridge.delivery import tasks  # noqa: F401

    children: list[int] = []
    if processes > 1:
        _reset_connections(huey)
        for _ in range(processes - 1):
            pid = os.fork()
            if pid == 0:  # the child: a consumer without the scheduler, then exit
                code = 0
                try:
                    _consume(huey, workers, periodic=False)
                except BaseException:
                    log.exception("worker process failed")
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
    try:
        _consume(huey, workers, periodic=True)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)


def _consume(huey: AppHuey, workers: int, *, periodic: bool) -> None:
    consumer = huey.create_consumer(
        workers=workers, worker_type="thread", periodic=periodic,
        # SQLite storage is polled: keep the idle wait short so a waiting customer's
        # fresh-link email leaves within a couple of seconds. Redis blocks instead.
        initial_delay=0.1, backoff=1.15, max_delay=2.0,
    )
    consumer.run()
