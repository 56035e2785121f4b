"""`flask staff …` and `flask api-token …`."""

from __future__ import annotations

from sqlalchemy import select

from cardbridge.cli.demo_data import seed
from cardbridge.extensions import db
from cardbridge.models import ApiToken, AuditEvent, StaffUser
from cardbridge.staff import accounts as staff_service
from cardbridge.staff import api_tokens
from tests.support.staff_helpers import PASSWORD


def test_staff_create_reads_the_password_from_stdin(app, runner):
    result = runner.invoke(args=["staff", "create", "Ops@Example.com", "--role", "admin",
                                 "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "created admin ops@example.com"
    with app.app_context():
        user = staff_service.authenticate("ops@example.com", PASSWORD)
        assert user is not None and user.role == "admin"
        row = db.session.execute(select(AuditEvent)).scalar_one()
        assert (row.actor, row.action, row.target) == ("cli", "staff.created", "ops@example.com")


def test_staff_create_prompts_twice_without_stdin_flag(runner):
    result = runner.invoke(args=["staff", "create", "p@example.com", "--role", "agent"],
                           input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "created agent p@example.com" in result.output


def test_staff_create_refuses_bad_input_in_one_line(runner):
    ok = runner.invoke(args=["staff", "create", "a@example.com", "--role", "agent",
                             "--password-stdin"], input=PASSWORD)
    assert ok.exit_code == 0
    cases = [
        (["a@example.com", "--role", "agent"], PASSWORD, "already exists"),
        (["b@example.com", "--role", "owner"], PASSWORD, "Invalid value for '--role'"),
        (["c@example.com", "--role", "agent"], "short", "at least 12 characters"),
        (["not-an-email", "--role", "agent"], PASSWORD, "is not an email address"),
        (["d@example.com", "--role", "agent"], "", "no password on standard input"),
    ]
    for args, password, message in cases:
        result = runner.invoke(args=["staff", "create", *args, "--password-stdin"],
                               input=password + "\n")
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)


def test_staff_disable_ends_the_account(app, runner, agent, agent_client):
    result = runner.invoke(args=["staff", "disable", "AGENT@example.com"])
    assert result.exit_code == 0, result.output
    assert agent_client.get("/support/").status_code == 303
    with app.app_context():
        assert db.session.get(StaffUser, agent.id).active is False
    assert runner.invoke(args=["staff", "disable", "nobody@example.com"]).exit_code != 0


def test_api_token_create_prints_the_secret_once_and_stores_only_its_hash(app, runner):
    result = runner.invoke(args=["api-token", "create", "--name", "helpdesk"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("cbk_") and len(secret) > 40
    with app.app_context():
        token = db.session.execute(select(ApiToken)).scalar_one()
        assert token.token_hash == api_tokens.hash_secret(secret)
        assert secret not in (token.token_hash, token.prefix, token.name)
        assert token.prefix == secret[:10]
    again = runner.invoke(args=["api-token", "create", "--name", "helpdesk"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_api_token_revoke(app, runner, client):
    secret = runner.invoke(args=["api-token", "create", "--name", "bot"]).stdout.split()[-1]
    assert runner.invoke(args=["api-token", "revoke", "bot"]).exit_code == 0
    response = client.get("/api/v1/customers/x", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401 and response.json["error"] == "token_revoked"
    assert "already revoked" in runner.invoke(args=["api-token", "revoke", "bot"]).output
    assert runner.invoke(args=["api-token", "revoke", "nope"]).exit_code != 0
    listing = runner.invoke(args=["api-token", "list"]).output
    assert "bot" in listing and "revoked" in listing and secret not in listing


def test_demo_prints_a_working_staff_login(app, client):
    with app.app_context():
        lines = seed()
    [line] = [x for x in lines if x.startswith("staff login: ")]
    email, password = line.removeprefix("staff login: ").split("  ")[0].split(" / ")
    assert "/support/login" in line
    from tests.support.staff_helpers import Staff, sign_in

    assert sign_in(client, Staff(0, email, password, "admin")).status_code == 303
    assert client.get("/support/admin/staff").status_code == 200
