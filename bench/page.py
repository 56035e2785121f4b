"""Requests per second of GET /u/<token> against a bare Flask route, same gunicorn settings.

    .venv/bin/python bench/page.py [--seconds 8] [--connections 16] [--links 1000]

Both servers run from gunicorn.conf.py (the Procfile's settings) on this machine and are
loaded with wrk (Debian package `wrk`; installed if missing and apt is usable). The bare route
returns a body of the same size as the real page, so the ratio measures our work: token
check, database reads, template, session and CSRF cookie, CSP headers. wrk cycles through
`--links` different customers' links, as real traffic would, so no cache of one page can
flatter the figure; it sends no cookies, so every request is a first visit.

The ratio is a figure to watch, not an aim: the page renders with stock Flask, Jinja,
Flask-WTF and SQLAlchemy, and a customer opens it a few times in a whole migration. Its
behaviour under real load (PostgreSQL, p95 latencies) belongs to the fleet benchmarks.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ would be first on the path and bench/email.py would shadow the
# standard library's email package; the repository root goes there instead.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start")


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("installing wrk (Debian)…", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk is needed: apt-get install wrk")


# Each wrk thread walks the list of paths in turn (one Lua state per thread).
ROTATE_LUA = """
local paths, i = {}, 0
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""


def run_wrk(wrk: str, url: str, paths: list[str], seconds: int, connections: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="cardbridge-wrk-"))
    (tmp / "paths.txt").write_text("\n".join(paths) + "\n")
    (tmp / "rotate.lua").write_text(ROTATE_LUA)
    env = dict(os.environ, BENCH_PATHS=str(tmp / "paths.txt"))
    cmd = [wrk, "-t2", "-s", str(tmp / "rotate.lua")]
    subprocess.run([*cmd, "-c4", "-d1s", url], capture_output=True, env=env)  # warm-up
    out = subprocess.run([*cmd, f"-c{connections}", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True, env=env).stdout
    shutil.rmtree(tmp, ignore_errors=True)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} error responses\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def gunicorn(target: str, port: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{port}", target],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=open(ROOT / "bench" / "gunicorn.log", "ab"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--links", type=int, default=1000, help="distinct customer links")
    args = parser.parse_args()
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="cardbridge-bench-"))
    app_port, bare_port = free_port(), free_port()
    env = dict(os.environ, SECRET_KEY="bench-secret", STRIPE_SECRET_KEY="sk_test_bench",
               STRIPE_PUBLISHABLE_KEY="pk_test_bench", DATABASE_URL=f"sqlite:///{tmp}/bench.db",
               PUBLIC_BASE_URL=f"http://127.0.0.1:{app_port}", CARD_FORM="card_element",
               WEB_CONCURRENCY=os.environ.get("WEB_CONCURRENCY", "2"),
               CARDBRIDGE_ALLOW_PER_PROCESS_LIMITS="1")  # no limited route is measured
    env.pop("CARDBRIDGE_DEMO", None)
    env.pop("FLASK_DEBUG", None)

    os.environ.update(env)
    from app import create_app
    from cardbridge.extensions import db
    from cardbridge.links.service import issue_link
    from cardbridge.models import Customer

    app = create_app({"INSTANCE_PATH": str(tmp / "instance")})
    with app.app_context():
        db.create_all()
        paths = []
        for n in range(args.links):
            customer = Customer(legacy_id=f"bench-{n}", email=f"bench{n}@example.com",
                                name=f"Bench {n}", card_brand="Visa", card_last4="4242",
                                card_exp_month=1, card_exp_year=2025)
            db.session.add(customer)
            db.session.flush()
            paths.append(f"/u/{issue_link(customer, created_by='bench').token}")
        db.session.commit()
        page_url = f"http://127.0.0.1:{app_port}{paths[0]}"
        app_url = f"http://127.0.0.1:{app_port}"

    servers = []
    try:
        servers.append(gunicorn("app:create_app()", app_port, env))
        wait_up(page_url)
        with urllib.request.urlopen(page_url) as response:
            html = response.read().decode()
        size = len(html.encode())
        env_bare = dict(env, PYTHONPATH=str(ROOT), BENCH_BODY_SIZE=str(size))
        servers.append(gunicorn("bench.bare_app:app", bare_port, env_bare))
        bare_url = f"http://127.0.0.1:{bare_port}/bare"
        wait_up(bare_url)
        # The floor before and after the page (mean), so a machine that slows down during the
        # run flatters neither side; runs far apart are reported.
        bare_before = run_wrk(wrk, bare_url, ["/bare"], args.seconds, args.connections)
        page_rps = run_wrk(wrk, app_url, paths, args.seconds, args.connections)
        bare_after = run_wrk(wrk, bare_url, ["/bare"], args.seconds, args.connections)
        bare_rps = (bare_before + bare_after) / 2
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
        for proc in servers:
            proc.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"page GET /u/<token>: {page_rps:9.0f} req/s  ({size} bytes, {args.links} links)")
    print(f"bare Flask route:    {bare_rps:9.0f} req/s  (runs: {bare_before:.0f}, "
          f"{bare_after:.0f})")
    if abs(bare_before - bare_after) > 0.15 * bare_rps:
        print("warning: the two floor runs differ by more than 15%; the machine was busy, "
              "run again")
    print(f"ratio page/bare:     {page_rps / bare_rps:9.2f}")


if __name__ == "__main__":
    main()
