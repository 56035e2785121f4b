"""A real gunicorn (gunicorn.conf.py, the production settings) as a subprocess, for the tests
that must read what a server really prints and counts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def base_env(tmp_path: Path, port: int, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CARDBRIDGE_", "FLASK_", "PROMETHEUS_", "METRICS_", "LOG_"))}
    env.update(SECRET_KEY="fleet-test-secret", LINK_SECRET_KEYS="fleet-test-link-key",
               STRIPE_SECRET_KEY="sk_test_cardbridge", STRIPE_PUBLISHABLE_KEY="pk_test_fleet",
               DATABASE_URL=f"sqlite:///{tmp_path / 'fleet.db'}",
               PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", GUNICORN_BIND=f"127.0.0.1:{port}",
               WEB_CONCURRENCY="1", STRIPE_WEBHOOK_SECRET="whsec_fleet")
    env.pop("REDIS_URL", None)
    env.update(extra)
    return env


def app_spec(instance: Path) -> str:
    """`app:create_app({...})` with its own instance/ (queue database, outbox), not the repo's."""
    return f"app:create_app({{'INSTANCE_PATH': {str(instance)!r}}})"


class Gunicorn:
    def __init__(self, env: dict, instance: Path):
        self.port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.healthz_hits = 0  # /healthz answers with 200 this test caused (the server counts them)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
             app_spec(instance)],
            cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.output = ""

    def wait_ready(self, workers: int = 1, timeout: float = 30, avoid=frozenset()) -> list[int]:
        """Wait until /healthz answers and `workers` workers (none of `avoid`) are running."""
        deadline = time.time() + timeout
        while True:
            pids = [p for p in self.worker_pids() if p not in avoid]
            if len(pids) >= workers and self.get("/healthz")[0] == 200:
                self.healthz_hits += 1
                return pids
            if time.time() > deadline or self.proc.poll() is not None:
                self.stop()
                raise AssertionError("gunicorn did not start:\n" + self.output)
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                pids.append(int(entry.name))
        return sorted(pids)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()
        except OSError:
            return 0, ""

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=30)
        self.output = out.decode() + err.decode()
        return self.output

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
