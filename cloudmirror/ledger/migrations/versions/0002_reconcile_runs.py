"""reconcile runs: listing comparisons, their resume position and findings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 23:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reconcile_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('mirror', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=1024), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=False),
    sa.Column('finished_at', sa.Double(), nullable=True),
    sa.Column('position', sa.Text(), nullable=True),
    sa.Column('listed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('missing', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('stale', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('extra', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('missed_events', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconcile_runs'))
    )
    op.create_index('ix_reconcile_runs_mirror', 'reconcile_runs', ['mirror', 'target', 'started_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_reconcile_runs_mirror', table_name='reconcile_runs')
    op.drop_table('reconcile_runs')
