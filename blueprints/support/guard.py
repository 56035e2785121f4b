"""The support blueprint's one security posture: who may reach which route, checked in one hook.

Every route needs a signed-in, active staff member whose session is neither idle too long nor
too old, except the few marked @public (the sign-in steps). Routes marked @admin_only also need
the admin role. A test walks app.url_map so a new route cannot slip past this hook.
"""

from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit

from flask import abort, current_app, flash, g, redirect, request, session, url_for
from flask_login import current_user, logout_user

from blueprints.support import bp
from cardbridge.extensions import db, login_manager
from cardbridge.staff import audit
from cardbridge.staff.accounts import load_by_session_key
from cardbridge.subscriptions import revenue

IDLE_TIMEOUT_SECONDS = 30 * 60
ABSOLUTE_LIFETIME_SECONDS = 12 * 60 * 60
AUTH_AT, SEEN_AT = "staff_auth_at", "staff_seen_at"
# Signed in but not yet enrolled in two-factor while it is required: only these are open.
ENROLMENT_ENDPOINTS = {"support.account", "support.totp_setup", "support.logout"}

login_manager.user_loader(load_by_session_key)
login_manager.session_protection = "basic"


def public(view):
    """Reachable without a session (the sign-in steps only)."""
    view.support_public = True
    return view


def admin_only(view):
    """Needs the admin role on top of a session."""
    view.support_role = "admin"
    return view


def client_ip() -> str | None:
    return request.remote_addr


def idle_timeout() -> int:
    return int(current_app.config.get("STAFF_IDLE_TIMEOUT_SECONDS", IDLE_TIMEOUT_SECONDS))


def absolute_lifetime() -> int:
    return int(current_app.config.get("STAFF_SESSION_LIFETIME_SECONDS",
                                       ABSOLUTE_LIFETIME_SECONDS))


def safe_next(target: str | None) -> str | None:
    """A same-site console path to go to after sign-in, or None (ASVS 3.7.2: allowlist)."""
    if not target or len(target) > 512:
        return None
    if any(ord(c) < 0x20 or c == "\\" for c in target):
        return None  # browsers read "/\evil" as "//evil"; control characters hide tricks
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/support/"):
        return None
    if ".." in unquote(parts.path).split("/"):
        return None  # a browser resolves "/support/../x" (or %2e%2e) to a path outside
    if target.startswith("//") or parts.path.startswith("/support/login"):
        return None
    return target


def start_session(now: float | None = None) -> None:
    """Stamp a just-created signed-in session with its start and last activity times."""
    now = int(now if now is not None else time.time())
    session[AUTH_AT] = now
    session[SEEN_AT] = now


def _to_login(message: str | None = None):
    if message:
        flash(message, "info")
    nxt = request.full_path.rstrip("?") if request.method == "GET" else None
    return redirect(url_for("support.login", next=safe_next(nxt)), code=303)


def _session_expired(now: float) -> bool:
    auth_at, seen_at = session.get(AUTH_AT), session.get(SEEN_AT)
    if not isinstance(auth_at, int) or not isinstance(seen_at, int):
        return True
    return now - seen_at > idle_timeout() or now - auth_at > absolute_lifetime()


@bp.before_request
def guard():
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, "support_public", False):
        return None
    if not current_user.is_authenticated:
        return _to_login()
    now = time.time()
    if _session_expired(now):
        audit.record(current_user.email, "staff.session_expired", current_user.email,
                     ip=client_ip())
        db.session.commit()
        logout_user()
        session.clear()
        return _to_login("Your session ended after a period of inactivity. Please sign in "
                         "again.")
    session[SEEN_AT] = int(now)
    g.staff = current_user
    if (current_app.config.get("STAFF_REQUIRE_2FA") and not current_user.has_totp
            and request.endpoint not in ENROLMENT_ENDPOINTS):
        flash("Set up two-step verification to continue.", "info")
        return redirect(url_for("support.totp_setup"), code=303)
    if getattr(view, "support_role", None) == "admin" and not current_user.is_admin:
        abort(403, description="Only admins can open this page.")
    return None


@bp.after_request
def _no_store(response):
    # Console pages show customer data: keep them out of shared and back/forward caches.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _console_context():
    return {"staff": current_user if current_user and current_user.is_authenticated else None,
            "money": revenue.money}
