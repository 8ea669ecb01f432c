"""`OidcStore` and `TokenStore` in SQL: one instance per request, on the request's unit of work.

Every statement is SQLAlchemy Core on the models, run through a `storage.direct` Transaction: on the driver
directly for the endpoints of a login and of the token endpoint (compiled once per dialect, about a fifth of
the ORM session's CPU per statement), or inside an ORM session's transaction (`SessionTransaction`) where a
request also needs ORM services. Audit events are written with the unit of work, just before it commits.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.claims import REPRESENT_POWER
from idp.core.interfaces import (
    LEVELS,
    AccessKind,
    CodeRecord,
    ConsentRecord,
    GrantRecord,
    Level,
    LoginState,
    PendingRequest,
    RefreshRecord,
    Representation,
    Subject,
)
from idp.sql.models import (
    AccessRecord,
    AuthorizationCode,
    AuthorizationRequest,
    ClientAssertionJti,
    Consent,
    Grant,
    LegalEntity,
    LoginSession,
    LogoutDelivery,
    Mandate,
    OAuthClient,
    Person,
    RefreshToken,
    SessionClient,
    StaffRole,
)
from idp.sql.revocation import TokenRevocations
from storage.audit import DeferredAudit
from storage.base import utcnow
from storage.direct import Transaction, insert_ignoring, table

_codes, _grants, _refresh = table(AuthorizationCode), table(Grant), table(RefreshToken)
_persons, _assertions, _roles = table(Person), table(ClientAssertionJti), table(StaffRole)
_sessions, _session_clients, _pending = table(LoginSession), table(SessionClient), table(AuthorizationRequest)
_consents, _clients, _deliveries = table(Consent), table(OAuthClient), table(LogoutDelivery)
_mandates, _entities = table(Mandate), table(LegalEntity)
_access = table(AccessRecord)


# persons and sessions
PERSON = select(_persons.c.id, _persons.c.fin, _persons.c.given_name, _persons.c.family_name,
                _persons.c.birthdate).where(_persons.c.id == bindparam("id"))
STAFF_ROLES = select(_roles.c.role).where(_roles.c.person_id == bindparam("person_id"), _roles.c.revoked_at.is_(None))
_SESSION_COLUMNS = (_sessions.c.id, _sessions.c.sid, _sessions.c.person_id, _sessions.c.auth_time,
                    _sessions.c.expires_at, _sessions.c.level, _sessions.c.amr, _sessions.c.ended_at)
INSERT_SESSION = insert(_sessions)
SESSION = select(*_SESSION_COLUMNS).join(_persons, _persons.c.id == _sessions.c.person_id) \
    .where(_sessions.c.id == bindparam("id"), _persons.c.status == "active")
"""A session is usable only while its person is active (docs/registry.md): suspending a person ends their sessions
(PersonService.set_status), and this join refuses any left over, on every page that reads the cookie."""
LIVE_SESSIONS = select(*_SESSION_COLUMNS).where(
    _sessions.c.person_id == bindparam("person_id"), _sessions.c.ended_at.is_(None),
    _sessions.c.expires_at > bindparam("now")).order_by(_sessions.c.created_at, _sessions.c.id)
UPDATE_LOGIN = update(_sessions).where(_sessions.c.id == bindparam("id")).values(
    auth_time=bindparam("auth_time"), level=bindparam("level"), acr=bindparam("acr"), amr=bindparam("amr"))
END_SESSION = update(_sessions).where(_sessions.c.id == bindparam("id"), _sessions.c.ended_at.is_(None)).values(
    ended_at=bindparam("now")).returning(*_SESSION_COLUMNS)
ADD_SESSION_CLIENT = insert_ignoring(_session_clients, "session_id", "client_id")
SESSION_GRANTS = select(_grants.c.id, _grants.c.scope).where(_grants.c.session_sid == bindparam("sid"),
                                                           _grants.c.revoked_at.is_(None))
PERSON_GRANTS_REVOKED = update(_grants).where(
    _grants.c.person_id == bindparam("person_id"), _grants.c.client_id == bindparam("client_id"),
    _grants.c.revoked_at.is_(None)).values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
ALL_PERSON_GRANTS_REVOKED = update(_grants).where(
    _grants.c.person_id == bindparam("person_id"), _grants.c.revoked_at.is_(None)) \
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))

# pending authorization requests
INSERT_PENDING = insert(_pending)
PENDING = select(_pending.c.id, _pending.c.client_id, _pending.c.params, _pending.c.csrf_token,
                 _pending.c.expires_at).where(_pending.c.id == bindparam("id"))
DELETE_PENDING = delete(_pending).where(_pending.c.id == bindparam("id"))
UPDATE_PENDING = update(_pending).where(_pending.c.id == bindparam("id")).values(params=bindparam("params"))

# representation at login: the person's valid mandates, by the rule of idp.sql.registry.MandateService.valid (begun,
# not expired, not revoked at or before now, the entity active); the power is filtered in Python (a JSON list)
_VALID_MANDATES = select(_mandates.c.id, _entities.c.voen, _entities.c.name, _mandates.c.powers) \
    .join(_entities, _entities.c.id == _mandates.c.entity_id) \
    .where(_mandates.c.person_id == bindparam("person_id"), _mandates.c.valid_from <= bindparam("now"),
           or_(_mandates.c.valid_to.is_(None), _mandates.c.valid_to > bindparam("now")),
           or_(_mandates.c.revoked_at.is_(None), _mandates.c.revoked_at > bindparam("now")),
           _entities.c.status == "active")
VALID_MANDATES = _VALID_MANDATES.order_by(_mandates.c.created_at, _mandates.c.id)
VALID_MANDATE = _VALID_MANDATES.where(_mandates.c.id == bindparam("mandate_id"))

# grants, codes, refresh tokens
_GRANT_COLUMNS = (_grants.c.id, _grants.c.client_id, _grants.c.person_id, _grants.c.session_sid, _grants.c.sub,
                  _grants.c.scope, _grants.c.claims, _grants.c.acr, _grants.c.amr, _grants.c.auth_time,
                  _grants.c.expires_at, _grants.c.revoked_at, _grants.c.represents)
INSERT_GRANT = insert(_grants)
GRANT = select(*_GRANT_COLUMNS).where(_grants.c.id == bindparam("id"))
REVOKE_GRANT = update(_grants).where(_grants.c.id == bindparam("id"), _grants.c.revoked_at.is_(None)) \
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
INSERT_CODE = insert(_codes)
_CODE_COLUMNS = (_codes.c.code_hash, _codes.c.grant_id, _codes.c.client_id, _codes.c.redirect_uri, _codes.c.nonce,
                 _codes.c.code_challenge, _codes.c.expires_at, _codes.c.consumed_at)
CODE = select(*_CODE_COLUMNS).where(_codes.c.code_hash == bindparam("code_hash"))
_UNUSED_CODE = (_codes.c.code_hash == bindparam("code_hash"), _codes.c.consumed_at.is_(None))
REDEEM_CODE = update(_codes).where(*_UNUSED_CODE).values(consumed_at=bindparam("now")).returning(*_CODE_COLUMNS)
REDEEM_CODE_WITH_GRANT = update(_codes).where(*_UNUSED_CODE, _grants.c.id == _codes.c.grant_id) \
    .values(consumed_at=bindparam("now")).returning(*_CODE_COLUMNS, *_GRANT_COLUMNS)
"""PostgreSQL: the code consumed and its grant read in one round trip (UPDATE ... FROM grants RETURNING); SQLite
cannot return the FROM table's columns, and needs no saving of round trips."""
INSERT_REFRESH = insert(_refresh)
REFRESH = select(_refresh.c.token_hash, _refresh.c.grant_id, _refresh.c.client_id, _refresh.c.expires_at,
                 _refresh.c.used_at, _refresh.c.successor).where(_refresh.c.token_hash == bindparam("token_hash"))
