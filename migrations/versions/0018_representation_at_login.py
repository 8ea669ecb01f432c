"""representation at login (issue 16)

grants.represents: the entity the person chose to act for in an authorization (the mandate's id, the entity's
VÖEN and name, the powers; idp.core.interfaces.Representation.as_json), NULL when they act as themselves.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 19:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('represents', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('grants', schema=None) as batch_op:
        batch_op.drop_column('represents')
