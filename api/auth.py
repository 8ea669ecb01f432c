"""Bearer authentication of the admin API.

Two kinds of bearer token (RFC 6750 for the scheme and its error codes) are accepted:

- machine admin tokens (`acar admin token`): RFC 9068 JWT access tokens (typ at+jwt) signed by our own token keys,
  audience `<issuer>/admin`, with space-separated scopes: `acar:admin` allows everything, narrower scopes
  (`acar:cert:revoke`, `acar:token:mint`, `acar:client:manage`, `acar:enroll`) allow one area. Any node verifies
  any node's tokens through the shared key set.
- a staff member's own access token: issued by this IdP to a person through the authorization code flow, for a
  client registered for a role scope (idp.core.roles: `acar:role:registration_officer`, `acar:role:agency_admin`,
  `acar:role:system_admin`). The token carries a role scope only if the person held the role when it was issued;
  here the role is checked again at every request against the staff_roles table (idp.sql.roles.RoleService), so
  a revoked role is refused at the next request. An agency administrator's agency comes from that row.

What each role may do is a `Permission` (the permission matrix of docs/registry.md): the machine scope that allows
it and the staff roles that do. A plain citizen's token (no role scope, or a role not held) is refused with 403.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Services
from api.errors import ApiProblem
from api.settings import MAX_TOKEN_LIFETIME_CEILING, Settings
from idp.core.roles import AGENCY_ADMIN, REGISTRATION_OFFICER, SYSTEM_ADMIN, role_of_scope
from idp.sql.models import Person
from idp.sql.revocation import TokenRevocations
from idp.sql.roles import RoleService
from keys.errors import InvalidToken
from keys.jose import CLOCK_SKEW_LEEWAY_SECONDS, VerifiedClaims
from storage.audit import record_event
from storage.base import utcnow
from storage.direct import SessionTransaction

if TYPE_CHECKING:
    from keys.token_keys import TokenKeyService

ADMIN_SCOPE = "acar:admin"
MINT_SCOPE = "acar:token:mint"
REVOKE_SCOPE = "acar:cert:revoke"
CLIENT_SCOPE = "acar:client:manage"
ENROLL_SCOPE = "acar:enroll"
ADMIN_SCOPES = frozenset({ADMIN_SCOPE, REVOKE_SCOPE, MINT_SCOPE, CLIENT_SCOPE, ENROLL_SCOPE})
DELEGABLE_SCOPES = ADMIN_SCOPES - {ADMIN_SCOPE, MINT_SCOPE}
"""What POST /admin/tokens may hand out: operational scopes only. Tokens that can mint or do everything come
from `acar admin token` alone (database and key-store access), so a leaked API token cannot renew itself."""


AUTHENTICATORS: set[Callable[[Request], Awaitable[AdminPrincipal]]] = set()
"""Every dependency made by `require_scope`: api.bodies runs a route's own before answering a body FastAPI
could not decode, so authentication is answered first."""


class MintingServices(Protocol):
    """What mint_admin_token uses: the settings (issuer, lifetime limit) and the token keys. api.deps.Services
    has them; so has the CLI's api.cli.CommandServices, which builds nothing more for `acar admin token`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def token_keys(self) -> TokenKeyService: ...


@dataclass(frozen=True, slots=True)
class Permission:
    """One area of the admin API: the machine admin token scope that allows it (acar:admin always does) and the
    staff roles that do (the role scope in the person's token AND the role held now)."""

    name: str
    scope: str
    roles: frozenset[str]


