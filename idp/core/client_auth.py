"""Client authentication at the token endpoint: OIDC Core 1.0 section 9, RFC 6749 section 2.3, RFC 7523.

A client authenticates with exactly the method it registered (`token_endpoint_auth_method`):

* client_secret_basic: HTTP Basic with client_id and secret, each form-urlencoded first (RFC 6749 2.3.1);
* client_secret_post: client_id and client_secret in the request body (RFC 6749 2.3.1);
* private_key_jwt: a JWT signed with one of the client's registered keys (OIDC Core 9, RFC 7523 sections 2.2
  and 3): iss = sub = client_id, aud naming us, a short life and a jti used once;
* none: a public client sends its client_id only (its code is bound by PKCE instead).

Protocol core (STYLE habit 3): no web framework, no database. Clients come from a `ClientDirectory`, assertion
replay is asked of the caller's `replay` callable (the store's `remember_assertion`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import httpx
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from idp.core.errors import InvalidClient, InvalidRequest
from idp.core.interfaces import AUTH_METHODS, AuthMethod, Client, ClientDirectory
from keys.errors import InvalidToken, UnsupportedAlgorithm
from keys.jose import (
    CLOCK_SKEW_LEEWAY_SECONDS,
    MAX_TOKEN_LENGTH,
    JwsVerifier,
    b64url_decode,
    is_numeric_date,
    loads_json,
    public_key_from_jwk,
)

TOKEN_AUTH_METHODS: tuple[AuthMethod, ...] = AUTH_METHODS
"""token_endpoint_auth_methods_supported (OIDC Discovery 1.0 section 3)."""
ASSERTION_SIGNING_ALGS: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
"""token_endpoint_auth_signing_alg_values_supported: asymmetric only, never "none" or HMAC (a client secret is
not a signing key here, and an HMAC check keyed with a public key would accept forgeries)."""
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
"""RFC 7523 section 2.2: the client_assertion_type of a JWT client assertion."""
MAX_ASSERTION_LIFETIME_SECONDS = 3600
"""RFC 7523 section 3 lets the server refuse an exp unreasonably far ahead; an hour is what common client
libraries (Authlib) sign by default, and the jti replay cache keeps each assertion single-use meanwhile."""
"""A client assertion may live at most this long (exp - iat, or exp - now without iat): it is a one-shot
credential, and its jti must be remembered until it expires."""
MAX_JTI_LENGTH = 255
JWKS_CACHE_SECONDS = 300
"""How long keys fetched from a client's jwks_uri are used before they are fetched again."""
JWKS_REFETCH_SECONDS = 60
"""An assertion naming an unknown kid re-fetches the jwks_uri at most this often (key rotation at the client)."""
MAX_JWKS_KEYS = 20
FETCH_TIMEOUT_SECONDS = 5.0
MAX_DOCUMENT_BYTES = 64 * 1024
SECRET_HASH_PREFIX = "sha256:"
_JWK_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_AUTH_FAILED = "client authentication failed"
"""The one description for an unknown client and a wrong secret: client ids cannot be probed."""
_UNKNOWN_CLIENT_HASH = SECRET_HASH_PREFIX + "0" * 64
"""Compared against when the client is unknown, so both failures cost the same."""

JwksFetcher = Callable[[str], Awaitable[Any]]
ReplayCheck = Callable[[str, str, dt.datetime], Awaitable[bool]]
KeySet = dict[str, tuple[PublicKeyTypes, str]]


def hash_secret(secret: str) -> str:
    """The stored form of a client secret: "sha256:" and the hex SHA-256 of its UTF-8 bytes.

    A plain hash is right for these secrets, unlike for passwords: they are 256-bit random values
    (`secrets.token_urlsafe(32)`), so no dictionary or brute-force search can invert the hash, and a slow
    password hash would only make every token request expensive.
    """
    return SECRET_HASH_PREFIX + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def verify_secret(secret: str, stored: str | None) -> bool:
    """Whether `secret` is the one `stored` was made from, compared in constant time."""
    if not stored or not stored.startswith(SECRET_HASH_PREFIX):
        return False
    return hmac.compare_digest(hash_secret(secret).encode("ascii"), stored.encode("ascii", "replace"))


