"""Staff accounts: creation, password checks that leak nothing, TOTP, disabling and roles.

No request objects here: the console's views and `flask staff …` both call these functions,
and the caller commits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from datetime import datetime, timedelta

import pyotp
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app
from sqlalchemy import select, update
from werkzeug.security import check_password_hash, generate_password_hash

from cardbridge.extensions import db
from cardbridge.models import ROLES, StaffUser
from cardbridge.models.types import utcnow

MIN_PASSWORD_LENGTH = 12
# Hashing a megabyte "password" costs real CPU; nobody types more than this.
MAX_PASSWORD_LENGTH = 256
MAX_EMAIL_LENGTH = 320
TOTP_ISSUER_FALLBACK = "cardbridge"


class StaffError(ValueError):
    """A staff account change that cannot be made; the message says why, in one line."""


def normalize_email(email: str | None) -> str:
    # NUL cannot be stored or compared in PostgreSQL text; no real address contains one.
    return (email or "").replace("\x00", "").strip().lower()


def _method() -> str:
    # Tests may lower the scrypt cost; production keeps werkzeug's default (scrypt, N=2**15).
    return current_app.config.get("STAFF_PASSWORD_METHOD") or "scrypt"


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=_method())


_dummy_hashes: dict[str, str] = {}
EMAIL_SHAPE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")


def init_app(app: Flask) -> None:
    """Make the unknown-email dummy hash now, so no visitor's first try pays for it."""
    with app.app_context():
        _dummy_hash()


def audit_target(typed: str | None) -> str | None:
    """What a failed sign-in records of the email field: the address when it is one, else a
    hash (people type passwords into the wrong field; the trail must not keep them)."""
    value = normalize_email(typed)
    if not value:
        return None
    if len(value) <= MAX_EMAIL_LENGTH and EMAIL_SHAPE.fullmatch(value):
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:16]


def _dummy_hash() -> str:
    """A real hash of a random password, made with the current method, so an unknown email
    costs exactly one password check, like a known one."""
    method = _method()
    if method not in _dummy_hashes:
        _dummy_hashes[method] = generate_password_hash(secrets.token_urlsafe(16), method=method)
    return _dummy_hashes[method]


def check_password_strength(password: str, email: str = "") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise StaffError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")
    if email and normalize_email(password) == normalize_email(email):
        raise StaffError("the password must not be the email address")


def find_by_email(email: str) -> StaffUser | None:
    email = normalize_email(email)
    if not email or len(email) > MAX_EMAIL_LENGTH:
        return None
    return db.session.execute(
        select(StaffUser).where(StaffUser.email == email)
    ).scalar_one_or_none()


def load_by_session_key(key: str) -> StaffUser | None:
    """Flask-Login's user loader: a session only works while its key is current and the
    account is active."""
    if not key or len(key) > 64:
        return None
    user = db.session.execute(
        select(StaffUser).where(StaffUser.session_key == key)
    ).scalar_one_or_none()
    if user is None or not user.active:
        return None
    return user


def create_staff(email: str, role: str, password: str) -> StaffUser:
    email = normalize_email(email)
    if "@" not in email or len(email) > MAX_EMAIL_LENGTH or any(c.isspace() for c in email):
        raise StaffError(f"{email!r} is not an email address")
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    if find_by_email(email) is not None:
        raise StaffError(f"a staff account for {email} already exists")
    check_password_strength(password, email)
    user = StaffUser(email=email, role=role, password_hash=hash_password(password), active=True)
    db.session.add(user)
    db.session.flush()
    return user


def authenticate(email: str, password: str) -> StaffUser | None:
    """The account if the email and password match an active account, else None.

    An unknown email, a wrong password and a disabled account all do one password check,
    so neither the answer nor its timing tells them apart.
    """
    password = password or ""
    if len(password) > MAX_PASSWORD_LENGTH:
        password = password[:MAX_PASSWORD_LENGTH]  # still checked, so still slow and still wrong
    user = find_by_email(email)
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    ok = check_password_hash(user.password_hash, password)
    if not ok or not user.active:
        return None
    return user


def record_login(user: StaffUser, now: datetime | None = None) -> None:
    user.last_login_at = now or utcnow()


def set_password(user: StaffUser, password: str) -> None:
    check_password_strength(password, user.email)
    user.password_hash = hash_password(password)
    user.end_sessions()


def set_active(user: StaffUser, active: bool) -> None:
    user.active = active
    if not active:
        user.end_sessions()


def set_role(user: StaffUser, role: str) -> None:
    if role not in ROLES:
        raise StaffError(f"role must be one of {', '.join(ROLES)}")
    if role != user.role:
        user.role = role
        user.end_sessions()  # a changed privilege gets a fresh login


def active_admin_count() -> int:
    return len(db.session.execute(
        select(StaffUser.id).where(StaffUser.role == "admin", StaffUser.active.is_(True))
    ).all())


