"""The token endpoint (RFC 6749 section 3.2, OIDC Core 3.1.3) and the token-consuming endpoints: userinfo
(OIDC Core 5.3), introspection (RFC 7662) and revocation (RFC 7009).

Grants: authorization_code (single use; a reused code revokes what it produced, RFC 6749 4.1.2), refresh_token
(rotated at every use; reuse of a rotated token revokes the family, RFC 9700 section 4.14.2) and client_credentials
(RFC 6749 4.4, scopes restricted per client).

Refresh token reuse (RFC 9700 section 4.14.2, "refresh token rotation"): with the default grace of 0 seconds any
second use of a rotated refresh token revokes the whole grant at once. Where a grace window is configured (for
clients that retry a request whose answer they lost), a reuse within it answers with the SAME successor the first
use issued (the same refresh token value, of the same grant: idempotent), never a new token family; a reuse after the
window, or once that successor has itself been used, revokes the grant. See `seal_successor` for how the successor
is kept without storing it in the clear.

Introspection (RFC 7662) is for confidential clients only, and tells a client about its own tokens and those of the
clients it is registered to introspect (`Client.introspect_clients`); every other token is {"active": false}.
A disabled client's tokens are inactive at once (userinfo, introspection; its grants are revoked on disabling).

Representation at login (docs/registry.md): a grant made while the person chose to act for an entity carries the
`represents` claim in its ID tokens and userinfo while its scope has `represents`. The mandate is checked again at
every token issued from the grant: once it is no longer valid (revoked, expired, the entity no longer active, the
power removed) the grant is revoked and the token request refused with invalid_grant (RFC 6749 section 5.2: the
grant "is invalid, expired, revoked"), so no token ever claims a mandate that has ended; userinfo answers
invalid_token. Grants without representation read nothing more.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from idp.core import pkce, roles
from idp.core.authorize import token_hash
from idp.core.claims import OIDC_SCOPES, REPRESENTS, SCOPE_CLAIMS, ClaimsRequest, person_claims
from idp.core.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from idp.core.interfaces import Client, GrantRecord, RefreshRecord, TokenStore
from idp.core.tokens import TokenIssuer, grant_of, new_jti
from keys.errors import InvalidToken as MalformedValue
from keys.jose import VerifiedClaims, b64url, b64url_decode

MAX_FORM_VALUE = 8192
_SUCCESSOR_INFO = b"acar refresh-token successor v1"
_SUCCESSOR_NONCE = 12


def _successor_key(presented: str) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_SUCCESSOR_INFO)
                  .derive(presented.encode("utf-8")))


def seal_successor(presented: str, successor: str) -> str:
    """The successor of a used refresh token as stored in the used token's row: AES-256-GCM under a key derived
    (HKDF-SHA256, RFC 5869) from the presented refresh token itself.

    Why sealed and not derived: a reuse within the grace window must answer with the same refresh token (RFC 9700
    section 4.14.2 asks for reuse detection; a second, independent family would defeat it). The database keeps
    only SHA-256 hashes of refresh tokens, so the successor's value must be kept some other way. Sealing it under
    the presented token's own value means that only a party that holds the old refresh token (the one party
    entitled to the answer again) can open it: a copy of the database does not reveal it (the key is derived
    from the token, and the row holds only the token's SHA-256, a different function of a 256-bit random value),
    and no server secret is needed, so there is no new key to manage or rotate. A deterministic derivation from a
    server secret would work as well, but would make every refresh token of every grant computable by whoever
    learns that one secret. Each key seals one value only, under a fresh random nonce.
    """
    nonce = secrets.token_bytes(_SUCCESSOR_NONCE)
    return b64url(nonce + _successor_key(presented).encrypt(nonce, successor.encode("ascii"), _SUCCESSOR_INFO))


def open_successor(presented: str, sealed: str) -> str | None:
    """The successor `seal_successor` sealed for `presented`; None when it cannot be opened."""
    try:
        raw = b64url_decode(sealed)
        plain = _successor_key(presented).decrypt(raw[:_SUCCESSOR_NONCE], raw[_SUCCESSOR_NONCE:], _SUCCESSOR_INFO)
        return plain.decode("ascii")
    except (InvalidTag, MalformedValue, ValueError):
        return None


class ClientAuthentication(Protocol):
    async def authenticate(self, form: Mapping[str, str], authorization: str | None, *,
                           replay: Callable[[str, str, dt.datetime], Awaitable[bool]]) -> Client: ...


AccessTokenVerifier = Callable[[str], Awaitable[VerifiedClaims]]
ReplayCheck = Callable[[str, str, dt.datetime], Awaitable[bool]]
"""(client_id, jti, expires_at) -> False when the assertion was seen before (RFC 7523 section 3)."""
HotAudit = Callable[..., Awaitable[None]]


def single_values(form: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """RFC 6749 section 3.2: "Request and response parameters MUST NOT be included more than once"."""
    out: dict[str, str] = {}
    for name, values in form.items():
        if len(values) != 1:
            raise InvalidRequest(f"{name} is repeated")
        if len(values[0]) > MAX_FORM_VALUE:
            raise InvalidRequest(f"{name} is too long")
        out[name] = values[0]
    return out


@dataclass(frozen=True, slots=True)
class TokenResponse:
    body: dict[str, Any]


class TokenService:
    def __init__(self, authenticator: ClientAuthentication, tokens: TokenIssuer, *, verify_access: AccessTokenVerifier,
                 refresh_lifetime: int, refresh_grace: int, hot_audit: HotAudit, replay: ReplayCheck,
                 clock: Callable[[], dt.datetime]) -> None:
        self._auth = authenticator
        self._replay = replay
        self.tokens = tokens
        self._verify_access = verify_access
        self._refresh_lifetime = dt.timedelta(seconds=refresh_lifetime)
        self._grace = dt.timedelta(seconds=refresh_grace)
        self._hot_audit = hot_audit
        self._clock = clock

    async def _authenticate(self, form: Mapping[str, str], authorization: str | None) -> Client:
        # the replay cache is written in its own transaction (`replay`), not in the request's unit of work: a
        # request that fails later must not roll the jti back and let the assertion be used again
        return await self._auth.authenticate(form, authorization, replay=self._replay)

    # --- token endpoint ----------------------------------------------------------------------------------

    async def token(self, form: Mapping[str, str], authorization: str | None, store: TokenStore) -> TokenResponse:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is missing")
        handler = {"authorization_code": self._authorization_code, "refresh_token": self._refresh_token,
                   "client_credentials": self._client_credentials}.get(grant_type)
        if handler is None:
            raise UnsupportedGrantType(f"grant_type {grant_type[:40]!r} is not supported")
        client = await self._authenticate(form, authorization)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        return await handler(client, form, store)

    async def _client_credentials(self, client: Client, form: Mapping[str, str], store: TokenStore) -> TokenResponse:
        api_scopes = [s for s in client.scopes if s not in OIDC_SCOPES]
        requested = form.get("scope")
        if requested is None:
            scopes = sorted(api_scopes)
        else:
            scopes = list(dict.fromkeys(requested.split()))
            refused = [s for s in scopes if s not in api_scopes]
            if refused:
                raise InvalidScope(f"scope not allowed for this client: {' '.join(refused)}"[:300])
        scope = " ".join(scopes)
        jti = new_jti()
        token, expires_in = await self.tokens.access_token(client_id=client.client_id, sub=client.client_id,
                                                           scope=scope, jti=jti)
        await self._hot_audit("token.issued", actor=client.client_id, subject=client.client_id,
                              detail={"grant_type": "client_credentials", "scope": scope, "jti": jti})
        body = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        if scope:
            body["scope"] = scope
        return TokenResponse(body)

    async def _authorization_code(self, client: Client, form: Mapping[str, str], store: TokenStore) -> TokenResponse:
        code = form.get("code")
        if not code:
            raise InvalidRequest("code is missing")
        redirect_uri = form.get("redirect_uri")
        if not redirect_uri:
            raise InvalidRequest("redirect_uri is missing")
        verifier = form.get("code_verifier")
        if not verifier:
            raise InvalidRequest("code_verifier is missing (PKCE is required)")
        now = self._clock()
        hashed = token_hash(code)
        redeemed = await store.redeem_code(hashed, now)
        if redeemed is None:
            await self._unredeemable(store, hashed, client)
        # every refusal below rolls the request back (OAuthError without persist): the code stays unused
        record, grant = redeemed
        if record.client_id != client.client_id:
            raise InvalidGrant("authorization code was issued to another client")
        if record.expires_at <= now:
            raise InvalidGrant("authorization code has expired")
        if redirect_uri != record.redirect_uri:
            raise InvalidGrant("redirect_uri does not match the authorization request")
        if not pkce.verify(verifier, record.code_challenge):
            raise InvalidGrant("code_verifier does not match the code_challenge")
        if grant is None or grant.revoked_at is not None:
            raise InvalidGrant("authorization was revoked")
        # OIDC Core 3.1.3.6/2: the ID token carries the request's nonce, and no nonce claim when it sent none
        body = await self._user_tokens(client, grant, store, nonce=record.nonce or None, now=now)
        await store.audit("token.issued", actor=client.client_id, subject=grant.person_id,
                    detail={"grant_type": "authorization_code", "grant": grant.id, "scope": grant.scope})
        return TokenResponse(body)

    async def _unredeemable(self, store: TokenStore, code_hash: str, client: Client) -> NoReturn:
        """Why a code could not be redeemed (always raises): unknown, another client's, already used (which
        revokes the tokens issued from it, RFC 6749 section 4.1.2), or its authorization is gone."""
        record = await store.get_code(code_hash)
        if record is None:
            raise InvalidGrant("authorization code is invalid")
        if record.client_id != client.client_id:
            raise InvalidGrant("authorization code was issued to another client")
        if record.consumed_at is not None:
            await self._revoke_family(store, record.grant_id, "authorization code reused", client.client_id)
            raise InvalidGrant("authorization code was already used; tokens issued from it are revoked",
                               persist=True)
        raise InvalidGrant("authorization was revoked")

    async def _refresh_token(self, client: Client, form: Mapping[str, str], store: TokenStore) -> TokenResponse:
        presented = form.get("refresh_token")
        if not presented:
            raise InvalidRequest("refresh_token is missing")
        now = self._clock()
        record = await store.get_refresh(token_hash(presented))
        if record is None:
            raise InvalidGrant("refresh token is invalid")
        if record.client_id != client.client_id:
            raise InvalidGrant("refresh token was issued to another client")
        if record.expires_at <= now:
            raise InvalidGrant("refresh token has expired")
        grant = await store.get_grant(record.grant_id)
        if grant is None or grant.revoked_at is not None or grant.expires_at <= now:
            raise InvalidGrant("authorization was revoked or has expired")
        scope = grant.scope
        if "scope" in form:
            narrowed = form["scope"].split()
            if not narrowed or not set(narrowed) <= set(grant.scope.split()):
                raise InvalidScope("scope exceeds what was granted")
            scope = " ".join(dict.fromkeys(narrowed))
        successor = secrets.token_urlsafe(32)
        if record.used_at is None and await store.use_refresh(record.token_hash, now,
                                                              seal_successor(presented, successor)):
            body = await self._user_tokens(client, grant, store, nonce=None, now=now, scope=scope, refresh=successor)
            await store.audit("token.refreshed", actor=client.client_id, subject=grant.person_id,
                              detail={"grant": grant.id})
            return TokenResponse(body)
        # a reuse: the same successor again within the grace window, else the family is revoked (RFC 9700 4.14.2)
        again = await self._same_successor(store, presented, grant, now)
        if again is None:
            await self._revoke_family(store, grant.id, "refresh token reused", client.client_id)
            raise InvalidGrant("refresh token was already used; the whole authorization is revoked", persist=True)
        body = await self._user_tokens(client, grant, store, nonce=None, now=now, scope=scope, refresh=again,
                                       store_refresh=False)
        await store.audit("token.refreshed", actor=client.client_id, subject=grant.person_id,
                          detail={"grant": grant.id, "reuse_within_grace": True})
        return TokenResponse(body)

    async def _same_successor(self, store: TokenStore, presented: str, grant: GrantRecord,
                              now: dt.datetime) -> str | None:
        """The successor the first use of `presented` issued, when this reuse may have it again: a grace window is
        configured, this reuse is within it, and the successor is still unused (a client that has used it has its
        answer; the old token again is then an attacker's or a broken client's). None otherwise."""
        if self._grace <= dt.timedelta(0):
            return None
        # read again: a request that lost the race to use the token sees the winner's committed row now
        used = await store.get_refresh(token_hash(presented))
        if used is None or used.used_at is None or used.successor is None or now - used.used_at > self._grace:
            return None
        successor = open_successor(presented, used.successor)
        if successor is None:
            return None
        current = await store.get_refresh(token_hash(successor))
        if current is None or current.used_at is not None or current.grant_id != grant.id:
            return None
        return successor

    async def _user_tokens(self, client: Client, grant: GrantRecord, store: TokenStore, *, nonce: str | None,
                           now: dt.datetime, scope: str | None = None, refresh: str | None = None,
                           store_refresh: bool = True) -> dict[str, Any]:
        """The token response of a grant: a new access token and ID token, and the refresh token `refresh` (a new
        random one when None), stored unless `store_refresh` is False (the same successor answered again)."""
        scope = scope if scope is not None else grant.scope
        if roles.names_role(scope.split()):
            # a role scope only while the person holds the role (idp.core.roles; RFC 6749 section 3.3: the
            # response's scope names what was issued). Tokens without a role scope make no extra query.
            scope = " ".join(roles.held_scopes(scope.split(), await store.staff_roles(grant.person_id)))
        represents = await self._represents(client, grant, scope, store, now)
        auth_time = int(grant.auth_time.timestamp())
        access, expires_in = await self.tokens.access_token(
            client_id=client.client_id, sub=grant.sub, scope=scope, jti=new_jti(grant.id),
            extra={"auth_time": auth_time, "acr": grant.acr},
        )
        claims = ClaimsRequest.from_json(grant.claims)
        released = set((grant.claims or {}).get("released", ()))
        id_claims: dict[str, Any] = {}
        wanted = set(claims.id_token) & released
        if wanted:
            subject = await store.subject(grant.person_id)
            if subject is not None:
                id_claims = person_claims(subject, wanted)
        if represents is not None:
            id_claims[REPRESENTS] = represents
        id_token = await self.tokens.id_token(
            client_id=client.client_id, alg=client.id_token_alg, sub=grant.sub, nonce=nonce, auth_time=auth_time,
            acr=grant.acr, amr=grant.amr, sid=grant.session_sid, access_token=access, claims=id_claims,
        )
        await store.record_access(grant.person_id, client.client_id, "token", claims=sorted(id_claims),
                                  scopes=scope.split())
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": expires_in,
                                "id_token": id_token, "scope": scope}
        if "refresh_token" in client.grant_types:
            refresh = refresh or secrets.token_urlsafe(32)
            if store_refresh:
                await store.create_refresh(RefreshRecord(
                    token_hash=token_hash(refresh), grant_id=grant.id, client_id=client.client_id,
                    expires_at=min(grant.expires_at, now + self._refresh_lifetime), used_at=None,
                ))
            body["refresh_token"] = refresh
        return body

    async def _represents(self, client: Client, grant: GrantRecord, scope: str, store: TokenStore,
                          now: dt.datetime) -> dict[str, Any] | None:
        """The `represents` claim of a token of `grant` with `scope`: None when the person acts as themselves (no
        query), else the mandate as it is now; a mandate no longer valid revokes the grant and refuses the request
        (module docstring)."""
        if grant.represents is None or REPRESENTS not in scope.split():
            return None
        current = await store.representation(grant.person_id, str(grant.represents.get("mandate_id", "")), now)
        if current is None:
            await self._revoke_family(store, grant.id, "representation mandate no longer valid", client.client_id)
            raise InvalidGrant("the mandate the person acts under is no longer valid; the authorization is revoked",
                               persist=True)
        return current.claim()

    async def _revoke_family(self, store: TokenStore, grant_id: str, reason: str, actor: str) -> None:
        if await store.revoke_grant(grant_id, self._clock(), reason):
            await store.audit("grant.revoked", actor=actor, subject=grant_id, detail={"reason": reason})

    # --- userinfo, introspection, revocation ---------------------------------------------------------------

    async def active_access_token(self, token: str, store: TokenStore) -> tuple[VerifiedClaims, GrantRecord | None]:
        """A verified, unrevoked access token and its grant; raises InvalidToken otherwise."""
        try:
            verified = await self._verify_access(token)
        except Exception:  # noqa: BLE001 - every verification failure is "invalid_token"
            raise InvalidToken("the access token is invalid or has expired") from None
        jti = str(verified.claims.get("jti", ""))
        grant_id = grant_of(jti)
        grant = await store.get_grant(grant_id) if grant_id else None
        if grant_id and (grant is None or grant.revoked_at is not None):
            raise InvalidToken("the access token was revoked")
        if await store.jti_revoked(jti):
            raise InvalidToken("the access token was revoked")
        # a disabled client's tokens stop at once, on every node: read from the database, not the client cache
        if await store.client_disabled(str(verified.claims.get("client_id", ""))):
            raise InvalidToken("the client of this access token is disabled")
        return verified, grant

    async def userinfo(self, token: str, store: TokenStore) -> dict[str, Any]:
        """OIDC Core 5.3: the claims the grant released, for its scopes and the claims parameter's userinfo."""
        verified, grant = await self.active_access_token(token, store)
        if grant is None or "openid" not in str(verified.claims.get("scope", "")).split():
            raise InsufficientScope("the access token does not carry the openid scope of a user")
        subject = await store.subject(grant.person_id)
        if subject is None:
            raise InvalidToken("the person of this token no longer exists")
        released = set((grant.claims or {}).get("released", ()))
        scopes = set(str(verified.claims.get("scope", "")).split())
        wanted = {c for s in scopes for c in SCOPE_CLAIMS.get(s, ())}
        wanted |= set(ClaimsRequest.from_json(grant.claims).userinfo)
        body: dict[str, Any] = {"sub": grant.sub}
        released_now = person_claims(subject, wanted & released)
        body.update(released_now)
        if grant.represents is not None and REPRESENTS in scopes:
            current = await store.representation(grant.person_id, str(grant.represents.get("mandate_id", "")),
                                                 self._clock())
            if current is None:
                raise InvalidToken("the mandate the person acts under is no longer valid")
            body[REPRESENTS] = current.claim()
        await store.record_access(grant.person_id, str(verified.claims.get("client_id", "")), "userinfo",
                                  claims=sorted(body.keys() - {"sub"}), scopes=sorted(scopes))
        return body

    async def introspect(self, form: Mapping[str, str], authorization: str | None, store: TokenStore) -> dict[str, Any]:
        """RFC 7662 section 2: only authenticated confidential clients (section 2.1: the endpoint "MUST require some
        form of authorization"; a public client's id is in every authorization URL and authenticates nothing).

        A client learns only about its own tokens and those of the clients it is registered to introspect
        (`Client.introspect_clients`; section 4: the server "MUST determine whether or not the token can be used at
        the protected resource making the introspection call"). Any other token, and anything unknown, expired,
        used, revoked or of a disabled client, is {"active": false} (section 2.2)."""
        client = await self._authenticate(form, authorization)
        if client.is_public:
            raise InvalidClient("introspection needs a confidential client (RFC 7662 section 2.1)")
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is missing")
        allowed = client.introspect_clients | {client.client_id}
        now = self._clock()
        if token.count(".") == 2:
            try:
                verified, grant = await self.active_access_token(token, store)
            except InvalidToken:
                return {"active": False}
            if verified.claims.get("client_id") not in allowed:
                return {"active": False}
            out = {k: verified.claims[k] for k in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti",
                                                     "auth_time", "acr") if k in verified.claims}
            out.update(active=True, token_type="Bearer")
            if grant is not None:  # a person's token (a client_credentials token has no grant)
                await store.record_access(grant.person_id, client.client_id, "introspection", claims=(),
                                          scopes=str(out.get("scope", "")).split())
            return out
        record = await store.get_refresh(token_hash(token))
        # a used (rotated) refresh token is no longer active: at most it answers its successor again (grace window)
        if record is None or record.client_id not in allowed or record.expires_at <= now or record.used_at is not None:
            return {"active": False}
        grant = await store.get_grant(record.grant_id)
        if grant is None or grant.revoked_at is not None or await store.client_disabled(record.client_id):
            return {"active": False}
        await store.record_access(grant.person_id, client.client_id, "introspection", claims=(),
                                  scopes=grant.scope.split())
        return {"active": True, "token_type": "refresh_token", "client_id": record.client_id, "sub": grant.sub,
                "scope": grant.scope, "exp": int(record.expires_at.timestamp()), "iss": self.tokens.issuer}

    async def revoke(self, form: Mapping[str, str], authorization: str | None, store: TokenStore) -> None:
        """RFC 7009 section 2: revoke a refresh token (and its family) or an access token of the calling client.
        Unknown or foreign tokens are answered 200 all the same (section 2.2) and change nothing."""
        client = await self._authenticate(form, authorization)
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is missing")
        hint = form.get("token_type_hint")
        if hint not in (None, "access_token", "refresh_token"):
            raise UnsupportedTokenType("token_type_hint must be access_token or refresh_token")
        if token.count(".") == 2:
            try:
                verified = await self._verify_access(token)
            except Exception:  # noqa: BLE001 - an invalid token needs no revocation
                return
            if verified.claims.get("client_id") != client.client_id:
                return
            jti = str(verified.claims["jti"])
            expires = dt.datetime.fromtimestamp(float(verified.claims["exp"]) + 60, tz=dt.UTC)
            await store.revoke_jti(jti, expires, "revoked by client", actor=client.client_id)
            return
        record = await store.get_refresh(token_hash(token))
        if record is not None and record.client_id == client.client_id:
            await self._revoke_family(store, record.grant_id, "refresh token revoked by client", client.client_id)


class InsufficientScope(OAuthError):
    """RFC 6750 section 3.1: "The request requires higher privileges than provided by the access token." """

    error = "insufficient_scope"
    status_code = 403


class UnsupportedTokenType(OAuthError):
    """RFC 7009 section 2.2.1: "The authorization server does not support the revocation of the presented
    token type." """

    error = "unsupported_token_type"
