"""HotRoutes (api.hot) answer their paths with the application's own exception handlers and leave everything
else to the router."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from api import problems
from api.hot import HotRoute, HotRoutes
from idp.errors import InvalidGrant

pytestmark = pytest.mark.asyncio


async def _hot(request: Request) -> Response:
    kind = request.query_params.get("raise")
    if kind == "oauth":
        raise InvalidGrant("authorization code is invalid")
    if kind == "bug":
        raise RuntimeError("a bug")
    return JSONResponse({"via": "hot", "param": request.path_params.get("item")})


def _app() -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.api_route("/thing", methods=["POST"])
    async def routed(request: Request) -> Response:
        return JSONResponse({"via": "router"})

    @app.get("/items/{item}/more")
    async def more(item: str) -> dict[str, str]:
        return {"via": "router", "item": item}

    app.add_middleware(HotRoutes, routes={"/thing": HotRoute(frozenset({"POST"}), _hot),
                                          "/items/": HotRoute(frozenset({"GET"}), _hot, parameter="item")})
    return app


async def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(), raise_app_exceptions=False),
                             base_url="http://test")


async def test_the_hot_path_answers_its_route_and_methods() -> None:
    async with await _client() as http:
        assert (await http.post("/thing")).json() == {"via": "hot", "param": None}
        wrong = await http.get("/thing")  # not a hot method: the router answers, 405 with Allow
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


async def test_exceptions_become_the_applications_responses() -> None:
    async with await _client() as http:
        refused = await http.post("/thing", params={"raise": "oauth"})
        assert refused.status_code == 400
        assert refused.json() == {"error": "invalid_grant", "error_description": "authorization code is invalid"}
        assert refused.headers["cache-control"] == "no-store"
        assert (await http.post("/thing", params={"raise": "bug"})).status_code == 500


async def test_a_prefix_route_takes_one_segment_as_its_parameter() -> None:
    async with await _client() as http:
        assert (await http.get("/items/abc")).json() == {"via": "hot", "param": "abc"}
        assert (await http.get("/items/abc/more")).json() == {"via": "router", "item": "abc"}
        assert (await http.get("/items/")).status_code == 404  # an empty segment is no match
