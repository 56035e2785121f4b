"""gunicorn settings for `web` (Procfile) and bench/page.py: one place, the bench measures prod."""

import multiprocessing
import os
import tempfile

# /metrics across workers: prometheus-client's multiprocess mode keeps each process's values in
# files under PROMETHEUS_MULTIPROC_DIR, which it reads when first imported, so the directory is
# chosen here, before anything imports the app. Unset, a private one is made for this server.
if os.environ.get("METRICS_ENABLED", "").strip().lower() in ("1", "true", "yes", "on"):
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cardbridge-metrics-")

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
# Longer than the load balancer's idle timeout (60 s on most): a server that closes an idle
# keep-alive connection first races the balancer's next request on it, which then fails with
# a reset (a 502 to the customer). gthread parks idle connections in its poller, not a thread.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
# No access log by default: request lines would carry customer link tokens. Errors still log.
accesslog = None
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Every gunicorn record (errors, tracebacks of a worker) through cardbridge's redacting
# formatter, the same one the app's own loggers use (cardbridge/web/logs.py).
from cardbridge.web import logs  # noqa: E402

logconfig_dict = logs.gunicorn_logconfig(os.environ.get("LOG_FORMAT", "text").lower())


def on_starting(server):
    """A fresh metrics directory, then the rate-limit check below."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from cardbridge.metrics import wipe_multiprocess_dir

        wipe_multiprocess_dir(directory)  # the last server's counts are not this one's
    _refuse_per_process_limits(server)


def child_exit(server, worker):
    """A worker that ended (restarted, killed): its counters still count, its live gauges go."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _refuse_per_process_limits(server):
    """Refuse to serve with several workers whose rate limits each count alone (config.py);
    CARDBRIDGE_ALLOW_PER_PROCESS_LIMITS=1 turns the refusal into a loud warning."""
    import sys

    from cardbridge.config import per_process_limits_problem

    problem = per_process_limits_problem(dict(os.environ), server.cfg.workers)
    if problem is None:
        return
    if os.environ.get("CARDBRIDGE_ALLOW_PER_PROCESS_LIMITS") == "1":
        server.log.warning("WARNING: %s (allowed by CARDBRIDGE_ALLOW_PER_PROCESS_LIMITS)",
                           problem)
        return
    server.log.error("refusing to start: %s", problem)
    sys.exit(1)
