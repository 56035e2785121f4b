"""Signing in and out: password, then a TOTP code (or enrolment when two-factor is required).

Between the two steps the session holds only a "pending" marker, never a signed-in user.
Every sign-in clears the session first, so nothing from before it survives (no fixation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from blueprints.support import bp
from blueprints.support.guard import client_ip, public, safe_next, start_session
from cardbridge.extensions import db, limiter
from cardbridge.models import StaffUser
from cardbridge.staff import accounts as staff_service
from cardbridge.staff import audit

FAILED = "That email and password do not match an active staff account."
BAD_CODE = "That code did not work. Enter the current 6-digit code from your app."
PENDING, PENDING_MAX_AGE = "staff_pending", 5 * 60


# -- rate limits: per IP and per account, shared through Redis when REDIS_URL is set ----------
def _ip_limit() -> str:
    return current_app.config.get("STAFF_LOGIN_LIMIT_PER_IP", "10 per minute;100 per hour")


def _account_limit() -> str:
    return current_app.config.get("STAFF_LOGIN_LIMIT_PER_ACCOUNT", "5 per minute;30 per hour")


def _account_ceiling() -> str:
    return current_app.config.get("STAFF_LOGIN_LIMIT_ACCOUNT_CEILING",
                                  "50 per hour;200 per day")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


def _account_key() -> str:
    # An account's tries from one address: whoever guesses from elsewhere does not lock the
    # real staff member out (docs/console-and-api.md).
    email = staff_service.normalize_email(request.form.get("email"))
    return "staff-login:" + _digest(f"{email}|{request.remote_addr or 'unknown'}")


def _account_ceiling_key() -> str:
    # Every address together: a slower ceiling that still stops a guessing attack spread
    # over many addresses.
    return "staff-login-all:" + _digest(staff_service.normalize_email(request.form.get("email")))


def _pending_key() -> str:
    # The account the password step was for, not its marker: signing in again must not bring
    # a fresh budget of code tries.
    pending = session.get(PENDING) or {}
    user = staff_service.pending_user(pending.get("marker"))
    return f"staff-2fa:{user.id}" if user else "staff-2fa:" + _digest(str(pending))


def _ip_key() -> str:
    return "staff-ip:" + (request.remote_addr or "unknown")


per_ip = limiter.limit(_ip_limit, key_func=_ip_key, methods=["POST"])
per_account = limiter.limit(_account_limit, key_func=_account_key, methods=["POST"])
account_ceiling = limiter.limit(_account_ceiling, key_func=_account_ceiling_key,
                                methods=["POST"])
per_pending = limiter.limit(_account_limit, key_func=_pending_key, methods=["POST"])


# -- the pending step between password and code -------------------------------------------------
def _pending_user() -> tuple[StaffUser | None, dict]:
    pending = session.get(PENDING)
    if not isinstance(pending, dict) or time.time() - pending.get("at", 0) > PENDING_MAX_AGE:
        return None, {}
    user = staff_service.pending_user(pending.get("marker"))
    return user, pending


def enrolment_secret(user: StaffUser, nonce: str) -> str:
    """A TOTP secret derived on the server from a nonce in the session, so the secret itself
    never sits in the (signed, not encrypted) session cookie."""
    key = current_app.config["SECRET_KEY"].encode("utf-8")
    message = f"totp-enrol:{user.id}:{user.session_key}:{nonce}".encode()
    return base64.b32encode(hmac.new(key, message, hashlib.sha256).digest()[:20]).decode()


def _finish_login(user: StaffUser, nxt: str | None):
    session.clear()  # a new session: nothing set before sign-in survives it
    staff_service.end_pending_login(user)
    login_user(user)
    start_session()
    staff_service.record_login(user)
    audit.record(user.email, "staff.login", user.email, ip=client_ip(),
                 details={"two_factor": user.has_totp})
    db.session.commit()
    return redirect(safe_next(nxt) or url_for("support.dashboard"), code=303)


@bp.route("/login", methods=["GET", "POST"])
@public
@per_ip
@per_account
@account_ceiling
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("support.dashboard"))
    nxt = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("support/login.html", next=nxt, email="")
    email = request.form.get("email", "")
    user = staff_service.authenticate(email, request.form.get("password", ""))
    if user is None:
        audit.record("anonymous", "staff.login_failed", staff_service.audit_target(email),
                     ip=client_ip())
        db.session.commit()
        return render_template("support/login.html", next=nxt, email=email, error=FAILED)
    needs_code = user.has_totp or current_app.config.get("STAFF_REQUIRE_2FA")
    if not needs_code:
        return _finish_login(user, nxt)
    session.clear()
    # A random marker, not the account's session key: the cookie is signed, not encrypted.
    session[PENDING] = {"marker": staff_service.start_pending_login(user),
                        "at": int(time.time()), "next": nxt,
                        "nonce": secrets.token_urlsafe(12)}
    db.session.commit()
    target = "support.login_code" if user.has_totp else "support.login_enrol"
    return redirect(url_for(target), code=303)


@bp.route("/login/code", methods=["GET", "POST"])
@public
@per_ip
@per_pending
def login_code():
    user, pending = _pending_user()
    if user is None or not user.has_totp:
        session.pop(PENDING, None)
        flash("Please sign in again.", "info")
        return redirect(url_for("support.login"), code=303)
    if request.method == "POST":
        if staff_service.verify_totp(user, request.form.get("code", "")):
            return _finish_login(user, pending.get("next"))
        audit.record(user.email, "staff.login_failed", user.email, ip=client_ip(),
                     details={"step": "code"})
        db.session.commit()
        return render_template("support/login_code.html", error=BAD_CODE)
    return render_template("support/login_code.html")


@bp.route("/login/enrol", methods=["GET", "POST"])
@public
@per_ip
@per_pending
def login_enrol():
    """Two-factor is required and this person has none yet: set it up before signing in."""
    user, pending = _pending_user()
    if user is None or user.has_totp:
        session.pop(PENDING, None)
        flash("Please sign in again.", "info")
        return redirect(url_for("support.login"), code=303)
    secret = enrolment_secret(user, pending["nonce"])
    error = None
    if request.method == "POST":
        if staff_service.enrol_totp(user, secret, request.form.get("code", "")):
            audit.record(user.email, "staff.2fa_enrolled", user.email, ip=client_ip())
            return _finish_login(user, pending.get("next"))
        error = BAD_CODE
    return render_template("support/totp_setup.html", secret=secret, error=error,
                           uri=staff_service.totp_uri(user.email, secret),
                           action=url_for("support.login_enrol"), signing_in=True)


@bp.post("/logout")
def logout():
    """Signing out ends every session of this person (a copied cookie stops working too)."""
    user = db.session.get(StaffUser, current_user.id)
    user.end_sessions()
    audit.record(user.email, "staff.logout", user.email, ip=client_ip())
    db.session.commit()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("support.login"), code=303)
