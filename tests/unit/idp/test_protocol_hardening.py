"""Protocol conformance fixes of issue 12, over HTTP to the app with the default settings: nonce optional in the code
flow, strict refresh token reuse by default, introspection for confidential clients and their own tokens, NumericDate
claims, no request text on the logout error page, and a disabled client's tokens stopped at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm

from api.auth import mint_admin_token
from api.deps import Services
from api.settings import Settings
from idp.core.authorize import AuthorizationService, Interaction
from idp.core.loa import AcrPolicy
from idp.core.subjects import SubjectIdentifiers
from idp.core.tokens import ACCESS_TOKEN_TYP
from idp.sql.clients import ClientRegistration, ClientRegistry
from storage.base import utcnow
from tests.fakes import FakeClientDirectory, FakeOidcStore, registered_client
from tests.oidc_tools import (
    ISSUER,
    Registered,
    asgi_browser,
    authorization_params,
    introspect,
    live_refresh_tokens,
    pkce_pair,
    refresh,
    register_client,
    register_person,
    tokens_for,
)


@pytest.fixture
def settings(database_url: str, master_key_file: Path, tmp_path: Path) -> Settings:
    """The default settings (ACAR_REFRESH_REUSE_GRACE_SECONDS among them); the key and client caches on for a
    minute, so a disabled client is seen by the database checks, not because a cache happened to be empty."""
    return Settings(env="development", issuer=ISSUER, data_dir=tmp_path, database_url=database_url,
                    master_key_file=master_key_file, key_cache_seconds=60, dev_login=True)


@pytest.fixture
async def http(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(dev_app, headers={"Accept-Language": "en"}) as c:
        yield c





async def admin_headers(services: Services) -> dict[str, str]:
    minted = await mint_admin_token(services, subject="operator", scopes={"acar:client:manage"}, ttl_seconds=600)
    return {"Authorization": f"Bearer {minted['access_token']}"}


# --- 1. nonce is optional in the code flow (OIDC Core 3.1.2.1) ---------------------------------------------------

async def test_code_flow_without_nonce(initialized: Services, http: httpx.AsyncClient) -> None:
    """The conformance suite's Basic OP "nonce not required for code flow": served, and no nonce in the ID token."""
    rp = await register_client(initialized)
    await register_person(initialized)
    tokens = await tokens_for(http, rp, nonce=None)
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert "nonce" not in claims and claims["aud"] == rp.client_id
    refreshed = (await refresh(http, rp, tokens["refresh_token"])).json()
    assert "nonce" not in jwt.decode(refreshed["id_token"], options={"verify_signature": False})
    with_nonce = await tokens_for(http, rp, nonce="n-42")  # a nonce sent is still echoed
    assert jwt.decode(with_nonce["id_token"], options={"verify_signature": False})["nonce"] == "n-42"


async def test_protocol_core_accepts_a_code_request_without_nonce() -> None:
    client, secret = await registered_client(ClientRegistration(
        name="Agency portal", redirect_uris=["https://agency.example/cb"], scopes=["openid", "profile"]))
    settings = Settings(env="development", issuer=ISSUER)

    async def no_hint(hint: str) -> dict[str, object]:
        raise ValueError("no hint expected")

    service = AuthorizationService(
        FakeClientDirectory(client), issuer=ISSUER, acr=AcrPolicy(settings.acr_values),
        subjects=SubjectIdentifiers(b"salt" * 8), verify_id_token_hint=no_hint, code_lifetime=60,
        grant_lifetime=3600, interaction_lifetime=600, clock=utcnow)
    params = authorization_params(Registered(client.client_id, secret, client.redirect_uris[0]), pkce_pair()[1],
                                  nonce=None)
    result = await service.authorize({k: [v] for k, v in params.items()}, store=FakeOidcStore(), session=None,
                                     browser="b")
    assert isinstance(result, Interaction) and result.kind == "login"
    assert result.pending.params["nonce"] == ""


# --- 2. refresh token reuse: strict by default (RFC 9700 section 4.14.2) -------------------------------------------

async def test_default_grace_is_zero_and_any_reuse_revokes_the_family(initialized: Services,
                                                                     http: httpx.AsyncClient) -> None:
    assert Settings().refresh_reuse_grace_seconds == 0
    rp = await register_client(initialized)
    await register_person(initialized)
    first = await tokens_for(http, rp)
    second = (await refresh(http, rp, first["refresh_token"])).json()
    r = await refresh(http, rp, first["refresh_token"])  # at once: no grace
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert await introspect(http, rp, second["refresh_token"]) == {"active": False}
    assert await introspect(http, rp, second["access_token"]) == {"active": False}
    assert (await refresh(http, rp, second["refresh_token"])).json()["error"] == "invalid_grant"
    assert await live_refresh_tokens(initialized) == 0


