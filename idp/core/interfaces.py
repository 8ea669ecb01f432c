"""What the OpenID Connect core works with: plain records and the storage Protocols it calls.

The protocol modules (authorize, grants, tokens, logout, introspection) import only this module for
storage; `idp.sql.store` implements the Protocols on SQLAlchemy and api/ builds one store per request, whose
unit of work api/ commits (STYLE habit 3). Nothing here knows a web framework or a database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
AUTH_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
GRANT_TYPES: tuple[GrantType, ...] = ("authorization_code", "refresh_token", "client_credentials")
SubjectType = Literal["pairwise", "public"]
Level = Literal["low", "substantial", "high"]
AccessKind = Literal["token", "userinfo", "introspection"]
"""How a client received data about a person (idp.sql.models.AccessRecord)."""
LEVELS: tuple[Level, ...] = ("low", "substantial", "high")


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client as the protocol core sees it (OIDC Dynamic Registration metadata names)."""

    client_id: str
    name: str
    auth_method: AuthMethod
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    scopes: frozenset[str]
    """Every scope this client may ask for: OIDC scopes for citizens' data, API scopes for client_credentials."""
    subject_type: SubjectType
    sector_identifier: str
    """The host pairwise subjects are computed for (OIDC Core 8.1): one per agency, shared by its clients."""
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    backchannel_logout_uri: str | None = None
    sector_identifier_uri: str | None = None
    id_token_alg: str = "ES256"
    disabled: bool = False
    introspect_clients: frozenset[str] = frozenset()
    """The other clients whose tokens this one may introspect (RFC 7662 section 4: "the authorization server MUST
    determine whether or not the token can be used at the protected resource making the introspection call");
    its own tokens always."""
    purpose: str | None = None
    """The stated purpose of its use of citizens' data (issue 16): copied into each access record."""
    agency_voen: str | None = None
    """The agency (VÖEN) owning the client, whose agency administrators manage it; None: system administrators
    only."""

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"


@dataclass(frozen=True, slots=True)
class Subject:
    """The person behind a login, with the attributes claims are made from."""

    person_id: str
    fin: str | None
    given_name: str
    family_name: str
    birthdate: dt.date | None


@dataclass(frozen=True, slots=True)
class LoginState:
    """A server-side login session (single sign-on)."""

    id: str
    """SHA-256 (hex) of the cookie value: the cookie itself is never stored."""
    sid: str
    person_id: str
    auth_time: dt.datetime
    expires_at: dt.datetime
    level: Level
    amr: tuple[str, ...]
    ended_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class GrantRecord:
    """One authorization: what every token issued from a code (and its refreshes) carries."""

    id: str
    client_id: str
    person_id: str
    session_sid: str | None
    sub: str
    scope: str
    claims: Mapping[str, Any] | None
    acr: str
    amr: tuple[str, ...]
    auth_time: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None = None
    represents: Mapping[str, Any] | None = None
    """The entity the person chose to act for in this authorization (representation at login): the mandate's id,
    the entity's VÖEN and name and the mandate's powers at the time of the choice; None when acting as themselves.
    Re-checked at every token issued from the grant (idp.core.grants)."""


@dataclass(frozen=True, slots=True)
class Representation:
    """A valid mandate with the power to represent at login: person may act for entity `voen` (`name`) with
    `powers` (idp.sql.registry.POWERS)."""

    mandate_id: str
    voen: str
    name: str
    powers: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        """The `represents` claim (docs/registry.md, "Representation at login")."""
        return {"voen": self.voen, "name": self.name, "powers": sorted(self.powers)}

    def as_json(self) -> dict[str, Any]:
        """As stored with the pending request and the grant."""
        return {"mandate_id": self.mandate_id, **self.claim()}


@dataclass(frozen=True, slots=True)
class CodeRecord:
    code_hash: str
    grant_id: str
    client_id: str
    redirect_uri: str
    nonce: str
    code_challenge: str
    expires_at: dt.datetime
    consumed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    token_hash: str
    grant_id: str
    client_id: str
    expires_at: dt.datetime
    used_at: dt.datetime | None
    successor: str | None = None
    """Once used: the refresh token issued in its place, sealed under this token's own value
    (idp.core.grants.seal_successor); never the plaintext."""


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    client_id: str
    scopes: frozenset[str]
    claims: frozenset[str]
    granted_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """An authorization request waiting for login or consent (its validated parameters)."""

    id: str
    client_id: str
    params: Mapping[str, Any]
    csrf_token: str
    expires_at: dt.datetime


class ClientDirectory(Protocol):
    """Registered clients, read often: implementations may cache for a few seconds."""

    async def get(self, client_id: str) -> Client | None: ...


