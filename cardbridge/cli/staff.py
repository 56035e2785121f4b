"""`flask staff …` and `flask api-token …`: the same service calls as the console's admin pages."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.models import ROLES, StaffUser
from cardbridge.staff import accounts as staff_service
from cardbridge.staff import api_tokens, audit

staff_cli = AppGroup("staff", help="Manage support console accounts.")
api_token_cli = AppGroup("api-token", help="Manage /api/v1 bearer tokens.")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise click.ClickException("no password on standard input")
        return password
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@staff_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="admin or agent.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
def staff_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a staff account."""
    if staff_service.find_by_email(email) is not None:
        raise click.ClickException(f"a staff account for {staff_service.normalize_email(email)} "
                                   "already exists")
    password = _read_password(password_stdin)
    try:
        user = staff_service.create_staff(email, role, password)
    except staff_service.StaffError as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record("cli", "staff.created", user.email, details={"role": role})
    db.session.commit()
    click.echo(f"created {user.role} {user.email}")


@staff_cli.command("disable")
@click.argument("email")
def staff_disable(email: str) -> None:
    """Disable an account; its sessions end at once."""
    user = staff_service.find_by_email(email)
    if user is None:
        raise click.ClickException(f"no staff account for {staff_service.normalize_email(email)}")
    staff_service.set_active(user, False)
    audit.record("cli", "staff.disabled", user.email)
    db.session.commit()
    click.echo(f"disabled {user.email}; their sessions have ended")


@staff_cli.command("rotate-totp-key")
def staff_rotate_totp_key() -> None:
    """Re-encrypt every TOTP secret with the newest TOTP_ENCRYPTION_KEYS key."""
    try:
        count = staff_service.rotate_totp_secrets()
    except Exception as exc:  # a key missing from TOTP_ENCRYPTION_KEYS: nothing is changed
        db.session.rollback()
        raise click.ClickException(
            "a TOTP secret does not decrypt with TOTP_ENCRYPTION_KEYS; keep the old key "
            f"listed until the rotation has run ({type(exc).__name__})") from None
    audit.record("cli", "staff.totp_key_rotated", None, details={"secrets": count})
    db.session.commit()
    click.echo(f"re-encrypted {count} TOTP secret{'s' if count != 1 else ''} "
               "with the newest key")


@staff_cli.command("list")
def staff_list() -> None:
    """List staff accounts."""

    for user in db.session.execute(select(StaffUser).order_by(StaffUser.email)).scalars():
        state = "active" if user.active else "disabled"
        click.echo(f"{user.email}\t{user.role}\t{state}\t2fa {'on' if user.has_totp else 'off'}")


@api_token_cli.command("create")
@click.option("--name", required=True, help="What uses the token, e.g. helpdesk.")
def token_create(name: str) -> None:
    """Print a new API token (shown once; only its hash is stored)."""
    try:
        made = api_tokens.create_token(name, created_by="cli")
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record("cli", "api_token.created", made.token.name, details={"prefix": made.token.prefix})
    db.session.commit()
    click.echo(f"token {made.token.name!r} created; it is shown only once:", err=True)
    click.echo(made.secret)


@api_token_cli.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke a token by name; calls with it get 401 from now on."""
    token = api_tokens.find_by_name(name)
    if token is None:
        raise click.ClickException(f"no API token named {name!r}")
    if not api_tokens.revoke_token(token):
        raise click.ClickException(f"API token {name!r} was already revoked")
    audit.record("cli", "api_token.revoked", token.name)
    db.session.commit()
    click.echo(f"revoked {token.name}")


@api_token_cli.command("list")
def token_list() -> None:
    """List tokens (names and prefixes only)."""
    for token in api_tokens.all_tokens():
        state = "active" if token.active else f"revoked {token.revoked_at:%Y-%m-%d}"
        used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
        click.echo(f"{token.name}\t{token.prefix}…\t{state}\tlast used {used}")
