"""signing for legal entities (issue 16, business signing)

signing_entities: a legal entity's signing configuration (seal or person form, the seal key). signing_requests:
entity_voen (a sign-mode request on behalf of an entity), entity_form and mandate_id (fixed at the approval).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 19:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('signing_entities',
    sa.Column('voen', sa.String(length=10), nullable=False),
    sa.Column('form', sa.String(length=8), nullable=False),
    sa.Column('organization', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['stored_keys.id'], name=op.f('fk_signing_entities_key_id_stored_keys')),
    sa.PrimaryKeyConstraint('voen', name=op.f('pk_signing_entities'))
    )
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entity_voen', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('entity_form', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('mandate_id', sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('signing_requests', schema=None) as batch_op:
        batch_op.drop_column('mandate_id')
        batch_op.drop_column('entity_form')
        batch_op.drop_column('entity_voen')
    op.drop_table('signing_entities')
