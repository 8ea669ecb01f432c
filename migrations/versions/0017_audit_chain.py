"""storage: the audit trail's hash chain and signed checkpoints (issue 16, tamper-evident audit log)

audit_events gains chain, seq and chain_hash, NULL until the sealer (storage.audit_chain) gives the event its place;
(chain, seq) is unique, and a partial index lists the unsealed events in the order they are sealed.
audit_chain_heads: one row per chain (where it ends, where its retained part begins, its last checkpoint), created by
the first seal. audit_checkpoints: the chain heads signed through keys/, chained to each other.
Existing events are sealed by the first sealing pass (api.audit_sealer) (or `acar audit verify --seal`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 17:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_chain_heads',
    sa.Column('chain', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('chain_hash', sa.String(length=64), nullable=False),
    sa.Column('start_seq', sa.BigInteger(), nullable=False),
    sa.Column('start_hash', sa.String(length=64), nullable=False),
    sa.Column('checkpoints', sa.BigInteger(), nullable=False),
    sa.Column('checkpoint_hash', sa.String(length=64), nullable=False),
    sa.Column('updated_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('chain', name=op.f('pk_audit_chain_heads'))
    )
    op.create_table('audit_checkpoints',
    sa.Column('chain', sa.String(length=16), nullable=False),
    sa.Column('number', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('chain_hash', sa.String(length=64), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('checkpoint_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kid', sa.String(length=200), nullable=False),
    sa.Column('signature', sa.String(length=4000), nullable=False),
    sa.PrimaryKeyConstraint('chain', 'number', name=op.f('pk_audit_checkpoints'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('chain_hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_audit_events_chain'), ['chain', 'seq'])
    op.create_index('ix_audit_events_unsealed', 'audit_events', ['occurred_at', 'id'], unique=False,
                    sqlite_where=sa.text('seq IS NULL'), postgresql_where=sa.text('seq IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_audit_events_unsealed', table_name='audit_events',
                  sqlite_where=sa.text('seq IS NULL'), postgresql_where=sa.text('seq IS NULL'))
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_audit_events_chain'), type_='unique')
        batch_op.drop_column('chain_hash')
        batch_op.drop_column('seq')
        batch_op.drop_column('chain')
    op.drop_table('audit_checkpoints')
    op.drop_table('audit_chain_heads')