class OidcStore(Protocol):
    """The per-request unit of work of the OpenID Connect core. Methods flush; api/ commits."""

    # persons and sessions
    async def create_session(self, state: LoginState) -> None: ...
    async def get_session(self, session_id: str) -> LoginState | None: ...
    async def end_session(self, session_id: str, now: dt.datetime) -> LoginState | None: ...
    async def update_login(self, session_id: str, *, auth_time: dt.datetime, level: Level,
                           amr: tuple[str, ...]) -> None: ...
    async def revoke_session_grants(self, sid: str, now: dt.datetime, reason: str) -> int: ...
    """Revoke the grants of a login session, except offline_access ones (logout)."""
    async def add_session_client(self, session_id: str, client_id: str, sub: str) -> None: ...

    # pending authorization requests (login and consent interactions)
    async def save_pending(self, pending: PendingRequest) -> None: ...
    async def get_pending(self, pending_id: str) -> PendingRequest | None: ...
    async def delete_pending(self, pending_id: str) -> None: ...
    async def update_pending(self, pending: PendingRequest) -> None: ...
    """Store new params of a pending request (the representation chosen in it)."""

    # representation at login
    async def representations(self, person_id: str, now: dt.datetime) -> list[Representation]: ...
    """The person's mandates valid at `now` with the power to represent at login (oldest grant first)."""

    # grants, codes, refresh tokens
    async def create_grant(self, grant: GrantRecord) -> None: ...
    async def create_code(self, code: CodeRecord) -> None: ...

    async def staff_roles(self, person_id: str) -> frozenset[str]: ...
    """The staff roles the person holds now (idp.core.roles); read only for a request naming a role scope."""

    # consent
    async def get_consent(self, person_id: str, client_id: str) -> ConsentRecord | None: ...
    async def save_consent(self, person_id: str, client_id: str, scopes: frozenset[str],
                           claims: frozenset[str], now: dt.datetime) -> None: ...

    # back-channel logout
    async def queue_logouts(self, session_id: str, *, sid: str, now: dt.datetime, retry_seconds: int) -> int: ...
    """Queue a back-channel logout token for each client of the session that registered a URI."""

    # audit
    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None: ...


class TokenStore(Protocol):
    """The unit of work of the token endpoint and the endpoints that consume tokens (userinfo, introspection,
    revocation). Methods run in the request's transaction; api/ commits."""

    async def subject(self, person_id: str) -> Subject | None: ...
    async def staff_roles(self, person_id: str) -> frozenset[str]: ...
    """The staff roles the person holds now (idp.core.roles); read only for a grant carrying a role scope."""
    async def get_grant(self, grant_id: str) -> GrantRecord | None: ...
    async def representation(self, person_id: str, mandate_id: str, now: dt.datetime) -> Representation | None: ...
    """The mandate `mandate_id` of the person when it is valid at `now` with the power to represent at login."""
    async def revoke_grant(self, grant_id: str, now: dt.datetime, reason: str) -> bool: ...
    async def get_code(self, code_hash: str) -> CodeRecord | None: ...
    async def redeem_code(self, code_hash: str, now: dt.datetime) -> tuple[CodeRecord, GrantRecord | None] | None:
        """Mark an unused code used and return it with its grant (None when the grant is gone); None when the code
        is unknown, already used (atomic: of two concurrent requests one wins) or has no grant. Checks come after,
        and a failed one rolls the request back, so the code stays unused."""
    async def create_refresh(self, record: RefreshRecord) -> None: ...
    async def get_refresh(self, token_hash: str) -> RefreshRecord | None: ...
    async def use_refresh(self, token_hash: str, now: dt.datetime, successor: str) -> bool: ...
    """Mark the refresh token used, recording its sealed successor; False when it already was (atomic: of two
    concurrent requests one wins, and the other, once the winner has committed, reads the winner's successor)."""
    async def client_disabled(self, client_id: str) -> bool: ...
    """Whether the client is disabled or gone, read from the database (not from a cache): its tokens stop at once."""

    # self-contained token revocation (jti)
    async def revoke_jti(self, jti: str, expires_at: dt.datetime, reason: str, *, actor: str) -> bool: ...
    """Revoke a token by jti and record token.revoked; False when it already was."""
    async def jti_revoked(self, jti: str) -> bool: ...

    # the person's access record (issue 16)
    async def record_access(self, person_id: str, client_id: str, kind: AccessKind, *, claims: Iterable[str],
                            scopes: Iterable[str]) -> None: ...
    """Record that `client_id` received data about `person_id`: `kind` token (the ID token's person claims and the
    access token's scopes), userinfo (the claims answered) or introspection (the token's scopes). Written with the
    unit of work (deferred to its COMMIT), so only a release that commits is recorded."""

    async def audit(self, event_type: str, *, actor: str, subject: str | None = None,
                    detail: Mapping[str, Any] | None = None) -> None: ...
