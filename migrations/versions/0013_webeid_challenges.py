"""idp: Web eID authentication challenges (issue 15, ID-card login)

webeid_challenges: one row per nonce issued to a pending authorization request, keyed by the nonce's SHA-256,
consumed (used_at) in one UPDATE ... RETURNING by the login that presents it (idp.sql.card_login); expired rows
are purged by housekeeping.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('webeid_challenges',
    sa.Column('nonce_hash', sa.String(length=64), nullable=False),
    sa.Column('pending_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', storage.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('nonce_hash', name=op.f('pk_webeid_challenges'))
    )
    with op.batch_alter_table('webeid_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webeid_challenges_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webeid_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webeid_challenges_expires_at'))
    op.drop_table('webeid_challenges')
