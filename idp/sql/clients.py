"""The client registry: registration rules, client secrets, and the cached directory the token endpoint reads.

Registration metadata follows OpenID Connect Dynamic Client Registration 1.0 section 2 (names and meaning) with a
stricter policy for a government identity provider: exact https redirect URIs (http only on loopback, RFC 8252
section 7.3), one authentication method per client (OIDC Core section 9), pairwise subjects by default with the
sector identifier of OIDC Core section 8.1. Clients are registered by operators (admin API, `acar client`), not
by the clients themselves.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from idp.core.claims import OIDC_SCOPES
from idp.core.client_auth import DocumentUnavailable, fetch_json_document, hash_secret, parse_jwks, verify_secret
from idp.core.errors import ClientNotFound, InvalidClientMetadata
from idp.core.interfaces import AUTH_METHODS, GRANT_TYPES, AuthMethod, Client, GrantType, SubjectType
from idp.core.roles import is_role_scope
from idp.sql.models import Grant, OAuthClient
from keys.errors import InvalidToken
from keys.identifiers import InvalidIdentifierFormat, check_voen
from storage.audit import record_event
from storage.base import utcnow

__all__ = [
    "CachedClientDirectory",
    "ClientMetadata",
    "ClientRegistration",
    "ClientRegistry",
    "generate_client_id",
    "generate_secret",
    "hash_secret",
    "resolve_sector",
    "to_client",
    "validate_registration",
    "verify_secret",
]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts a redirect URI may reach over plain http (RFC 8252 section 7.3: native apps on the loopback interface)."""
MAX_CLIENT_ID_LENGTH = 64
MAX_URIS = 20
MAX_URI_LENGTH = 2000
MAX_HOST_LENGTH = 253
MAX_SCOPES = 50
MAX_SCOPE_LENGTH = 200
MAX_NAME_LENGTH = 200
MAX_PURPOSE_LENGTH = 500
"""The stated purpose of a client (oauth_clients.purpose)."""
MAX_INTROSPECT_CLIENTS = 100
SECRET_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")
SUBJECT_TYPES: tuple[SubjectType, ...] = ("pairwise", "public")
ID_TOKEN_ALGS = ("ES256", "RS256", "EdDSA")
DEFAULT_GRANT_TYPES: tuple[str, ...] = ("authorization_code", "refresh_token")
DEFAULT_SCOPES: tuple[str, ...] = ("openid", "profile")


def default_scopes(grant_types: Sequence[str]) -> tuple[str, ...]:
    """The scopes of a registration that names none: openid and profile for a client of people's sign-in,
    none for a client_credentials client (which may have API scopes only)."""
    return DEFAULT_SCOPES if "authorization_code" in grant_types else ()
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
"""RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )."""
_AUTH_METHOD: dict[str, AuthMethod] = {m: m for m in AUTH_METHODS}
_GRANT_TYPE: dict[str, GrantType] = {g: g for g in GRANT_TYPES}
_SUBJECT_TYPE: dict[str, SubjectType] = {s: s for s in SUBJECT_TYPES}

DocumentFetcher = Callable[[str], Awaitable[Any]]


def generate_client_id() -> str:
    """A new client_id: 128 random bits in hex. Hex, not base64url: an id starting with "-" would be read as an
    option by `acar client show ID` and other commands that take it as an argument."""
    return secrets.token_hex(16)


def generate_secret() -> str:
    """A new client secret: 256 random bits, URL-safe. Shown once; only its hash is stored (`hash_secret`)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ClientRegistration:
    """Registration input as an operator gives it (Dynamic Client Registration metadata names, where they exist).

    `validate_registration` turns it into `ClientMetadata` or raises InvalidClientMetadata naming the field.
    """

    name: str
    redirect_uris: Sequence[str] = ()
    post_logout_redirect_uris: Sequence[str] = ()
    grant_types: Sequence[str] = DEFAULT_GRANT_TYPES
    scopes: Sequence[str] = DEFAULT_SCOPES
    auth_method: str = "client_secret_basic"
    subject_type: str = "pairwise"
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    sector_identifier_uri: str | None = None
    backchannel_logout_uri: str | None = None
    id_token_alg: str = "ES256"
    introspect_clients: Sequence[str] = ()
    purpose: str | None = None
    """What the agency uses citizens' data for (shown in their access record, issue 16)."""
    agency_voen: str | None = None
    """The agency (VÖEN) that owns the client: its agency administrators manage it (idp.sql.roles)."""


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """Registration metadata that passed `validate_registration` (only that function builds it)."""

    name: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    grant_types: tuple[GrantType, ...]
    scopes: tuple[str, ...]
    auth_method: AuthMethod
    subject_type: SubjectType
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    sector_identifier_uri: str | None
    backchannel_logout_uri: str | None
    id_token_alg: str
    introspect_clients: tuple[str, ...] = ()
    purpose: str | None = None
    agency_voen: str | None = None