async def test_concurrent_reuse_without_grace_leaves_no_second_family(initialized: Services,
                                                                      http: httpx.AsyncClient) -> None:
    """Ten concurrent uses: one wins, the other nine are reuse and revoke the family; no refresh token lives on."""
    rp = await register_client(initialized)
    await register_person(initialized)
    first = await tokens_for(http, rp)
    answers = await asyncio.gather(*(refresh(http, rp, first["refresh_token"]) for _ in range(10)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 9, [a.text for a in answers]
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
    assert await live_refresh_tokens(initialized) == 0


# --- 3. introspection: confidential clients, their own tokens (RFC 7662) --------------------------------------------

async def test_a_public_client_cannot_introspect(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    spa = await register_client(initialized, name="SPA", redirect_uris=("https://spa.example/cb",),
                                auth_method="none")
    await register_person(initialized)
    tokens = await tokens_for(http, rp)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        r = await http.post("/introspect", data={"token": token, "client_id": spa.client_id})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
        assert "active" not in r.text


async def test_introspection_answers_only_for_own_or_allowed_clients(initialized: Services,
                                                                     http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    other = await register_client(initialized, name="Other agency", redirect_uris=("https://other.example/cb",))
    await register_person(initialized)
    tokens = await tokens_for(http, rp)
    for token in (tokens["access_token"], tokens["refresh_token"]):
        assert (await introspect(http, rp, token))["active"] is True
        assert await introspect(http, other, token) == {"active": False}
    # a resource server registered to introspect the portal's tokens (admin API)
    r = await http.patch(f"/admin/clients/{other.client_id}", headers=await admin_headers(initialized),
                         json={"introspect_clients": [rp.client_id]})
    assert r.status_code == 200, r.text
    answer = await introspect(http, other, tokens["access_token"])
    assert answer["active"] is True and answer["client_id"] == rp.client_id
    assert (await introspect(http, other, tokens["refresh_token"]))["client_id"] == rp.client_id
    # the permission is one way
    other_tokens = await tokens_for(http, other)
    assert await introspect(http, rp, other_tokens["access_token"]) == {"active": False}


# --- 4. NumericDate claims (RFC 7519 section 2) -------------------------------------------------------------------

async def _our_token(services: Services, claims: dict[str, Any], typ: str = ACCESS_TOKEN_TYP) -> str:
    """A token signed by the provider's own key with these claims (JSON as Python writes it, NaN included)."""
    signer = await services.token_keys.signer("ES256")
    return await signer.sign(claims, typ)


@pytest.mark.parametrize("bad", [{"exp": float("nan")}, {"exp": float("inf")}, {"iat": float("nan")},
                                 {"nbf": float("-inf")}, {"exp": 10**30}, {"exp": True}, {"iat": "yesterday"}])
async def test_access_tokens_with_bad_numeric_dates_are_refused(initialized: Services, http: httpx.AsyncClient,
                                                                bad: dict[str, Any]) -> None:
    rp = await register_client(initialized)
    await register_person(initialized)
    tokens = await tokens_for(http, rp)
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forged = await _our_token(initialized, {**claims, **bad})
    r = await http.get("/userinfo", headers={"Authorization": "Bearer " + forged})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token", r.text
    assert await introspect(http, rp, forged) == {"active": False}
    hint = await _our_token(initialized, {**jwt.decode(tokens["id_token"], options={"verify_signature": False}),
                                          **bad}, typ="JWT")
    r = await http.get("/logout", params={"id_token_hint": hint})
    assert r.status_code == 400 and "text/html" in r.headers["content-type"]


@pytest.fixture
async def jwt_client(initialized: Services) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}
    async with initialized.sessions() as session, session.begin():
        client, _ = await ClientRegistry(session).add(ClientRegistration(
            name="Tax system", grant_types=["client_credentials"], scopes=["tax:read"], auth_method="private_key_jwt",
            jwks={"keys": [jwk]}), actor="test")
    initialized.clients.invalidate()
    return client.client_id, key


def _assertion(client_id: str, key: ec.EllipticCurvePrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": ISSUER + "/token", "iat": now, "exp": now + 60,
            "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})


@pytest.mark.parametrize("bad", [
    {"iat": float("nan"), "exp": int(time.time()) + 10**6},  # accepted before, living eleven days
    {"exp": float("nan")},  # a 500 before
    {"exp": float("inf")},
    {"exp": 10**30},
    {"iat": True},
])
async def test_client_assertions_with_bad_numeric_dates_are_refused(
        http: httpx.AsyncClient, jwt_client: tuple[str, ec.EllipticCurvePrivateKey], bad: dict[str, Any]) -> None:
    client_id, key = jwt_client
    form = {"grant_type": "client_credentials", "client_assertion_type":
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    good = await http.post("/token", data={**form, "client_assertion": _assertion(client_id, key)})
    assert good.status_code == 200, good.text
    r = await http.post("/token", data={**form, "client_assertion": _assertion(client_id, key, **bad)})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text


# --- 5. the logout error page shows no request text --------------------------------------------------------------

async def test_logout_error_page_never_echoes_the_request(initialized: Services, http: httpx.AsyncClient) -> None:
    text = "Call +994 12 000 00 00 to keep your account"
    r = await http.get("/logout", params=[(text, "1"), (text, "2")])
    assert text not in r.text and "+994" not in r.text
    assert r.status_code == 200  # parameters the endpoint does not know are ignored (RFC 6749 section 3.1)
    r = await http.get("/logout", params=[("state", text), ("state", text)])
    assert r.status_code == 400 and "<code>invalid_request</code>" in r.text
    assert text not in r.text and "+994" not in r.text
    r = await http.get("/logout", params={"client_id": text})
    assert r.status_code == 400 and text not in r.text
    r = await http.get("/logout", params={"post_logout_redirect_uri": "https://x.example/" + text})
    assert r.status_code == 400 and "+994" not in r.text


# --- 6. disabling a client stops its tokens at once ---------------------------------------------------------------

async def test_disabling_a_client_stops_its_tokens_at_once(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    resource = await register_client(initialized, name="Resource server", redirect_uris=("https://rs.example/cb",))
    await register_person(initialized)
    headers = await admin_headers(initialized)
    r = await http.patch(f"/admin/clients/{resource.client_id}", headers=headers,
                         json={"introspect_clients": [rp.client_id]})
    assert r.status_code == 200, r.text
    tokens = await tokens_for(http, rp)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    assert (await http.get("/userinfo", headers=bearer)).status_code == 200
    assert (await introspect(http, resource, tokens["access_token"]))["active"] is True
    r = await http.post(f"/admin/clients/{rp.client_id}/disable", headers=headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    r = await http.get("/userinfo", headers=bearer)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert await introspect(http, resource, tokens["access_token"]) == {"active": False}
    assert await introspect(http, resource, tokens["refresh_token"]) == {"active": False}
    r = await refresh(http, rp, tokens["refresh_token"])
    assert r.status_code in (400, 401) and r.json()["error"] in ("invalid_grant", "invalid_client")
    assert await live_refresh_tokens(initialized) == 0


async def test_a_client_disabled_elsewhere_stops_at_once_despite_the_cache(initialized: Services,
                                                                           http: httpx.AsyncClient) -> None:
    """Disabled by `acar client disable` or on another node: this node's client cache (a minute here) still
    holds the client enabled, and its tokens stop all the same (grants revoked, the client read from the database)."""
    rp = await register_client(initialized)
    resource = await register_client(initialized, name="Resource server", redirect_uris=("https://rs.example/cb",))
    async with initialized.sessions() as session, session.begin():
        await ClientRegistry(session).set_introspect_clients(resource.client_id, [rp.client_id], actor="test")
    initialized.clients.invalidate()
    await register_person(initialized)
    tokens = await tokens_for(http, rp)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    assert (await http.get("/userinfo", headers=bearer)).status_code == 200
    async with initialized.sessions() as session, session.begin():  # no cache invalidation: another process
        await ClientRegistry(session).disable(rp.client_id, actor="cli")
    assert not (await initialized.clients.get(rp.client_id)).disabled  # type: ignore[union-attr] # stale here
    assert (await http.get("/userinfo", headers=bearer)).json()["error"] == "invalid_token"
    assert await introspect(http, resource, tokens["access_token"]) == {"active": False}
    r = await refresh(http, rp, tokens["refresh_token"])  # the client still authenticates from the cache
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


async def test_a_disabled_clients_client_credentials_tokens_stop(
        initialized: Services, http: httpx.AsyncClient, jwt_client: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
    client_id, key = jwt_client
    resource = await register_client(initialized, name="Resource server", redirect_uris=("https://rs.example/cb",))
    async with initialized.sessions() as session, session.begin():
        await ClientRegistry(session).set_introspect_clients(resource.client_id, [client_id], actor="test")
    initialized.clients.invalidate()
    r = await http.post("/token", data={"grant_type": "client_credentials", "client_assertion_type":
                                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                        "client_assertion": _assertion(client_id, key)})
    access = r.json()["access_token"]
    assert (await introspect(http, resource, access))["active"] is True
    async with initialized.sessions() as session, session.begin():
        await ClientRegistry(session).disable(client_id, actor="cli")
    assert await introspect(http, resource, access) == {"active": False}