PERSONS = Permission("persons", ADMIN_SCOPE, frozenset({REGISTRATION_OFFICER, SYSTEM_ADMIN}))
"""Register persons, show them, change their status."""
ENTITIES = Permission("entities", ADMIN_SCOPE, frozenset({REGISTRATION_OFFICER, SYSTEM_ADMIN}))
"""Register legal entities, show them, change their status; grant, list and revoke mandates."""
CODES = Permission("codes", ENROLL_SCOPE, frozenset({REGISTRATION_OFFICER, SYSTEM_ADMIN}))
"""Issue activation codes (and recover lost passkeys)."""
CLIENTS = Permission("clients", CLIENT_SCOPE, frozenset({AGENCY_ADMIN, SYSTEM_ADMIN}))
"""Manage clients: a system administrator every client, an agency administrator its own agency's only."""
ROLES = Permission("roles", ADMIN_SCOPE, frozenset({SYSTEM_ADMIN}))
"""Grant, revoke and list staff roles."""
CERTIFICATES = Permission("certificates", REVOKE_SCOPE, frozenset({SYSTEM_ADMIN}))
"""Revoke a certificate."""
TOKEN_REVOCATION = Permission("admin tokens", ADMIN_SCOPE, frozenset({SYSTEM_ADMIN}))
"""Revoke a machine admin token. Minting one stays with machine tokens (acar:token:mint): a token minted from a
person's would outlive the check of their role."""
_ROLE_PRECEDENCE = (SYSTEM_ADMIN, REGISTRATION_OFFICER, AGENCY_ADMIN)
"""Which role acts when a person may act in several: the broadest first."""


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """Who calls the admin API: a machine admin token (`person_id` None) or a staff member acting in `role`.

    `agencies`: the agencies (VÖEN) whose clients the caller may manage; None for every agency (a machine token,
    a system administrator)."""

    subject: str
    scopes: frozenset[str]
    claims: VerifiedClaims
    person_id: str | None = None
    role: str | None = None
    agencies: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """The audit trail's actor: `admin:<sub>` for a machine token, `<role>:<person id>` for a staff member."""
        if self.person_id is None:
            return f"admin:{self.subject}"
        return f"{self.role}:{self.person_id}"

    def manages(self, agency_voen: str | None) -> bool:
        """Whether the caller may see and change a client owned by `agency_voen` (None: no agency)."""
        return self.agencies is None or (agency_voen is not None and agency_voen in self.agencies)


async def revoke_admin_token(session: AsyncSession, jti: str, *, reason: str, actor: str) -> bool:
    """Revoke an admin token by jti until the longest admin token any configuration allows has expired.

    The bound is the setting's ceiling, not this process's value: a CLI run with a smaller
    ACAR_TOKEN_MAX_LIFETIME_SECONDS than the servers must not let the revocation lapse early.
    """
    expires_at = utcnow() + dt.timedelta(seconds=MAX_TOKEN_LIFETIME_CEILING + CLOCK_SKEW_LEEWAY_SECONDS)
    return await TokenRevocations(SessionTransaction(session)).revoke(jti, expires_at=expires_at, reason=reason,
                                                                       actor=actor)


def _invalid_token(detail: str) -> ApiProblem:
    return ApiProblem(401, "invalid_token", "Invalid token", detail,
                      headers={"WWW-Authenticate": 'Bearer realm="acar-admin", error="invalid_token"'})


def record_mint(session: AsyncSession, minted: dict[str, object], *, actor: str, subject: str, ttl: int,
                request_id: str | None = None, minter_jti: object = None) -> None:
    """The audit event of a minted admin token: who, for whom, which scope, key and jti (never the token)."""
    detail = {"scope": minted["scope"], "ttl": ttl, "kid": minted["kid"], "jti": minted["jti"]}
    if minter_jti is not None:
        detail["minter_jti"] = minter_jti
    record_event(session, "admin_token.minted", actor=actor, subject=subject, request_id=request_id, detail=detail)


def admin_audience(issuer: str) -> str:
    return issuer + "/admin"


async def mint_admin_token(
    services: MintingServices, *, subject: str, scopes: set[str], ttl_seconds: int, actor: tuple[str, str] | None = None
) -> dict[str, object]:
    """Sign an admin access token with the current ES256 key (RFC 9068 section 2.2 claims).

    `actor` is (subject, jti) of the token that minted it on someone else's behalf, kept as the RFC 8693
    section 4.1 `act` claim: revoking the minting token revokes what it minted.
    """
    unknown = scopes - ADMIN_SCOPES
    if unknown or not scopes:
        raise ValueError(f"unknown scope(s): {', '.join(sorted(unknown)) or '(none)'}; "
                         f"allowed: {', '.join(sorted(ADMIN_SCOPES))}")
    limit = services.settings.token_max_lifetime_seconds
    if not 1 <= ttl_seconds <= limit:
        raise ValueError(f"ttl must be between 1 and {limit} seconds (ACAR_TOKEN_MAX_LIFETIME_SECONDS)")
    issuer = services.settings.issuer
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": admin_audience(issuer), "client_id": "acar-admin",
              "iat": now, "exp": now + ttl_seconds, "jti": secrets.token_hex(16), "scope": " ".join(sorted(scopes))}
    if actor is not None:
        claims["act"] = {"sub": actor[0], "jti": actor[1]}
    signer = await services.token_keys.signer("ES256")
    return {"access_token": await signer.sign(claims, typ="at+jwt"), "token_type": "Bearer", "expires_in": ttl_seconds,
            "scope": claims["scope"], "kid": signer.kid, "jti": claims["jti"]}


