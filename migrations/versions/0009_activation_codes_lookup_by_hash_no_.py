"""activation codes: found by a hash of the whole code, no attempt counter; outstanding codes revoked

The old format "XXXX-XXXX-XXXX-XXXX" began with the row's public id (20 bits) and counted wrong secrets per code,
so anyone could find live ids and lock a citizen's code. The new format (idp.sql.enrollment) has no public part:
a row is found by `lookup`, 64 bits of SHA-256 over the whole 100-bit code.

Outstanding codes are revoked, not kept verifiable: keeping the old format alive would keep its public id (the
oracle this revision removes) for as long as such a code lives, and a code costs the registration office one
command to issue again (`acar enroll-code`, or POST /admin/enrollment-codes). Used and expired rows stay for the
support window (idp.sql.passkeys_store.ACTIVATION_CODES_KEPT); their lookup is NULL. Enrollments opened with a
revoked code can no longer complete (EnrollmentService.current).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 07:26:50.159302
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

codes = sa.table(
    'activation_codes',
    sa.column('lookup', sa.String(16)),
    sa.column('used_at', storage.base.UTCDateTime(timezone=True)),
    sa.column('revoked_at', storage.base.UTCDateTime(timezone=True)),
)


def _revoke(*where: sa.ColumnElement[bool]) -> None:
    op.execute(codes.update().where(codes.c.used_at.is_(None), codes.c.revoked_at.is_(None), *where)
               .values(revoked_at=dt.datetime.now(dt.UTC).replace(microsecond=0)))


def upgrade() -> None:
    _revoke()  # old-format codes: see the module docstring
    with op.batch_alter_table('activation_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lookup', sa.String(length=16), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_activation_codes_lookup'), ['lookup'])
        batch_op.drop_column('attempts')
        batch_op.drop_column('locked_at')
        batch_op.drop_column('max_attempts')


def downgrade() -> None:
    _revoke(codes.c.lookup.is_not(None))  # the old code cannot verify new-format codes
    with op.batch_alter_table('activation_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_attempts', sa.Integer(), nullable=False, server_default='5'))
        batch_op.add_column(sa.Column('locked_at', storage.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.drop_constraint(batch_op.f('uq_activation_codes_lookup'), type_='unique')
        batch_op.drop_column('lookup')
