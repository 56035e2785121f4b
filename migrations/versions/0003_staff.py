"""staff accounts and API tokens

Revision ID: 0003_staff
Revises: 0002_import_runs
Create Date: 2026-11-25 10:00:00

"""
from alembic import op
import sqlalchemy as sa

import cardbridge.models.types


revision = "0003_staff"
down_revision = "0002_import_runs"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "staff_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", sa.String(length=64), nullable=True),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("session_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_users")),
        sa.UniqueConstraint("email", name=op.f("uq_staff_users_email")),
        sa.UniqueConstraint("session_key", name=op.f("uq_staff_users_session_key")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )


def downgrade():
    op.drop_table("api_tokens")
    op.drop_table("staff_users")
