from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api import migrate
from api.app import create_app
from api.deps import Services, build_services
from api.settings import Settings


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert len(r.headers["x-request-id"]) >= 16


async def test_readyz_when_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text


async def test_request_id_is_echoed_when_safe_and_replaced_when_not(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123.x_y"})
    assert r.headers["x-request-id"] == "abc-123.x_y"
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id\r\nInjected: 1"})
    assert r.headers["x-request-id"] != "bad id\r\nInjected: 1"
    assert "injected" not in r.headers


async def test_unknown_path_is_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/no/such/thing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 404 and body["type"].startswith("urn:acar:problem:")
    assert body["request_id"] == r.headers["x-request-id"]


async def test_method_not_allowed_is_problem_json(client: httpx.AsyncClient) -> None:
    r = await client.delete("/healthz")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"


async def _app_for(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(services=services)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
            yield c


async def test_readyz_without_signing_keys(services: Services) -> None:
    """No token keys: readyz answers 503 naming them. Asked without the lifespan, whose housekeeping creates the
    missing keys in its first pass (next test): with it, this request raced that pass, and on a loaded machine the
    pass came first and readyz answered 200."""
    application = create_app(services=services)
    application.state.services = services  # what the lifespan sets; no background task runs
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "token signing keys not loaded" in r.json()["detail"]


async def test_the_first_housekeeping_pass_creates_missing_keys_and_readyz_follows(services: Services) -> None:
    application = create_app(services=services)
    async with application.router.lifespan_context(application):
        await asyncio.wait_for(application.state.housekeeping_passed.wait(), 30)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as c:
            r = await c.get("/readyz")
    assert r.status_code == 200, r.text


async def test_readyz_with_schema_behind(settings: Settings, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'behind.sqlite3'}"
    services = build_services(settings.model_copy(update={"database_url": url}))
    try:
        async for c in _app_for(services):
            r = await c.get("/readyz")
            assert r.status_code == 503
            assert f"migrations head is {migrate.head_revision()}" in r.json()["detail"]
    finally:
        await services.close()


async def test_readyz_with_database_down(settings: Settings) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    services = build_services(settings.model_copy(update={"database_url": url}))
    try:
        async for c in _app_for(services):
            r = await c.get("/readyz")
            assert r.status_code == 503
            assert r.json()["reasons"] == ["database unreachable"]
            assert "127.0.0.1:1" not in r.text  # no connection details leak
    finally:
        await services.close()


@pytest.mark.parametrize("path", ["/readyz", "/healthz", "/jwks.json"])
async def test_head_and_get_never_500(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path, params={"x": "\x00" * 10})
    assert r.status_code < 500
