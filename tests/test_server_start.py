"""gunicorn refuses to serve several workers whose rate limits would each count alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, TEST_REDIS_URL
from tests.test_logs import _gunicorn_env, _run_gunicorn
from tests.testlib import free_port


def _start(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
         "app:create_app()"], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)


def test_two_workers_with_in_memory_limits_refuse_to_start(tmp_path):
    env = _gunicorn_env(tmp_path, free_port(), WEB_CONCURRENCY="2")
    env.pop("REDIS_URL", None)
    result = _start(env)
    assert result.returncode != 0
    assert "refusing to start" in result.stderr and "REDIS_URL" in result.stderr


def test_the_override_starts_with_a_loud_warning(tmp_path):
    port = free_port()
    env = _gunicorn_env(tmp_path, port, WEB_CONCURRENCY="2",
                        CARDBRIDGE_ALLOW_PER_PROCESS_LIMITS="1")
    env.pop("REDIS_URL", None)
    statuses, output = _run_gunicorn(env, port, [("GET", "/healthz", {})])
    assert statuses == [200] or statuses == [503]  # serving (the database may be empty)
    assert "WARNING" in output and "2x what it says" in output


@pytest.mark.redis
def test_two_workers_start_when_limits_live_in_redis(tmp_path):
    port = free_port()
    env = _gunicorn_env(tmp_path, port, WEB_CONCURRENCY="2", REDIS_URL=TEST_REDIS_URL)
    statuses, output = _run_gunicorn(env, port, [("GET", "/healthz", {})])
    assert "refusing" not in output
    assert statuses and statuses[0] in (200, 503)
