"""Revocation of self-contained JWTs by `jti` (RFC 7009 section 2 semantics; RFC 9068 tokens carry a jti).

The one revocation store: the OIDC store's /revoke (idp.sql.store.SqlOidcStore), the admin API and the CLI all
write and read revocations here, on a unit of work (storage.direct; an ORM session through SessionTransaction).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlalchemy import bindparam, delete, select

from idp.core.errors import InvalidIdentifier
from idp.sql.models import RevokedToken
from storage.audit import INSERT_AUDIT, audit_row
from storage.base import utcnow
from storage.direct import Transaction, insert_ignoring, table

JTI_RE = re.compile(r"^[A-Za-z0-9_.-]{8,64}$")
"""What a jti we issue or revoke looks like (8 to 64 URL-safe characters)."""

_revoked = table(RevokedToken)
REVOKE = insert_ignoring(_revoked, "jti")
"""ON CONFLICT DO NOTHING: two revocations at the same moment both succeed, one of them writes."""
REVOKED = select(_revoked.c.jti).where(_revoked.c.jti == bindparam("jti"))
PURGE = delete(_revoked).where(_revoked.c.expires_at <= bindparam("now"))


class TokenRevocations:
    """Records and answers revocations in the caller's unit of work."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self._tx = tx
        self._request_id = request_id

    async def revoke(self, jti: str, *, expires_at: dt.datetime, reason: str, actor: str) -> bool:
        """Revoke `jti` until `expires_at` and audit token.revoked; False when it already was (nothing changes)."""
        if not JTI_RE.fullmatch(jti):
            raise InvalidIdentifier("jti must be 8 to 64 URL-safe characters")
        written = await self._tx.execute(REVOKE[self._tx.dialect_name], jti=jti, expires_at=expires_at,
                                         reason=reason[:200], revoked_at=utcnow())
        if written != 1:
            return False
        await self._tx.execute(INSERT_AUDIT, **audit_row("token.revoked", actor=actor, subject=jti,
                                                         detail={"reason": reason[:200]},
                                                         request_id=self._request_id))
        return True

    async def any_revoked(self, jtis: Sequence[str]) -> bool:
        """Whether any of the tokens is revoked (a token and the one that minted it)."""
        for jti in dict.fromkeys(jtis):
            if await self._tx.one(REVOKED, jti=jti) is not None:
                return True
        return False

    async def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Forget revocations of tokens that have expired anyway."""
        return await self._tx.execute(PURGE, now=now or utcnow())
