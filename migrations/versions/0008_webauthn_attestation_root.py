"""webauthn credentials: the attestation root that made them high

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 07:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing credentials get NULL: none was ever attested against a configured root (no roots could be
    # configured before), so they log in at substantial at most (docs/assurance.md).
    with op.batch_alter_table('webauthn_credentials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attestation_root', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webauthn_credentials', schema=None) as batch_op:
        batch_op.drop_column('attestation_root')
