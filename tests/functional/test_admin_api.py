"""The admin API's authentication and delegation rules, and errors that must never become a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from api.app import create_app
from api.auth import mint_admin_token
from api.deps import Services
from storage.audit import AuditEvent
from tests.functional.helpers import InProcessAcar


async def _token(services: Services, scope: str, ttl: int = 600) -> str:
    minted = await mint_admin_token(services, subject="operator", scopes=set(scope.split()), ttl_seconds=ttl)
    return str(minted["access_token"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_mint_delegates_only_operational_scopes(client: httpx.AsyncClient, initialized: Services) -> None:
    admin = await _token(initialized, "acar:admin")
    r = await client.post("/admin/tokens", headers=_auth(admin),
                          json={"subject": "clerk-7", "scope": "acar:cert:revoke", "ttl_seconds": 300})
    assert r.status_code == 200, r.text
    body = r.json()
    claims = pyjwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "acar:cert:revoke" and claims["sub"] == "clerk-7"
    admin_jti = pyjwt.decode(admin, options={"verify_signature": False})["jti"]
    assert claims["act"] == {"sub": "operator", "jti": admin_jti} and claims["jti"] == body["jti"]
    async with initialized.sessions() as session:
        event = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "admin_token.minted"))
                 ).scalar_one()
    assert event.actor == "operator" and event.detail["jti"] == body["jti"] and event.request_id
    assert body["access_token"] not in json.dumps(event.detail)

    for scope in ("acar:admin", "acar:token:mint", "acar:cert:revoke acar:token:mint"):
        r = await client.post("/admin/tokens", headers=_auth(admin), json={"subject": "x", "scope": scope})
        assert r.status_code == 403, scope
        assert "acar admin token" in r.json()["detail"]
    narrow = body["access_token"]
    r = await client.post("/admin/tokens", headers=_auth(narrow), json={"subject": "x", "scope": "acar:cert:revoke"})
    assert r.status_code == 403  # a revoke-only token cannot mint at all


async def test_mint_cannot_outlive_the_minting_token(client: httpx.AsyncClient, initialized: Services) -> None:
    minter = await _token(initialized, "acar:token:mint acar:cert:revoke", ttl=60)
    r = await client.post("/admin/tokens", headers=_auth(minter),
                          json={"subject": "x", "scope": "acar:cert:revoke", "ttl_seconds": 3000})
    assert r.status_code == 422 and "lifetime left" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"subject": "x"},
        {"subject": "", "scope": "acar:cert:revoke"},
        {"subject": "x", "scope": "acar:cert:revoke", "ttl_seconds": -5},
        {"subject": "x", "scope": "acar:cert:revoke", "extra": 1},
        {"subject": "x", "scope": "nonsense"},
    ],
)
async def test_mint_bad_bodies_are_problems(client: httpx.AsyncClient, initialized: Services,
                                            body: dict[str, object]) -> None:
    admin = await _token(initialized, "acar:admin")
    r = await client.post("/admin/tokens", headers=_auth(admin), json=body)
    assert r.status_code in (403, 422)
    assert r.headers["content-type"] == "application/problem+json"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        _b64(b'{"alg":"ES256","kid":"k"}') + "." + _b64(b"[" * 5000 + b"]" * 5000) + ".AAAA",  # deep nesting
        _b64(b'{"alg":"ES256","kid":"k"}') + "." + _b64(b"[" * 900 + b"]" * 900) + ".AAAA",
        "x" * 100_000,
        _b64(b'{"alg":"none"}') + "." + _b64(json.dumps({"iss": "http://localhost:8000", "exp": 2**40,
                                                          "scope": "acar:admin"}).encode()) + ".",
    ],
)
async def test_hostile_bearer_tokens_get_401_never_500(client: httpx.AsyncClient, token: str) -> None:
    r = await client.post("/admin/tokens", headers=_auth(token), json={"subject": "x", "scope": "acar:cert:revoke"})
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "WWW-Authenticate" in r.headers


async def test_expired_admin_token(client: httpx.AsyncClient, initialized: Services) -> None:
    signer = await initialized.token_keys.signer("ES256")
    now = int(time.time())
    token = await signer.sign({"iss": "http://localhost:8000", "aud": "http://localhost:8000/admin", "sub": "op",
                               "iat": now - 7200, "exp": now - 3600, "scope": "acar:admin"}, typ="at+jwt")
    r = await client.post("/admin/tokens", headers=_auth(token), json={"subject": "x", "scope": "acar:cert:revoke"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]


@pytest.fixture
async def crashing_client(initialized: Services) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(services=initialized)

    @application.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail: password=hunter2")

    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
            yield c


async def test_unexpected_error_is_a_bare_500_with_request_id(crashing_client: httpx.AsyncClient) -> None:
    r = await crashing_client.get("/boom", headers={"X-Request-ID": "trace-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-request-id"] == "trace-500"
    body = r.json()
    assert body["request_id"] == "trace-500" and body["type"] == "urn:acar:problem:internal_error"
    assert "hunter2" not in r.text and "RuntimeError" not in r.text


async def test_init_never_writes_a_new_master_key_beside_sealed_keys(acar: InProcessAcar, tmp_path: Path) -> None:
    acar("init")
    proc = acar("init", check=False, env={**acar.env, "ACAR_MASTER_KEY_FILE": str(tmp_path / "fresh" / "master.key")})
    assert proc.returncode == 1
    assert "does not exist, but the database holds keys sealed with master key" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "fresh" / "master.key").exists()


async def test_revoked_admin_token_is_refused(client: httpx.AsyncClient, initialized: Services,
                                             acar: InProcessAcar) -> None:
    admin = await _token(initialized, "acar:admin")
    r = await client.post("/admin/tokens", headers=_auth(admin),
                          json={"subject": "clerk", "scope": "acar:cert:revoke", "ttl_seconds": 300})
    clerk, jti = r.json()["access_token"], r.json()["jti"]
    assert (await client.post("/admin/certificates/00ff/revoke", headers=_auth(clerk),
                              json={"reason": "keyCompromise"})).status_code == 404  # accepted, serial unknown

    assert (await client.post(f"/admin/tokens/{jti}/revoke", headers=_auth(clerk))).status_code == 403
    assert (await client.post(f"/admin/tokens/{jti}/revoke", headers=_auth(admin))).status_code == 204
    again = await client.post(f"/admin/tokens/{jti}/revoke", headers=_auth(admin))
    assert again.status_code == 204  # idempotent (RFC 7009 section 2.2)
    refused = await client.post("/admin/certificates/00ff/revoke", headers=_auth(clerk),
                                json={"reason": "keyCompromise"})
    assert refused.status_code == 401 and refused.json()["detail"] == "token has been revoked"
    bad = await client.post("/admin/tokens/no!/revoke", headers=_auth(admin))
    assert bad.status_code == 422

    # the command line revokes too (its own services, same database): the admin token itself stops working
    admin_jti = pyjwt.decode(admin, options={"verify_signature": False})["jti"]
    out = acar("admin", "revoke-token", admin_jti, "--json")
    assert json.loads(out.stdout) == {"jti": admin_jti, "revoked": True}
    assert json.loads(acar("admin", "revoke-token", admin_jti, "--json").stdout)["revoked"] is True
    r = await client.post("/admin/tokens", headers=_auth(admin), json={"subject": "x", "scope": "acar:cert:revoke"})
    assert r.status_code == 401
    async with initialized.sessions() as session:
        events = (await session.execute(select(AuditEvent.subject).where(AuditEvent.event_type == "token.revoked"))
                  ).scalars().all()
    assert set(events) == {jti, admin_jti}


async def test_revoking_a_token_revokes_what_it_minted(client: httpx.AsyncClient, initialized: Services) -> None:
    """A leaked token whose holder minted children before it was revoked: the children stop working too."""
    leaked = await _token(initialized, "acar:token:mint acar:cert:revoke")
    r = await client.post("/admin/tokens", headers=_auth(leaked),
                          json={"subject": "accomplice", "scope": "acar:cert:revoke", "ttl_seconds": 300})
    child = r.json()["access_token"]
    revoke = {"reason": "keyCompromise"}
    assert (await client.post("/admin/certificates/00ff/revoke", headers=_auth(child), json=revoke)).status_code == 404
    admin = await _token(initialized, "acar:admin")
    leaked_jti = pyjwt.decode(leaked, options={"verify_signature": False})["jti"]
    assert (await client.post(f"/admin/tokens/{leaked_jti}/revoke", headers=_auth(admin))).status_code == 204
    for token in (leaked, child):
        r = await client.post("/admin/certificates/00ff/revoke", headers=_auth(token), json=revoke)
        assert r.status_code == 401 and r.json()["detail"] == "token has been revoked"


async def test_concurrent_revocations_of_one_token(client: httpx.AsyncClient, initialized: Services) -> None:
    admin = await _token(initialized, "acar:admin")
    victim = pyjwt.decode(await _token(initialized, "acar:cert:revoke"), options={"verify_signature": False})["jti"]
    results = await asyncio.gather(*(client.post(f"/admin/tokens/{victim}/revoke", headers=_auth(admin))
                                     for _ in range(4)))
    assert [r.status_code for r in results] == [204, 204, 204, 204]
    async with initialized.sessions() as session:
        events = (await session.execute(select(AuditEvent.subject).where(AuditEvent.event_type == "token.revoked"))
                  ).scalars().all()
    assert events == [victim]  # revoked once
