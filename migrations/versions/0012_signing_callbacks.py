"""signing: completion callbacks of signing requests (issue 13, "On completion, a callback")

signing_callbacks: one row per request that named a callback URL, written in the transaction that moved the request
to its final state (completed, failed, rejected, expired), with the event's claims; the signed JWT (`body`) is kept
once signed, so every attempt sends the same bytes. See signing.sql.models and signing.core.callbacks.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('signing_callbacks',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('request_id', sa.String(length=32), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('claims', sa.JSON(), nullable=False),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('leased_by', sa.String(length=64), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', storage.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['signing_requests.id'],
                            name=op.f('fk_signing_callbacks_request_id_signing_requests'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_callbacks')),
    sa.UniqueConstraint('request_id', name=op.f('uq_signing_callbacks_request_id'))
    )
    with op.batch_alter_table('signing_callbacks', schema=None) as batch_op:
        batch_op.create_index('ix_signing_callbacks_due', ['state', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('signing_callbacks', schema=None) as batch_op:
        batch_op.drop_index('ix_signing_callbacks_due')
    op.drop_table('signing_callbacks')