def purpose_text(value: str | None) -> str | None:
    """The stated purpose: trimmed, printable, at most MAX_PURPOSE_LENGTH characters; empty is None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata("purpose: must be text")
    text = " ".join(value.split())
    if len(text) > MAX_PURPOSE_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidClientMetadata(f"purpose: must be at most {MAX_PURPOSE_LENGTH} printable characters")
    return text or None


def _name(value: str) -> str:
    name = value.strip() if isinstance(value, str) else ""
    if not name:
        raise InvalidClientMetadata("name: must not be empty")
    if len(name) > MAX_NAME_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidClientMetadata(f"name: must be at most {MAX_NAME_LENGTH} printable characters")
    return name


def _uri(value: object, field: str) -> str:
    """An absolute https URI (http on a loopback host only), without fragment, wildcard or user information."""
    if not isinstance(value, str) or not value:
        raise InvalidClientMetadata(f"{field}: must be a non-empty URI")
    if len(value) > MAX_URI_LENGTH:
        raise InvalidClientMetadata(f"{field}: URIs must be at most {MAX_URI_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidClientMetadata(f"{field}: {value!r} must not contain whitespace or control characters")
    if "*" in value:
        raise InvalidClientMetadata(f"{field}: {value} contains a wildcard; register exact URIs")
    if "#" in value:
        raise InvalidClientMetadata(f"{field}: {value} must not contain a fragment")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise InvalidClientMetadata(f"{field}: {value} is not a valid URI") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidClientMetadata(f"{field}: {value} must be an absolute https URI")
    if parts.username is not None or parts.password is not None:
        raise InvalidClientMetadata(f"{field}: {value} must not carry user information")
    if len(host) > MAX_HOST_LENGTH:
        raise InvalidClientMetadata(f"{field}: {value} has a host name longer than {MAX_HOST_LENGTH} characters")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise InvalidClientMetadata(f"{field}: {value} must use https (http only for localhost, 127.0.0.1 or [::1], "
                                    "RFC 8252 section 7.3)")
    return value


def _optional_uri(value: str | None, field: str) -> str | None:
    return None if value is None else _uri(value, field)


def _uris(values: Sequence[str], field: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidClientMetadata(f"{field}: must be a list of URIs")
    unique = tuple(dict.fromkeys(_uri(v, field) for v in values))
    if len(unique) > MAX_URIS:
        raise InvalidClientMetadata(f"{field}: at most {MAX_URIS} URIs")
    return unique


def _grant_types(values: Sequence[str]) -> tuple[GrantType, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise InvalidClientMetadata("grant_types: must list at least one grant type")
    grants: list[GrantType] = []
    for value in dict.fromkeys(values):
        grant = _GRANT_TYPE.get(value) if isinstance(value, str) else None
        if grant is None:
            raise InvalidClientMetadata(f"grant_types: {value!r} is not supported ({', '.join(GRANT_TYPES)})")
        grants.append(grant)
    return tuple(grants)


def _scopes(values: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidClientMetadata("scopes: must be a list of scope tokens")
    unique = tuple(dict.fromkeys(values))
    for scope in unique:
        if not isinstance(scope, str) or len(scope) > MAX_SCOPE_LENGTH or not _SCOPE_TOKEN.fullmatch(scope):
            raise InvalidClientMetadata(f"scopes: {scope!r} is not a scope token (RFC 6749 section 3.3)")
    if len(unique) > MAX_SCOPES:
        raise InvalidClientMetadata(f"scopes: at most {MAX_SCOPES} scopes")
    return unique


def introspect_clients(values: Sequence[str], auth_method: str) -> tuple[str, ...]:
    """The clients whose tokens a client may introspect besides its own (RFC 7662 section 4): client ids, at most
    MAX_INTROSPECT_CLIENTS; only a confidential client introspects at all (RFC 7662 section 2.1). Whether each is
    registered is checked by the registry."""
    if isinstance(values, str):
        raise InvalidClientMetadata("introspect_clients: must be a list of client ids")
    ids = tuple(dict.fromkeys(values))
    if not ids:
        return ()
    if auth_method == "none":
        raise InvalidClientMetadata("introspect_clients: a public client (auth_method none) cannot introspect")
    if len(ids) > MAX_INTROSPECT_CLIENTS:
        raise InvalidClientMetadata(f"introspect_clients: at most {MAX_INTROSPECT_CLIENTS} clients")
    for value in ids:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID_LENGTH or not value.isprintable():
            raise InvalidClientMetadata(f"introspect_clients: each must be a client id of 1 to {MAX_CLIENT_ID_LENGTH} "
                                        "printable characters")
    return ids


def _keys(reg: ClientRegistration, auth_method: AuthMethod) -> tuple[dict[str, Any] | None, str | None]:
    """jwks or jwks_uri: exactly one for private_key_jwt, neither for any other method."""
    if auth_method != "private_key_jwt":
        if reg.jwks is not None or reg.jwks_uri is not None:
            raise InvalidClientMetadata(f"jwks: keys are registered only with private_key_jwt, not {auth_method}")
        return None, None
    if (reg.jwks is None) == (reg.jwks_uri is None):
        raise InvalidClientMetadata("jwks: private_key_jwt needs exactly one of jwks and jwks_uri")
    if reg.jwks_uri is not None:
        return None, _uri(reg.jwks_uri, "jwks_uri")
    try:
        usable = parse_jwks(reg.jwks)
    except InvalidToken as exc:
        raise InvalidClientMetadata(f"jwks: {exc}") from None
    if not usable:
        raise InvalidClientMetadata("jwks: holds no usable public signing key with a kid (EC P-256, RSA of at "
                                    "least 2048 bits or Ed25519)")
    return dict(reg.jwks or {}), None


def validate_registration(reg: ClientRegistration) -> ClientMetadata:
    """Check registration input against the registry's rules; raise InvalidClientMetadata naming the field.

    Pure: the sector identifier document is fetched by `resolve_sector`, not here.
    """
    name = _name(reg.name)
    auth_method = _AUTH_METHOD.get(reg.auth_method)
    if auth_method is None:
        raise InvalidClientMetadata(f"auth_method: {reg.auth_method!r} is not supported ({', '.join(AUTH_METHODS)})")
    subject_type = _SUBJECT_TYPE.get(reg.subject_type)
    if subject_type is None:
        raise InvalidClientMetadata(f"subject_type: {reg.subject_type!r} is not supported (pairwise or public)")
    if reg.id_token_alg not in ID_TOKEN_ALGS:
        raise InvalidClientMetadata(f"id_token_alg: {reg.id_token_alg!r} is not supported ({', '.join(ID_TOKEN_ALGS)})")
    redirect_uris = _uris(reg.redirect_uris, "redirect_uris")
    post_logout = _uris(reg.post_logout_redirect_uris, "post_logout_redirect_uris")
    grant_types = _grant_types(reg.grant_types)
    scopes = _scopes(reg.scopes)
    if "authorization_code" in grant_types:
        if not redirect_uris:
            raise InvalidClientMetadata("redirect_uris: authorization_code needs at least one redirect URI")
        if "openid" not in scopes:
            raise InvalidClientMetadata("scopes: openid is required with authorization_code")
    elif "refresh_token" in grant_types:
        raise InvalidClientMetadata("grant_types: refresh_token needs authorization_code")
    elif identity := [s for s in scopes if s in OIDC_SCOPES]:
        # RFC 6749 section 4.4: a client_credentials client acts on its own behalf, so the scopes of a person's
        # sign-in (OIDC Core 5.4) could never be granted to it: refused here rather than at every token request
        raise InvalidClientMetadata(f"scopes: {' '.join(identity)} need a person signing in (authorization_code); "
                                    "a client_credentials client has API scopes only")
    if "authorization_code" not in grant_types and (role_scopes := [s for s in scopes if is_role_scope(s)]):
        # a role scope is a person's staff role (idp.core.roles): it needs a person signing in
        raise InvalidClientMetadata(f"scopes: {' '.join(role_scopes)} need a person signing in (authorization_code)")
    if auth_method == "none" and "client_credentials" in grant_types:
        raise InvalidClientMetadata("grant_types: a public client (auth_method none) cannot use client_credentials")
    jwks, jwks_uri = _keys(reg, auth_method)
    return ClientMetadata(
        name=name,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout,
        grant_types=grant_types,
        scopes=scopes,
        auth_method=auth_method,
        subject_type=subject_type,
        jwks=jwks,
        jwks_uri=jwks_uri,
        sector_identifier_uri=_optional_uri(reg.sector_identifier_uri, "sector_identifier_uri"),
        backchannel_logout_uri=_optional_uri(reg.backchannel_logout_uri, "backchannel_logout_uri"),
        id_token_alg=reg.id_token_alg,
        introspect_clients=introspect_clients(reg.introspect_clients, auth_method),
        purpose=purpose_text(reg.purpose),
        agency_voen=_agency(reg.agency_voen),
    )


def _agency(value: str | None) -> str | None:
    """The owning agency's VÖEN under the registry's rule (keys.identifiers.check_voen), or None."""
    if value is None or not value.strip():
        return None
    try:
        return check_voen(value)
    except InvalidIdentifierFormat as exc:
        raise InvalidClientMetadata(f"agency_voen: {exc}") from None


def _host(uri: str) -> str:
    return urlsplit(uri).hostname or ""


async def resolve_sector(meta: ClientMetadata, client_id: str, *,
                         fetch: DocumentFetcher = fetch_json_document) -> str:
    """The sector identifier pairwise subjects are computed for (OIDC Core 1.0 section 8.1).

    With a sector_identifier_uri: the JSON array found there must list every redirect URI, and the sector is its
    host. Without one, the redirect URIs must share one host, which is the sector; a client without redirect URIs
    (client_credentials only) is its own sector.
    """
    if meta.sector_identifier_uri is not None:
        uri = meta.sector_identifier_uri
        try:
            document = await fetch(uri)
        except DocumentUnavailable as exc:
            raise InvalidClientMetadata(f"sector_identifier_uri: {exc}") from None
        if not isinstance(document, list) or not all(isinstance(item, str) for item in document):
            raise InvalidClientMetadata(f"sector_identifier_uri: {uri} must hold a JSON array of URIs")
        missing = [u for u in meta.redirect_uris if u not in document]
        if missing:
            raise InvalidClientMetadata(f"sector_identifier_uri: {uri} does not list {', '.join(missing)}")
        return _host(uri)
    hosts = sorted({_host(u) for u in meta.redirect_uris})
    if len(hosts) > 1:
        raise InvalidClientMetadata(f"redirect_uris: span several hosts ({', '.join(hosts)}); register a "
                                    "sector_identifier_uri listing them (OIDC Core section 8.1)")
    return hosts[0] if hosts else client_id


def to_client(row: OAuthClient) -> Client:
    """The plain record the protocol core works with."""
    return Client(
        client_id=row.client_id,
        name=row.name,
        auth_method=_AUTH_METHOD[row.auth_method],  # the table's check constraint keeps these values valid
        secret_hash=row.secret_hash,
        redirect_uris=tuple(row.redirect_uris),
        post_logout_redirect_uris=tuple(row.post_logout_redirect_uris),
        grant_types=frozenset(row.grant_types),
        scopes=frozenset(row.scopes),
        subject_type=_SUBJECT_TYPE[row.subject_type],
        sector_identifier=row.sector_identifier,
        jwks=dict(row.jwks) if row.jwks is not None else None,
        jwks_uri=row.jwks_uri,
        backchannel_logout_uri=row.backchannel_logout_uri,
        sector_identifier_uri=row.sector_identifier_uri,
        id_token_alg=row.id_token_alg,
        disabled=row.disabled_at is not None,
        introspect_clients=frozenset(row.introspect_clients or ()),
        purpose=row.purpose,
        agency_voen=row.agency_voen,
    )


class ClientRegistry:
    """Registers and manages clients in the caller's unit of work (methods flush; the caller commits)."""

    def __init__(self, session: AsyncSession, *, fetch_document: DocumentFetcher = fetch_json_document,
                 clock: Callable[[], dt.datetime] = utcnow, signing_algs: Iterable[str] = ID_TOKEN_ALGS) -> None:
        self._session = session
        self._signing_algs = tuple(signing_algs)
        """The algorithms this provider has token keys for: an ID token algorithm outside them is refused."""
        self._fetch = fetch_document
        self._clock = clock

    async def add(self, registration: ClientRegistration, *, actor: str,
                  request_id: str | None = None) -> tuple[Client, str | None]:
        """Register a client; returns it and, for client_secret_basic/post, its secret (shown this once)."""
        meta = validate_registration(registration)
        if meta.id_token_alg not in self._signing_algs:
            raise InvalidClientMetadata(f"id_token_alg: this provider signs ID tokens with "
                                        f"{', '.join(self._signing_algs)} only (ACAR_TOKEN_KEY_ALGORITHMS)")
        client_id = generate_client_id()
        sector = await resolve_sector(meta, client_id, fetch=self._fetch)  # before any database work
        await self._registered(meta.introspect_clients, "introspect_clients")
        secret = generate_secret() if meta.auth_method in SECRET_METHODS else None
        now = self._clock()
        row = OAuthClient(
            client_id=client_id, name=meta.name, auth_method=meta.auth_method,
            secret_hash=hash_secret(secret) if secret is not None else None,
            redirect_uris=list(meta.redirect_uris), post_logout_redirect_uris=list(meta.post_logout_redirect_uris),
            grant_types=list(meta.grant_types), scopes=list(meta.scopes), subject_type=meta.subject_type,
            sector_identifier=sector, sector_identifier_uri=meta.sector_identifier_uri, jwks=meta.jwks,
            jwks_uri=meta.jwks_uri, backchannel_logout_uri=meta.backchannel_logout_uri,
            id_token_alg=meta.id_token_alg, introspect_clients=list(meta.introspect_clients),
            agency_voen=meta.agency_voen, created_at=now, updated_at=now, purpose=meta.purpose,
        )
        self._session.add(row)
        await self._session.flush()
        record_event(self._session, "client.registered", actor=actor, subject=client_id, request_id=request_id,
                     detail={"name": meta.name, "auth_method": meta.auth_method, "grant_types": list(meta.grant_types),
                             "scopes": list(meta.scopes), "redirect_uris": list(meta.redirect_uris),
                             "subject_type": meta.subject_type, "sector_identifier": sector,
                             "introspect_clients": list(meta.introspect_clients), "purpose": meta.purpose,
                             "agency_voen": meta.agency_voen})
        return to_client(row), secret

    async def get(self, client_id: str) -> Client | None:
        row = await self._session.get(OAuthClient, client_id)
        return to_client(row) if row is not None else None

    async def list(self, *, agency_voen: str | None = None) -> builtins.list[Client]:
        """Every client, or only those owned by the agency `agency_voen` (an agency administrator's view)."""
        query = select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.client_id)
        if agency_voen is not None:
            query = query.where(OAuthClient.agency_voen == agency_voen)
        rows = await self._session.execute(query)
        return [to_client(row) for row in rows.scalars()]

    async def disable(self, client_id: str, *, actor: str, request_id: str | None = None) -> Client:
        """Disable a client: it can no longer authenticate or be sent tokens, and what it holds stops at once.

        Its grants are revoked in the same transaction, so every refresh token and every access token of a grant is
        refused on every node from the commit on (the token endpoint, userinfo and introspection read the grant, not
        the cached client); its client_credentials tokens are refused where they are checked against the client
        (idp.core.grants.TokenService.active_access_token). Disabling twice changes nothing."""
        row = await self._row(client_id)
        if row.disabled_at is None:
            now = self._clock()
            row.disabled_at = row.updated_at = now
            await self._session.flush()
            revoked = await self._session.execute(
                update(Grant).where(Grant.client_id == client_id, Grant.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason="client disabled").execution_options(synchronize_session=False))
            record_event(self._session, "client.disabled", actor=actor, subject=client_id, request_id=request_id,
                         detail={"grants_revoked": revoked.rowcount})  # type: ignore[attr-defined]
        return to_client(row)

    async def set_agency(self, client_id: str, agency_voen: str | None, *, actor: str,
                         request_id: str | None = None) -> Client:
        """Set the agency owning the client (None: no agency, system administrators only), audited client.updated."""
        row = await self._row(client_id)
        agency = _agency(agency_voen)
        if agency != row.agency_voen:
            before, row.agency_voen, row.updated_at = row.agency_voen, agency, self._clock()
            await self._session.flush()
            record_event(self._session, "client.updated", actor=actor, subject=client_id, request_id=request_id,
                         detail={"agency_voen": agency, "agency_voen_before": before})
        return to_client(row)

    async def set_introspect_clients(self, client_id: str, clients: Sequence[str], *, actor: str,
                                     request_id: str | None = None) -> Client:
        """Replace the clients whose tokens `client_id` may introspect (RFC 7662 section 4); each must be registered."""
        row = await self._row(client_id)
        ids = introspect_clients(clients, row.auth_method)
        await self._registered(ids, "introspect_clients")
        if list(ids) != list(row.introspect_clients or ()):
            row.introspect_clients = list(ids)
            row.updated_at = self._clock()
            await self._session.flush()
            record_event(self._session, "client.updated", actor=actor, subject=client_id, request_id=request_id,
                         detail={"introspect_clients": list(ids)})
        return to_client(row)

    async def rotate_secret(self, client_id: str, *, actor: str, request_id: str | None = None) -> str:
        """Replace the client's secret (the old one stops working at once); returns the new one, shown once."""
        row = await self._row(client_id)
        if row.auth_method not in SECRET_METHODS:
            raise InvalidClientMetadata(f"auth_method: client {client_id} authenticates with {row.auth_method} "
                                        "and has no secret")
        secret = generate_secret()
        row.secret_hash = hash_secret(secret)
        row.updated_at = self._clock()
        await self._session.flush()
        record_event(self._session, "client.secret_rotated", actor=actor, subject=client_id, request_id=request_id)
        return secret

    async def _registered(self, client_ids: Iterable[str], field: str) -> None:
        wanted = set(client_ids)
        if not wanted:
            return
        found = set((await self._session.execute(
            select(OAuthClient.client_id).where(OAuthClient.client_id.in_(wanted)))).scalars())
        missing = sorted(wanted - found)
        if missing:
            raise InvalidClientMetadata(f"{field}: no client {missing[0]!r} is registered")

    async def _row(self, client_id: str) -> OAuthClient:
        row = await self._session.get(OAuthClient, client_id)
        if row is None:
            raise ClientNotFound(f"no client {client_id!r} is registered")
        return row


