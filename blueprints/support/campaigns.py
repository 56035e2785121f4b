"""Console pages for email: launch a wave (admins), each wave's funnel, and who needs a human.

Registered by importing this module in blueprints/support/__init__.py; the blueprint's one
guard (guard.py) covers these routes like every other.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from blueprints.support import bp
from blueprints.support.guard import admin_only, client_ip
from cardbridge.campaigns import service as campaigns
from cardbridge.email.emails import needs_human as needs_human_rows
from cardbridge.extensions import db
from cardbridge.staff import audit

MAX_REASON = 500


def _form_int(name: str) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name.replace('_', ' ')} must be a whole number") from exc


def _form_time() -> datetime | None:
    raw = request.form.get("at", "").strip()
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError("the start time must look like 2026-12-01T09:00") from exc
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # the console shows times in UTC


def _page(status: int = 200, **context):
    return render_template(
        "support/campaigns.html", waves=campaigns.wave_funnel(),
        rate=current_app.config.get("CAMPAIGN_RATE_PER_MINUTE") or 0,
        form=request.form if request.method == "POST" else {}, **context,
    ), status


@bp.get("/campaigns")
def campaigns_page():
    return _page()


@bp.post("/campaigns")
@admin_only
def campaign_launch():
    """Preview (nothing changes) or launch a wave: a count or a percentage of one status."""
    reason = " ".join(request.form.get("reason", "").split())[:MAX_REASON]
    status = request.form.get("status", "needs_update")
    try:
        size, amount = request.form.get("size", "count"), _form_int("amount")
        limit, percent = (amount, None) if size == "count" else (None, amount)
        at, rate = _form_time(), _form_int("rate")
        if amount is None:
            raise ValueError("say how many customers (a count or a percentage)")
        plan = campaigns.plan_wave(status, limit=limit, percent=percent)
    except ValueError as exc:
        db.session.rollback()
        return _page(400, error=str(exc)[:1].upper() + str(exc)[1:] + ".")
    if request.form.get("action") != "launch":
        db.session.rollback()  # a preview changes nothing (not even the expiry sweep)
        return _page(preview=plan)
    if len(reason) < 3:
        return _page(400, error="Say why this wave goes out (kept in the audit trail).",
                     preview=plan)
    try:
        wave, plan = campaigns.launch_wave(status, created_by=current_user.email, limit=limit,
                                           percent=percent, at=at, rate_per_minute=rate)
    except ValueError as exc:
        db.session.rollback()
        return _page(400, error=str(exc)[:1].upper() + str(exc)[1:] + ".")
    audit.record(current_user.email, "campaign.wave", f"wave:{wave.id}", ip=client_ip(),
                 reason=reason, details={"status": status, "limit": limit, "percent": percent,
                                         "queued": wave.queued, "rate": rate,
                                         "at": at.isoformat() if at else None})
    db.session.commit()
    flash(f"Wave {wave.id}: {wave.queued} link email(s) queued.", "success")
    return redirect(url_for("support.campaigns_page"), code=303)


@bp.get("/needs-human")
def needs_human():
    """Customers who still need a card but whom email cannot reach."""
    return render_template("support/needs_human.html", rows=needs_human_rows())
