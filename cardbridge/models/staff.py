"""Staff accounts of the support console and the hashed bearer tokens of the JSON API."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from cardbridge.extensions import db
from cardbridge.models.types import UTCDateTime, utcnow

ROLES = ("admin", "agent")


def new_session_key() -> str:
    return secrets.token_urlsafe(24)


class StaffUser(db.Model):
    """A person who logs in to /support. Flask-Login's user object too."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10), default="agent")
    active: Mapped[bool] = mapped_column(default=True)
    # The TOTP secret once enrolment is confirmed, encrypted (Fernet, TOTP_ENCRYPTION_KEYS;
    # read it with services.staff.totp_secret_of); None means no second factor yet.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    # The last accepted TOTP time step: a code is good once, never replayed.
    totp_last_step: Mapped[int | None]
    # Flask-Login's "alternative id": sessions carry this, not the row id, so changing it
    # (disable, sign out, password or role change) ends every session of this person at once.
    session_key: Mapped[str] = mapped_column(String(64), unique=True, default=new_session_key)
    # Between the password and the code step: the SHA-256 of a random marker the browser holds
    # (never the session key), single use, dated.
    login_marker: Mapped[str | None] = mapped_column(String(64), unique=True)
    login_marker_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # -- Flask-Login protocol ------------------------------------------------------------------
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return self.session_key

    # -------------------------------------------------------------------------------------------
    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def has_totp(self) -> bool:
        return bool(self.totp_secret)

    def end_sessions(self) -> None:
        """Every cookie that names the old key stops working on its next request."""
        self.session_key = new_session_key()

    def __repr__(self) -> str:
        return f"<StaffUser {self.email} {self.role}{'' if self.active else ' disabled'}>"


class ApiToken(db.Model):
    """A named bearer token for /api/v1. Only a SHA-256 of the secret is kept, and a prefix
    that lets people tell tokens apart without revealing them."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def __repr__(self) -> str:
        return f"<ApiToken {self.name} {self.prefix}…{'' if self.active else ' revoked'}>"
