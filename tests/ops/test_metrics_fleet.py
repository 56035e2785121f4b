"""/metrics under gunicorn with two workers: one scrape sums every worker, the dead included."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from gunicorn_run import Gunicorn, base_env
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from cardbridge.extensions import db
from tests.testlib import free_port

HEALTHZ = frozenset({"route": "/healthz", "method": "GET", "status": "200"}.items())


def _schema(env: dict, instance) -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": env["DATABASE_URL"], "TESTING": True,
                      "INSTANCE_PATH": str(instance), "SECRET_KEY": env["SECRET_KEY"]})
    with app.app_context():
        db.create_all()
        db.engine.dispose()


def _healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cardbridge_http_requests_total" and \
                    frozenset(sample.labels.items()) == HEALTHZ:
                return sample.value
    return 0.0


def test_one_scrape_sums_every_worker_including_ones_that_died(tmp_path):
    port, instance, prom = free_port(), tmp_path / "instance", tmp_path / "prom"
    prom.mkdir()
    (prom / "counter_999999.db").write_bytes(b"left by an earlier server")
    env = base_env(tmp_path, port, WEB_CONCURRENCY="2", CARDBRIDGE_ALLOW_PER_PROCESS_LIMITS="1",
                   METRICS_ENABLED="true", PROMETHEUS_MULTIPROC_DIR=str(prom))
    _schema(env, instance)
    with Gunicorn(env, instance) as server:
        first = server.wait_ready(workers=2)
        assert not (prom / "counter_999999.db").exists()  # wiped when gunicorn started

        def hit(_):
            return server.get("/healthz")[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(hit, range(120)))
        assert statuses == [200] * 120
        server.healthz_hits += 120
        # Both workers go; their replacements have served nothing of the above.
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 30
        while any(p in server.worker_pids() for p in first) and time.time() < deadline:
            time.sleep(0.1)
        server.wait_ready(workers=2, avoid=frozenset(first))
        status, text = server.get("/metrics")
        assert status == 200
        assert _healthz_count(text) == server.healthz_hits
        # Counted by route template, in one family, however many processes wrote it.
        assert text.count("# TYPE cardbridge_http_requests_total counter") == 1
    assert "child_exit" not in server.output  # the hook ran without an error
