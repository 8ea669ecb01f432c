"""`TokenStore` on the database driver (storage.direct): the token endpoint's and the token-consuming endpoints'
unit of work, the hot path of every relying party (bench/bench_code_exchange.py, docs/performance.md).

Each statement is a Core statement on the models, compiled once per dialect; the same rows the ORM reads.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from idp.errors import InvalidIdentifier
from idp.interfaces import CodeRecord, GrantRecord, RefreshRecord, Subject
from idp.models import AuthorizationCode, ClientAssertionJti, Grant, Person, RefreshToken, RevokedToken
from storage.audit import INSERT_AUDIT, audit_row
from storage.base import utcnow
from storage.direct import Transaction, table

_JTI_RE = re.compile(r"^[A-Za-z0-9_.-]{8,64}$")
_codes, _grants, _refresh = table(AuthorizationCode), table(Grant), table(RefreshToken)
_persons, _revoked, _assertions = table(Person), table(RevokedToken), table(ClientAssertionJti)

PERSON = select(_persons.c.id, _persons.c.fin, _persons.c.given_name, _persons.c.family_name,
                _persons.c.birthdate).where(_persons.c.id == bindparam("id"))
CODE = select(_codes.c.code_hash, _codes.c.grant_id, _codes.c.client_id, _codes.c.redirect_uri, _codes.c.nonce,
              _codes.c.code_challenge, _codes.c.expires_at, _codes.c.consumed_at).where(
    _codes.c.code_hash == bindparam("code_hash"))
_CODE_COLUMNS = CODE.selected_columns
_GRANT_COLUMNS = (_grants.c.id, _grants.c.client_id, _grants.c.person_id, _grants.c.session_sid, _grants.c.sub,
                  _grants.c.scope, _grants.c.claims, _grants.c.acr, _grants.c.amr, _grants.c.auth_time,
                  _grants.c.expires_at, _grants.c.revoked_at)
GRANT = select(*_GRANT_COLUMNS).where(_grants.c.id == bindparam("id"))
_UNUSED_CODE = (_codes.c.code_hash == bindparam("code_hash"), _codes.c.consumed_at.is_(None))
REDEEM_CODE = update(_codes).where(*_UNUSED_CODE).values(consumed_at=bindparam("now")).returning(*_CODE_COLUMNS)
REDEEM_CODE_WITH_GRANT = update(_codes).where(*_UNUSED_CODE, _grants.c.id == _codes.c.grant_id) \
    .values(consumed_at=bindparam("now")).returning(*_CODE_COLUMNS, *_GRANT_COLUMNS)
"""PostgreSQL: the code consumed and its grant read in one round trip (UPDATE ... FROM grants RETURNING); SQLite
cannot return the FROM table's columns, and needs no saving of round trips."""
REVOKE_GRANT = update(_grants).where(_grants.c.id == bindparam("id"), _grants.c.revoked_at.is_(None)) \
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
INSERT_REFRESH = insert(_refresh)
REFRESH = select(_refresh.c.token_hash, _refresh.c.grant_id, _refresh.c.client_id, _refresh.c.expires_at,
                 _refresh.c.used_at).where(_refresh.c.token_hash == bindparam("token_hash"))
USE_REFRESH = update(_refresh).where(_refresh.c.token_hash == bindparam("token_hash"), _refresh.c.used_at.is_(None)) \
    .values(used_at=bindparam("now"))
JTI_REVOKED = select(_revoked.c.jti).where(_revoked.c.jti == bindparam("jti"))
REVOKE_JTI = {  # ON CONFLICT DO NOTHING: two revocations at once both succeed, one of them writes
    "postgresql": pg_insert(_revoked).on_conflict_do_nothing(index_elements=["jti"]),
    "sqlite": sqlite_insert(_revoked).on_conflict_do_nothing(index_elements=["jti"]),
}
REMEMBER_ASSERTION = {
    "postgresql": pg_insert(_assertions).on_conflict_do_nothing(index_elements=["client_id", "jti"]),
    "sqlite": sqlite_insert(_assertions).on_conflict_do_nothing(index_elements=["client_id", "jti"]),
}


