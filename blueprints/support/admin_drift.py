"""Admins see where Stripe no longer holds what cardbridge set there (`flask stripe reconcile`,
run read-only by the worker every day): each difference, what it means, and the last scan."""

from __future__ import annotations

from flask import render_template, request

from blueprints.support import bp
from blueprints.support.guard import admin_only
from cardbridge.models.drift import FINDING_STATUSES
from cardbridge.payments import drift


@bp.get("/admin/drift")
@admin_only
def drift_page():
    status = request.args.get("status", "open")
    status = status if status in FINDING_STATUSES else "open"
    return render_template("support/admin_drift.html", rows=drift.findings((status,)),
                           status=status, statuses=FINDING_STATUSES, meanings=drift.MEANINGS,
                           scan=drift.last_scan(), open_count=drift.open_count())
