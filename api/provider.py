"""The OpenID Connect provider assembled from idp/ for the web edge: services, the unit of work, cookies."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.settings import Settings
from api.units import RequestUnit
from idp.core.authorize import AuthorizationService, IdTokenHintVerifier
from idp.core.client_auth import ClientAuthenticator
from idp.core.grants import TokenService
from idp.core.interfaces import ClientDirectory
from idp.core.loa import AcrPolicy
from idp.core.sessions import SessionService
from idp.core.subjects import SubjectIdentifiers
from idp.core.tokens import ACCESS_TOKEN_ALG, ACCESS_TOKEN_TYP, TokenIssuer
from idp.sql.store import remember_assertion
from keys.jose import VerifiedClaims
from keys.token_keys import TokenKeyService
from storage.audit import GroupCommitAuditLog
from storage.base import utcnow
from storage.direct import DirectDatabase

ID_TOKEN_HINT_LEEWAY = 7 * 86400
"""An expired ID token is still a good hint of who the user was (OIDC Core 3.1.2.1, RP-Initiated Logout 2):
its signature is checked, its expiry tolerated for up to a week."""


class _ReplayCache:
    """Client-assertion jtis, each committed in a transaction of its own (RFC 7523 section 3, item 7)."""

    def __init__(self, database: DirectDatabase) -> None:
        self._db = database

    async def remember(self, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
        async with self._db.transaction() as tx:
            return await remember_assertion(tx, client_id, jti, expires_at)


class _IdTokenHints:
    """Verification of our own tokens presented back to us: ID token hints and access tokens."""

    def __init__(self, token_keys: TokenKeyService, issuer: str) -> None:
        self._keys = token_keys
        self._issuer = issuer

    async def verify(self, token: str) -> Mapping[str, Any]:
        """An ID token we issued: our key, our issuer, an asymmetric algorithm we sign with (never none or HS256),
        typ JWT; the audience is checked by the caller against the client."""
        verified = await self._keys.verify(token, issuer=self._issuer, audience=None, typ=None,
                                           algorithms=["ES256", "RS256", "EdDSA"], leeway=ID_TOKEN_HINT_LEEWAY)
        if verified.header.get("typ") not in (None, "JWT"):
            raise ValueError("not an ID token")
        return verified.claims

    async def verify_access(self, token: str) -> VerifiedClaims:
        """An RFC 9068 access token we issued (typ at+jwt, ES256, audience this issuer)."""
        return await self._keys.verify(token, issuer=self._issuer, audience=self._issuer, typ=ACCESS_TOKEN_TYP,
                                       algorithms=[ACCESS_TOKEN_ALG])


@dataclass
class Provider:
    settings: Settings
    issuer: str
    clients: ClientDirectory
    acr: AcrPolicy
    subjects: SubjectIdentifiers
    tokens: TokenIssuer
    authorization: AuthorizationService
    grants: TokenService
    login_sessions: SessionService
    verify_id_token_hint: IdTokenHintVerifier
    sessions: async_sessionmaker[AsyncSession]
    direct: DirectDatabase

    @property
    def secure_cookies(self) -> bool:
        """Cookies are Secure, and named __Host- to bind them to this exact origin (RFC 6265bis 4.1.3.2), when the
        issuer is https."""
        return self.issuer.startswith("https://")

    @property
    def cookie_name(self) -> str:
        return "__Host-acar_session" if self.secure_cookies else "acar_session"

    @property
    def browser_cookie_name(self) -> str:
        return "__Host-acar_browser" if self.secure_cookies else "acar_browser"

    def unit_of_work(self, *, reading: bool = False) -> RequestUnit:
        """The request's unit of work on the database's units (api.units; `reading` for an endpoint that only
        reads): one transaction begun at its first statement (a client_credentials token needs none), committed
        on success and on OAuth errors whose refusal itself changed state (a reused code revokes its tokens),
        rolled back otherwise, so bad input changes nothing."""
        return RequestUnit.on(self.direct, reading=reading)


def build_provider(settings: Settings, *, clients: ClientDirectory, token_keys: TokenKeyService,
                   sessions: async_sessionmaker[AsyncSession], direct: DirectDatabase,
                   audit_log: GroupCommitAuditLog) -> Provider:
    issuer = settings.issuer
    acr = AcrPolicy(settings.acr_values)
    subjects = SubjectIdentifiers(settings.pairwise_salt.get_secret_value().encode())
    tokens = TokenIssuer(token_keys.signer, issuer=issuer, access_token_lifetime=min(
        settings.access_token_lifetime_seconds, settings.token_max_lifetime_seconds),
        id_token_lifetime=min(settings.id_token_lifetime_seconds, settings.token_max_lifetime_seconds))
    hints = _IdTokenHints(token_keys, issuer)
    authenticator = ClientAuthenticator(clients, issuer=issuer, endpoints=[
        issuer + p for p in ("/token", "/introspect", "/revoke")])
    authorization = AuthorizationService(
        clients, issuer=issuer, acr=acr, subjects=subjects, verify_id_token_hint=hints.verify,
        code_lifetime=settings.authorization_code_lifetime_seconds,
        grant_lifetime=settings.refresh_token_lifetime_seconds,
        interaction_lifetime=settings.interaction_lifetime_seconds, clock=utcnow)
    grants = TokenService(authenticator, tokens, verify_access=hints.verify_access,
                          refresh_lifetime=settings.refresh_token_lifetime_seconds,
                          refresh_grace=settings.refresh_reuse_grace_seconds, hot_audit=audit_log.record,
                          replay=_ReplayCache(direct).remember, clock=utcnow)
    return Provider(settings=settings, issuer=issuer, clients=clients, acr=acr, subjects=subjects, tokens=tokens,
                    authorization=authorization, grants=grants, login_sessions=SessionService(
                        lifetime=settings.session_lifetime_seconds, clock=utcnow),
                    verify_id_token_hint=hints.verify, sessions=sessions, direct=direct)


def session_max_age(expires_at: dt.datetime) -> int:
    """Seconds left until `expires_at`, for a cookie's Max-Age."""
    return max(0, int((expires_at - utcnow()).total_seconds()))
