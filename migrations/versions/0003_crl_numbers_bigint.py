"""crls.number as BIGINT: cRLNumbers of CRLs signed offline and imported may exceed 2^31

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('crls', schema=None) as batch_op:
        batch_op.alter_column('number', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('crls', schema=None) as batch_op:
        batch_op.alter_column('number', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
