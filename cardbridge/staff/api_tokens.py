"""Bearer tokens for /api/v1: made once, stored as a SHA-256 hash, named and revocable."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import ApiToken
from cardbridge.models.types import utcnow

TOKEN_PREFIX = "cbk_"
NAME_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}")
MAX_TOKEN_LENGTH = 128
# Writing last_used_at on every call would turn each API read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(ValueError):
    """A token change that cannot be made; the message says why, in one line."""


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # shown once, never stored


def hash_secret(secret: str) -> str:
    # A random 256-bit secret needs no slow hash: SHA-256 cannot be reversed or guessed.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(name: str, *, created_by: str) -> NewToken:
    name = (name or "").strip()
    if not NAME_SHAPE.fullmatch(name):
        raise TokenError("a token name is 1–100 letters, digits, spaces, dots, dashes or _")
    if find_by_name(name) is not None:
        raise TokenError(f"a token named {name!r} already exists")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=hash_secret(secret), prefix=secret[:10],
                     created_by=created_by[:255])
    db.session.add(token)
    db.session.flush()
    return NewToken(token=token, secret=secret)


def find_by_name(name: str) -> ApiToken | None:
    return db.session.execute(
        select(ApiToken).where(ApiToken.name == (name or "").strip())
    ).scalar_one_or_none()


def revoke_token(token: ApiToken, now: datetime | None = None) -> bool:
    """False when it was revoked already."""
    if token.revoked_at is not None:
        return False
    token.revoked_at = now or utcnow()
    return True


def lookup(secret: str) -> ApiToken | None:
    """The token row for a presented secret (revoked ones included: the caller says why)."""
    if not secret or len(secret) > MAX_TOKEN_LENGTH or not secret.startswith(TOKEN_PREFIX):
        return None
    return db.session.execute(
        select(ApiToken).where(ApiToken.token_hash == hash_secret(secret))
    ).scalar_one_or_none()


def touch(token: ApiToken, now: datetime | None = None) -> bool:
    """Note the token was used; True when the row changed and needs a commit."""
    now = now or utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        return True
    return False


def all_tokens() -> list[ApiToken]:
    return list(db.session.execute(
        select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.name)
    ).scalars())
