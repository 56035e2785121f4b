"""email claims: the bound as of the last commit flushed to disk, and the worker's boot

Revision ID: 0005_email_claim_durable
Revises: 0004_emails
Create Date: 2026-11-26 12:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "0005_email_claim_durable"
down_revision = "0004_emails"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("email_claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("durable_through", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("boot_id", sa.String(length=36), nullable=True))


def downgrade():
    with op.batch_alter_table("email_claims", schema=None) as batch_op:
        batch_op.drop_column("boot_id")
        batch_op.drop_column("durable_through")