USE_REFRESH = update(_refresh).where(_refresh.c.token_hash == bindparam("token_hash"), _refresh.c.used_at.is_(None)) \
    .values(used_at=bindparam("now"), successor=bindparam("successor"))
CLIENT_DISABLED = select(_clients.c.disabled_at).where(_clients.c.client_id == bindparam("client_id"))

# consent
_CONSENT_COLUMNS = (_consents.c.client_id, _consents.c.scopes, _consents.c.claims, _consents.c.granted_at)
CONSENT = select(*_CONSENT_COLUMNS).where(_consents.c.person_id == bindparam("person_id"),
                                          _consents.c.client_id == bindparam("client_id"))
CONSENTS = select(*_CONSENT_COLUMNS).where(_consents.c.person_id == bindparam("person_id")) \
    .order_by(_consents.c.granted_at)
INSERT_CONSENT = insert_ignoring(_consents, "person_id", "client_id")
UPDATE_CONSENT = update(_consents).where(_consents.c.person_id == bindparam("person_id"),
                                         _consents.c.client_id == bindparam("client_id")) \
    .values(scopes=bindparam("scopes"), claims=bindparam("claims"), granted_at=bindparam("now"))
DELETE_CONSENT = delete(_consents).where(_consents.c.person_id == bindparam("person_id"),
                                         _consents.c.client_id == bindparam("client_id"))