class CachedClientDirectory:
    """The `ClientDirectory` of the token endpoint: each client (or its absence) is kept for `ttl_seconds`.

    A hit is one dict lookup: no database, no lock. A miss reads the row in a session of its own. Changes made
    through this node are seen at once (`invalidate`); other nodes see them within the ttl. A ttl of 0 reads the
    database on every call. Disabled clients are returned, with disabled=True, for the caller to refuse.
    """

    MAX_ENTRIES = 10_000
    """Bounds the memory junk client ids can take: past it, expired entries go, then everything."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, Client | None]] = {}
        self._generation = 0

    async def get(self, client_id: str) -> Client | None:
        entry = self._entries.get(client_id)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:  # longer ids cannot be in the table
            return None
        generation = self._generation
        async with self._sessions() as session:
            row = await session.get(OAuthClient, client_id)
            client = to_client(row) if row is not None else None
        if self._ttl > 0 and generation == self._generation:  # an invalidate() during the read wins
            if len(self._entries) >= self.MAX_ENTRIES:
                self._evict()
            self._entries[client_id] = (self._clock() + self._ttl, client)
        return client

    def invalidate(self, client_id: str | None = None) -> None:
        """Forget one client, or all of them."""
        self._generation += 1
        if client_id is None:
            self._entries.clear()
        else:
            self._entries.pop(client_id, None)

    def _evict(self) -> None:
        now = self._clock()
        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
