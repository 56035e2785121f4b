"""Admins manage staff accounts: create, disable or enable, change role, end sessions, reset 2FA."""

from __future__ import annotations

import secrets

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from blueprints.support import bp
from blueprints.support.guard import admin_only, client_ip
from blueprints.support.inputs import form_reason
from cardbridge.extensions import db
from cardbridge.models import ROLES, StaffUser
from cardbridge.staff import accounts as staff_service
from cardbridge.staff import audit

ACTIONS = {
    "disable": "staff.disabled",
    "enable": "staff.enabled",
    "make_admin": "staff.role_changed",
    "make_agent": "staff.role_changed",
    "end_sessions": "staff.sessions_ended",
    "reset_2fa": "staff.2fa_reset",
}


def _all_staff() -> list[StaffUser]:
    return list(db.session.execute(
        select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.email)
    ).scalars())


def _page(status: int = 200, **context):
    return render_template("support/admin_staff.html", users=_all_staff(), roles=ROLES,
                           **context), status


@bp.get("/admin/staff")
@admin_only
def staff_list():
    return _page()


@bp.post("/admin/staff")
@admin_only
def staff_create():
    email = request.form.get("email", "")
    role = request.form.get("role", "agent")
    reason = form_reason()
    if reason is None:
        return _page(400, create_error="Say why this account is needed.", email=email)
    password = secrets.token_urlsafe(15)  # 20 characters; shown once, the person changes it
    try:
        user = staff_service.create_staff(email, role, password)
    except staff_service.StaffError as exc:
        db.session.rollback()
        return _page(400, create_error=str(exc).capitalize() + ".", email=email)
    audit.record(current_user.email, "staff.created", user.email, ip=client_ip(), reason=reason,
                 details={"role": role})
    db.session.commit()
    response = make_response(render_template("support/staff_created.html", user=user,
                                             password=password))
    response.headers["Cache-Control"] = "no-store"
    return response


def _refusal(user: StaffUser, action: str) -> str | None:
    if user.id == current_user.id and action in ("disable", "make_agent"):
        return "You cannot disable or demote your own account."
    losing_admin = action in ("disable", "make_agent") and user.is_admin and user.active
    if losing_admin and staff_service.active_admin_count() <= 1:
        return "This is the last active admin; make another admin first."
    return None


@bp.post("/admin/staff/<int:user_id>")
@admin_only
def staff_update(user_id: int):
    user = db.session.get(StaffUser, user_id)
    action = request.form.get("action", "")
    if user is None or action not in ACTIONS:
        abort(404)
    reason = form_reason()
    if reason is None:
        return _page(400, row_error=(user.id, "Say why in a few words."))
    refusal = _refusal(user, action)
    if refusal:
        return _page(409, row_error=(user.id, refusal))
    if action in ("disable", "enable"):
        staff_service.set_active(user, action == "enable")
    elif action in ("make_admin", "make_agent"):
        staff_service.set_role(user, action.removeprefix("make_"))
    elif action == "end_sessions":
        user.end_sessions()
    else:
        staff_service.reset_totp(user)
    audit.record(current_user.email, ACTIONS[action], user.email, ip=client_ip(), reason=reason,
                 details={"action": action, "role": user.role, "active": user.active})
    db.session.commit()
    flash(f"{user.email}: {action.replace('_', ' ')} done.", "success")
    if user.id == current_user.id and action in ("end_sessions", "reset_2fa"):
        return redirect(url_for("support.login"), code=303)
    return redirect(url_for("support.staff_list"), code=303)