# the access record (issue 16): the client's stated purpose copied by the INSERT itself, so a release costs no read
INSERT_ACCESS = insert(_access).values(
    id=bindparam("id"), person_id=bindparam("person_id"), client_id=bindparam("client_id"), kind=bindparam("kind"),
    claims=bindparam("claims", type_=_access.c.claims.type), scopes=bindparam("scopes", type_=_access.c.scopes.type),
    occurred_at=bindparam("occurred_at", type_=_access.c.occurred_at.type),
    purpose=select(_clients.c.purpose).where(_clients.c.client_id == bindparam("purpose_of")).scalar_subquery())

# revocation by jti, client assertion replay
REMEMBER_ASSERTION = insert_ignoring(_assertions, "client_id", "jti")

# back-channel logout (OpenID Connect Back-Channel Logout 1.0)
LOGOUT_TARGETS = select(_session_clients.c.client_id, _session_clients.c.sub, _clients.c.backchannel_logout_uri) \
    .join(_clients, _clients.c.client_id == _session_clients.c.client_id) \
    .where(_session_clients.c.session_id == bindparam("session_id"),
           _clients.c.backchannel_logout_uri.is_not(None), _clients.c.backchannel_logout_uri != "",
           _clients.c.disabled_at.is_(None)) \
    .order_by(_session_clients.c.client_id)
INSERT_DELIVERY = insert(_deliveries)


def _login_state(row: tuple[Any, ...]) -> LoginState:
    id_, sid, person_id, auth_time, expires_at, level, amr, ended_at = row
    checked: Level = level if level in LEVELS else "low"
    return LoginState(id=id_, sid=sid or "", person_id=person_id, auth_time=auth_time, expires_at=expires_at,
                      level=checked, amr=tuple(amr or ()), ended_at=ended_at)


def _grant(row: tuple[Any, ...]) -> GrantRecord:
    (id_, client_id, person_id, sid, sub, scope, claims, acr, amr, auth_time, expires_at, revoked_at,
     represents) = row
    return GrantRecord(id=id_, client_id=client_id, person_id=person_id, session_sid=sid, sub=sub, scope=scope,
                       claims=claims, acr=acr, amr=tuple(amr or ()), auth_time=auth_time, expires_at=expires_at,
                       revoked_at=revoked_at, represents=represents)


def _representation(row: tuple[Any, ...]) -> Representation | None:
    """A valid mandate's row as a Representation, or None without the power to represent at login."""
    mandate_id, voen, name, powers = row
    if REPRESENT_POWER not in (powers or ()):
        return None
    return Representation(mandate_id=mandate_id, voen=voen, name=name, powers=tuple(sorted(powers)))


def _consent(row: tuple[Any, ...]) -> ConsentRecord:
    client_id, scopes, claims, granted_at = row
    return ConsentRecord(client_id=client_id, scopes=frozenset(scopes), claims=frozenset(claims),
                         granted_at=granted_at)


