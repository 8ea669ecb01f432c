"""The client registry's admin API: scopes, the secret shown once, problems, and cache invalidation."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.auth import mint_admin_token
from api.deps import Services
from idp.core.client_auth import ClientAuthenticator
from idp.core.errors import InvalidClient
from idp.sql.clients import CachedClientDirectory, verify_secret
from storage.audit import AuditEvent
from tests.local_http import local_http

BODY: dict[str, Any] = {"name": "Agency portal", "redirect_uris": ["https://portal.example/cb"]}


async def _auth(services: Services, scope: str = "acar:client:manage") -> dict[str, str]:
    minted = await mint_admin_token(services, subject="operator", scopes=set(scope.split()), ttl_seconds=600)
    return {"Authorization": f"Bearer {minted['access_token']}"}


async def test_requires_an_admin_token_with_the_client_scope(client: httpx.AsyncClient,
                                                             initialized: Services) -> None:
    r = await client.get("/admin/clients")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = await client.post("/admin/clients", json=BODY, headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    r = await client.post("/admin/clients", json=BODY, headers=await _auth(initialized, "acar:cert:revoke"))
    assert r.status_code == 403 and r.json()["type"] == "urn:acar:problem:insufficient_scope"
    assert "acar:client:manage" in r.json()["detail"]
    r = await client.post("/admin/clients", json=BODY, headers=await _auth(initialized, "acar:admin"))
    assert r.status_code == 201


async def test_client_scope_can_be_delegated(client: httpx.AsyncClient, initialized: Services) -> None:
    r = await client.post("/admin/tokens", headers=await _auth(initialized, "acar:admin"),
                          json={"subject": "registrar", "scope": "acar:client:manage", "ttl_seconds": 300})
    assert r.status_code == 200, r.text
    token = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert (await client.get("/admin/clients", headers=token)).status_code == 200


async def test_register_list_show_disable_rotate(client: httpx.AsyncClient, initialized: Services) -> None:
    headers = await _auth(initialized)
    r = await client.post("/admin/clients", headers=headers, json={
        **BODY, "post_logout_redirect_uris": ["https://portal.example/bye"], "scopes": ["openid", "profile", "fin"],
        "backchannel_logout_uri": "https://portal.example/backchannel"})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    created = r.json()
    client_id, secret = created["client_id"], created["client_secret"]
    assert secret and created["auth_method"] == "client_secret_basic"
    assert created["sector_identifier"] == "portal.example"
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    assert created["scopes"] == ["fin", "openid", "profile"] and created["disabled"] is False
    assert "secret_hash" not in created

    r = await client.get(f"/admin/clients/{client_id}", headers=headers)
    assert r.status_code == 200
    shown = r.json()
    assert shown == {k: v for k, v in created.items() if k != "client_secret"}
    assert secret not in r.text and "sha256:" not in r.text

    r = await client.post("/admin/clients", headers=headers, json={
        "name": "Tax system", "grant_types": ["client_credentials"], "scopes": ["tax:read"],
        "auth_method": "client_secret_post", "subject_type": "public"})
    assert r.status_code == 201, r.text
    r = await client.get("/admin/clients", headers=headers)
    assert r.status_code == 200
    listed = r.json()
    assert {c["name"] for c in listed} == {"Agency portal", "Tax system"}
    assert secret not in r.text and "sha256:" not in r.text and all("client_secret" not in c for c in listed)

    r = await client.post(f"/admin/clients/{client_id}/secret", headers=headers)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    rotated = r.json()
    assert rotated["client_id"] == client_id and rotated["client_secret"] != secret
    r = await client.post(f"/admin/clients/{client_id}/disable", headers=headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert (await client.get(f"/admin/clients/{client_id}", headers=headers)).json()["disabled"] is True

    async with initialized.sessions() as session:
        events = (await session.execute(select(AuditEvent).where(AuditEvent.subject == client_id))).scalars().all()
    assert sorted(e.event_type for e in events) == ["client.disabled", "client.registered", "client.secret_rotated"]
    assert all(e.actor == "admin:operator" and e.request_id for e in events)
    recorded = json.dumps([e.detail for e in events])
    assert secret not in recorded and rotated["client_secret"] not in recorded


async def test_changes_invalidate_the_cached_directory(client: httpx.AsyncClient, initialized: Services) -> None:
    initialized.clients = CachedClientDirectory(initialized.sessions, ttl_seconds=300)  # what the routes invalidate
    headers = await _auth(initialized)
    created = (await client.post("/admin/clients", headers=headers, json=BODY)).json()
    client_id, secret = created["client_id"], created["client_secret"]
    cached = await initialized.clients.get(client_id)
    assert cached is not None and verify_secret(secret, cached.secret_hash)

    rotated = (await client.post(f"/admin/clients/{client_id}/secret", headers=headers)).json()["client_secret"]
    cached = await initialized.clients.get(client_id)
    assert cached is not None and verify_secret(rotated, cached.secret_hash) and not verify_secret(secret,
                                                                                                   cached.secret_hash)
    await client.post(f"/admin/clients/{client_id}/disable", headers=headers)
    cached = await initialized.clients.get(client_id)
    assert cached is not None and cached.disabled
    auth = ClientAuthenticator(initialized.clients, issuer=initialized.settings.issuer, endpoints=[])

    async def no_replay(*_: object) -> bool:
        return True

    basic = "Basic " + base64.b64encode(f"{client_id}:{rotated}".encode()).decode()
    with pytest.raises(InvalidClient, match="client is disabled"):
        await auth.authenticate({}, basic, replay=no_replay)


@pytest.mark.parametrize(("body", "field"), [
    ({**BODY, "redirect_uris": ["http://portal.example/cb"]}, "redirect_uris"),
    ({**BODY, "redirect_uris": ["https://portal.example/*"]}, "redirect_uris"),
    ({**BODY, "grant_types": ["implicit"]}, "grant_types"),
    ({**BODY, "auth_method": "private_key_jwt"}, "jwks"),
    ({**BODY, "scopes": ["profile"]}, "scopes"),
    ({**BODY, "subject_type": "opaque"}, "subject_type"),
])
async def test_invalid_metadata_is_a_422_problem_naming_the_field(client: httpx.AsyncClient, initialized: Services,
                                                                  body: dict[str, Any], field: str) -> None:
    headers = await _auth(initialized)
    r = await client.post("/admin/clients", headers=headers, json=body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"] == "urn:acar:problem:invalid_client_metadata"
    assert problem["detail"].startswith(f"{field}: ")
    assert (await client.get("/admin/clients", headers=headers)).json() == []


@pytest.mark.parametrize("content", [b"{not json", b'{"name": 5}', b'{"redirect_uris": []}',
                                     b'{"name": "x", "redirect_uris": "https://a.example/cb"}',
                                     b'{"name": "x", "client_secret": "chosen"}', b"[]"])
async def test_malformed_bodies_are_422_problems(client: httpx.AsyncClient, initialized: Services,
                                                 content: bytes) -> None:
    headers = {**await _auth(initialized), "Content-Type": "application/json"}
    r = await client.post("/admin/clients", headers=headers, content=content)
    assert r.status_code == 422 and r.json()["type"] == "urn:acar:problem:invalid_request"


async def test_unknown_client_is_a_404_problem(client: httpx.AsyncClient, initialized: Services) -> None:
    headers = await _auth(initialized)
    for method, path in [("GET", "/admin/clients/nobody"), ("POST", "/admin/clients/nobody/disable"),
                         ("POST", "/admin/clients/nobody/secret")]:
        r = await client.request(method, path, headers=headers)
        assert r.status_code == 404 and r.json()["type"] == "urn:acar:problem:client_not_found", path


async def test_rotating_a_client_without_secret_is_refused(client: httpx.AsyncClient, initialized: Services) -> None:
    headers = await _auth(initialized)
    r = await client.post("/admin/clients", headers=headers, json={**BODY, "auth_method": "none"})
    assert r.status_code == 201 and r.json()["client_secret"] is None
    r = await client.post(f"/admin/clients/{r.json()['client_id']}/secret", headers=headers)
    assert r.status_code == 422 and "has no secret" in r.json()["detail"]


async def test_sector_identifier_uri_is_fetched(client: httpx.AsyncClient, initialized: Services) -> None:
    headers = await _auth(initialized)
    uris = ["https://a.agency.example/cb", "https://b.agency.example/cb"]
    with local_http() as http:
        sector = http.serve_json("/sector.json", uris)
        r = await client.post("/admin/clients", headers=headers,
                              json={**BODY, "redirect_uris": uris, "sector_identifier_uri": sector})
        assert r.status_code == 201, r.text
        assert r.json()["sector_identifier"] == "127.0.0.1" and r.json()["sector_identifier_uri"] == sector
        r = await client.post("/admin/clients", headers=headers, json={**BODY, "redirect_uris": uris})
        assert r.status_code == 422 and "span several hosts" in r.json()["detail"]


async def test_introspect_clients_are_set_at_registration_and_by_patch(client: httpx.AsyncClient,
                                                                       initialized: Services) -> None:
    headers = await _auth(initialized)
    portal = (await client.post("/admin/clients", headers=headers, json=BODY)).json()
    r = await client.post("/admin/clients", headers=headers, json={
        "name": "Benefits API", "grant_types": ["client_credentials"], "scopes": ["benefits:read"],
        "introspect_clients": [portal["client_id"]]})
    assert r.status_code == 201, r.text
    api = r.json()
    assert api["introspect_clients"] == [portal["client_id"]]
    assert (await client.get(f"/admin/clients/{api['client_id']}", headers=headers)).json()[
        "introspect_clients"] == [portal["client_id"]]
    r = await client.patch(f"/admin/clients/{api['client_id']}", headers=headers, json={"introspect_clients": []})
    assert r.status_code == 200 and r.json()["introspect_clients"] == []
    r = await client.patch(f"/admin/clients/{api['client_id']}", headers=headers,
                           json={"introspect_clients": ["nobody"]})
    assert r.status_code == 422 and "introspect_clients: no client 'nobody' is registered" in r.json()["detail"]
    r = await client.patch("/admin/clients/nobody", headers=headers, json={"introspect_clients": []})
    assert r.status_code == 404
    r = await client.patch(f"/admin/clients/{api['client_id']}", headers=headers, json={"name": "renamed"})
    assert r.status_code == 422  # only the settings an update may change
    async with initialized.sessions() as session:
        events = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "client.updated"))).scalars()
        assert [e.detail for e in events] == [{"introspect_clients": []}]
