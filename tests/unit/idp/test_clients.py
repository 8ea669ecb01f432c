"""The client registry: registration rules, secrets, the sector identifier, and the cached directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from sqlalchemy import event, select

from api.deps import Services
from idp.core.client_auth import DocumentUnavailable
from idp.core.errors import ClientNotFound, InvalidClientMetadata
from idp.sql.clients import (
    CachedClientDirectory,
    ClientMetadata,
    ClientRegistration,
    ClientRegistry,
    generate_secret,
    hash_secret,
    resolve_sector,
    validate_registration,
    verify_secret,
)
from idp.sql.models import OAuthClient
from storage.audit import AuditEvent
from tests.clock import Tick
from tests.local_http import LocalHttp, local_http

RP = "https://rp.example/cb"


def _ec_jwk(kid: str = "k1") -> dict[str, Any]:
    return {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True), "kid": kid}


def reg(**kw: Any) -> ClientRegistration:
    kw.setdefault("name", "Agency portal")
    kw.setdefault("redirect_uris", [RP])
    return ClientRegistration(**kw)


# --- secrets ---------------------------------------------------------------------------------------------


def test_secret_hash_is_sha256_and_verifies_in_constant_time() -> None:
    secret = generate_secret()
    assert len(secret) >= 43 and secret != generate_secret()
    stored = hash_secret(secret)
    assert stored.startswith("sha256:") and len(stored) == 7 + 64 and secret not in stored
    assert verify_secret(secret, stored)
    assert not verify_secret(secret + "x", stored)
    assert not verify_secret("", stored)
    assert not verify_secret(secret, None)
    assert not verify_secret(secret, stored.removeprefix("sha256:"))
    assert not verify_secret(secret, "sha256:ünïcode")


# --- validation ------------------------------------------------------------------------------------------


def test_defaults_make_a_confidential_pairwise_web_client() -> None:
    meta = validate_registration(reg())
    assert meta == ClientMetadata(
        name="Agency portal", redirect_uris=(RP,), post_logout_redirect_uris=(),
        grant_types=("authorization_code", "refresh_token"), scopes=("openid", "profile"),
        auth_method="client_secret_basic", subject_type="pairwise", jwks=None, jwks_uri=None,
        sector_identifier_uri=None, backchannel_logout_uri=None, id_token_alg="ES256")


@pytest.mark.parametrize("uri", [
    "http://localhost:8080/cb", "http://127.0.0.1/cb", "http://[::1]:9000/cb", "https://rp.example:8443/a/b?x=1",
])
def test_loopback_http_and_https_redirect_uris_are_accepted(uri: str) -> None:
    assert validate_registration(reg(redirect_uris=[uri, uri])).redirect_uris == (uri,)


def test_public_and_machine_clients() -> None:
    public = validate_registration(reg(auth_method="none", subject_type="public"))
    assert public.auth_method == "none" and public.subject_type == "public"
    machine = validate_registration(reg(redirect_uris=[], grant_types=["client_credentials"], scopes=["tax:read"],
                                        auth_method="client_secret_post"))
    assert machine.grant_types == ("client_credentials",) and machine.scopes == ("tax:read",)


@pytest.mark.parametrize("jwk", [
    lambda: RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key(), as_dict=True),
    lambda: OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True),
    lambda: ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True),
])
def test_private_key_jwt_with_inline_jwks(jwk: Any) -> None:
    jwks = {"keys": [{"kty": "EC", "crv": "P-521", "kid": "skipped"}, {**jwk(), "kid": "k1"}]}
    meta = validate_registration(reg(auth_method="private_key_jwt", jwks=jwks))
    assert meta.jwks == jwks and meta.jwks_uri is None
    by_uri = validate_registration(reg(auth_method="private_key_jwt", jwks_uri="https://rp.example/jwks.json"))
    assert by_uri.jwks is None and by_uri.jwks_uri == "https://rp.example/jwks.json"


REJECTIONS = [
    ({"name": " "}, "name: must not be empty"),
    ({"name": "x" * 201}, "name: must be at most 200"),
    ({"name": "a\nb"}, "name: must be at most 200 printable"),
    ({"redirect_uris": ["http://rp.example/cb"]}, "redirect_uris: http://rp.example/cb must use https"),
    ({"redirect_uris": ["http://10.0.0.1/cb"]}, "must use https"),
    ({"redirect_uris": ["https://rp.example/cb#frag"]}, "redirect_uris: .* must not contain a fragment"),
    ({"redirect_uris": ["https://rp.example/cb#"]}, "must not contain a fragment"),
    ({"redirect_uris": ["https://*.rp.example/cb"]}, "redirect_uris: .* contains a wildcard"),
    ({"redirect_uris": ["https://rp.example/*"]}, "wildcard"),
    ({"redirect_uris": ["/cb"]}, "redirect_uris: /cb must be an absolute https URI"),
    ({"redirect_uris": ["com.example.app:/cb"]}, "must be an absolute https URI"),
    ({"redirect_uris": ["javascript:alert(1)"]}, "must be an absolute https URI"),
    ({"redirect_uris": ["https://user:pw@rp.example/cb"]}, "must not carry user information"),
    ({"redirect_uris": ["https://rp.example:99999/cb"]}, "is not a valid URI"),
    ({"redirect_uris": ["https://rp.example/c b"]}, "whitespace or control"),
    ({"redirect_uris": ["https://rp.example/" + "a" * 2000]}, "at most 2000 characters"),
    ({"redirect_uris": [f"https://rp.example/{i}" for i in range(21)]}, "redirect_uris: at most 20 URIs"),
    ({"redirect_uris": "https://rp.example/cb"}, "redirect_uris: must be a list"),
    ({"redirect_uris": [""]}, "redirect_uris: must be a non-empty URI"),
    ({"post_logout_redirect_uris": ["http://rp.example/bye"]}, "post_logout_redirect_uris: .* must use https"),
    ({"backchannel_logout_uri": "https://rp.example/logout#x"}, "backchannel_logout_uri: .* fragment"),
    ({"backchannel_logout_uri": "http://rp.example/logout"}, "backchannel_logout_uri: .* must use https"),
    ({"redirect_uris": []}, "redirect_uris: authorization_code needs at least one redirect URI"),
    ({"grant_types": []}, "grant_types: must list at least one"),
    ({"grant_types": ["implicit"]}, "grant_types: 'implicit' is not supported"),
    ({"grant_types": ["password", "authorization_code"]}, "'password' is not supported"),
    ({"grant_types": ["refresh_token", "client_credentials"], "redirect_uris": []},
     "grant_types: refresh_token needs authorization_code"),
    ({"auth_method": "none", "grant_types": ["authorization_code", "client_credentials"]},
     "grant_types: a public client .* cannot use client_credentials"),
    ({"auth_method": "none", "jwks_uri": "https://rp.example/jwks"}, "jwks: keys are registered only with"),
    ({"auth_method": "client_secret_basic", "jwks": {"keys": [_ec_jwk()]}}, "only with private_key_jwt"),
    ({"auth_method": "private_key_jwt"}, "jwks: private_key_jwt needs exactly one of jwks and jwks_uri"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": [_ec_jwk()]}, "jwks_uri": "https://rp.example/jwks"},
     "needs exactly one"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": []}}, "jwks: holds no usable public signing key"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": [{**_ec_jwk(), "use": "enc"}]}}, "holds no usable"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": [{**_ec_jwk(), "kid": None}]}}, "holds no usable"),
    ({"auth_method": "private_key_jwt",
      "jwks": {"keys": [RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key(),  # noqa: S505 - refused
                                            as_dict=True)]}},
     "holds no usable"),
    ({"auth_method": "private_key_jwt",
      "jwks": {"keys": [{**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True), "kid": "p"}]}},
     r"jwks: key 0 of the JWK Set holds private key material \(d\)"),
    ({"auth_method": "private_key_jwt", "jwks": {"kty": "EC"}}, "jwks: a JWK Set is a JSON object with a keys array"),
    ({"auth_method": "private_key_jwt", "jwks": {"keys": ["x"]}}, "key 0 of the JWK Set is not a JSON object"),
    ({"auth_method": "private_key_jwt", "jwks_uri": "http://rp.example/jwks"}, "jwks_uri: .* must use https"),
    ({"auth_method": "client_secret_jwt"}, "auth_method: 'client_secret_jwt' is not supported"),
    ({"subject_type": "opaque"}, "subject_type: 'opaque' is not supported"),
    ({"id_token_alg": "HS256"}, "id_token_alg: 'HS256' is not supported"),
    ({"scopes": ["profile"]}, "scopes: openid is required with authorization_code"),
    ({"scopes": ["openid", "bad scope"]}, r"scopes: 'bad scope' is not a scope token \(RFC 6749 section 3.3\)"),
    ({"scopes": ["openid", 'a"b']}, "is not a scope token"),
    ({"scopes": ["openid", "a\\b"]}, "is not a scope token"),
    ({"scopes": ["openid", ""]}, "is not a scope token"),
    ({"scopes": ["openid", *(f"s{i}" for i in range(50))]}, "scopes: at most 50 scopes"),
    ({"scopes": "openid"}, "scopes: must be a list"),
    ({"sector_identifier_uri": "http://rp.example/sector.json"}, "sector_identifier_uri: .* must use https"),
]


@pytest.mark.parametrize(("fields", "message"), REJECTIONS)
def test_invalid_metadata_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidClientMetadata, match=message) as caught:
        validate_registration(reg(**fields))
    assert caught.value.status_code == 422 and caught.value.code == "invalid_client_metadata"


# --- sector identifier (OIDC Core 8.1) -------------------------------------------------------------------


async def _no_fetch(uri: str) -> Any:
    raise AssertionError(f"fetched {uri}")


async def test_sector_is_the_one_redirect_host_or_the_client_itself() -> None:
    meta = validate_registration(reg(redirect_uris=["https://RP.example/a", "https://rp.example:8443/b"]))
    assert await resolve_sector(meta, "cid", fetch=_no_fetch) == "rp.example"
    machine = validate_registration(reg(redirect_uris=[], grant_types=["client_credentials"], scopes=[]))
    assert await resolve_sector(machine, "cid", fetch=_no_fetch) == "cid"
    several = validate_registration(reg(redirect_uris=["https://a.example/cb", "https://b.example/cb"]))
    with pytest.raises(InvalidClientMetadata, match=r"redirect_uris: span several hosts \(a.example, b.example\)"):
        await resolve_sector(several, "cid", fetch=_no_fetch)


@pytest.fixture
def http() -> Iterator[LocalHttp]:
    with local_http() as server:
        yield server


async def test_sector_identifier_uri_is_fetched_and_must_list_every_redirect_uri(http: LocalHttp) -> None:
    uris = ["https://a.example/cb", "https://b.example/cb"]
    sector_uri = http.serve_json("/sector.json", [*uris, "https://c.example/cb"])
    meta = validate_registration(reg(redirect_uris=uris, sector_identifier_uri=sector_uri))
    assert await resolve_sector(meta, "cid") == "127.0.0.1"
    assert http.count("/sector.json") == 1

    http.serve_json("/sector.json", uris[:1])
    with pytest.raises(InvalidClientMetadata, match=r"sector_identifier_uri: .* does not list https://b.example/cb"):
        await resolve_sector(meta, "cid")
    http.serve_json("/sector.json", {"redirect_uris": uris})
    with pytest.raises(InvalidClientMetadata, match="must hold a JSON array of URIs"):
        await resolve_sector(meta, "cid")
    missing = validate_registration(reg(redirect_uris=uris, sector_identifier_uri=http.base + "/missing.json"))
    with pytest.raises(InvalidClientMetadata, match="sector_identifier_uri: .* answered HTTP 404"):
        await resolve_sector(missing, "cid")


async def test_sector_document_fetch_failure_is_metadata_error() -> None:
    async def broken(uri: str) -> Any:
        raise DocumentUnavailable(f"{uri} could not be fetched (ConnectError)")

    meta = validate_registration(reg(sector_identifier_uri="https://sector.example/s.json"))
    with pytest.raises(InvalidClientMetadata, match="sector_identifier_uri: .* could not be fetched"):
        await resolve_sector(meta, "cid", fetch=broken)


# --- registry --------------------------------------------------------------------------------------------


async def test_add_stores_only_the_secret_hash_and_audits_without_it(services: Services) -> None:
    async with services.sessions() as session, session.begin():
        client, secret = await ClientRegistry(session).add(
            reg(post_logout_redirect_uris=["https://rp.example/bye"], backchannel_logout_uri="https://rp.example/bc"),
            actor="test", request_id="req-1")
    assert secret and client.secret_hash == hash_secret(secret) and not client.disabled
    assert client.sector_identifier == "rp.example" and client.subject_type == "pairwise"
    assert client.grant_types == {"authorization_code", "refresh_token"} and client.scopes == {"openid", "profile"}
    async with services.sessions() as session:
        row = await session.get(OAuthClient, client.client_id)
        events = (await session.execute(select(AuditEvent).where(AuditEvent.subject == client.client_id))).scalars()
        event_list = list(events)
    assert row is not None and row.secret_hash == hash_secret(secret) and row.backchannel_logout_uri
    assert [e.event_type for e in event_list] == ["client.registered"]
    assert event_list[0].actor == "test" and event_list[0].request_id == "req-1"
    recorded = json.dumps(event_list[0].detail)
    assert secret not in recorded and row.secret_hash not in recorded and "Agency portal" in recorded


async def test_only_secret_methods_get_a_secret(services: Services) -> None:
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        public, none_secret = await registry.add(reg(auth_method="none"), actor="test")
        signed, jwt_secret = await registry.add(reg(auth_method="private_key_jwt", jwks={"keys": [_ec_jwk()]}),
                                                actor="test")
        posted, post_secret = await registry.add(reg(auth_method="client_secret_post"), actor="test")
    assert none_secret is None and public.secret_hash is None and public.is_public
    assert jwt_secret is None and signed.secret_hash is None and signed.jwks is not None
    assert post_secret and verify_secret(post_secret, posted.secret_hash)


async def test_invalid_registration_writes_nothing(services: Services) -> None:
    with pytest.raises(InvalidClientMetadata, match="redirect_uris"):
        async with services.sessions() as session, session.begin():
            await ClientRegistry(session).add(reg(redirect_uris=["http://rp.example/cb"]), actor="test")
    async with services.sessions() as session:
        assert await ClientRegistry(session).list() == []


async def test_get_list_disable_rotate(services: Services) -> None:
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        first, old_secret = await registry.add(reg(name="First"), actor="test")
        second, _ = await registry.add(reg(name="Second", auth_method="none"), actor="test")
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        assert await registry.get(first.client_id) == first
        assert await registry.get("nobody") is None
        assert {c.name for c in await registry.list()} == {"First", "Second"}
        disabled = await registry.disable(first.client_id, actor="op")
        assert disabled.disabled
        assert (await registry.disable(first.client_id, actor="op")).disabled  # twice: no change, no new event
        new_secret = await registry.rotate_secret(first.client_id, actor="op")
    assert old_secret and new_secret != old_secret
    async with services.sessions() as session, session.begin():
        registry = ClientRegistry(session)
        stored = await registry.get(first.client_id)
        assert stored is not None and stored.disabled
        assert verify_secret(new_secret, stored.secret_hash) and not verify_secret(old_secret or "", stored.secret_hash)
        with pytest.raises(InvalidClientMetadata, match="authenticates with none and has no secret"):
            await registry.rotate_secret(second.client_id, actor="op")
        with pytest.raises(ClientNotFound, match="no client 'nobody'"):
            await registry.disable("nobody", actor="op")
        with pytest.raises(ClientNotFound):
            await registry.rotate_secret("nobody", actor="op")
        events = (await session.execute(select(AuditEvent.event_type, AuditEvent.detail)
                                        .where(AuditEvent.subject == first.client_id))).all()
    assert sorted(e for e, _ in events) == ["client.disabled", "client.registered", "client.secret_rotated"]
    assert new_secret not in json.dumps([d for _, d in events])


# --- cached directory ------------------------------------------------------------------------------------


class Queries:
    """Counts the SQL statements the engine runs."""

    def __init__(self, services: Services) -> None:
        self.count = 0
        self._engine = services.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


@pytest.fixture
def queries(services: Services) -> Iterator[Queries]:
    counter = Queries(services)
    yield counter
    counter.close()


async def _register(services: Services, **kw: Any) -> str:
    async with services.sessions() as session, session.begin():
        client, _ = await ClientRegistry(session).add(reg(**kw), actor="test")
    return client.client_id


async def test_cache_hit_does_not_query_and_expires_after_ttl(services: Services, queries: Queries) -> None:
    client_id = await _register(services)
    clock = Tick(1000.0)
    directory = CachedClientDirectory(services.sessions, ttl_seconds=5, clock=clock)
    first = await directory.get(client_id)
    assert first is not None and first.client_id == client_id
    before = queries.count
    for _ in range(100):
        assert await directory.get(client_id) is first
    assert queries.count == before  # hits: no database at all

    async with services.sessions() as session, session.begin():
        await ClientRegistry(session).disable(client_id, actor="test")
    clock.now += 4.9
    cached = await directory.get(client_id)
    assert cached is not None and not cached.disabled  # still within the ttl
    clock.now += 0.2
    expired = await directory.get(client_id)
    assert expired is not None and expired.disabled  # re-read: disabled clients come back marked


async def test_unknown_clients_are_cached_too_and_invalidate_forgets(services: Services, queries: Queries) -> None:
    clock = Tick(1000.0)
    directory = CachedClientDirectory(services.sessions, ttl_seconds=60, clock=clock)
    assert await directory.get("not-yet") is None
    before = queries.count
    assert await directory.get("not-yet") is None
    assert queries.count == before
    assert await directory.get("x" * 65) is None and queries.count == before  # too long to exist: not looked up

    client_id = await _register(services)
    assert await directory.get(client_id) is not None
    async with services.sessions() as session, session.begin():
        await ClientRegistry(session).disable(client_id, actor="test")
    assert (await directory.get(client_id)).disabled is False  # type: ignore[union-attr]
    directory.invalidate(client_id)
    assert (await directory.get(client_id)).disabled is True  # type: ignore[union-attr]
    async with services.sessions() as session, session.begin():
        await ClientRegistry(session).rotate_secret(client_id, actor="test")
    directory.invalidate()
    refreshed = await directory.get(client_id)
    assert refreshed is not None
    async with services.sessions() as session:
        assert refreshed == await ClientRegistry(session).get(client_id)


async def test_ttl_zero_always_reads(services: Services, queries: Queries) -> None:
    client_id = await _register(services)
    directory = CachedClientDirectory(services.sessions, ttl_seconds=0)
    await directory.get(client_id)
    before = queries.count
    await directory.get(client_id)
    assert queries.count > before


async def test_cache_is_bounded(services: Services) -> None:
    clock = Tick(1000.0)
    directory = CachedClientDirectory(services.sessions, ttl_seconds=60, clock=clock)
    directory.MAX_ENTRIES = 5  # type: ignore[misc]
    for i in range(12):
        await directory.get(f"junk-{i}")
    assert len(directory._entries) <= 5


def test_client_ids_never_look_like_command_line_options() -> None:
    """`acar client show ID` takes the id as an argument: one starting with "-" would be parsed as an option."""
    from idp.sql.clients import generate_client_id

    ids = {generate_client_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(i.isalnum() and len(i) == 32 for i in ids)
