"""failovers and drills: switches of a mirror's active location, what they left at risk,
failback conflicts, and drill records

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('failovers',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('mirror', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('from_location', sa.Text(), nullable=False),
    sa.Column('to_location', sa.Text(), nullable=False),
    sa.Column('requested_by', sa.String(length=160), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=False),
    sa.Column('heartbeat_at', sa.Double(), nullable=False),
    sa.Column('switched_at', sa.Double(), nullable=True),
    sa.Column('finished_at', sa.Double(), nullable=True),
    sa.Column('fence', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('fenced_at', sa.Double(), nullable=True),
    sa.Column('drain_timeout_s', sa.Double(), nullable=True),
    sa.Column('drained', sa.Boolean(), nullable=True),
    sa.Column('policy', sa.String(length=16), nullable=True),
    sa.Column('of_failover', sa.BigInteger(), nullable=True),
    sa.Column('old_is_target', sa.Boolean(), nullable=True),
    sa.Column('reverse_events', sa.JSON(), nullable=True),
    sa.Column('rpo_seconds', sa.Double(), nullable=True),
    sa.Column('at_risk_objects', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('at_risk_bytes', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('conflicts', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('restored', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('copied', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('deleted', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_failovers'))
    )
    op.create_index('ix_failovers_mirror', 'failovers', ['mirror', 'started_at'], unique=False)
    op.create_index('uq_failovers_running_mirror', 'failovers', ['mirror'], unique=True,
                    sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
    op.create_table('failover_objects',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('failover_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('op', sa.String(length=8), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('source_time', sa.Double(), nullable=True),
    sa.Column('target', sa.Text(), nullable=True),
    sa.Column('version_pk', sa.BigInteger(), nullable=True),
    sa.Column('other_time', sa.Double(), nullable=True),
    sa.Column('resolution', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['failover_id'], ['failovers.id'], name=op.f('fk_failover_objects_failover_id_failovers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_failover_objects'))
    )
    op.create_index('ix_failover_objects_failover', 'failover_objects', ['failover_id', 'kind', 'id'], unique=False)
    op.create_table('drills',
    sa.Column('id', Id, autoincrement=True, nullable=False),
    sa.Column('mirror', sa.String(length=64), nullable=False),
    sa.Column('requested_by', sa.String(length=160), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=False),
    sa.Column('finished_at', sa.Double(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('rpo_seconds', sa.Double(), nullable=True),
    sa.Column('rto_seconds', sa.Double(), nullable=True),
    sa.Column('results', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drills'))
    )
    op.create_index('ix_drills_mirror', 'drills', ['mirror', 'started_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_drills_mirror', table_name='drills')
    op.drop_table('drills')
    op.drop_index('ix_failover_objects_failover', table_name='failover_objects')
    op.drop_table('failover_objects')
    op.drop_index('uq_failovers_running_mirror', table_name='failovers',
                  sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
    op.drop_index('ix_failovers_mirror', table_name='failovers')
    op.drop_table('failovers')
