"""/csp-report — where browsers report Content-Security-Policy violations (PCI 11.6.1 evidence).

Reports are logged with the directive and the blocked origin only: a report's document URL
would carry a customer's link token.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from flask import Blueprint, request

from extensions import csrf, limiter

log = logging.getLogger("cardbridge.csp")
bp = Blueprint("csp", __name__)


@bp.post("/csp-report")
@csrf.exempt
@limiter.limit("60 per minute")
def csp_report():
    try:
        body = json.loads(request.get_data(cache=False)[:65536] or b"{}")
    except ValueError:
        return "", 204
    report = body.get("csp-report", body) if isinstance(body, dict) else {}
    if isinstance(report, dict):
        blocked = str(report.get("blocked-uri", ""))
        origin = urlsplit(blocked).netloc or blocked[:40]
        log.warning("csp violation directive=%s blocked=%s",
                    str(report.get("violated-directive", ""))[:80], origin)
    return "", 204
