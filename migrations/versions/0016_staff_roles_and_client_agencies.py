"""staff roles and client agencies (issue 16, roles)

staff_roles: a person's staff role (registration_officer, agency_admin of one agency by VÖEN, system_admin), held
until revoked (idp.sql.roles). oauth_clients.agency_voen: the agency that owns a client, whose agency
administrators manage it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 19:39:12.870630
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('staff_roles',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('agency_voen', sa.String(length=10), nullable=True),
    sa.Column('granted_by', sa.String(length=200), nullable=False),
    sa.Column('granted_at', storage.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', storage.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=200), nullable=True),
    sa.CheckConstraint("(role = 'agency_admin') = (agency_voen IS NOT NULL)", name=op.f('ck_staff_roles_agency')),
    sa.CheckConstraint("role IN ('registration_officer', 'agency_admin', 'system_admin')", name=op.f('ck_staff_roles_role')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_staff_roles_person_id_persons'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_roles'))
    )
    with op.batch_alter_table('staff_roles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_roles_person_id'), ['person_id'], unique=False)

    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agency_voen', sa.String(length=10), nullable=True))
        batch_op.create_index(batch_op.f('ix_oauth_clients_agency_voen'), ['agency_voen'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('oauth_clients', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_clients_agency_voen'))
        batch_op.drop_column('agency_voen')

    with op.batch_alter_table('staff_roles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_roles_person_id'))

    op.drop_table('staff_roles')
