"""/csp-report — where browsers report Content-Security-Policy violations (PCI 11.6.1 evidence).

Reports are logged with the directive and the blocked origin only: a report's document URL
would carry a customer's link token. The body is bounded (BODY_LIMITS["csp"]); anything that is
not a small JSON object is dropped; each value logged is JSON-escaped, so a newline in a report
cannot start a forged log line.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from flask import Blueprint, request

from cardbridge.extensions import csrf, limiter

log = logging.getLogger("cardbridge.csp")
bp = Blueprint("csp", __name__)


@bp.post("/csp-report")
@csrf.exempt
@limiter.limit("60 per minute")
def csp_report():
    try:
        body = json.loads(request.get_data(cache=False) or b"{}")
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return "", 400
    report = body.get("csp-report", body) if isinstance(body, dict) else None
    if not isinstance(report, dict):
        return "", 400
    blocked = _text(report.get("blocked-uri"))
    origin = urlsplit(blocked).netloc if "://" in blocked else blocked
    log.warning("csp violation directive=%s blocked=%s",
                json.dumps(_text(report.get("violated-directive"))[:80]),
                json.dumps(origin[:80]))
    return "", 204


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
