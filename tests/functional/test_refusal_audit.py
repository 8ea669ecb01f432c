"""Refused authentication is audited: a client failing to authenticate at /token, /introspect or /revoke
(`client.authentication_failed`) and an admin API request refused 401 or 403 (`admin.access_refused`), each with
where it came from and why, never with text the client chose beyond a client_id's shape."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import select

from api.auth import mint_admin_token
from api.deps import Services
from storage.audit import AuditEvent
from tests.oidc_tools import register_client


async def _events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)
                                           .order_by(AuditEvent.occurred_at))).scalars())


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.mark.parametrize(("endpoint", "route", "form"), [
    ("/token", "/token", {"grant_type": "client_credentials", "scope": "api"}),
    ("/introspect", "/introspect", {"token": "x"}),
    ("/revoke", "/revoke", {"token": "x"}),
])
async def test_a_wrong_client_secret_is_audited(initialized: Services, client: httpx.AsyncClient, endpoint: str,
                                                route: str, form: dict[str, str]) -> None:
    rp = await register_client(initialized)
    r = await client.post(endpoint, data=form, headers=_basic(rp.client_id, "not-the-secret"))
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    [event] = await _events(initialized, "client.authentication_failed")
    assert event.subject == rp.client_id
    assert event.actor.startswith("ip:")
    assert event.detail["endpoint"] == route
    assert event.detail["reason"]


async def test_a_right_secret_is_not_audited_as_a_failure(initialized: Services, client: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    r = await client.post("/revoke", data={"token": "x"}, headers=_basic(rp.client_id, rp.secret or ""))
    assert r.status_code == 200
    assert await _events(initialized, "client.authentication_failed") == []


async def test_a_client_id_that_is_no_client_id_is_not_written(initialized: Services,
                                                                client: httpx.AsyncClient) -> None:
    claimed = "x" * 300
    r = await client.post("/token", data={"grant_type": "client_credentials", "client_id": claimed,
                                          "client_secret": "s"})
    assert r.status_code == 401
    [event] = await _events(initialized, "client.authentication_failed")
    assert event.subject is None


@pytest.mark.parametrize(("headers", "status", "error"), [
    ({}, 401, "unauthorized"),
    ({"Authorization": "Bearer not-a-token"}, 401, "invalid_token"),
])
async def test_admin_refusals_without_a_valid_token_are_audited(initialized: Services, client: httpx.AsyncClient,
                                                                headers: dict[str, str], status: int,
                                                                error: str) -> None:
    r = await client.get("/admin/clients/someone-else", headers=headers)
    assert r.status_code == status
    [event] = await _events(initialized, "admin.access_refused")
    assert event.actor.startswith("ip:")
    assert event.detail["status"] == status
    assert event.detail["error"] == error
    assert event.detail["method"] == "GET"
    assert event.detail["route"] == "/admin/clients/{client_id}"  # the route's template, not the path sent


async def test_an_admin_token_without_the_scope_is_audited(initialized: Services, client: httpx.AsyncClient) -> None:
    minted = await mint_admin_token(initialized, subject="clerk", scopes={"acar:cert:revoke"}, ttl_seconds=300)
    r = await client.get("/admin/clients", headers={"Authorization": f"Bearer {minted['access_token']}"})
    assert r.status_code == 403
    [event] = await _events(initialized, "admin.access_refused")
    assert (event.detail["status"], event.detail["error"]) == (403, "insufficient_scope")
