"""Work that must wait for the transaction: a caller adds items to the session under a key
(`defer`), and once the session's outermost transaction commits each key's handler gets them;
a rollback drops them. One pair of SQLAlchemy session listeners serves every key (the emails'
queue tasks, the metrics' counts)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

_handlers: dict[str, Callable[[list], None]] = {}
_lock = threading.Lock()
_installed = False


def defer(session: Session, key: str, item) -> None:
    """Hold `item` for `key`'s handler until `session` commits."""
    session.info.setdefault(key, []).append(item)


def on_commit(key: str, handler: Callable[[list], None]) -> None:
    """`handler(items)` runs after each commit that deferred items under `key`."""
    global _installed
    with _lock:
        _handlers[key] = handler
        if not _installed:
            event.listen(Session, "after_commit", _after_commit)
            event.listen(Session, "after_rollback", _after_rollback)
            _installed = True


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: nothing is committed yet
    for key, handler in list(_handlers.items()):
        items = session.info.pop(key, None)
        if items:
            handler(items)


def _after_rollback(session: Session) -> None:
    # Items of a transaction that never committed must not act. (A savepoint rolled back: its
    # callers never deferred anything; see queue_email.)
    if not session.in_nested_transaction():
        for key in _handlers:
            session.info.pop(key, None)
