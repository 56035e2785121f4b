"""email claims: the worker commits every outcome durably, so the flushed-commit bound and the
machine's boot it was measured against go

Revision ID: 0008_simple_worker
Revises: 0007_staff_signin
Create Date: 2026-12-05 13:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0008_simple_worker"
down_revision = "0007_staff_signin"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("email_claims", schema=None) as batch_op:
        batch_op.drop_column("boot_id")
        batch_op.drop_column("durable_through")


def downgrade():
    with op.batch_alter_table("email_claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("durable_through", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("boot_id", sa.String(length=36), nullable=True))
