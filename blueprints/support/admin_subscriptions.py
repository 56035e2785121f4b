"""Admins see the subscription plan (every legacy subscription in one state, with its reason),
queue planning and applying on the worker, and download the ledger and the toolkit file."""

from __future__ import annotations

import os
import tempfile

from flask import current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from blueprints.support import bp
from blueprints.support.guard import admin_only, client_ip
from blueprints.support.inputs import form_reason, page_number
from cardbridge.delivery import tasks
from cardbridge.extensions import db
from cardbridge.models.subscriptions import SUBSCRIPTION_STATES
from cardbridge.staff import audit
from cardbridge.subscriptions import ledger, revenue

NEED_REASON = "Say why in a few words (kept in the audit trail)."
EXPORTS = {"ledger": ("cardbridge-subscriptions.csv", revenue.export_csv),
           "toolkit": ("stripe-subscription-migration.csv", revenue.export_toolkit)}


def _render(status: int = 200, **errors):
    state = request.args.get("state", "")
    state = state if state in SUBSCRIPTION_STATES else ""
    q = request.args.get("q", "").strip()[:255]
    number = page_number(100_000)
    rows, has_next = ledger.page(state or None, q, number)
    return render_template(
        "support/admin_subscriptions.html", counts=revenue.by_state(),
        mrr=revenue.mrr_by_state(), reasons=revenue.reasons(), runs=ledger.recent_runs(),
        rows=rows, has_next=has_next, page=number, state=state, q=q,
        args={k: v for k, v in (("state", state), ("q", q)) if v}, errors=errors), status


@bp.get("/admin/subscriptions")
@admin_only
def subscriptions_page():
    return _render()


@bp.post("/admin/subscriptions/<any(plan, apply):what>")
@admin_only
def subscriptions_run(what: str):
    reason = form_reason()
    if reason is None:
        return _render(400, **{what: NEED_REASON})
    # The worker does the work (a million rows is no web request); the audit row says who asked.
    audit.record(current_user.email, f"subscription.{what}_queued", ip=client_ip(), reason=reason)
    db.session.commit()
    (tasks.plan_subscriptions if what == "plan" else tasks.apply_subscriptions)(current_user.email)
    message = ("Planning is queued: every open subscription is decided again, and its state "
               "shows here when the worker is done." if what == "plan" else
               "Applying on Stripe is queued: the worker creates each planned schedule within "
               "the shared rate budget. Reload this page to follow the counts.")
    flash(message, "success")
    return redirect(url_for("support.subscriptions_page"), code=303)


@bp.post("/admin/subscriptions/export/<any(ledger, toolkit):kind>")
@admin_only
def subscriptions_export(kind: str):
    reason = form_reason()
    if reason is None:
        return _render(400, export=NEED_REASON)
    name, write = EXPORTS[kind]
    # Written to a file, never held in memory: a million rows is a large CSV.
    fd, path = tempfile.mkstemp(prefix="export-", suffix=".csv", dir=current_app.instance_path)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            count = write(fh)
        audit.record(current_user.email, "export.csv", f"subscriptions:{kind}", ip=client_ip(),
                     reason=reason, details={"rows": count})
        db.session.commit()
        response = send_file(path, mimetype="text/csv", as_attachment=True, download_name=name,
                             max_age=0)
    except BaseException:
        os.unlink(path)
        raise
    response.call_on_close(lambda: os.path.exists(path) and os.unlink(path))
    return response
