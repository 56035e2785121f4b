"""The task queue bound to an app, and the ways to run its worker (burst or consumer).

`huey` (cardbridge.extensions) exists at import time so delivery/tasks.py can decorate
functions; `init_app` gives it a storage (SQLite in instance/, or Redis) and installs the
after-commit hook that hands committed emails to the queue (delivery/tasks.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

from flask import Flask

from cardbridge.delivery import tasks
from cardbridge.extensions import AppHuey, babel, db, huey, mail

log = logging.getLogger(__name__)

def init_app(app: Flask) -> None:
    """Bind the queue, Flask-Mail and Flask-Babel to `app` (called from register_extensions)."""

    huey.init_app(app)
    # Flask-Mail stays silent when TESTING unless told otherwise; our tests talk to a real
    # SMTP server, and MAIL_SERVER unset already means "write .eml files instead".
    app.config.setdefault("MAIL_SUPPRESS_SEND", False)
    mail.init_app(app)
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "en")
    babel.init_app(app)
    # One paragraph per {% trans %} block, written across lines, read as one sentence.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    tasks.install_commit_hook()


# -- running the worker --------------------------------------------------------------------------
def run_burst(huey: AppHuey, *, workers: int = 1, processes: int = 1) -> int:
    """Run every task that is due and the periodic jobs once (with what they queue), then
    return how many tasks ran.

    For cron-style hosts and tests: nothing waits for a future task, and a retry scheduled for
    later stays on the schedule for the next run. `processes` > 1 drains in that many forked
    processes of `workers` threads each (`_drain_forked`).
    """
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
    a committed UPDATE, so the children never hold the same email (docs/delivery.md).
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
    huey.storage.close()
    for engine in db.engines.values():
        engine.dispose()


def run_consumer(huey: AppHuey, *, workers: int = 2, processes: int = 1) -> None:
    """The long-running worker: Huey's consumer with its scheduler (periodic tasks) on.

    `processes` > 1 forks that many consumers of `workers` threads each (see _drain_forked
    for why); only the first runs the periodic jobs. When this one stops (Ctrl-C, which
    reaches them all, or SIGTERM, Huey's immediate stop), the others are sent SIGINT, Huey's
    graceful stop: each finishes its current task, and this one waits for them."""
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
