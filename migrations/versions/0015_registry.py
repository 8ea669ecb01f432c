"""registry: person status and Cyrillic names, legal entities, mandates (issue 16, the registry)

persons: status (active / suspended / deceased, existing rows active; only active persons log in) and the
optional Cyrillic-script names. legal_entities: one row per VÖEN (keys.identifiers.check_voen). mandates: a
person's powers to act for an entity over a period, granted by an officer or the entity's director, revocable
(idp.sql.registry).

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06 17:33:39.501882
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0015'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('legal_entities',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('voen', sa.String(length=10), nullable=False),
    sa.Column('name', sa.String(length=500), nullable=False),
    sa.Column('legal_form', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'liquidated', 'suspended')", name=op.f('ck_legal_entities_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legal_entities')),
    sa.UniqueConstraint('voen', name=op.f('uq_legal_entities_voen'))
    )
    op.create_table('mandates',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('entity_id', sa.String(length=36), nullable=False),
    sa.Column('powers', sa.JSON(), nullable=False),
    sa.Column('valid_from', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_to', storage.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('granted_by', sa.String(length=200), nullable=False),
    sa.Column('granted_via', sa.String(length=16), nullable=False),
    sa.Column('created_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', storage.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=200), nullable=True),
    sa.CheckConstraint("granted_via IN ('officer', 'director')", name=op.f('ck_mandates_granted_via')),
    sa.CheckConstraint('valid_to IS NULL OR valid_to > valid_from', name=op.f('ck_mandates_period')),
    sa.ForeignKeyConstraint(['entity_id'], ['legal_entities.id'], name=op.f('fk_mandates_entity_id_legal_entities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_mandates_person_id_persons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mandates'))
    )
    with op.batch_alter_table('mandates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mandates_entity_id'), ['entity_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_mandates_person_id'), ['person_id'], unique=False)

    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='active', nullable=False))
        batch_op.add_column(sa.Column('given_name_cyrillic', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('family_name_cyrillic', sa.String(length=200), nullable=True))
        batch_op.create_check_constraint(op.f('ck_persons_status'), "status IN ('active', 'suspended', 'deceased')")



def downgrade() -> None:
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_persons_status'), type_='check')
        batch_op.drop_column('family_name_cyrillic')
        batch_op.drop_column('given_name_cyrillic')
        batch_op.drop_column('status')

    with op.batch_alter_table('mandates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mandates_person_id'))
        batch_op.drop_index(batch_op.f('ix_mandates_entity_id'))

    op.drop_table('mandates')
    op.drop_table('legal_entities')
