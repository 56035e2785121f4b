"""email outbox, worker claims, waves, bounces, send throttle

Revision ID: 0004_emails
Revises: 0003_staff
Create Date: 2026-11-25 12:00:00

"""
from alembic import op
import sqlalchemy as sa

import cardbridge.models.types


revision = "0004_emails"
down_revision = "0003_staff"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "waves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("status_filter", sa.String(length=20), nullable=False),
        sa.Column("limit_count", sa.Integer(), nullable=True),
        sa.Column("percent", sa.Integer(), nullable=True),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("rate_per_minute", sa.Integer(), nullable=True),
        sa.Column("scheduled_for", cardbridge.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waves")),
    )
    op.create_table(
        "email_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("in_flight_through", sa.Integer(), nullable=True),
        sa.Column("claimed_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_claims")),
        sa.UniqueConstraint("token", name=op.f("uq_email_claims_token")),
    )
    with op.batch_alter_table("email_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_email_claims_heartbeat_at"), ["heartbeat_at"],
                              unique=False)

    op.create_table(
        "email_bounces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_bounces")),
        sa.UniqueConstraint("address", name=op.f("uq_email_bounces_address")),
    )
    op.create_table(
        "send_buckets",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("next_free_at", sa.Float(), nullable=False),
        sa.Column("updated_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_send_buckets")),
    )
    op.create_table(
        "emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("wave_id", sa.Integer(), nullable=True),
        sa.Column("payment_method_id", sa.Integer(), nullable=True),
        sa.Column("series_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=True),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("throttled", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("dedupe_key", sa.String(length=120), nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("created_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", cardbridge.models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_emails_customer_id_customers"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["link_id"], ["links.id"],
                                name=op.f("fk_emails_link_id_links"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["wave_id"], ["waves.id"],
                                name=op.f("fk_emails_wave_id_waves"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["payment_method_id"], ["payment_methods.id"],
                                name=op.f("fk_emails_payment_method_id_payment_methods"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["series_id"], ["emails.id"],
                                name=op.f("fk_emails_series_id_emails"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emails")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_emails_dedupe_key")),
    )
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.create_index("ix_emails_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_emails_customer_kind", ["customer_id", "kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_emails_wave_id"), ["wave_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_emails_series_id"), ["series_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_emails_claim_token"), ["claim_token"], unique=False)
        batch_op.create_index(batch_op.f("ix_emails_provider_message_id"),
                              ["provider_message_id"], unique=False)


def downgrade():
    op.drop_table("emails")
    op.drop_table("send_buckets")
    op.drop_table("email_bounces")
    op.drop_table("email_claims")
    op.drop_table("waves")
