"""stripe events: the payload waits for the worker, processed_at says when it ran

Revision ID: 0006_webhook_queue
Revises: 0005_email_claim_durable
Create Date: 2026-12-05 12:00:00

"""
from alembic import op
import sqlalchemy as sa

import cardbridge.models.types


revision = "0006_webhook_queue"
down_revision = "0005_email_claim_durable"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("processed_at", cardbridge.models.types.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_stripe_events_processed_at"), ["processed_at"],
                              unique=False)
    # Events received before this revision were processed as they arrived.
    op.execute("UPDATE stripe_events SET processed_at = received_at")


def downgrade():
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_events_processed_at"))
        batch_op.drop_column("processed_at")
        batch_op.drop_column("payload")
