"""Probes and metrics for the platform: /healthz (liveness), /readyz (readiness), /metrics.

/healthz touches nothing but this process: a load balancer that restarts processes on a
failing liveness check must not restart a healthy fleet because the database is away.
/readyz asks the database and, when configured, Redis, each with a short timeout, and says
which one does not answer. Both read, never write.
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, abort, current_app, jsonify
from sqlalchemy import and_, case, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from cardbridge import metrics
from cardbridge.extensions import db
from cardbridge.models import Email
from cardbridge.models.types import utcnow
from cardbridge.web.observe import may_scrape

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 1.0


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


def _database_answers() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("readiness: database does not answer (%s)", type(exc).__name__)
        return False


def _redis_answers(url: str) -> bool:
    client = current_app.extensions.get("readyz_redis")
    if client is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                      socket_timeout=REDIS_TIMEOUT_SECONDS)
        current_app.extensions["readyz_redis"] = client
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError) as exc:
        log.warning("readiness: redis does not answer (%s)", type(exc).__name__)
        return False


@bp.get("/readyz")
def readyz():
    checks = {"database": "ok" if _database_answers() else "unreachable"}
    redis_url = current_app.config.get("REDIS_URL")
    if redis_url:
        checks["redis"] = "ok" if _redis_answers(redis_url) else "unreachable"
    ready = all(state == "ok" for state in checks.values())
    return jsonify(status="ok" if ready else "unavailable", **checks), 200 if ready else 503


def _outbox_gauges():
    """The outbox as it is now: two queries over the (status, next_attempt_at) index."""
    now = utcnow()
    queued, sending = Email.status == "queued", Email.status == "sending"
    due = and_(queued, Email.next_attempt_at <= now)
    counts = db.session.execute(
        select(func.sum(case((due, 1), else_=0)),
               func.sum(case((and_(queued, Email.next_attempt_at > now), 1), else_=0)),
               func.sum(case((sending, 1), else_=0)))
        .where(Email.status.in_(("queued", "sending")))
    ).one()
    oldest = db.session.execute(select(func.min(Email.next_attempt_at)).where(due)).scalar()
    lag = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    depth = {(state,): int(n or 0) for state, n in zip(("due", "waiting", "sending"), counts,
                                                       strict=True)}
    return [
        metrics.gauge("cardbridge_outbox_emails", "Outbox rows now: due (waiting for a "
                      "worker), waiting (a retry or a schedule, later), sending (claimed).",
                      depth, ["state"]),
        metrics.gauge("cardbridge_outbox_oldest_due_seconds",
                      "How long the oldest due email has waited for a worker.", {(): lag}),
    ]


@bp.get("/metrics")
def metrics_text():
    if not may_scrape():
        abort(404)
    try:
        body = metrics.exposition(_outbox_gauges)
    except SQLAlchemyError:
        db.session.rollback()  # the counters still come out; the outbox gauges wait for the DB
        body = metrics.exposition()
    return Response(body, content_type=metrics.CONTENT_TYPE)
