"""Client authentication (OIDC Core 9, RFC 6749 2.3.1, RFC 7523), with assertions made by PyJWT, not by our code."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote_plus

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from api.deps import Services
from idp.core.client_auth import (
    ASSERTION_SIGNING_ALGS,
    JWKS_CACHE_SECONDS,
    JWKS_REFETCH_SECONDS,
    JWT_BEARER_ASSERTION,
    MAX_DOCUMENT_BYTES,
    TOKEN_AUTH_METHODS,
    ClientAuthenticator,
    DocumentUnavailable,
    fetch_json_document,
    hash_secret,
)
from idp.core.errors import InvalidClient, InvalidRequest
from idp.core.interfaces import Client
from idp.sql.clients import ClientRegistration, ClientRegistry
from tests.clock import Tick
from tests.local_http import LocalHttp, Route, local_http

ISSUER = "https://id.example.az"
TOKEN_URL = ISSUER + "/token"
SECRET = "s3cret-value"
GENERIC = "client authentication failed"


class Directory:
    """An in-memory ClientDirectory (the protocol core needs nothing else)."""

    def __init__(self, *clients: Client) -> None:
        self.clients = {c.client_id: c for c in clients}
        self.reads = 0

    async def get(self, client_id: str) -> Client | None:
        self.reads += 1
        return self.clients.get(client_id)


class Replay:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], dt.datetime] = {}

    async def __call__(self, client_id: str, jti: str, expires_at: dt.datetime) -> bool:
        if (client_id, jti) in self.seen:
            return False
        self.seen[(client_id, jti)] = expires_at
        return True


def make_client(client_id: str, auth_method: Any, **kw: Any) -> Client:
    defaults: dict[str, Any] = {
        "name": client_id, "secret_hash": hash_secret(SECRET) if auth_method.startswith("client_secret") else None,
        "redirect_uris": ("https://rp.example/cb",), "post_logout_redirect_uris": (),
        "grant_types": frozenset({"authorization_code"}), "scopes": frozenset({"openid"}), "subject_type": "pairwise",
        "sector_identifier": "rp.example",
    }
    return Client(client_id=client_id, auth_method=auth_method, **{**defaults, **kw})


class Signer:
    def __init__(self, alg: str, kid: str = "k1") -> None:
        self.alg, self.kid = alg, kid
        if alg == "ES256":
            self.key: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        elif alg == "RS256":
            self.key = rsa.generate_private_key(65537, 2048)
            self.jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        else:
            self.key = ed25519.Ed25519PrivateKey.generate()
            self.jwk = OKPAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwk["kid"] = kid

    def assertion(self, client_id: str, *, drop: tuple[str, ...] = (), headers: dict[str, Any] | None = None,
                  **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "iat": now, "exp": now + 60,
                "jti": str(uuid.uuid4()), **claims}
        for name in drop:
            body.pop(name)
        return pyjwt.encode(body, self.key, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})})


ES = Signer("ES256")
RS = Signer("RS256", kid="rsa-1")
ED = Signer("EdDSA", kid="ed-1")
CLIENTS = (
    make_client("basic", "client_secret_basic"),
    make_client("post", "client_secret_post"),
    make_client("public", "none"),
    make_client("jwt", "private_key_jwt", jwks={"keys": [ES.jwk, RS.jwk, ED.jwk]}),
    make_client("off", "client_secret_basic", disabled=True),
)


@pytest.fixture
def directory() -> Directory:
    return Directory(*CLIENTS)


@pytest.fixture
def auth(directory: Directory) -> ClientAuthenticator:
    return ClientAuthenticator(directory, issuer=ISSUER, endpoints=[TOKEN_URL, ISSUER + "/introspect"])


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def jwt_form(assertion: str, **extra: str) -> dict[str, str]:
    return {"client_assertion_type": JWT_BEARER_ASSERTION, "client_assertion": assertion, **extra}


async def refused(auth: ClientAuthenticator, form: dict[str, str], authorization: str | None = None,
                  *, replay: Replay | None = None) -> str:
    with pytest.raises(InvalidClient) as caught:
        await auth.authenticate(form, authorization, replay=replay or Replay())
    return caught.value.description


def test_discovery_constants() -> None:
    assert TOKEN_AUTH_METHODS == ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
    assert ASSERTION_SIGNING_ALGS == ("ES256", "RS256", "EdDSA")


# --- client secrets --------------------------------------------------------------------------------------


async def test_client_secret_basic(auth: ClientAuthenticator) -> None:
    client = await auth.authenticate({"grant_type": "x"}, basic("basic", SECRET), replay=Replay())
    assert client.client_id == "basic"
    same = await auth.authenticate({"client_id": "basic"}, basic("basic", SECRET), replay=Replay())
    assert same.client_id == "basic"


async def test_basic_credentials_are_form_urlencoded(directory: Directory, auth: ClientAuthenticator) -> None:
    odd_id, odd_secret = "agency:portal 1", "p@ss:w rd+%/é"
    directory.clients[odd_id] = make_client(odd_id, "client_secret_basic", secret_hash=hash_secret(odd_secret))
    client = await auth.authenticate({}, basic(odd_id, odd_secret), replay=Replay())
    assert client.client_id == odd_id
    raw = "Basic " + base64.b64encode(f"{odd_id}:{odd_secret}".encode()).decode()  # not encoded: '+' is a space
    assert await refused(auth, {}, raw) == GENERIC


async def test_client_secret_post(auth: ClientAuthenticator) -> None:
    client = await auth.authenticate({"client_id": "post", "client_secret": SECRET}, None, replay=Replay())
    assert client.client_id == "post"
    assert await refused(auth, {"client_secret": SECRET}) == "client_id is missing"


async def test_unknown_client_and_wrong_secret_look_the_same(auth: ClientAuthenticator) -> None:
    assert await refused(auth, {}, basic("basic", "wrong")) == GENERIC
    assert await refused(auth, {}, basic("nobody", SECRET)) == GENERIC
    assert await refused(auth, {"client_id": "post", "client_secret": "wrong"}) == GENERIC
    assert await refused(auth, {"client_id": "nobody", "client_secret": SECRET}) == GENERIC
    assert await refused(auth, {}, basic("jwt", SECRET)) == GENERIC  # a client without a secret
    assert await refused(auth, {}, basic("public", "")) == GENERIC


async def test_each_client_uses_its_registered_method(auth: ClientAuthenticator) -> None:
    assert await refused(auth, {"client_id": "basic", "client_secret": SECRET}) == \
        "client must authenticate with client_secret_basic"
    assert await refused(auth, {}, basic("post", SECRET)) == "client must authenticate with client_secret_post"
    assert await refused(auth, {"client_id": "basic"}) == GENERIC  # a confidential client sending no secret
    assert await refused(auth, {"client_id": "jwt"}) == GENERIC
    assert await refused(auth, jwt_form(ES.assertion("basic"))) == GENERIC
    assert await refused(auth, {}) == "client authentication is required"


async def test_disabled_client_is_refused(auth: ClientAuthenticator) -> None:
    assert await refused(auth, {}, basic("off", SECRET)) == "client is disabled"
    assert await refused(auth, {}, basic("off", "wrong")) == GENERIC


async def test_more_than_one_method_is_invalid_request(auth: ClientAuthenticator) -> None:
    for form, authorization in [
        ({"client_id": "basic", "client_secret": SECRET}, basic("basic", SECRET)),
        (jwt_form(ES.assertion("jwt")), basic("basic", SECRET)),
        (jwt_form(ES.assertion("jwt"), client_secret=SECRET), None),
        ({"client_assertion_type": JWT_BEARER_ASSERTION, "client_secret": SECRET}, None),
    ]:
        with pytest.raises(InvalidRequest, match="more than one client authentication method"):
            await auth.authenticate(form, authorization, replay=Replay())
    with pytest.raises(InvalidRequest, match="client_id in the body differs"):
        await auth.authenticate({"client_id": "post"}, basic("basic", SECRET), replay=Replay())


@pytest.mark.parametrize(("authorization", "message"), [
    ("Bearer abc", "must use the Basic scheme"),
    ("Basic !!!", "malformed Basic credentials"),
    ("Basic " + base64.b64encode(b"no-colon").decode(), "malformed Basic credentials"),
    ("Basic " + base64.b64encode(b":secret").decode(), "malformed Basic credentials"),
    ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "malformed Basic credentials"),
    ("Basic " + base64.b64encode(b"a%ZZ%ff:x").decode(), "malformed Basic credentials"),
])
async def test_malformed_authorization_header(auth: ClientAuthenticator, authorization: str, message: str) -> None:
    assert message in await refused(auth, {}, authorization)


async def test_public_client_sends_its_id_only(auth: ClientAuthenticator) -> None:
    client = await auth.authenticate({"client_id": "public"}, None, replay=Replay())
    assert client.is_public
    assert await refused(auth, {"client_id": "nobody"}) == GENERIC
    assert await refused(auth, {"client_id": "public", "client_secret": "x"}) == GENERIC


async def test_secret_clients_are_served_from_the_directory_only(directory: Directory,
                                                                 auth: ClientAuthenticator) -> None:
    for _ in range(10):
        await auth.authenticate({}, basic("basic", SECRET), replay=Replay())
    assert directory.reads == 10  # one directory lookup per request, nothing else


# --- private_key_jwt -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signer", "aud"), [
    (ES, TOKEN_URL), (RS, ISSUER), (ED, ["https://other.example", ISSUER + "/introspect"]),
])
async def test_private_key_jwt(auth: ClientAuthenticator, signer: Signer, aud: Any) -> None:
    replay = Replay()
    client = await auth.authenticate(jwt_form(signer.assertion("jwt", aud=aud)), None, replay=replay)
    assert client.client_id == "jwt"
    ((client_id, _jti), expires_at), = replay.seen.items()
    assert client_id == "jwt" and expires_at > dt.datetime.now(dt.UTC)
    with_id = jwt_form(signer.assertion("jwt", aud=aud), client_id="jwt")
    assert (await auth.authenticate(with_id, None, replay=replay)).client_id == "jwt"


async def test_assertion_replay_is_refused(auth: ClientAuthenticator) -> None:
    replay = Replay()
    assertion = ES.assertion("jwt")
    await auth.authenticate(jwt_form(assertion), None, replay=replay)
    assert "jti was already used" in await refused(auth, jwt_form(assertion), replay=replay)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(client_id: str = "jwt") -> dict[str, Any]:
    now = int(time.time())
    return {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "iat": now, "exp": now + 60,
            "jti": str(uuid.uuid4())}


async def test_alg_none_is_refused(auth: ClientAuthenticator) -> None:
    token = pyjwt.encode(_claims(), None, algorithm="none", headers={"kid": "k1"})
    assert "not a compact JWS" in await refused(auth, jwt_form(token))  # the empty signature
    assert "algorithm 'none' is not accepted" in await refused(auth, jwt_form(token + "AAAA"))


async def test_hs256_keyed_with_the_public_key_is_refused(auth: ClientAuthenticator) -> None:
    """The classic confusion: HMAC "signed" with the client's public key, which anyone has."""
    pem = ES.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (pem, json.dumps(ES.jwk).encode()):
        signing_input = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode()) + "." + \
            _b64(json.dumps(_claims()).encode())
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + _b64(signature)
        assert "algorithm 'HS256' is not accepted" in await refused(auth, jwt_form(token))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ES.assertion("jwt", aud="https://elsewhere.example/token"), "aud must name this issuer"),
    (lambda: ES.assertion("jwt", aud=[]), "aud must name this issuer"),
    (lambda: ES.assertion("jwt", drop=("aud",)), "claim aud is required"),
    (lambda: ES.assertion("jwt", exp=int(time.time()) - 120, iat=int(time.time()) - 180), "token has expired"),
    (lambda: ES.assertion("jwt", drop=("exp",)), "claim exp is required"),
    (lambda: ES.assertion("jwt", drop=("jti",)), "claim jti is required"),
    (lambda: ES.assertion("jwt", jti=""), "jti must be a string of 1 to 255"),
    (lambda: ES.assertion("jwt", jti=7), "jti must be a string"),
    (lambda: ES.assertion("jwt", jti="j" * 256), "jti must be a string of 1 to 255"),
    (lambda: ES.assertion("jwt", iss="someone-else"), "iss and sub must both be the client_id"),
    (lambda: ES.assertion("jwt", drop=("iss",)), "iss and sub must both be the client_id"),
    (lambda: ES.assertion("jwt", exp=int(time.time()) + 7200), "lives longer than 3600 seconds"),
    (lambda: ES.assertion("jwt", exp=int(time.time()) + 7200, drop=("iat",)), "lives longer than 3600 seconds"),
    (lambda: ES.assertion("jwt", iat=int(time.time()) + 600, exp=int(time.time()) + 660), "iat must be a time"),
    (lambda: ES.assertion("jwt", nbf=int(time.time()) + 600), "not yet valid"),
    (lambda: ES.assertion("jwt", headers={"kid": "unknown"}), "unknown signing key"),
    (lambda: Signer("ES256", kid="k1").assertion("jwt"), "signature does not verify"),  # another key, same kid
    (lambda: pyjwt.encode(_claims(), ES.key, algorithm="ES256"), "must name its key (kid)"),
    (lambda: pyjwt.encode(_claims(), RS.key, algorithm="RS256", headers={"kid": "k1"}),
     "algorithm does not match the key"),
    (lambda: pyjwt.encode(_claims(), RS.key, algorithm="PS256", headers={"kid": "rsa-1"}),
     "algorithm 'PS256' is not accepted"),
    (lambda: "not.a.jwt", "not a compact JWS"),
    (lambda: "onlyonepart", "not a compact JWS"),
    (lambda: ES.assertion("jwt", headers={"crit": ["exp"]}), "critical header"),
])
async def test_bad_assertions_are_refused(auth: ClientAuthenticator, make: Any, message: str) -> None:
    assert message in await refused(auth, jwt_form(make()))


