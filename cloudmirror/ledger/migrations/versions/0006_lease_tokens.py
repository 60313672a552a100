"""lease tokens: every claim of a replication gets a new fencing token, so a worker whose
lease lapsed (starved of CPU, paused) can no longer renew, finish or record anything for a
claim that was handed to another worker since

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('replications', sa.Column('lease_token', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('replications', schema=None) as batch_op:
        batch_op.drop_column('lease_token')
