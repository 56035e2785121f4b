"""Helpers shared by the console, API and browser tests: staff accounts, signing in, CSRF posts."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyotp

from cardbridge.extensions import db
from cardbridge.models import StaffUser
from cardbridge.staff import accounts as staff_service
from tests.conftest import csrf_from

PASSWORD = "correct horse battery staple"
# A cheaper scrypt (N=2**10) keeps the suite fast; one test pins the production default.
FAST_HASH = "scrypt:1024:8:1"


@dataclass(frozen=True)
class Staff:
    id: int
    email: str
    password: str
    role: str
    totp_secret: str | None = None

    def code(self, offset_steps: int = 0) -> str:
        totp = pyotp.TOTP(self.totp_secret)
        return totp.at(time.time() + offset_steps * totp.interval)


def create_staff(app, email: str, role: str = "agent", *, password: str = PASSWORD,
                 totp: bool = False, active: bool = True) -> Staff:
    with app.app_context():
        user = staff_service.create_staff(email, role, password)
        user.active = active
        secret = None
        if totp:
            secret = pyotp.random_base32()
            user.totp_secret = secret
        db.session.commit()
        made = Staff(user.id, user.email, password, role, secret)
        db.session.remove()
    return made


def staff_row(app, staff_id: int) -> StaffUser:
    with app.app_context():
        user = db.session.get(StaffUser, staff_id)
        db.session.expunge(user)
    return user


def token_of(client, path: str = "/support/login") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def post(client, path: str, data: dict | None = None, *, token_page: str = "/support/account",
         **kwargs):
    """POST with the CSRF token of this client's session (read from a console page)."""
    body = dict(data or {})
    body["csrf_token"] = token_of(client, token_page)
    return client.post(path, data=body, **kwargs)


def sign_in(client, staff: Staff, *, next_url: str | None = None, code: str | None = None):
    """Password step (and the code step when the account has TOTP); returns the last response."""
    data = {"email": staff.email, "password": staff.password, "csrf_token": token_of(client)}
    if next_url is not None:
        data["next"] = next_url
    response = client.post("/support/login", data=data)
    if staff.totp_secret and response.status_code == 303 \
            and response.headers["Location"].endswith("/support/login/code"):
        response = client.post("/support/login/code", data={
            "code": code or staff.code(),
            "csrf_token": token_of(client, "/support/login/code")})
    return response
