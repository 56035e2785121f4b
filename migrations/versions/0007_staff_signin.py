"""staff sign-in: room for encrypted TOTP secrets, a random marker between the two steps

Revision ID: 0007_staff_signin
Revises: 0006_webhook_queue
Create Date: 2026-12-05 12:30:00

Secrets stored in clear before this revision keep working and are sealed by
`flask staff rotate-totp-key` (a migration has no business holding the key).
"""
from alembic import op
import sqlalchemy as sa

import cardbridge.models.types


revision = "0007_staff_signin"
down_revision = "0006_webhook_queue"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.alter_column("totp_secret", existing_type=sa.String(length=64),
                              type_=sa.String(length=255), existing_nullable=True)
        batch_op.add_column(sa.Column("login_marker", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("login_marker_at", cardbridge.models.types.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_staff_users_login_marker"),
                                          ["login_marker"])


def downgrade():
    with op.batch_alter_table("staff_users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_staff_users_login_marker"), type_="unique")
        batch_op.drop_column("login_marker_at")
        batch_op.drop_column("login_marker")
        batch_op.alter_column("totp_secret", existing_type=sa.String(length=255),
                              type_=sa.String(length=64), existing_nullable=True)