def require_scope(scope: str) -> Callable[[Request], Awaitable[AdminPrincipal]]:
    """A FastAPI dependency: a valid machine admin bearer token carrying `scope` (or acar:admin); no staff role
    allows it."""
    return require_permission(Permission(scope, scope, frozenset()))


def require_permission(permission: Permission) -> Callable[[Request], Awaitable[AdminPrincipal]]:
    """A FastAPI dependency: a machine admin token carrying `permission.scope` (or acar:admin), or a staff member's
    access token carrying the role scope of one of `permission.roles` while the person holds that role now."""

    async def dependency(request: Request) -> AdminPrincipal:
        services: Services = request.app.state.services
        limits = services.ratelimits  # per IP, before the token is verified (ACAR_RATE_LIMIT_ADMIN)
        await limits.spend(limits.budgets.admin, [("ip", limits.client_ip(request))], answer="json")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiProblem(401, "unauthorized", "Authentication required", "send an admin bearer token",
                             headers={"WWW-Authenticate": 'Bearer realm="acar-admin"'})
        try:
            claims = await services.token_keys.verify(
                token.strip(), issuer=services.settings.issuer, audience=admin_audience(services.settings.issuer),
                typ="at+jwt", algorithms=["ES256", "RS256", "EdDSA"])
        except InvalidToken as exc:
            staff = await _staff_principal(services, token.strip(), permission)
            if staff is None:
                raise _invalid_token(str(exc)) from None
            return staff
        scope = permission.scope
        jti = claims.claims.get("jti")
        if not isinstance(jti, str):
            raise _invalid_token("admin tokens carry a jti")
        chain = [jti]
        act = claims.claims.get("act")
        if isinstance(act, dict) and isinstance(act.get("jti"), str):
            chain.append(act["jti"])  # a token minted by a revoked token is revoked with it
        async with services.direct.reading() as unit:
            revoked = await TokenRevocations(unit).any_revoked(chain)
        if revoked:
            raise _invalid_token("token has been revoked")
        scopes = frozenset(str(claims.claims.get("scope", "")).split())
        if scope not in scopes and ADMIN_SCOPE not in scopes:
            raise ApiProblem(403, "insufficient_scope", "Insufficient scope", f"this operation needs scope {scope}",
                             headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
        return AdminPrincipal(subject=str(claims.claims.get("sub", "")), scopes=scopes, claims=claims)

    AUTHENTICATORS.add(dependency)
    return dependency


def _insufficient(detail: str, permission: Permission) -> ApiProblem:
    wanted = " ".join(sorted(f"acar:role:{r}" for r in permission.roles)) or permission.scope
    return ApiProblem(403, "insufficient_scope", "Insufficient scope", detail,
                      headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{wanted}"'})


async def _staff_principal(services: Services, token: str, permission: Permission) -> AdminPrincipal | None:
    """The staff member whose own access token (authorization code flow, RFC 9068) this is, acting in a role of
    `permission`; None when it is not an active access token of this IdP (the caller answers 401). 403 when the
    token is a client's own (client_credentials), carries no role scope of `permission`, or its person no longer
    holds such a role or is not active: roles are read from the database at every request (idp.sql.roles)."""
    from idp.core.errors import InvalidToken as InactiveToken

    provider = services.oidc
    try:
        async with provider.unit_of_work(reading=True) as unit:
            verified, grant = await provider.grants.active_access_token(token, unit.oidc)
    except InactiveToken:
        return None
    if grant is None:
        raise _insufficient("the admin API takes an admin token or a staff member's own access token, not a "
                            "client's", permission)
    scopes = frozenset(str(verified.claims.get("scope", "")).split())
    asked = {role for s in scopes if (role := role_of_scope(s)) is not None} & permission.roles
    if not asked:
        raise _insufficient(f"this operation needs a token with one of the role scopes of {permission.name}",
                            permission)
    async with services.sessions() as session:
        person = await session.get(Person, grant.person_id)
        held = await RoleService(session).roles_of(grant.person_id) if person is not None else []
    if person is None or person.status != "active":
        raise _insufficient("the person of this token is not active", permission)
    acting = [g for g in held if g.role in asked]
    if not acting:
        raise _insufficient("the person of this token does not hold the role (any longer)", permission)
    role = next(r for r in _ROLE_PRECEDENCE if any(g.role == r for g in acting))
    agencies = None if role != AGENCY_ADMIN else frozenset(
        g.agency_voen for g in acting if g.role == AGENCY_ADMIN and g.agency_voen is not None)
    return AdminPrincipal(subject=str(verified.claims.get("sub", "")), scopes=scopes, claims=verified,
                          person_id=grant.person_id, role=role, agencies=agencies)


# --- agency clients: client_credentials access tokens of our own IdP (the signing API) ---------------------------

SIGNING_SCOPE = "signing"
"""The API scope an agency client is registered for (`acar client add --grant-type client_credentials --scope
signing`) to use /api/v1/signing-requests."""
CLIENT_AUTHENTICATORS: set[Callable[[Request], Awaitable[AgencyClient]]] = set()
"""Every dependency made by `require_client_scope` (api.openapi documents their operations' bearer scheme)."""


@dataclass(frozen=True, slots=True)
class AgencyClient:
    """An agency system authenticated by its own client_credentials access token."""

    client_id: str
    scopes: frozenset[str]


async def _client_token(request: Request, challenge: str) -> AgencyClient:
    """The agency client whose own active access token (RFC 9068, client_credentials) the request carries as its
    Bearer token; ApiProblem 401 (invalid_token) or 403 (a person's token) with the RFC 6750 section 3 challenge."""
    from idp.core.errors import InvalidToken as InactiveToken

    services: Services = request.app.state.services
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(401, "unauthorized", "Authentication required",
                         "send the client's access token (client_credentials) as a Bearer token",
                         headers={"WWW-Authenticate": challenge})
    provider = services.oidc
    try:
        async with provider.unit_of_work(reading=True) as unit:
            verified, grant = await provider.grants.active_access_token(token.strip(), unit.oidc)
    except InactiveToken as exc:
        raise ApiProblem(401, "invalid_token", "Invalid token", exc.description, headers={
            "WWW-Authenticate": f'{challenge}, error="invalid_token"'}) from None
    client_id = str(verified.claims.get("client_id", ""))
    scopes = frozenset(str(verified.claims.get("scope", "")).split())
    if grant is not None or verified.claims.get("sub") != client_id:
        raise ApiProblem(403, "insufficient_scope", "Insufficient scope",
                         "this API takes a client's own token (client_credentials), not a person's",
                         headers={"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'})
    return AgencyClient(client_id=client_id, scopes=scopes)


def require_client_scope(scope: str) -> Callable[[Request], Awaitable[AgencyClient]]:
    """A FastAPI dependency: an RFC 9068 access token this IdP issued to a client on its own behalf
    (client_credentials: no person), active (not revoked, its client not disabled: idp.core.grants
    active_access_token), carrying `scope`. Refusals are problems with the Bearer challenge of RFC 6750 section 3:
    401 invalid_token, 403 insufficient_scope."""
    challenge = f'Bearer realm="acar", scope="{scope}"'

    async def dependency(request: Request) -> AgencyClient:
        client = await _client_token(request, challenge)
        if scope not in client.scopes:
            raise ApiProblem(403, "insufficient_scope", "Insufficient scope",
                             f"the access token does not carry the scope {scope}",
                             headers={"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'})
        return client

    CLIENT_AUTHENTICATORS.add(dependency)
    return dependency


async def optional_client(request: Request) -> AgencyClient | None:
    """A FastAPI dependency for an API open to anyone that agencies may call with their token (the validation
    API): None without an Authorization header; with one, the agency client of a valid client_credentials token of
    any scope (validation needs no permission of its own: the token identifies the caller, exempts it from the
    anonymous rate limit and names it in the audit). A token that is present but invalid is refused (401), never
    taken as anonymous, so a broken integration notices."""
    if "authorization" not in request.headers:
        return None
    return await _client_token(request, 'Bearer realm="acar"')
