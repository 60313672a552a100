"""mirror specs: the mirrors the services run, seeded from the config file and changed
through the REST API, with their active location

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 01:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mirror_specs',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('seeded_spec', sa.JSON(), nullable=True),
    sa.Column('origin', sa.String(length=8), nullable=False),
    sa.Column('active', sa.Text(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.Column('deleted_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_mirror_specs'))
    )


def downgrade() -> None:
    op.drop_table('mirror_specs')
