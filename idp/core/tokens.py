"""The tokens the provider signs: RFC 9068 access tokens, OIDC Core ID tokens, Back-Channel Logout tokens.

Every token is signed through keys/ (a KeyHandle behind JwsSigner); nothing here sees a private key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from keys.jose import JwsSigner, b64url

ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 section 2.1
LOGOUT_TOKEN_TYP = "logout+jwt"  # OIDC Back-Channel Logout 1.0 section 2.4
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = 120
ACCESS_TOKEN_ALG = "ES256"

SignerSource = Callable[[str], Awaitable[JwsSigner]]


def new_jti(prefix: str = "") -> str:
    """A token id; access tokens of a grant carry the grant id before the dot (revocation by family)."""
    return f"{prefix}.{secrets.token_urlsafe(12)}" if prefix else secrets.token_urlsafe(16)


def grant_of(jti: str) -> str | None:
    """The grant id an access token's jti names (None for client_credentials tokens)."""
    head, dot, _ = jti.partition(".")
    return head if dot else None


def left_half_hash(value: str, alg: str) -> str:
    """at_hash (OIDC Core 3.1.3.6): base64url of the left half of the hash of the ID token's algorithm:
    SHA-256 for ES256 and RS256, SHA-512 for EdDSA with Ed25519 (OpenID Connect WG issue 1125)."""
    digest = hashlib.sha512 if alg == "EdDSA" else hashlib.sha256
    full = digest(value.encode("ascii")).digest()
    return b64url(full[:len(full) // 2])


class TokenIssuer:
    """Signs tokens for one issuer with the current token keys."""

    def __init__(self, signer: SignerSource, *, issuer: str, access_token_lifetime: int, id_token_lifetime: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._signer = signer
        self.issuer = issuer
        self.access_token_lifetime = access_token_lifetime
        self.id_token_lifetime = id_token_lifetime
        self._clock = clock

    @property
    def access_audience(self) -> str:
        """The audience of our access tokens: this provider's resources (userinfo) and the agencies' APIs
        that trust it, as RFC 9068 section 3 allows when no resource indicator is sent."""
        return self.issuer

    async def access_token(self, *, client_id: str, sub: str, scope: str, jti: str,
                           extra: Mapping[str, Any] | None = None) -> tuple[str, int]:
        """RFC 9068 section 2.2: iss, exp, aud, sub, client_id, iat, jti (+ scope, auth_time, acr, amr)."""
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self.issuer, "exp": now + self.access_token_lifetime, "aud": self.access_audience,
            "sub": sub, "client_id": client_id, "iat": now, "jti": jti,
        }
        if scope:
            claims["scope"] = scope
        if extra:
            claims.update(extra)
        signer = await self._signer(ACCESS_TOKEN_ALG)
        return await signer.sign(claims, ACCESS_TOKEN_TYP), self.access_token_lifetime

    async def id_token(self, *, client_id: str, alg: str, sub: str, nonce: str | None, auth_time: int,
                       acr: str, amr: Iterable[str], sid: str | None, access_token: str | None,
                       claims: Mapping[str, Any] | None = None) -> str:
        """OIDC Core 2 and 3.1.3.6: the ID token with at_hash when an access token is issued beside it."""
        now = int(self._clock())
        body: dict[str, Any] = {
            "iss": self.issuer, "sub": sub, "aud": client_id, "exp": now + self.id_token_lifetime, "iat": now,
            "auth_time": auth_time, "acr": acr, "amr": list(amr), "azp": client_id,
        }
        if nonce is not None:
            body["nonce"] = nonce
        if sid:
            body["sid"] = sid
        if access_token is not None:
            body["at_hash"] = left_half_hash(access_token, alg)
        if claims:
            body.update({k: v for k, v in claims.items() if k not in body})
        signer = await self._signer(alg)
        return await signer.sign(body, "JWT")

    async def logout_token(self, *, client_id: str, sub: str, sid: str) -> str:
        """OIDC Back-Channel Logout 1.0 section 2.4: iss, aud, iat, exp, jti, events, sub and sid; no nonce."""
        now = int(self._clock())
        body = {
            "iss": self.issuer, "aud": client_id, "iat": now, "exp": now + LOGOUT_TOKEN_LIFETIME,
            "jti": new_jti(), "sub": sub, "sid": sid, "events": {BACKCHANNEL_EVENT: {}},
        }
        signer = await self._signer(ACCESS_TOKEN_ALG)
        return await signer.sign(body, LOGOUT_TOKEN_TYP)
