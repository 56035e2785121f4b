"""Every Prometheus metric cardbridge exports, defined once; any package may count.

Names are `cardbridge_…`; labels are small fixed sets (a route's rule, an outcome, an email
kind), never a path, a token, an address or an id, so neither a secret nor an unbounded number
of series can reach a scrape.

Under gunicorn the metrics are per process; with `PROMETHEUS_MULTIPROC_DIR` set (gunicorn.conf.py
sets one when METRICS_ENABLED is on) prometheus-client writes each process's values to files
there and `/metrics` adds them up, so one scrape shows the whole fleet on that machine, queue
workers included when they share the directory (docs/deployment.md).

Counts that describe a change to the database (a card saved, an email queued) are made with
`count_after_commit`: a rolled-back transaction counts nothing, a retried one counts once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.orm import Session

from cardbridge import after_commit

# The classic text format every Prometheus (and every agent that scrapes for one) reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# No `…_created` series beside each counter: multiprocess mode has none, so neither does this.
disable_created_metrics()

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Each process's values live in files there from the first metric on: a `flask` command
    # started before gunicorn made the directory must not fail for want of it.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

UNMATCHED_ROUTE = "<unmatched>"  # a 404 (or 405) that matched no rule: one series for them all

# -- the web -------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "cardbridge_http_requests", "HTTP requests answered, by route rule, method and status.",
    ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "cardbridge_http_request_duration_seconds",
    "Time from the request reaching the app to its response, by route rule and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))

# -- card setups ---------------------------------------------------------------------------------
SETUPS_STARTED = Counter(
    "cardbridge_card_setups_started", "New SetupIntents or Checkout Sessions made for a link.",
    ["form"])  # setup_intent | checkout
SETUPS_SUCCEEDED = Counter(
    "cardbridge_card_setups_succeeded", "Cards recorded (the customer became updated).",
    ["via"])  # browser | webhook
SETUPS_FAILED = Counter(
    "cardbridge_card_setups_failed", "Card setups Stripe refused.",
    ["via", "reason"])  # via browser|webhook; reason declined|setup_failed

# -- email ---------------------------------------------------------------------------------------
EMAILS_QUEUED = Counter("cardbridge_emails_queued", "Outbox rows queued, by kind.", ["kind"])
EMAILS_SENT = Counter("cardbridge_emails_sent", "Emails the SMTP relay accepted.")
EMAILS_FAILED = Counter(
    "cardbridge_emails_failed", "Emails given up on.",
    ["reason"])  # failed | bounced | maybe_delivered
EMAILS_DEFERRED = Counter(
    "cardbridge_emails_deferred", "Emails put back in the queue to be tried again later.")

# -- Stripe --------------------------------------------------------------------------------------
STRIPE_CALLS = Counter(
    "cardbridge_stripe_calls", "Stripe API calls as the gateway finished them.",
    ["operation", "outcome"])  # ok declined unavailable rate_limited rejected not_found
STRIPE_RATE_LIMITED = Counter(
    "cardbridge_stripe_rate_limited_responses",
    "429 answers from Stripe, each one (retried or not).", ["operation"])
STRIPE_LATENCY = Histogram(
    "cardbridge_stripe_call_duration_seconds",
    "Time a gateway call took, retries and backoff included.", ["operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0))

# -- imports -------------------------------------------------------------------------------------
IMPORT_ROWS = Counter("cardbridge_import_rows", "Rows read by import runs.", ["kind"])
IMPORT_PROBLEMS = Counter(
    "cardbridge_import_rows_not_applied", "Rows an import run could not apply.", ["kind"])
IMPORT_RUNS = Counter(
    "cardbridge_import_runs", "Import runs finished, by kind and status.", ["kind", "status"])


# -- counting once the transaction commits ---------------------------------------------------------
_PENDING_KEY = "cardbridge.metrics_after_commit"


def count_after_commit(session: Session, child, amount: float = 1) -> None:
    """Add `amount` to `child` (a labelled counter) once `session`'s transaction commits."""
    if amount:
        after_commit.defer(session, _PENDING_KEY, (child, amount))


def _count(items: list) -> None:
    for child, amount in items:
        child.inc(amount)


def install_commit_hook() -> None:
    """Apply pending counts on commit, drop them on rollback (create_app installs it)."""
    after_commit.on_commit(_PENDING_KEY, _count)


# -- the scrape ----------------------------------------------------------------------------------
def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _Snapshot:
    """A collector of gauges computed at scrape time (the outbox's depth), one scrape only."""

    def __init__(self, families: Iterable[GaugeMetricFamily]):
        self._families = list(families)

    def collect(self):
        return iter(self._families)


def gauge(name: str, documentation: str, values: dict[tuple[str, ...], float],
          labels: list[str] | None = None) -> GaugeMetricFamily:
    """A gauge family for `exposition`, one sample per label tuple in `values`."""
    family = GaugeMetricFamily(name, documentation, labels=labels or [])
    for label_values, value in values.items():
        family.add_metric(list(label_values), value)
    return family


def exposition(live: Callable[[], Iterable[GaugeMetricFamily]] | None = None) -> bytes:
    """The text a scrape gets: every process's counters (or this process's, outside
    multiprocess mode) and the gauges `live()` computes now."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    if live is not None:
        extra = CollectorRegistry()
        extra.register(_Snapshot(live()))
        body += generate_latest(extra)
    return body


def wipe_multiprocess_dir(directory: str) -> None:
    """Forget a previous server's values (gunicorn's on_starting): counters start at zero."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
