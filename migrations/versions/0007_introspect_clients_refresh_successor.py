"""clients: introspect_clients; refresh tokens: the sealed successor (idempotent reuse within the grace window)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('introspect_clients', sa.JSON(), server_default='[]', nullable=False))
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('successor', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('successor')
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_column('introspect_clients')
