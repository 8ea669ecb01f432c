"""access records and client purpose (issue 16, the citizen's account page)

access_records: every release of data about a person to a client (ID/access token in a user flow, userinfo,
introspection of the person's token), written in the release's own unit of work. oauth_clients.purpose: the
client's stated purpose, shown in the access record.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 19:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('access_records',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('claims', sa.JSON(), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('purpose', sa.String(length=500), nullable=True),
    sa.Column('occurred_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('token', 'userinfo', 'introspection')", name=op.f('ck_access_records_kind')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_access_records_person_id_persons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_records'))
    )
    with op.batch_alter_table('access_records', schema=None) as batch_op:
        batch_op.create_index('ix_access_records_person_time', ['person_id', 'occurred_at'], unique=False)

    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_column('purpose')

    with op.batch_alter_table('access_records', schema=None) as batch_op:
        batch_op.drop_index('ix_access_records_person_time')

    op.drop_table('access_records')
