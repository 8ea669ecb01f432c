"""The request body limit (api.middleware.BodyLimitMiddleware, ACAR_MAX_BODY_BYTES) in the application: a body over
it is refused with 413 problem+json before any route reads or checks anything, declared or streamed; a body at the
limit reaches the route. (tests/functional/test_edge_limits.py checks a real server's memory under a 200 MB body.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.auth import mint_admin_token
from api.deps import Services
from api.middleware import BodyLimitMiddleware

pytestmark = pytest.mark.asyncio

LIMIT = 1024 * 1024  # the default of ACAR_MAX_BODY_BYTES


async def _stream(total: int, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes of JSON whitespace in pieces, sent without a Content-Length (chunked)."""
    while total > 0:
        yield b" " * min(piece, total)
        total -= piece


def _is_too_large(r: httpx.Response, path: str) -> None:
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["connection"] == "close" and r.headers["x-request-id"]
    assert r.json()["type"] == "urn:acar:problem:content_too_large" and r.json()["instance"] == path
    assert r.json()["detail"] == f"the request body is larger than {LIMIT} bytes"


async def test_a_declared_body_over_the_limit_is_refused_before_the_route_runs(client: httpx.AsyncClient) -> None:
    # no credentials: the route would answer 401, but it never runs
    r = await client.post("/admin/clients", content=b" " * (LIMIT + 1), headers={"Content-Type": "application/json"})
    _is_too_large(r, "/admin/clients")
    r = await client.post("/nowhere", content=b" " * (LIMIT + 1))  # every path, routed or not
    _is_too_large(r, "/nowhere")


async def test_a_streamed_body_over_the_limit_is_refused_as_it_passes_it(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/clients", content=_stream(10 * LIMIT), headers={"Content-Type": "application/json"})
    _is_too_large(r, "/admin/clients")


@pytest.mark.parametrize(("path", "media_type", "status", "error"), [
    ("/token", "application/x-www-form-urlencoded", 400, "invalid_request"),  # a plain Starlette route
    ("/pki/tsa", "application/timestamp-query", 413, "urn:acar:problem:content_too_large"),
])
async def test_an_endpoint_with_a_smaller_limit_answers_its_own_error(client: httpx.AsyncClient, path: str,
                                                                      media_type: str, status: int,
                                                                      error: str) -> None:
    """The form endpoints and the TSA read with a smaller limit of their own (api.body.read_limited): a streamed
    body over both limits gets the endpoint's own answer, in its own format."""
    r = await client.post(path, content=_stream(2 * LIMIT), headers={"Content-Type": media_type})
    assert r.status_code == status, r.text
    assert error in (r.json().get("error"), r.json().get("type"))


async def test_a_body_at_the_limit_reaches_the_route(client: httpx.AsyncClient, initialized: Services) -> None:
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:client:manage"}, ttl_seconds=600)
    document = json.dumps({"name": "Agency portal", "redirect_uris": ["https://portal.example/cb"]}).encode()
    body = document + b" " * (LIMIT - len(document))
    headers = {"Authorization": f"Bearer {minted['access_token']}", "Content-Type": "application/json"}
    r = await client.post("/admin/clients", content=body, headers=headers)
    assert r.status_code == 201, r.text
    r = await client.post("/admin/clients", content=_stream(LIMIT), headers=headers)
    assert r.status_code == 422  # read whole (whitespace is no client), not refused


async def test_a_larger_limit_under_a_prefix() -> None:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"read": len(await request.body())})

    app = BodyLimitMiddleware(Starlette(routes=[Route("/upload", echo, methods=["POST"]),
                                                Route("/other", echo, methods=["POST"])]),
                              limit=100, larger={"/upload": 1000})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        assert (await c.post("/upload", content=b"x" * 1000)).json() == {"read": 1000}
        assert (await c.post("/upload", content=_stream(1000, 300))).json() == {"read": 1000}
        assert (await c.post("/upload", content=b"x" * 1001)).status_code == 413
        assert (await c.post("/upload", content=_stream(1001, 300))).status_code == 413
        assert (await c.post("/other", content=b"x" * 100)).json() == {"read": 100}
        assert (await c.post("/other", content=b"x" * 101)).status_code == 413
        assert (await c.post("/other", content=_stream(101, 50))).status_code == 413