def _grant(row: tuple[Any, ...]) -> GrantRecord:
    (id_, client_id, person_id, sid, sub, scope, claims, acr, amr, auth_time, expires_at, revoked_at) = row
    return GrantRecord(id=id_, client_id=client_id, person_id=person_id, session_sid=sid, sub=sub, scope=scope,
                       claims=claims, acr=acr, amr=tuple(amr or ()), auth_time=auth_time, expires_at=expires_at,
                       revoked_at=revoked_at)


async def remember_assertion(tx: Transaction, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
    """Record a client assertion's jti (RFC 7523 section 3, item 7); False when it was seen before."""
    return await tx.execute(REMEMBER_ASSERTION[tx.dialect_name], client_id=client_id, jti=jti[:255],
                            expires_at=expires_at) == 1


class DirectTokenStore:
    """`TokenStore` on one direct unit of work (storage.direct.Transaction); audit events are written with it."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self.tx = tx
        self._request_id = request_id

    async def subject(self, person_id: str) -> Subject | None:
        row = await self.tx.one(PERSON, id=person_id)
        return Subject(*row) if row is not None else None

    async def get_code(self, code_hash: str) -> CodeRecord | None:
        row = await self.tx.one(CODE, code_hash=code_hash)
        return CodeRecord(*row) if row is not None else None

    async def redeem_code(self, code_hash: str, now: dt.datetime) -> tuple[CodeRecord, GrantRecord | None] | None:
        if self.tx.dialect_name == "postgresql":
            row = await self.tx.one(REDEEM_CODE_WITH_GRANT, code_hash=code_hash, now=now)
            if row is None:
                return None
            width = len(_CODE_COLUMNS)
            return CodeRecord(*row[:width]), _grant(row[width:])
        row = await self.tx.one(REDEEM_CODE, code_hash=code_hash, now=now)
        if row is None:
            return None
        code = CodeRecord(*row)
        return code, await self.get_grant(code.grant_id)

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        if len(grant_id) > 32:
            return None
        row = await self.tx.one(GRANT, id=grant_id)
        return _grant(row) if row is not None else None

    async def revoke_grant(self, grant_id: str, now: dt.datetime, reason: str) -> bool:
        return await self.tx.execute(REVOKE_GRANT, id=grant_id, now=now, reason=reason[:200]) > 0

    async def create_refresh(self, record: RefreshRecord) -> None:
        await self.tx.execute(INSERT_REFRESH, token_hash=record.token_hash, grant_id=record.grant_id,
                              client_id=record.client_id, expires_at=record.expires_at, used_at=None)

    async def get_refresh(self, token_hash: str) -> RefreshRecord | None:
        row = await self.tx.one(REFRESH, token_hash=token_hash)
        return RefreshRecord(*row) if row is not None else None

    async def use_refresh(self, token_hash: str, now: dt.datetime) -> bool:
        return await self.tx.execute(USE_REFRESH, token_hash=token_hash, now=now) == 1

    async def revoke_jti(self, jti: str, expires_at: dt.datetime, reason: str, *, actor: str) -> bool:
        """Revoke `jti` until `expires_at` and record token.revoked; False when it already was (nothing changes)."""
        if not _JTI_RE.fullmatch(jti):
            raise InvalidIdentifier("jti must be 8 to 64 URL-safe characters")
        written = await self.tx.execute(REVOKE_JTI[self.tx.dialect_name], jti=jti, expires_at=expires_at,
                                        reason=reason[:200], revoked_at=utcnow())
        if written != 1:
            return False
        self.audit("token.revoked", actor=actor, subject=jti, detail={"reason": reason[:200]})
        return True

    async def jti_revoked(self, jti: str) -> bool:
        return await self.tx.one(JTI_REVOKED, jti=jti) is not None

    def audit(self, event_type: str, *, actor: str, subject: str | None = None,
              detail: Mapping[str, Any] | None = None) -> None:
        self.tx.defer(INSERT_AUDIT, **audit_row(event_type, actor=actor, subject=subject, detail=detail,
                                                request_id=self._request_id))
