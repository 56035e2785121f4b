"""The ids that tie log lines together outside a request: the queue task being run.

A request's id lives on Flask's `g` (cardbridge/web/logs.py); a task's id is set here by the
queue (extensions.AppHuey.execute) for as long as the task runs, in that thread only, and the
JSON log formatter writes it on every line the task causes, Huey's own included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_task_id: ContextVar[str | None] = ContextVar("cardbridge_task_id", default=None)


def current_task_id() -> str | None:
    return _task_id.get()


@contextmanager
def running_task(task_id: str | None) -> Iterator[None]:
    token = _task_id.set(task_id)
    try:
        yield
    finally:
        _task_id.reset(token)