async def remember_assertion(tx: Transaction, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
    """Record a client assertion's jti (RFC 7523 section 3, item 7); False when it was seen before."""
    return await tx.execute(REMEMBER_ASSERTION[tx.dialect_name], client_id=client_id, jti=jti[:255],
                            expires_at=expires_at) == 1


class SqlOidcStore:
    """`OidcStore` and `TokenStore` on one unit of work (see module docstring)."""

    def __init__(self, tx: Transaction, *, request_id: str | None = None) -> None:
        self.tx = tx
        self._request_id = request_id
        self._audit = DeferredAudit(tx, request_id=request_id)
        self._pending: dict[str, PendingRequest | None] = {}
        """Pending requests read or saved in this unit of work: a login reads its request twice (the route, then
        resume)."""
        self._saved_pending: set[str] = set()
        """The pending requests this unit saved: deleting or updating one writes the deferred rows first; one saved
        by an earlier request (as at every login's end) waits for no write (no table refers to pending requests).
        The rows this store defers (`by=self`) are written before its statements that read or change their tables
        (Transaction.written_for), so the unit reads its own writes as if executed at once."""

    # persons and sessions
    async def subject(self, person_id: str) -> Subject | None:
        row = await self.tx.one(PERSON, id=person_id)
        return Subject(*row) if row is not None else None

    async def staff_roles(self, person_id: str) -> frozenset[str]:
        return frozenset(row[0] for row in await self.tx.all(STAFF_ROLES, person_id=person_id))

    async def create_session(self, state: LoginState) -> None:
        """Deferred to the unit's COMMIT (storage.direct), like the grant, code and session client of the same login
        that refer to it: the browser learns of the session only from the answer's cookie, sent after the commit."""
        self.tx.defer(INSERT_SESSION, by=self, id=state.id, sid=state.sid, person_id=state.person_id,
                      auth_time=state.auth_time, expires_at=state.expires_at, level=state.level,
                      acr=state.level, amr=list(state.amr), ended_at=None, created_at=utcnow())

    async def update_login(self, session_id: str, *, auth_time: dt.datetime, level: Level,
                           amr: tuple[str, ...]) -> None:
        await self.tx.written_for(self)
        await self.tx.execute(UPDATE_LOGIN, id=session_id, auth_time=auth_time, level=level, acr=level, amr=list(amr))

    async def get_session(self, session_id: str) -> LoginState | None:
        if len(session_id) > 64:
            return None
        await self.tx.written_for(self)
        row = await self.tx.one(SESSION, id=session_id)
        return _login_state(row) if row is not None else None

    async def end_session(self, session_id: str, now: dt.datetime) -> LoginState | None:
        await self.tx.written_for(self)
        row = await self.tx.one(END_SESSION, id=session_id, now=now)
        return _login_state(row) if row is not None else None

    async def add_session_client(self, session_id: str, client_id: str, sub: str) -> None:
        """Deferred to the unit's COMMIT (storage.direct), like create_grant: read only by later requests (logout)."""
        self.tx.defer(ADD_SESSION_CLIENT[self.tx.dialect_name], by=self, session_id=session_id, client_id=client_id,
                      sub=sub, created_at=utcnow())

    async def revoke_session_grants(self, sid: str, now: dt.datetime, reason: str) -> int:
        """Revoke the grants made in a login session, except those with offline_access (logout)."""
        await self.tx.written_for(self)
        count = 0
        for grant_id, scope in await self.tx.all(SESSION_GRANTS, sid=sid):
            if "offline_access" not in scope.split():
                count += await self.tx.execute(REVOKE_GRANT, id=grant_id, now=now, reason=reason[:200])
        return count

    async def revoke_person_grants(self, person_id: str, client_id: str, reason: str) -> int:
        await self.tx.written_for(self)
        return await self.tx.execute(PERSON_GRANTS_REVOKED, person_id=person_id, client_id=client_id, now=utcnow(),
                                     reason=reason[:200])

    async def live_sessions(self, person_id: str, now: dt.datetime) -> list[LoginState]:
        """The person's sessions neither ended nor expired at `now` (whatever the person's status)."""
        await self.tx.written_for(self)
        return [_login_state(row) for row in await self.tx.all(LIVE_SESSIONS, person_id=person_id, now=now)]

    async def revoke_all_person_grants(self, person_id: str, now: dt.datetime, reason: str) -> int:
        """Revoke every grant of the person, at every client, offline_access ones included (the person suspended or
        deceased): their refresh tokens answer invalid_grant and their access tokens invalid_token."""
        await self.tx.written_for(self)
        return await self.tx.execute(ALL_PERSON_GRANTS_REVOKED, person_id=person_id, now=now, reason=reason[:200])

    # pending requests
    async def save_pending(self, pending: PendingRequest) -> None:
        """Deferred to the unit's COMMIT (storage.direct): the browser learns its id only from the answer, sent after
        the commit, and this unit reads it from the cache. An anonymous /authorize then writes only this row: one
        round trip on PostgreSQL without BEGIN and COMMIT (Transaction.finish)."""
        self.tx.defer(INSERT_PENDING, by=self, id=pending.id, client_id=pending.client_id, params=dict(pending.params),
                      csrf_token=pending.csrf_token, expires_at=pending.expires_at, created_at=utcnow())
        self._pending[pending.id] = pending
        self._saved_pending.add(pending.id)

    async def get_pending(self, pending_id: str) -> PendingRequest | None:
        if len(pending_id) > 64:
            return None
        if pending_id not in self._pending:
            row = await self.tx.one(PENDING, id=pending_id)
            self._pending[pending_id] = PendingRequest(*row) if row is not None else None
        return self._pending[pending_id]

    async def delete_pending(self, pending_id: str) -> None:
        """Deferred to the unit's COMMIT (with the login's other rows, one statement on PostgreSQL) when an earlier
        unit wrote the request, as at every login's end: nothing reads it again in this unit (the cache answers
        None), and a unit that rolls back keeps it. One saved by this very unit is written first, then deleted (the
        parts of one folded statement cannot see each other's rows)."""
        if pending_id in self._saved_pending:
            await self.tx.written_for(self)
            await self.tx.execute(DELETE_PENDING, id=pending_id)
        else:
            self.tx.defer(DELETE_PENDING, id=pending_id)
        self._pending[pending_id] = None

    async def update_pending(self, pending: PendingRequest) -> None:
        if pending.id in self._saved_pending:
            await self.tx.written_for(self)
        await self.tx.execute(UPDATE_PENDING, id=pending.id, params=dict(pending.params))
        self._pending[pending.id] = pending

    # representation at login
    async def representations(self, person_id: str, now: dt.datetime) -> list[Representation]:
        rows = await self.tx.all(VALID_MANDATES, person_id=person_id, now=now)
        return [r for r in map(_representation, rows) if r is not None]

    async def representation(self, person_id: str, mandate_id: str, now: dt.datetime) -> Representation | None:
        if not mandate_id or len(mandate_id) > 36:
            return None
        row = await self.tx.one(VALID_MANDATE, person_id=person_id, mandate_id=mandate_id, now=now)
        return _representation(row) if row is not None else None

    # grants, codes, refresh tokens
    async def create_grant(self, grant: GrantRecord) -> None:
        """Deferred to the unit's COMMIT (storage.direct), like create_code and add_session_client: the code that
        names the grant reaches the client only in the answer, after the commit, and the store's own statements on
        these tables write them first (Transaction.written_for). On PostgreSQL a login's grant, code and session client
        are one statement with its audit events (storage.direct.fold_rows)."""
        self.tx.defer(
            INSERT_GRANT, by=self, id=grant.id, client_id=grant.client_id, person_id=grant.person_id,
            session_sid=grant.session_sid, sub=grant.sub, scope=grant.scope,
            claims=dict(grant.claims) if grant.claims is not None else None, acr=grant.acr, amr=list(grant.amr),
            auth_time=grant.auth_time, expires_at=grant.expires_at, created_at=utcnow(), revoked_at=None,
            revoked_reason=None, represents=dict(grant.represents) if grant.represents is not None else None)

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        await self.tx.written_for(self)
        if len(grant_id) > 32:
            return None
        row = await self.tx.one(GRANT, id=grant_id)
        return _grant(row) if row is not None else None

    async def revoke_grant(self, grant_id: str, now: dt.datetime, reason: str) -> bool:
        await self.tx.written_for(self)
        return await self.tx.execute(REVOKE_GRANT, id=grant_id, now=now, reason=reason[:200]) > 0

    async def create_code(self, code: CodeRecord) -> None:
        self.tx.defer(INSERT_CODE, by=self, code_hash=code.code_hash, grant_id=code.grant_id, client_id=code.client_id,
                      redirect_uri=code.redirect_uri, nonce=code.nonce, code_challenge=code.code_challenge,
                      expires_at=code.expires_at, consumed_at=None, created_at=utcnow())

    async def get_code(self, code_hash: str) -> CodeRecord | None:
        await self.tx.written_for(self)
        row = await self.tx.one(CODE, code_hash=code_hash)
        return CodeRecord(*row) if row is not None else None

    async def redeem_code(self, code_hash: str, now: dt.datetime) -> tuple[CodeRecord, GrantRecord | None] | None:
        await self.tx.written_for(self)
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

    async def create_refresh(self, record: RefreshRecord) -> None:
        await self.tx.written_for(self)
        await self.tx.execute(INSERT_REFRESH, token_hash=record.token_hash, grant_id=record.grant_id,
                              client_id=record.client_id, expires_at=record.expires_at, used_at=None,
                              successor=None, created_at=utcnow())

    async def get_refresh(self, token_hash: str) -> RefreshRecord | None:
        row = await self.tx.one(REFRESH, token_hash=token_hash)
        return RefreshRecord(*row) if row is not None else None

    async def use_refresh(self, token_hash: str, now: dt.datetime, successor: str) -> bool:
        return await self.tx.execute(USE_REFRESH, token_hash=token_hash, now=now, successor=successor) == 1

    async def client_disabled(self, client_id: str) -> bool:
        if not client_id or len(client_id) > 64:
            return True
        row = await self.tx.one(CLIENT_DISABLED, client_id=client_id)
        return row is None or row[0] is not None

    # consent
    async def get_consent(self, person_id: str, client_id: str) -> ConsentRecord | None:
        row = await self.tx.one(CONSENT, person_id=person_id, client_id=client_id)
        return _consent(row) if row is not None else None

    async def save_consent(self, person_id: str, client_id: str, scopes: frozenset[str], claims: frozenset[str],
                           now: dt.datetime) -> None:
        """Remember a consent, adding to what was given before. Two tabs of one citizen may consent to the same
        client at once: the insert that finds the other's row (ON CONFLICT DO NOTHING, which on PostgreSQL waits for
        the other transaction) adds to it instead of failing on the unique constraint."""
        before = await self.get_consent(person_id, client_id)
        if before is None:
            if await self.tx.execute(INSERT_CONSENT[self.tx.dialect_name], person_id=person_id, client_id=client_id,
                                     scopes=sorted(scopes), claims=sorted(claims), granted_at=now):
                return
            before = await self.get_consent(person_id, client_id)
        if before is not None:
            await self.tx.execute(UPDATE_CONSENT, person_id=person_id, client_id=client_id,
                                  scopes=sorted(before.scopes | scopes), claims=sorted(before.claims | claims), now=now)

    async def withdraw_consent(self, person_id: str, client_id: str) -> bool:
        """The citizen withdraws a consent: it is deleted and the grants (so every token) the client holds for them
        are revoked; False when there was no such consent."""
        if not await self.tx.execute(DELETE_CONSENT, person_id=person_id, client_id=client_id):
            return False
        revoked = await self.revoke_person_grants(person_id, client_id, "consent revoked")
        await self.audit("consent.revoked", actor=person_id, subject=client_id, detail={"grants": revoked})
        return True

    async def list_consents(self, person_id: str) -> list[ConsentRecord]:
        return [_consent(row) for row in await self.tx.all(CONSENTS, person_id=person_id)]

    # revocation by jti
    async def revoke_jti(self, jti: str, expires_at: dt.datetime, reason: str, *, actor: str) -> bool:
        """Revoke `jti` until `expires_at` (idp.sql.revocation, the one revocation store)."""
        return await TokenRevocations(self.tx, request_id=self._request_id).revoke(
            jti, expires_at=expires_at, reason=reason, actor=actor)

    async def jti_revoked(self, jti: str) -> bool:
        return await TokenRevocations(self.tx).any_revoked([jti])

    # the access record
    async def record_access(self, person_id: str, client_id: str, kind: AccessKind, *, claims: Iterable[str],
                            scopes: Iterable[str]) -> None:
        """One access_records row, deferred to the unit's COMMIT like its audit events (storage.direct)."""
        self.tx.defer(INSERT_ACCESS, id=str(uuid.uuid4()), person_id=person_id, client_id=client_id[:64],
                      purpose_of=client_id[:64], kind=kind, claims=sorted(set(claims)), scopes=sorted(set(scopes)),
                      occurred_at=utcnow())

    # back-channel logout
    async def queue_logouts(self, session_id: str, *, sid: str, now: dt.datetime, retry_seconds: int) -> int:
        """Queue a logout token for every client of login session `session_id` that takes back-channel logouts
        (a backchannel_logout_uri, not disabled): due at once, retried until `now + retry_seconds`. Call
        `BackchannelDelivery.kick()` after the commit so they are sent at once. Returns how many were queued."""
        await self.tx.written_for(self)
        targets = await self.tx.all(LOGOUT_TARGETS, session_id=session_id)
        give_up_at = now + dt.timedelta(seconds=retry_seconds)
        for client_id, sub, uri in targets:
            await self.tx.execute(INSERT_DELIVERY, client_id=client_id, uri=uri, sub=sub, sid=sid, created_at=now,
                                  attempts=0, next_attempt_at=now, give_up_at=give_up_at)
        return len(targets)

    # audit
    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        await self._audit.record(event_type, actor=actor, subject=subject, detail=detail)


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
