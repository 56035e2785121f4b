"""Emails waiting for their transaction to commit before the queue hears of them.

Services that queue outbox rows call `deliver_after_commit` inside the caller's transaction;
the hook that create_app installs (delivery/tasks.install_commit_hook) hands the ids to the
queue once that transaction commits, so a worker never looks for a row that is not there yet,
and a rolled-back request queues nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.orm import Session

from cardbridge import after_commit

PENDING_KEY = "cardbridge.deliver_after_commit"
# Email ids per delivery task: one SMTP connection and one claim (MAIL_BATCH_SIZE) per chunk.
# 200, not 50: a quarter of the connections, claims and batch queries for the same mail, which
# bench/email.py measured as 0.75 → 0.83 of raw smtplib.
TASK_CHUNK = 200
URGENT = 10  # queue priority of tasks someone is waiting for (campaign tasks have none)


def deliver_after_commit(session: Session, email_ids: Iterable[int],
                         eta: datetime | None = None, *, urgent: bool = False) -> None:
    """Ask a worker for these emails once `session` commits (now, or at `eta`); `urgent`
    tasks (someone is waiting for the email) go ahead of campaign tasks in the queue."""
    after_commit.defer(session, PENDING_KEY, (list(email_ids), eta, urgent))