async def test_assertion_request_shape(auth: ClientAuthenticator) -> None:
    assertion = ES.assertion("jwt")
    assert "client_assertion_type must be" in await refused(
        auth, {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
               "client_assertion": assertion})
    assert "client_assertion_type must be" in await refused(auth, {"client_assertion": assertion})
    assert await refused(auth, {"client_assertion_type": JWT_BEARER_ASSERTION}) == "client_assertion is missing"
    assert "differs from the client assertion" in await refused(auth, jwt_form(assertion, client_id="basic"))
    assert await refused(auth, jwt_form(ES.assertion("nobody"))) == GENERIC


async def test_disabled_private_key_jwt_client(directory: Directory, auth: ClientAuthenticator) -> None:
    directory.clients["jwt"] = replace(directory.clients["jwt"], disabled=True)
    assert await refused(auth, jwt_form(ES.assertion("jwt"))) == GENERIC


# --- jwks_uri --------------------------------------------------------------------------------------------


@pytest.fixture
def http() -> Iterator[LocalHttp]:
    with local_http() as server:
        yield server


async def test_jwks_uri_is_fetched_cached_and_refetched_on_a_new_kid(http: LocalHttp) -> None:
    old, new = Signer("ES256", kid="old"), Signer("EdDSA", kid="new")
    uri = http.serve_json("/jwks.json", {"keys": [old.jwk]})
    clock = Tick()
    auth = ClientAuthenticator(Directory(make_client("remote", "private_key_jwt", jwks_uri=uri)), issuer=ISSUER,
                               endpoints=[TOKEN_URL], clock=clock)  # the default fetcher: real HTTP on loopback
    replay = Replay()
    for _ in range(3):
        await auth.authenticate(jwt_form(old.assertion("remote")), None, replay=replay)
    assert http.count("/jwks.json") == 1

    http.serve_json("/jwks.json", {"keys": [old.jwk, new.jwk]})  # the client rotates its key
    assert "unknown signing key" in await refused(auth, jwt_form(new.assertion("remote")))
    assert http.count("/jwks.json") == 1  # fetched less than a minute ago: not again
    clock.now += JWKS_REFETCH_SECONDS
    await auth.authenticate(jwt_form(new.assertion("remote")), None, replay=replay)
    assert http.count("/jwks.json") == 2
    await auth.authenticate(jwt_form(new.assertion("remote")), None, replay=replay)
    assert http.count("/jwks.json") == 2

    http.serve_json("/jwks.json", {"keys": [new.jwk]})  # the old key is withdrawn
    clock.now += JWKS_CACHE_SECONDS
    assert "unknown signing key" in await refused(auth, jwt_form(old.assertion("remote")))
    assert http.count("/jwks.json") == 3