# -- TOTP ------------------------------------------------------------------------------------
def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(email: str, secret: str) -> str:
    issuer = current_app.config.get("COMPANY_NAME") or TOTP_ISSUER_FALLBACK
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=f"{issuer} support")


def _matching_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step whose code equals `code`, allowing one step of clock drift either way."""
    code = "".join((code or "").split())
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(datetime.fromtimestamp(at if at is not None else time.time()))
    found = None
    for step in (now_step - 1, now_step, now_step + 1):
        # Compare every candidate so the time taken does not depend on which one matched.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def _fernet() -> MultiFernet:
    """TOTP_ENCRYPTION_KEYS (newest last, like LINK_SECRET_KEYS): the newest encrypts, all
    decrypt. Any secret string works as a key: it is hashed into Fernet's 32-byte form."""
    keys = current_app.config["TOTP_ENCRYPTION_KEYS"]
    return MultiFernet([Fernet(base64.urlsafe_b64encode(hashlib.sha256(k.encode()).digest()))
                        for k in reversed(keys)])


def _seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def _is_sealed(stored: str) -> bool:
    return stored.startswith("gAAAAA")  # Fernet's version byte; a base32 secret never is


def totp_secret_of(user: StaffUser) -> str | None:
    """The user's TOTP secret in clear (stored encrypted; a secret stored before encryption
    was added reads as it is until `flask staff rotate-totp-key` seals it)."""
    stored = user.totp_secret
    if not stored or not _is_sealed(stored):
        return stored
    try:
        return _fernet().decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise StaffError("the TOTP secret does not decrypt with TOTP_ENCRYPTION_KEYS") from exc


def rotate_totp_secrets() -> int:
    """Re-encrypt every TOTP secret with the newest key (and seal any stored in clear)."""
    count = 0
    for user in db.session.execute(select(StaffUser).where(StaffUser.totp_secret.is_not(None))
                                   ).scalars():
        stored = user.totp_secret
        user.totp_secret = (_fernet().rotate(stored.encode()).decode() if _is_sealed(stored)
                            else _seal(stored))
        count += 1
    return count


def enrol_totp(user: StaffUser, secret: str, code: str, at: float | None = None) -> bool:
    """Turn on two-factor for `user` if `code` proves they stored `secret`."""
    step = _matching_step(secret, code, at)
    if step is None:
        return False
    user.totp_secret = _seal(secret)
    user.totp_last_step = step
    return True


def verify_totp(user: StaffUser, code: str, at: float | None = None) -> bool:
    """True once per code, atomically: two requests with one code, at the same moment, in
    two processes, and only one passes (a conditional UPDATE only one can win; the other
    waits for the winner's commit and then matches no row)."""
    secret = totp_secret_of(user)
    if not secret:
        return False
    step = _matching_step(secret, code, at)
    if step is None:
        return False
    won = db.session.execute(
        update(StaffUser)
        .where(StaffUser.id == user.id,
               (StaffUser.totp_last_step.is_(None)) | (StaffUser.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    ).rowcount == 1
    if won:
        db.session.refresh(user)
    return won


def reset_totp(user: StaffUser) -> None:
    user.totp_secret = None
    user.totp_last_step = None
    user.end_sessions()


# -- the step between password and code ----------------------------------------------------------
LOGIN_MARKER_MAX_AGE = timedelta(minutes=5)


def _marker_hash(marker: str) -> str:
    return hashlib.sha256(marker.encode("utf-8", "replace")).hexdigest()


def start_pending_login(user: StaffUser) -> str:
    """A random marker for the browser to hold between the password and the code steps."""
    marker = secrets.token_urlsafe(24)
    user.login_marker, user.login_marker_at = _marker_hash(marker), utcnow()
    return marker


def pending_user(marker: str | None) -> StaffUser | None:
    """The account whose password step this marker finished, while it is fresh."""
    if not isinstance(marker, str) or not marker:
        return None
    user = db.session.execute(
        select(StaffUser).where(StaffUser.login_marker == _marker_hash(marker))
    ).scalar_one_or_none()
    if user is None or not user.active or user.login_marker_at is None \
            or utcnow() - user.login_marker_at > LOGIN_MARKER_MAX_AGE:
        return None
    return user


def end_pending_login(user: StaffUser) -> None:
    user.login_marker = user.login_marker_at = None


# -- the demo --------------------------------------------------------------------------------
def ensure_demo_admin(email: str = "admin@example.com") -> tuple[StaffUser, str]:
    """The demo's admin with a fresh random password (printed once by `flask demo`)."""
    password = secrets.token_urlsafe(12)
    user = find_by_email(email)
    if user is None:
        user = create_staff(email, "admin", password)
    else:
        user.password_hash = hash_password(password)
        user.active = True
        user.role = "admin"
    return user, password
