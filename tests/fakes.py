"""In-memory fakes of the idp storage Protocols (idp/core/interfaces.py), for tests of the protocol core without HTTP or
a database.

The protocol core takes its storage as Protocols (STYLE habit 3) so that its logic can be tested like this: a test
builds the core service with these fakes, calls it with plain parameters and checks the plain result and what the
core wrote. They hold rows as the records the Protocols speak, and record every write in `writes`, so "the refusal
changed nothing" is `store.writes == []`. They do not sign anything: the token issuer and its keys stay real where
a test needs them. The HTTP + database path of each endpoint is still tested against the real app (see the suites
in tests/unit/idp and tests/functional), and tests/unit/idp/test_fakes.py runs the same calls on a fake and on
idp.sql.store.SqlOidcStore and compares what they answer, so a fake that drifts from the real store fails there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from idp.core.client_auth import hash_secret
from idp.core.interfaces import (
    Client,
    CodeRecord,
    ConsentRecord,
    GrantRecord,
    Level,
    LoginState,
    PendingRequest,
    Representation,
)
from idp.sql.clients import (
    SECRET_METHODS,
    ClientRegistration,
    generate_client_id,
    generate_secret,
    resolve_sector,
    validate_registration,
)


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    event_type: str
    actor: str
    subject: str | None
    detail: Mapping[str, Any] | None


async def registered_client(registration: ClientRegistration) -> tuple[Client, str | None]:
    """The Client record and secret that `idp.sql.clients.ClientRegistry.add` would store for `registration`: the same
    validation and sector rules, without the row (no sector_identifier_uri: that one is fetched)."""
    meta = validate_registration(registration)
    client_id = generate_client_id()
    secret = generate_secret() if meta.auth_method in SECRET_METHODS else None
    return Client(
        client_id=client_id, name=meta.name, auth_method=meta.auth_method,
        secret_hash=hash_secret(secret) if secret is not None else None, redirect_uris=meta.redirect_uris,
        post_logout_redirect_uris=meta.post_logout_redirect_uris, grant_types=frozenset(meta.grant_types),
        scopes=frozenset(meta.scopes), subject_type=meta.subject_type,
        sector_identifier=await resolve_sector(meta, client_id), jwks=meta.jwks, jwks_uri=meta.jwks_uri,
        backchannel_logout_uri=meta.backchannel_logout_uri, sector_identifier_uri=meta.sector_identifier_uri,
        id_token_alg=meta.id_token_alg), secret


class FakeClientDirectory:
    """idp.core.interfaces.ClientDirectory over a dict (what the database would hold after registration)."""

    def __init__(self, *clients: Client) -> None:
        self.clients = {c.client_id: c for c in clients}

    async def get(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)


class FakeOidcStore:
    """idp.core.interfaces.OidcStore in memory; every write is also appended to `writes` as (method, key)."""

    def __init__(self, clients: FakeClientDirectory | None = None) -> None:
        self._clients = clients or FakeClientDirectory()
        self.sessions: dict[str, LoginState] = {}
        self.pending: dict[str, PendingRequest] = {}
        self.grants: dict[str, GrantRecord] = {}
        self.codes: dict[str, CodeRecord] = {}
        self.consents: dict[tuple[str, str], ConsentRecord] = {}
        self.session_clients: dict[str, dict[str, str]] = {}
        self.logouts: list[tuple[str, str, str]] = []
        """(client_id, sub, sid) of each queued back-channel logout."""
        self.mandates: dict[str, list[Representation]] = {}
        """person_id -> their valid mandates to represent at login (what idp.sql.store reads from the registry)."""
        self.events: list[AuditEntry] = []
        self.writes: list[tuple[str, str]] = []
        self.roles: dict[str, frozenset[str]] = {}
        """The staff roles each person holds (person_id -> roles), as the staff_roles table would."""

    # persons and sessions
    async def create_session(self, state: LoginState) -> None:
        self.sessions[state.id] = state
        self.writes.append(("create_session", state.id))

    async def get_session(self, session_id: str) -> LoginState | None:
        return self.sessions.get(session_id)

    async def end_session(self, session_id: str, now: dt.datetime) -> LoginState | None:
        state = self.sessions.get(session_id)
        if state is None or state.ended_at is not None:
            return None
        self.sessions[session_id] = ended = dataclasses.replace(state, ended_at=now)
        self.writes.append(("end_session", session_id))
        return ended

    async def update_login(self, session_id: str, *, auth_time: dt.datetime, level: Level,
                           amr: tuple[str, ...]) -> None:
        self.sessions[session_id] = dataclasses.replace(self.sessions[session_id], auth_time=auth_time, level=level,
                                                        amr=amr)
        self.writes.append(("update_login", session_id))

    async def revoke_session_grants(self, sid: str, now: dt.datetime, reason: str) -> int:
        revoked = 0
        for grant in list(self.grants.values()):
            if grant.session_sid == sid and grant.revoked_at is None and "offline_access" not in grant.scope.split():
                self.grants[grant.id] = dataclasses.replace(grant, revoked_at=now)
                revoked += 1
        self.writes.append(("revoke_session_grants", sid))
        return revoked

    async def add_session_client(self, session_id: str, client_id: str, sub: str) -> None:
        self.session_clients.setdefault(session_id, {}).setdefault(client_id, sub)  # a second add is ignored
        self.writes.append(("add_session_client", session_id))

    async def staff_roles(self, person_id: str) -> frozenset[str]:
        return self.roles.get(person_id, frozenset())

    # pending authorization requests
    async def save_pending(self, pending: PendingRequest) -> None:
        self.pending[pending.id] = pending
        self.writes.append(("save_pending", pending.id))

    async def get_pending(self, pending_id: str) -> PendingRequest | None:
        return self.pending.get(pending_id)

    async def delete_pending(self, pending_id: str) -> None:
        self.pending.pop(pending_id, None)
        self.writes.append(("delete_pending", pending_id))

    async def update_pending(self, pending: PendingRequest) -> None:
        self.pending[pending.id] = pending
        self.writes.append(("update_pending", pending.id))

    # representation at login
    async def representations(self, person_id: str, now: dt.datetime) -> list[Representation]:
        return list(self.mandates.get(person_id, ()))

    # grants and codes
    async def create_grant(self, grant: GrantRecord) -> None:
        self.grants[grant.id] = grant
        self.writes.append(("create_grant", grant.id))

    async def create_code(self, code: CodeRecord) -> None:
        self.codes[code.code_hash] = code
        self.writes.append(("create_code", code.code_hash))

    # consent
    async def get_consent(self, person_id: str, client_id: str) -> ConsentRecord | None:
        return self.consents.get((person_id, client_id))

    async def save_consent(self, person_id: str, client_id: str, scopes: frozenset[str],
                           claims: frozenset[str], now: dt.datetime) -> None:
        before = self.consents.get((person_id, client_id))
        if before is not None:  # adds to what was given before
            scopes, claims = before.scopes | scopes, before.claims | claims
        self.consents[(person_id, client_id)] = ConsentRecord(client_id, scopes, claims, now)
        self.writes.append(("save_consent", client_id))

    # back-channel logout
    async def queue_logouts(self, session_id: str, *, sid: str, now: dt.datetime, retry_seconds: int) -> int:
        queued = 0
        for client_id, sub in self.session_clients.get(session_id, {}).items():
            client = self._clients.clients.get(client_id)
            if client is not None and client.backchannel_logout_uri and not client.disabled:
                self.logouts.append((client_id, sub, sid))
                queued += 1
        self.writes.append(("queue_logouts", session_id))
        return queued

    # audit
    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None:
        self.events.append(AuditEntry(event_type, actor, subject, detail))
        self.writes.append(("audit", event_type))
