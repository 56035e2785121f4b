"""payment_methods: the same card as one already on file (issue 17, point 2)

Revision ID: 0010_same_card
Revises: 0009_subscriptions
Create Date: 2026-12-05 19:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010_same_card'
down_revision = '0009_subscriptions'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('payment_methods', schema=None) as batch_op:
        batch_op.add_column(sa.Column('same_card_as', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('same_card_of', sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table('payment_methods', schema=None) as batch_op:
        batch_op.drop_column('same_card_of')
        batch_op.drop_column('same_card_as')