async def test_jwks_uri_failures(http: LocalHttp) -> None:
    signer = Signer("ES256")
    clock = Tick()
    uri = http.base + "/jwks.json"
    auth = ClientAuthenticator(Directory(make_client("remote", "private_key_jwt", jwks_uri=uri)), issuer=ISSUER,
                               endpoints=[TOKEN_URL], clock=clock)
    assert "jwks_uri: " + uri + " answered HTTP 404" in await refused(auth, jwt_form(signer.assertion("remote")))
    http.serve_json("/jwks.json", {"keys": [signer.jwk]})
    assert "HTTP 404" in await refused(auth, jwt_form(signer.assertion("remote")))  # the failure is remembered
    assert http.count("/jwks.json") == 1
    clock.now += JWKS_REFETCH_SECONDS
    await auth.authenticate(jwt_form(signer.assertion("remote")), None, replay=Replay())

    private = {**ECAlgorithm.to_jwk(signer.key, as_dict=True), "kid": "k1"}
    http.serve_json("/jwks.json", {"keys": [private]})
    clock.now += JWKS_CACHE_SECONDS
    assert "holds private key material" in await refused(auth, jwt_form(signer.assertion("remote")))


async def test_fetch_json_document_limits(http: LocalHttp) -> None:
    assert await fetch_json_document(http.serve_json("/ok", {"keys": []})) == {"keys": []}
    http.routes["/big"] = Route(body=b"[" + b'"aaaaaaaa",' * (MAX_DOCUMENT_BYTES // 11 + 10) + b'"a"]')
    with pytest.raises(DocumentUnavailable, match="larger than 64 KiB"):
        await fetch_json_document(http.base + "/big")
    http.routes["/moved"] = Route(status=302, headers={"Location": http.base + "/ok"})
    with pytest.raises(DocumentUnavailable, match="answered HTTP 302"):
        await fetch_json_document(http.base + "/moved")
    assert http.count("/ok") == 1  # the redirect was not followed
    http.routes["/html"] = Route(body=b"<html>")
    with pytest.raises(DocumentUnavailable, match="is not JSON"):
        await fetch_json_document(http.base + "/html")
    with local_http() as gone:
        closed = gone.base
    with pytest.raises(DocumentUnavailable, match="could not be fetched"):
        await fetch_json_document(closed + "/jwks.json")


# --- with the registry and the cached directory ----------------------------------------------------------


async def test_registered_clients_authenticate_through_the_cached_directory(services: Services) -> None:
    signer = Signer("RS256", kid="agency-2026")
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        basic_client, secret = await registry.add(ClientRegistration(
            name="Portal", redirect_uris=["https://portal.example/cb"]), actor="test")
        jwt_client, _ = await registry.add(ClientRegistration(
            name="Tax system", grant_types=["client_credentials"], scopes=["tax:read"], auth_method="private_key_jwt",
            jwks={"keys": [signer.jwk]}), actor="test")
    auth = ClientAuthenticator(services.clients, issuer=services.settings.issuer,
                               endpoints=[services.settings.issuer + "/token"])
    assert secret is not None
    found = await auth.authenticate({}, basic(basic_client.client_id, secret), replay=Replay())
    assert found == basic_client
    assertion = signer.assertion(jwt_client.client_id, aud=services.settings.issuer + "/token")
    assert (await auth.authenticate(jwt_form(assertion), None, replay=Replay())).client_id == jwt_client.client_id

    async with services.sessions() as session, session.begin():
        new_secret = await ClientRegistry(session).rotate_secret(basic_client.client_id, actor="test")
    services.clients.invalidate(basic_client.client_id)
    assert await refused(auth, {}, basic(basic_client.client_id, secret)) == GENERIC
    await auth.authenticate({}, basic(basic_client.client_id, new_secret), replay=Replay())


@pytest.mark.parametrize(("claims", "message"), [
    ({"iat": float("nan"), "exp": int(time.time()) + 10**6}, "not a compact JWS"),  # accepted before
    ({"exp": float("nan")}, "not a compact JWS"),  # NaN, Infinity: not JSON (RFC 8259 section 6)
    ({"exp": float("inf")}, "not a compact JWS"),  # NaN, Infinity: not JSON (RFC 8259 section 6)
    ({"iat": float("-inf")}, "not a compact JWS"),  # NaN, Infinity: not JSON (RFC 8259 section 6)
    ({"exp": True}, "claim exp must be a NumericDate"),
    ({"exp": str(int(time.time()) + 60)}, "claim exp must be a NumericDate"),
    ({"iat": "now"}, "claim iat must be a NumericDate"),
    ({"exp": 10**40}, "claim exp must be a NumericDate"),
    ({"nbf": float("nan")}, "not a compact JWS"),  # NaN, Infinity: not JSON (RFC 8259 section 6)
])
async def test_numeric_dates_of_assertions(auth: ClientAuthenticator, claims: dict[str, Any], message: str) -> None:
    """RFC 7519 section 2: exp, iat and nbf are finite JSON numbers (keys.jose.is_numeric_date)."""
    assert message in await refused(auth, jwt_form(ES.assertion("jwt", **claims)))


async def test_fractional_numeric_dates_are_accepted(auth: ClientAuthenticator) -> None:
    now = time.time()
    client = await auth.authenticate(jwt_form(ES.assertion("jwt", iat=now, exp=now + 59.5)), None, replay=Replay())
    assert client.client_id == "jwt"
