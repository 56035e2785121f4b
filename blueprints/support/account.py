"""The signed-in person's own account: two-step verification set-up and password change."""

from __future__ import annotations

import secrets

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user

from blueprints.support import bp
from blueprints.support.auth import BAD_CODE, enrolment_secret
from blueprints.support.guard import client_ip, start_session
from cardbridge.extensions import db, limiter
from cardbridge.models import StaffUser
from cardbridge.staff import accounts as staff_service
from cardbridge.staff import audit

NONCE = "staff_totp_nonce"
WRONG_PASSWORD = "Your current password is not right."


def _password_checks() -> str:
    return current_app.config.get("STAFF_PASSWORD_CHECK_LIMIT", "5 per minute;20 per hour")


def _me_key() -> str:
    return f"staff-password-check:{current_user.get_id()}"


# Each POST that checks the current password is a guess at it: limited per staff member.
password_checks = limiter.shared_limit(_password_checks, scope="staff-password-check",
                                       key_func=_me_key, methods=["POST"])


def _me() -> StaffUser:
    return db.session.get(StaffUser, current_user.id)


def _keep_this_session(user: StaffUser) -> None:
    """After a change that ended every session, sign this one back in under the new key."""
    login_user(user)
    start_session()


@bp.get("/account")
def account():
    return render_template("support/account.html", user=_me())


@bp.route("/account/two-step", methods=["GET", "POST"])
@password_checks
def totp_setup():
    user = _me()
    if user.has_totp:
        flash("Two-step verification is already on. An admin can reset it if you lose your "
              "phone.", "info")
        return redirect(url_for("support.account"), code=303)
    nonce = session.get(NONCE)
    if not isinstance(nonce, str):
        nonce = session[NONCE] = secrets.token_urlsafe(12)
    secret = enrolment_secret(user, nonce)
    error = None
    if request.method == "POST":
        # Whoever holds an open session (a borrowed laptop) must not bind their own phone.
        if staff_service.authenticate(user.email, request.form.get("password", "")) is None:
            error = WRONG_PASSWORD
        elif staff_service.enrol_totp(user, secret, request.form.get("code", "")):
            user.end_sessions()  # other devices sign in again, now with a code
            audit.record(user.email, "staff.2fa_enrolled", user.email, ip=client_ip())
            db.session.commit()
            session.pop(NONCE, None)
            _keep_this_session(user)
            flash("Two-step verification is on. You will need a code each time you sign in.",
                  "success")
            return redirect(url_for("support.account"), code=303)
        else:
            error = BAD_CODE
    return render_template("support/totp_setup.html", secret=secret, error=error,
                           uri=staff_service.totp_uri(user.email, secret),
                           action=url_for("support.totp_setup"), signing_in=False)


@bp.post("/account/password")
@password_checks
def change_password():
    user = _me()
    current = request.form.get("current_password", "")
    new, again = request.form.get("new_password", ""), request.form.get("new_password_again", "")
    error = None
    if staff_service.authenticate(user.email, current) is None:
        error = WRONG_PASSWORD
    elif new != again:
        error = "The two new passwords are not the same."
    else:
        try:
            staff_service.set_password(user, new)
        except staff_service.StaffError as exc:
            error = str(exc).capitalize() + "."
    if error:
        db.session.rollback()
        return render_template("support/account.html", user=_me(), password_error=error), 200
    audit.record(user.email, "staff.password_changed", user.email, ip=client_ip())
    db.session.commit()
    _keep_this_session(user)
    flash("Your password is changed. Other devices are signed out.", "success")
    return redirect(url_for("support.account"), code=303)