class DocumentUnavailable(Exception):
    """A client's document (JWK Set, sector identifier list) could not be fetched or is not JSON."""


async def fetch_json_document(uri: str) -> Any:
    """GET a client's JSON document: 5 s in all, at most 64 KiB, no redirects, no proxy taken from the environment
    (only api/ reads the environment). Raises DocumentUnavailable."""
    body = bytearray()
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_SECONDS), httpx.AsyncClient(
            timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        ) as http, http.stream("GET", uri, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise DocumentUnavailable(f"{uri} answered HTTP {response.status_code}")
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise DocumentUnavailable(f"{uri} is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")
    except (httpx.HTTPError, TimeoutError) as exc:
        raise DocumentUnavailable(f"{uri} could not be fetched ({type(exc).__name__})") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise DocumentUnavailable(f"{uri} is not JSON") from None


def parse_jwks(document: object) -> KeySet:
    """The signing keys of a JWK Set (RFC 7517 section 5) by kid, each with its one algorithm.

    Keys for another use ("enc"), without a kid, or of a type we do not verify are skipped; a set holding any
    private or symmetric key material is refused whole (its publisher has leaked it). Raises InvalidToken.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise InvalidToken("a JWK Set is a JSON object with a keys array")
    members: list[object] = document["keys"]
    if len(members) > MAX_JWKS_KEYS:
        raise InvalidToken(f"a JWK Set may hold at most {MAX_JWKS_KEYS} keys")
    keys: KeySet = {}
    for index, jwk in enumerate(members):
        if not isinstance(jwk, Mapping):
            raise InvalidToken(f"key {index} of the JWK Set is not a JSON object")
        private = sorted(_JWK_PRIVATE_MEMBERS & set(jwk))
        if private:
            raise InvalidToken(f"key {index} of the JWK Set holds private key material ({', '.join(private)})")
        kid = jwk.get("kid")
        if jwk.get("use", "sig") != "sig" or not isinstance(kid, str) or not kid or kid in keys:
            continue
        try:
            keys[kid] = public_key_from_jwk(jwk)
        except (InvalidToken, UnsupportedAlgorithm):
            continue
    return keys


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """client_id and secret of an HTTP Basic header, each form-urlencoded-decoded (RFC 6749 section 2.3.1)."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("the Authorization header must use the Basic scheme")
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        client_id, secret = unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidClient("malformed Basic credentials") from None
    if not sep or not client_id:
        raise InvalidClient("malformed Basic credentials")
    return client_id, secret


def claimed_client_id(form: Mapping[str, str], authorization: str | None) -> str | None:
    """The client a token, introspection or revocation request claims to be, read before any verification: the
    Basic user name, the body's client_id, or the client assertion's unverified sub (RFC 7523 section 3: sub is
    the client_id). Only to count failed authentications per client (rate limits), never to trust."""
    try:
        if authorization:
            return _basic_credentials(authorization)[0][:200]
        if form.get("client_id"):
            return form["client_id"][:200]
        assertion = form.get("client_assertion")
        if assertion:
            sub = _unverified_part(assertion, 1).get("sub")
            return sub[:200] if isinstance(sub, str) and sub else None
    except InvalidClient:
        return None
    return None


def _unverified_part(token: str, index: int) -> dict[str, Any]:
    """A JSON part of a compact JWS before verification: only to find which client and key to verify with."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_LENGTH or len(parts) != 3:
        raise InvalidClient("client_assertion is not a compact JWS")
    try:
        value = loads_json(b64url_decode(parts[index]))  # NaN and Infinity are not JSON (RFC 8259 section 6)
    except (InvalidToken, ValueError, RecursionError):
        raise InvalidClient("client_assertion is not a compact JWS") from None
    if not isinstance(value, dict):
        raise InvalidClient("client_assertion is not a compact JWS")
    return value


@dataclass(frozen=True, slots=True)
class _RemoteKeys:
    keys: KeySet
    fetched_at: float
    """When these keys were fetched: they are used for JWKS_CACHE_SECONDS."""
    tried_at: float
    """The last fetch, successful or not: at most one per JWKS_REFETCH_SECONDS."""
    error: str | None = None


class ClientAuthenticator:
    """Authenticates the client of a token, introspection or revocation request (OIDC Core section 9).

    `endpoints` are the URLs a client assertion may name as its audience besides the issuer (the token
    endpoint and its siblings). `jwks_fetcher` GETs a client's jwks_uri; its keys are kept for
    JWKS_CACHE_SECONDS and re-fetched at most every JWKS_REFETCH_SECONDS when an assertion names an unknown kid.
    """

    def __init__(
        self,
        directory: ClientDirectory,
        *,
        issuer: str,
        endpoints: Iterable[str],
        jwks_fetcher: JwksFetcher = fetch_json_document,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._issuer = issuer
        self._audiences = frozenset({issuer, *endpoints})
        self._fetch = jwks_fetcher
        self._clock = clock
        self._inline: dict[str, tuple[Mapping[str, Any], KeySet]] = {}
        self._remote: dict[str, _RemoteKeys] = {}
        self._fetching: dict[str, asyncio.Lock] = {}

    async def authenticate(
        self, form: Mapping[str, str], authorization: str | None, *, replay: ReplayCheck
    ) -> Client:
        """The authenticated client, or InvalidClient (InvalidRequest when several methods are combined)."""
        used: list[AuthMethod] = []
        if authorization:
            used.append("client_secret_basic")
        if "client_secret" in form:
            used.append("client_secret_post")
        if "client_assertion" in form or "client_assertion_type" in form:
            used.append("private_key_jwt")
        if len(used) > 1:
            raise InvalidRequest(f"more than one client authentication method in one request ({', '.join(used)})")
        method = used[0] if used else "none"
        if method == "client_secret_basic":
            client_id, secret = _basic_credentials(authorization or "")
            named = form.get("client_id")
            if named is not None and named != client_id:
                raise InvalidRequest("client_id in the body differs from the client of the Authorization header")
            return await self._by_secret(client_id, secret, method)
        if method == "client_secret_post":
            return await self._by_secret(form.get("client_id", ""), form["client_secret"], method)
        if method == "private_key_jwt":
            return await self._by_assertion(form, replay)
        return await self._public(form.get("client_id", ""))

    async def _by_secret(self, client_id: str, secret: str, method: AuthMethod) -> Client:
        if not client_id:
            raise InvalidClient("client_id is missing")
        client = await self._directory.get(client_id)
        if client is None or client.secret_hash is None:
            verify_secret(secret, _UNKNOWN_CLIENT_HASH)
            raise InvalidClient(_AUTH_FAILED)
        if not verify_secret(secret, client.secret_hash):
            raise InvalidClient(_AUTH_FAILED)
        # the secret is right: saying more no longer tells a prober anything
        if client.disabled:
            raise InvalidClient("client is disabled")
        if client.auth_method != method:
            raise InvalidClient(f"client must authenticate with {client.auth_method}")
        return client

    async def _public(self, client_id: str) -> Client:
        if not client_id:
            raise InvalidClient("client authentication is required")
        client = await self._directory.get(client_id)
        if client is None or client.disabled or client.auth_method != "none":
            raise InvalidClient(_AUTH_FAILED)
        return client

    async def _by_assertion(self, form: Mapping[str, str], replay: ReplayCheck) -> Client:
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
            raise InvalidClient(f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
        assertion = form.get("client_assertion", "")
        if not assertion:
            raise InvalidClient("client_assertion is missing")
        header, unverified = _unverified_part(assertion, 0), _unverified_part(assertion, 1)
        client_id = unverified.get("sub")
        if not isinstance(client_id, str) or not client_id or unverified.get("iss") != client_id:
            raise InvalidClient("client assertion: iss and sub must both be the client_id")
        named = form.get("client_id")
        if named is not None and named != client_id:
            raise InvalidClient("client_id differs from the client assertion's sub")
        client = await self._directory.get(client_id)
        if client is None or client.disabled or client.auth_method != "private_key_jwt":
            raise InvalidClient(_AUTH_FAILED)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidClient("client assertion: the header must name its key (kid)")
        keys = await self._keys(client, kid)
        verifier = JwsVerifier(
            keys.get,
            algorithms=ASSERTION_SIGNING_ALGS,
            issuer=client.client_id,
            audience=None,  # checked below: the issuer or one of our endpoint URLs (RFC 7523 section 3, item 3)
            typ=None,
            leeway=CLOCK_SKEW_LEEWAY_SECONDS,
            required=("iss", "sub", "aud", "exp", "jti"),
            clock=self._clock,
        )
        try:
            claims = verifier.verify(assertion).claims
        except InvalidToken as exc:
            raise InvalidClient(f"client assertion: {exc}") from None
        self._check_assertion_claims(client, claims)
        expires_at = dt.datetime.fromtimestamp(float(claims["exp"]) + CLOCK_SKEW_LEEWAY_SECONDS, tz=dt.UTC)
        if not await replay(client.client_id, claims["jti"], expires_at):
            raise InvalidClient("client assertion: jti was already used (replay)")
        return client

    def _check_assertion_claims(self, client: Client, claims: Mapping[str, Any]) -> None:
        if claims["sub"] != client.client_id:
            raise InvalidClient("client assertion: iss and sub must both be the client_id")
        aud = claims["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in self._audiences for a in audiences):
            raise InvalidClient("client assertion: aud must name this issuer or its token endpoint")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI_LENGTH:
            raise InvalidClient(f"client assertion: jti must be a string of 1 to {MAX_JTI_LENGTH} characters")
        # exp and iat are NumericDates (RFC 7519 section 2, the verifier's rule, keys.jose.is_numeric_date):
        # checked again here because the lifetime below is computed from them
        exp, iat, now = claims["exp"], claims.get("iat"), self._clock()
        if not is_numeric_date(exp):
            raise InvalidClient("client assertion: exp must be a NumericDate (RFC 7519 section 2)")
        if iat is None:
            lifetime = exp - now
        elif not is_numeric_date(iat) or iat > now + CLOCK_SKEW_LEEWAY_SECONDS:
            raise InvalidClient("client assertion: iat must be a time that has passed")
        else:
            lifetime = exp - iat
        if lifetime > MAX_ASSERTION_LIFETIME_SECONDS:
            raise InvalidClient(f"client assertion: lives longer than {MAX_ASSERTION_LIFETIME_SECONDS} seconds")

    async def _keys(self, client: Client, kid: str) -> KeySet:
        """The client's keys: its registered jwks (parsed once per record), or its jwks_uri's (cached)."""
        if client.jwks is not None:
            inline = self._inline.get(client.client_id)
            if inline is not None and inline[0] is client.jwks:
                return inline[1]
            try:
                keys = parse_jwks(client.jwks)
            except InvalidToken as exc:
                raise InvalidClient(f"client keys unusable: {exc}") from None
            self._inline[client.client_id] = (client.jwks, keys)
            return keys
        if client.jwks_uri is None:
            raise InvalidClient("client has no registered keys")
        cached = self._cached(client.jwks_uri, kid)
        if cached is not None:
            return cached
        async with self._fetching.setdefault(client.jwks_uri, asyncio.Lock()):
            cached = self._cached(client.jwks_uri, kid)  # another request may have fetched while this one waited
            return cached if cached is not None else await self._fetch_keys(client.jwks_uri)

    def _cached(self, uri: str, kid: str) -> KeySet | None:
        """Cached keys of a jwks_uri, or None when it is time to fetch them (again)."""
        entry = self._remote.get(uri)
        if entry is None:
            return None
        now = self._clock()
        fresh = now - entry.fetched_at < JWKS_CACHE_SECONDS
        if fresh and kid in entry.keys:
            return entry.keys
        if now - entry.tried_at < JWKS_REFETCH_SECONDS:
            if fresh:
                return entry.keys  # an unknown kid: the verifier refuses it
            raise InvalidClient(f"client keys unavailable from jwks_uri: {entry.error}")
        return None

    async def _fetch_keys(self, uri: str) -> KeySet:
        now = self._clock()
        try:
            keys = parse_jwks(await self._fetch(uri))
        except (DocumentUnavailable, InvalidToken) as exc:
            old = self._remote.get(uri)
            self._remote[uri] = _RemoteKeys(keys=old.keys if old else {}, fetched_at=old.fetched_at if old else -1e18,
                                            tried_at=now, error=str(exc))
            raise InvalidClient(f"client keys unavailable from jwks_uri: {exc}") from None
        self._remote[uri] = _RemoteKeys(keys=keys, fetched_at=now, tried_at=now)
        return keys
