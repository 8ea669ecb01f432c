"""The smaller contract defects of issue 19: authentication before body parsing, one code for unreadable JSON,
a specific message for too many form fields, the Allow header of a 405, idempotent admin-token revocation,
client_credentials clients without a person's scopes, `acar --json admin token`."""

from __future__ import annotations

import json

import httpx

from api.auth import mint_admin_token
from api.deps import Services
from tests.functional.helpers import InProcessAcar

JSON = {"Content-Type": "application/json"}


async def _bearer(services: Services, scope: str = "acar:admin") -> dict[str, str]:
    minted = await mint_admin_token(services, subject="operator", scopes={scope}, ttl_seconds=600)
    return {"Authorization": f"Bearer {minted['access_token']}"}


async def test_unreadable_json_is_answered_after_authentication(client: httpx.AsyncClient,
                                                                initialized: Services) -> None:
    for body in (b"{bad", b'{"subject": "\xff"}'):
        for path in ("/admin/tokens", "/admin/clients", "/admin/certificates/01/revoke", "/admin/enrollment-codes"):
            r = await client.post(path, content=body, headers=JSON)
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", (path, r.text)
            r = await client.post(path, content=body, headers={**JSON, "Authorization": "Bearer nonsense"})
            assert r.status_code == 401, (path, r.text)


async def test_invalid_json_and_non_utf8_get_the_same_answer(client: httpx.AsyncClient,
                                                              initialized: Services) -> None:
    headers = {**JSON, **await _bearer(initialized)}
    answers = []
    for body in (b"{bad", b'{"subject": "\xff", "scope": "acar:enroll"}', b"\xfe\xff"):
        r = await client.post("/admin/tokens", content=body, headers=headers)
        assert r.headers["content-type"] == "application/problem+json", r.text
        answers.append((r.status_code, r.json()["type"]))
    assert answers == [(422, "urn:acar:problem:invalid_request")] * 3


async def test_too_many_form_fields_has_its_own_message(client: httpx.AsyncClient, initialized: Services) -> None:
    body = "&".join(f"f{i}=v" for i in range(101))
    r = await client.post("/token", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert r.json()["error_description"] == "the body has more than 100 form fields"
    r = await client.post("/logout/confirm", content=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "more than 100 form fields" in r.text


async def test_405_allow_lists_every_method_of_the_path(client: httpx.AsyncClient, initialized: Services) -> None:
    for path, methods in (("/logout", {"GET", "POST"}), ("/authorize", {"GET", "POST"}),
                          ("/interaction/x/consent", {"GET", "POST"}), ("/token", {"POST"}),
                          ("/admin/clients", {"GET", "POST"})):
        r = await client.put(path)
        assert r.status_code == 405, (path, r.text)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert allowed - {"HEAD"} == methods, (path, r.headers["allow"])


async def test_revoking_a_jti_is_idempotent(client: httpx.AsyncClient, initialized: Services) -> None:
    headers = await _bearer(initialized)
    never_issued = "0" * 32
    assert [(await client.post(f"/admin/tokens/{never_issued}/revoke", headers=headers)).status_code
            for _ in range(2)] == [204, 204]
    minted = await mint_admin_token(initialized, subject="someone", scopes={"acar:enroll"}, ttl_seconds=60)
    assert [(await client.post(f"/admin/tokens/{minted['jti']}/revoke", headers=headers)).status_code
            for _ in range(2)] == [204, 204]
    r = await client.post("/admin/enrollment-codes", json={"fin": "1AB2C3D"},
                          headers={"Authorization": f"Bearer {minted['access_token']}"})
    assert r.status_code == 401


async def test_client_credentials_clients_have_api_scopes_only(client: httpx.AsyncClient,
                                                               initialized: Services) -> None:
    headers = await _bearer(initialized, "acar:client:manage")
    r = await client.post("/admin/clients", headers=headers, json={
        "name": "Tax", "grant_types": ["client_credentials"], "scopes": ["openid", "tax:read"]})
    assert r.status_code == 422 and "openid" in r.json()["detail"], r.text
    assert (await client.get("/admin/clients", headers=headers)).json() == []
    r = await client.post("/admin/clients", headers=headers,
                          json={"name": "Tax", "grant_types": ["client_credentials"]})
    assert r.status_code == 201 and r.json()["scopes"] == [], r.text
    created = r.json()
    r = await client.post("/token", data={"grant_type": "client_credentials"},
                          auth=(created["client_id"], created["client_secret"]))
    assert r.status_code == 200 and "scope" not in r.json()
    r = await client.post("/admin/clients", headers=headers, json={"name": "Portal",
                                                                   "redirect_uris": ["https://p.example/cb"]})
    assert r.status_code == 201 and r.json()["scopes"] == ["openid", "profile"]


def test_cli_client_credentials_client_without_person_scopes(acar: InProcessAcar) -> None:
    refused = acar("client", "add", "--name", "Tax", "--grant-type", "client_credentials", "--scope", "openid",
                   check=False)
    assert refused.returncode == 1 and "openid" in refused.stderr
    added = acar.json("client", "add", "--name", "Tax", "--grant-type", "client_credentials")
    assert added["scopes"] == []


def test_global_json_flag_of_admin_token(acar: InProcessAcar, initialized: Services) -> None:
    for argv in (("--json", "admin", "token", "--subject", "op"), ("admin", "token", "--subject", "op", "--json")):
        out = acar(*argv)
        minted = json.loads(out.stdout)
        assert minted["token_type"] == "Bearer" and minted["access_token"], argv
