"""Revocation of self-contained JWTs by `jti` (RFC 7009 section 2 semantics; RFC 9068 tokens carry a jti)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.errors import InvalidIdentifier
from idp.models import RevokedToken
from storage.audit import record_event
from storage.base import utcnow
from storage.engine import dialect_insert

JTI_RE = re.compile(r"^[A-Za-z0-9_.-]{8,64}$")
"""What a jti we issue or revoke looks like (8 to 64 URL-safe characters)."""


class TokenRevocations:
    """Records and answers revocations; flushes into the caller's unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def revoke(self, jti: str, *, expires_at: dt.datetime, reason: str, actor: str,
                     request_id: str | None = None) -> bool:
        """Revoke `jti` until `expires_at`; False when it was already revoked (nothing changes)."""
        if not JTI_RE.fullmatch(jti):
            raise InvalidIdentifier("jti must be 8 to 64 URL-safe characters")
        values = {"jti": jti, "expires_at": expires_at, "reason": reason[:200], "revoked_at": utcnow()}
        insert = dialect_insert(self._session)
        # ON CONFLICT DO NOTHING: two revocations at the same moment both succeed, one of them writes
        result = await self._session.execute(
            insert(RevokedToken).values(values).on_conflict_do_nothing(index_elements=["jti"]))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        record_event(self._session, "token.revoked", actor=actor, subject=jti, detail={"reason": reason[:200]},
                     request_id=request_id)
        return True

    async def any_revoked(self, jtis: Sequence[str]) -> bool:
        """Whether any of the tokens is revoked (a token and the one that minted it)."""
        found = await self._session.execute(select(RevokedToken.jti).where(RevokedToken.jti.in_(list(jtis))))
        return found.first() is not None

    async def purge_expired(self, now: dt.datetime | None = None) -> int:
        """Forget revocations of tokens that have expired anyway."""
        result = await self._session.execute(delete(RevokedToken).where(RevokedToken.expires_at <= (now or utcnow())))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
