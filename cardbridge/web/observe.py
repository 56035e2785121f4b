"""Request metrics: every response counted by its route's rule (never its path, which for a
customer is their link) and timed, when METRICS_ENABLED is on; and who may read /metrics."""

from __future__ import annotations

import ipaddress
import time

from flask import Flask, current_app, g, request

from cardbridge import metrics

# Anything else (a scanner's made-up verb) is one series, not one per word.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Headers a proxy adds: seen without TRUSTED_PROXY_HOPS, the request came through a proxy we
# were not told about, and its loopback address says nothing about the client behind it.
_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def init_app(app: Flask) -> None:
    metrics.install_commit_hook()
    if not app.config.get("METRICS_ENABLED"):
        return

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        started = g.pop("metrics_started", None)
        if started is not None:
            rule = request.url_rule
            route = rule.rule if rule is not None else metrics.UNMATCHED_ROUTE
            method = request.method if request.method in _METHODS else "other"
            metrics.HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
            metrics.HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
        return response


def may_scrape() -> bool:
    """METRICS_ENABLED, and the client's address (after trusted proxies) is in METRICS_ALLOW."""
    config = current_app.config
    if not config.get("METRICS_ENABLED"):
        return False
    if not config.get("TRUSTED_PROXY_HOPS") and any(h in request.headers for h in _PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net) for net in config.get("METRICS_ALLOW", ()))
