"""dead letter resolution: each dead letter is pending until an operator re-drives it (its
versions recorded) or discards it (kept for audit), with when and by whom

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 04:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='pending', nullable=False))
        batch_op.add_column(sa.Column('resolved_at', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('resolved_by', sa.String(length=256), nullable=True))
        batch_op.create_index('ix_dead_letters_status', ['status', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index('ix_dead_letters_status')
        batch_op.drop_column('resolved_by')
        batch_op.drop_column('resolved_at')
        batch_op.drop_column('status')
