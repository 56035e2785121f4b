"""Admins read the audit trail, filtered by who, what, on whom and when."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import render_template, request

from blueprints.support import bp
from blueprints.support.guard import admin_only
from blueprints.support.inputs import page_number
from cardbridge.staff import audit


def _day(name: str) -> date | None:
    try:
        return date.fromisoformat(request.args.get(name, ""))
    except ValueError:
        return None


@bp.get("/admin/audit")
@admin_only
def audit_log():
    since, until = _day("since"), _day("until")
    f = audit.AuditFilter(
        actor=request.args.get("actor", "")[:255],
        action=request.args.get("action", "")[:60],
        target=request.args.get("target", "")[:255],
        since=datetime.combine(since, datetime.min.time(), tzinfo=UTC) if since else None,
        # "until" is inclusive for people: the whole of that day.
        until=(datetime.combine(until, datetime.min.time(), tzinfo=UTC) + timedelta(days=1))
        if until else None,
    )
    page = page_number()
    rows, has_next = audit.page(f, page)
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template("support/admin_audit.html", rows=rows, has_next=has_next, page=page,
                           f=f, since=since, until=until, actions=audit.ACTIONS, args=args)
