"""`OidcStore` on SQLAlchemy: one instance per request, flushing into the caller's unit of work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.backchannel import queue_logouts
from idp.interfaces import (
    LEVELS,
    CodeRecord,
    ConsentRecord,
    GrantRecord,
    Level,
    LoginState,
    PendingRequest,
)
from idp.models import (
    AuthorizationCode,
    AuthorizationRequest,
    ClientAssertionJti,
    Consent,
    Grant,
    LoginSession,
    RefreshToken,
    SessionClient,
)
from storage.audit import record_event
from storage.base import utcnow
from storage.engine import dialect_insert


def _login_state(row: LoginSession) -> LoginState:
    level: Level = row.level if row.level in LEVELS else "low"
    return LoginState(id=row.id, sid=row.sid or "", person_id=row.person_id, auth_time=row.auth_time,
                      expires_at=row.expires_at, level=level, amr=tuple(row.amr or ()), ended_at=row.ended_at)


def _grant(row: Grant | Row[Any]) -> GrantRecord:
    return GrantRecord(id=row.id, client_id=row.client_id, person_id=row.person_id, session_sid=row.session_sid,
                       sub=row.sub, scope=row.scope, claims=row.claims, acr=row.acr, amr=tuple(row.amr or ()),
                       auth_time=row.auth_time, expires_at=row.expires_at, revoked_at=row.revoked_at)


class SqlOidcStore:
    def __init__(self, session: AsyncSession, *, request_id: str | None = None) -> None:
        self.session = session
        self._request_id = request_id

    # persons and sessions
    async def create_session(self, state: LoginState) -> None:
        self.session.add(LoginSession(id=state.id, sid=state.sid, person_id=state.person_id,
                                      auth_time=state.auth_time, expires_at=state.expires_at, level=state.level,
                                      acr=state.level, amr=list(state.amr)))
        await self.session.flush()

    async def update_login(self, session_id: str, *, auth_time: dt.datetime, level: Level,
                           amr: tuple[str, ...]) -> None:
        await self.session.execute(update(LoginSession).where(LoginSession.id == session_id).values(
            auth_time=auth_time, level=level, acr=level, amr=list(amr)))

    async def get_session(self, session_id: str) -> LoginState | None:
        row = await self.session.get(LoginSession, session_id)
        return _login_state(row) if row is not None else None

    async def end_session(self, session_id: str, now: dt.datetime) -> LoginState | None:
        result = await self.session.execute(
            update(LoginSession).where(LoginSession.id == session_id, LoginSession.ended_at.is_(None))
            .values(ended_at=now).returning(LoginSession))
        row = result.scalar_one_or_none()
        return _login_state(row) if row is not None else None

    async def add_session_client(self, session_id: str, client_id: str, sub: str) -> None:
        await self.session.execute(dialect_insert(self.session)(SessionClient).values(
            session_id=session_id, client_id=client_id, sub=sub).on_conflict_do_nothing(
            index_elements=["session_id", "client_id"]))

    async def revoke_session_grants(self, sid: str, now: dt.datetime, reason: str) -> int:
        """Revoke the grants made in a login session, except those with offline_access (logout)."""
        rows = (await self.session.execute(select(Grant).where(Grant.session_sid == sid,
                                                               Grant.revoked_at.is_(None)))).scalars().all()
        count = 0
        for row in rows:
            if "offline_access" not in row.scope.split():
                row.revoked_at, row.revoked_reason = now, reason
                count += 1
        await self.session.flush()
        return count

    async def revoke_person_grants(self, person_id: str, client_id: str, reason: str) -> int:
        result = await self.session.execute(update(Grant).where(
            Grant.person_id == person_id, Grant.client_id == client_id, Grant.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason[:200]))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # pending requests
    async def save_pending(self, pending: PendingRequest) -> None:
        self.session.add(AuthorizationRequest(id=pending.id, client_id=pending.client_id, params=dict(pending.params),
                                              csrf_token=pending.csrf_token, expires_at=pending.expires_at))
        await self.session.flush()

    async def get_pending(self, pending_id: str) -> PendingRequest | None:
        if len(pending_id) > 64:
            return None
        row = await self.session.get(AuthorizationRequest, pending_id)
        if row is None:
            return None
        return PendingRequest(id=row.id, client_id=row.client_id, params=row.params, csrf_token=row.csrf_token,
                              expires_at=row.expires_at)

    async def delete_pending(self, pending_id: str) -> None:
        await self.session.execute(delete(AuthorizationRequest).where(AuthorizationRequest.id == pending_id))

    # grants, codes, refresh tokens
    async def create_grant(self, grant: GrantRecord) -> None:
        await self.session.execute(insert(Grant).values(
            id=grant.id, client_id=grant.client_id, person_id=grant.person_id, session_sid=grant.session_sid,
            sub=grant.sub, scope=grant.scope, claims=dict(grant.claims) if grant.claims is not None else None,
            acr=grant.acr, amr=list(grant.amr), auth_time=grant.auth_time, expires_at=grant.expires_at))

    async def create_code(self, code: CodeRecord) -> None:
        await self.session.execute(insert(AuthorizationCode).values(
            code_hash=code.code_hash, grant_id=code.grant_id, client_id=code.client_id, redirect_uri=code.redirect_uri,
            nonce=code.nonce, code_challenge=code.code_challenge, expires_at=code.expires_at))

    # consent
    async def get_consent(self, person_id: str, client_id: str) -> ConsentRecord | None:
        row = (await self.session.execute(select(Consent).where(Consent.person_id == person_id,
                                                                Consent.client_id == client_id))).scalar_one_or_none()
        if row is None:
            return None
        return ConsentRecord(client_id=row.client_id, scopes=frozenset(row.scopes), claims=frozenset(row.claims),
                             granted_at=row.granted_at)

    async def save_consent(self, person_id: str, client_id: str, scopes: frozenset[str], claims: frozenset[str],
                           now: dt.datetime) -> None:
        row = (await self.session.execute(select(Consent).where(Consent.person_id == person_id,
                                                                Consent.client_id == client_id))).scalar_one_or_none()
        if row is None:
            self.session.add(Consent(person_id=person_id, client_id=client_id, scopes=sorted(scopes),
                                     claims=sorted(claims), granted_at=now))
        else:
            row.scopes = sorted(set(row.scopes) | scopes)
            row.claims = sorted(set(row.claims) | claims)
            row.granted_at = now
        await self.session.flush()

    async def revoke_consent(self, person_id: str, client_id: str) -> bool:
        result = await self.session.execute(delete(Consent).where(Consent.person_id == person_id,
                                                                  Consent.client_id == client_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def withdraw_consent(self, person_id: str, client_id: str) -> bool:
        """The citizen withdraws a consent: it is deleted and the grants (so every token) the client holds for them
        are revoked; False when there was no such consent."""
        if not await self.revoke_consent(person_id, client_id):
            return False
        revoked = await self.revoke_person_grants(person_id, client_id, "consent revoked")
        self.audit("consent.revoked", actor=person_id, subject=client_id, detail={"grants": revoked})
        return True

    async def list_consents(self, person_id: str) -> list[ConsentRecord]:
        rows = (await self.session.execute(select(Consent).where(Consent.person_id == person_id)
                                           .order_by(Consent.granted_at))).scalars().all()
        return [ConsentRecord(client_id=r.client_id, scopes=frozenset(r.scopes), claims=frozenset(r.claims),
                              granted_at=r.granted_at) for r in rows]

    # back-channel logout
    async def queue_logouts(self, session_id: str, *, sid: str, now: dt.datetime, retry_seconds: int) -> int:
        return await queue_logouts(self.session, session_id=session_id, sid=sid, now=now,
                                   retry_seconds=retry_seconds)

    # audit
    def audit(self, event_type: str, *, actor: str, subject: str | None = None,
              detail: Mapping[str, Any] | None = None) -> None:
        record_event(self.session, event_type, actor=actor, subject=subject,
                     detail=dict(detail) if detail is not None else None, request_id=self._request_id)


async def purge_expired(session: AsyncSession, now: dt.datetime) -> dict[str, int]:
    """Forget what can no longer be used: expired codes, refresh tokens, grants, pending requests, client
    assertion jtis and ended sessions (a day after they end or expire, for the audit trail's sake)."""
    day = dt.timedelta(days=1)
    counts = {}
    for name, statement in (
        ("authorization_requests", delete(AuthorizationRequest).where(AuthorizationRequest.expires_at <= now)),
        ("authorization_codes", delete(AuthorizationCode).where(AuthorizationCode.expires_at <= now - day)),
        ("refresh_tokens", delete(RefreshToken).where(RefreshToken.expires_at <= now)),
        ("grants", delete(Grant).where(Grant.expires_at <= now)),
        ("client_assertion_jtis", delete(ClientAssertionJti).where(ClientAssertionJti.expires_at <= now)),
        ("sessions", delete(LoginSession).where(LoginSession.expires_at <= now - day)),
    ):
        result = await session.execute(statement)
        counts[name] = int(result.rowcount or 0)  # type: ignore[attr-defined]
    return counts
