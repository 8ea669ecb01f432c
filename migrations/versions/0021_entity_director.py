"""an entity's director (issue 16: mandates granted by the entity's director)

legal_entities.director_person_id: the person who directs the entity (nullable; set by an officer or a system
administrator); they grant and revoke the entity's mandates from the account page while the entity is active.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 20:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0021'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('legal_entities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('director_person_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_legal_entities_director_person_id'), ['director_person_id'],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_legal_entities_director_person_id_persons'), 'persons',
                                    ['director_person_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('legal_entities', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_legal_entities_director_person_id_persons'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_legal_entities_director_person_id'))
        batch_op.drop_column('director_person_id')
