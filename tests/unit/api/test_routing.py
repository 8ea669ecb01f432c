"""The route table: the endpoints of every login and every token, and the discovery and JWK Set documents, are plain
Starlette routes at its head, registered once, under the application's exception handlers and 405 answers; every
endpoint the discovery document names is served by it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Route

from api.deps import Services
from api.routing import PlainRoute, RouteIndex, Unserved
from tests.oidc_tools import ISSUER

pytestmark = pytest.mark.asyncio

PLAIN = {
    "/authorize": {"GET", "POST"}, "/token": {"POST"}, "/userinfo": {"GET", "POST"}, "/introspect": {"POST"},
    "/revoke": {"POST"}, "/interaction/{pending_id}": {"GET"}, "/webauthn/login/options": {"POST"},
    "/webauthn/login/verify": {"POST"}, "/idcard/webeid/challenge": {"POST"}, "/idcard/webeid/login": {"POST"},
    "/.well-known/openid-configuration": {"GET"},
    "/.well-known/oauth-authorization-server": {"GET"}, "/jwks.json": {"GET"},
    "/pki/ocsp": {"POST"}, "/pki/ocsp/{encoded}": {"GET"}, "/pki/tsa": {"POST"},
}
SPEC_METHODS = {
    "authorization_endpoint": {"GET", "POST"},  # OIDC Core 3.1.2.1
    "token_endpoint": {"POST"},  # RFC 6749 3.2
    "userinfo_endpoint": {"GET", "POST"},  # OIDC Core 5.3.1
    "end_session_endpoint": {"GET", "POST"},  # RP-Initiated Logout 1.0 section 2
    "introspection_endpoint": {"POST"},  # RFC 7662 2.1
    "revocation_endpoint": {"POST"},  # RFC 7009 2.1
    "jwks_uri": {"GET"},  # OIDC Discovery 3
}


def _scope(app: FastAPI, method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "app": app, "headers": []}


def _served_by(app: FastAPI, method: str, path: str) -> list[BaseRoute]:
    """The entries of the route table that fully match `method` `path` (the router calls the first): routes,
    mounts, and the routers FastAPI included (an included router matches when one of its routes does); not the
    table's answer to what nothing serves (api.routing.Unserved)."""
    return [r for r in app.router.routes
            if not isinstance(r, Unserved) and r.matches(_scope(app, method, path))[0] == Match.FULL]


async def test_the_login_token_and_metadata_endpoints_are_plain_routes_at_the_head_of_the_table(app: FastAPI) -> None:
    head = app.router.routes[:len(PLAIN)]
    assert all(type(r) is PlainRoute for r in head)  # Starlette's own Route (api.routing), not FastAPI's APIRoute
    assert {r.path_format: (r.methods or set()) - {"HEAD"} for r in head if isinstance(r, Route)} == PLAIN
    assert type(app.router.routes[len(PLAIN)]) is Unserved  # then the answer to what no route serves
    for route in head:
        assert isinstance(route, Route)
        path = route.path_format.replace("{pending_id}", "some-id").replace("{encoded}", "MEIwQDA-")
        for method in ("GET", "POST", "PUT", "DELETE"):
            # registered once: no other entry of the table answers the same path and method
            assert _served_by(app, method, path) == ([route] if method in PLAIN[route.path_format] else []), \
                (path, method)


async def test_every_discovered_endpoint_is_served_by_the_route_table(app: FastAPI, client: httpx.AsyncClient) -> None:
    discovery = (await client.get("/.well-known/openid-configuration")).json()
    endpoints = {k: v for k, v in discovery.items() if k.endswith("_endpoint") or k == "jwks_uri"}
    assert set(endpoints) == set(SPEC_METHODS)
    for name, url in endpoints.items():
        assert url.startswith(ISSUER + "/"), name
        path = url.removeprefix(ISSUER)
        for method in SPEC_METHODS[name]:
            assert len(_served_by(app, method, path)) >= 1, (name, method)
            # a real request (without credentials or parameters) reaches an endpoint: refused, never 404 or 405
            answer = await client.request(method, path)
            assert answer.status_code not in (404, 405), (name, method, answer.status_code)


async def test_a_wrong_method_is_405_with_allow_as_problem_json(client: httpx.AsyncClient) -> None:
    for method, path, allowed in (("GET", "/token", {"POST"}), ("PUT", "/authorize", {"GET", "HEAD", "POST"}),
                                  ("GET", "/webauthn/login/verify", {"POST"}), ("DELETE", "/revoke", {"POST"})):
        wrong = await client.request(method, path)
        assert wrong.status_code == 405, (method, path)
        assert set(wrong.headers["allow"].split(", ")) == allowed
        assert wrong.headers["content-type"] == "application/problem+json"
        body = wrong.json()
        assert body["type"] == "urn:acar:problem:http_405" and body["instance"] == path
        assert body["request_id"] == wrong.headers["x-request-id"]


async def test_exceptions_become_the_applications_responses(app: FastAPI, client: httpx.AsyncClient,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    refused = await client.post("/token", content=b"grant_type=client_credentials",
                                headers={"Content-Type": "text/plain"})
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_request",
                              "error_description": "the body must be application/x-www-form-urlencoded"}
    assert refused.headers["cache-control"] == "no-store" and refused.headers["pragma"] == "no-cache"
    assert refused.headers["x-request-id"]
    services: Services = app.state.services

    async def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug with a secret in its message")

    monkeypatch.setattr(services.oidc.grants, "token", bug)
    failed = await client.post("/token", data={"grant_type": "client_credentials"})
    assert failed.status_code == 500
    assert failed.headers["content-type"] == "application/problem+json"
    assert "secret" not in failed.text and failed.json()["request_id"] == failed.headers["x-request-id"]


async def test_the_login_page_route_takes_one_path_segment(client: httpx.AsyncClient) -> None:
    page = await client.get("/interaction/no-such-request")  # the plain route: the translated error page
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert 'id="error-message"' in page.text
    consent = await client.get("/interaction/no-such-request/consent")  # a FastAPI route further down
    assert consent.status_code == 400 and consent.headers["content-type"].startswith("text/html")
    assert (await client.get("/interaction/")).status_code == 404
    assert (await client.get("/interaction/a/b/c")).status_code == 404


async def test_the_openapi_document_describes_the_plain_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, methods in PLAIN.items():
        assert {m.upper() for m in paths[path]} == methods, path
    login = paths["/interaction/{pending_id}"]["get"]
    assert login["tags"] == ["interaction"] and login["parameters"][0]["name"] == "pending_id"
    assert paths["/token"]["post"]["tags"] == ["oidc"]
    assert paths["/webauthn/login/verify"]["post"]["tags"] == ["passkeys"]
    assert "OIDC Core 3.1.2.1" in paths["/authorize"]["get"]["description"]
    assert "/logout" in paths and "/jwks.json" in paths  # FastAPI's own routes stay documented
    ocsp = paths["/pki/ocsp/{encoded}"]["get"]
    assert ocsp["tags"] == ["pki"] and ocsp["parameters"][0]["name"] == "encoded"
    assert "application/ocsp-response" in ocsp["responses"]["200"]["content"]
    assert "application/timestamp-reply" in paths["/pki/tsa"]["post"]["responses"]["200"]["content"]


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(("lang", "text"), [
    ("en", "programming interface for agency systems"), ("az", "proqram interfeysidir"),
    ("ru", "программный интерфейс для систем ведомств")])
@pytest.mark.parametrize("path", ["/admin/persons/1AB2C3D", "/admin/clients", "/api/v1/signing-requests/x"])
async def test_a_browser_landing_on_an_api_address_gets_a_translated_page(client: httpx.AsyncClient, path: str,
                                                                          lang: str, text: str) -> None:
    """An API's refusal (api.errors.ApiProblem) is a translated page for a browser navigating there (Accept prefers
    text/html), with the same status and Bearer challenge; API clients keep the RFC 9457 problem."""
    page = await client.get(path, headers={"Accept": BROWSER, "Accept-Language": lang})
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-language"] == lang and text in page.text
    assert page.headers["www-authenticate"].startswith("Bearer")
    api = await client.get(path, headers={"Accept-Language": lang})
    assert api.status_code == 401 and api.headers["content-type"] == "application/problem+json"
    assert api.json()["status"] == 401


def _walked(app: FastAPI, method: str, path: str) -> int | str:
    """What the router decides by asking every entry of the table but the index's route (Starlette's Router,
    FastAPI's APIRouter.app): "served" on a full match, else 405 on a partial one (the path, not the method), else
    "redirect" when the path with its trailing slash toggled matches anything, else 404."""
    routes = [r for r in app.router.routes if not isinstance(r, Unserved)]
    matches = [r.matches(_scope(app, method, path))[0] for r in routes]
    if Match.FULL in matches:
        return "served"
    if Match.PARTIAL in matches:
        return 405
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    if path != "/" and any(r.matches(_scope(app, method, other))[0] != Match.NONE for r in routes):
        return "redirect"
    return 404


def _sample_paths(app: FastAPI) -> list[str]:
    """A path of every route of the table (parameters filled in), each with its trailing slash toggled, and paths
    no route has."""
    from fastapi.routing import iter_route_contexts

    paths = ["/", "//", "/no/such/page", "/no/such/page/", "/admin/", "/static", "/static/", "/static/a/b.css",
             "/.well-known/", "/interaction/", "/interaction/a/b/c", "/token/", "/TOKEN", "/jwks.json/x"]
    for context in iter_route_contexts(app.router.routes):
        template = getattr(context, "path_format", None) or getattr(context, "path", None)
        if isinstance(template, str) and template:
            path = template.replace("{path}", "a/b")
            while "{" in path:
                start = path.index("{")
                path = path[:start] + "p1" + path[path.index("}", start) + 1:]
            paths += [path, path.rstrip("/") if path.endswith("/") else path + "/"]
    return sorted(set(paths))


async def test_the_index_refuses_exactly_what_the_walk_through_the_table_refuses(app: FastAPI) -> None:
    """api.routing.Unserved answers 404 or 405 only where asking every route would (and with the same Allow), and
    lets everything else go on down the table: every route's path, its trailing slash toggled, unknown paths, seven
    methods and one nobody uses."""
    gate = next(r for r in app.router.routes if isinstance(r, Unserved))
    index = gate.index()
    assert index.complete
    checked = 0
    for path in _sample_paths(app):
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
            walked = _walked(app, method, path)
            match, child = gate.matches(_scope(app, method, path))
            refused = child.get("acar.unserved") if match == Match.FULL else None
            assert refused == (walked if walked in (404, 405) else None), (method, path, walked)
            checked += 1
    assert checked > 800


async def test_the_index_answers_404_and_405_through_the_exception_handlers(client: httpx.AsyncClient) -> None:
    unknown = await client.get("/no/such/page")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["type"] == "urn:acar:problem:http_404" and unknown.headers["x-request-id"]
    page = await client.get("/no/such/page", headers={"Accept": BROWSER, "Accept-Language": "az"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-language"] == "az"
    wrong = await client.get("/logout/x")
    assert wrong.status_code == 404
    # a browser's 405 names every route of the path, as the API's does (Starlette's own names the first route's)
    page = await client.delete("/logout", headers={"Accept": BROWSER})
    assert page.status_code == 405 and set(page.headers["allow"].split(", ")) == {"GET", "POST"}
    # the static files answer GET and HEAD: their 405 names them (the mount matches every method, StaticFiles refuses)
    for accept in ("application/json", BROWSER):
        posted = await client.post("/static/acar.css", headers={"Accept": accept})
        assert posted.status_code == 405 and set(posted.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert (await client.get("/static/acar.css")).status_code == 200
    # the slash redirect is the router's, untouched
    moved = await client.get("/jwks.json/", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"].endswith("/jwks.json")


async def test_a_table_the_index_cannot_read_is_left_to_the_walk() -> None:
    from starlette.routing import Host

    index = RouteIndex([Route("/a", lambda request: None), Host("api.example", app=Route("/b", lambda r: None))])
    assert not index.complete and index.unserved("/nothing", "GET", redirect_slashes=True) is None
    index = RouteIndex([Route("/a/{n:int}", lambda request: None, methods=["POST"])])
    assert index.unserved("/a/1", "GET", redirect_slashes=True) == 405 and index.allowed("/a/1") == {"POST"}
    assert index.unserved("/a/x", "POST", redirect_slashes=True) == 404
    assert index.unserved("/a/1/", "POST", redirect_slashes=True) is None  # redirected to /a/1
    assert index.unserved("/a/1/", "POST", redirect_slashes=False) == 404


def _small_app() -> tuple[FastAPI, APIRouter]:
    """A FastAPI application with one included router and the index's route at the head of its table."""
    app = FastAPI()
    late = APIRouter(prefix="/late")

    @late.get("/one")
    async def one() -> int:
        return 1

    app.include_router(late)
    app.router.routes.insert(0, Unserved(app.router))
    return app, late


async def test_the_index_follows_the_table_when_it_changes() -> None:
    """A route added to an included router after the application was built (FastAPI serves it), or an entry of the
    table replaced in place, is served, not refused by an index built before."""
    app, late = _small_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/late/two")).status_code == 404  # the index built, /late/two not in it yet

        @late.get("/two")
        async def two() -> int:
            return 2

        assert (await client.get("/late/two")).json() == 2
        spot = next(i for i, r in enumerate(app.router.routes) if getattr(r, "path", None) == "/docs")
        app.router.routes[spot] = Route("/replaced", lambda request: PlainTextResponse("here"))
        assert (await client.get("/replaced")).text == "here"


async def test_fastapis_low_priority_routes_leave_every_decision_to_the_walk(tmp_path: Path) -> None:
    app, late = _small_app()
    (tmp_path / "index.html").write_text("<p>app</p>")
    late.frontend("/app", directory=str(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/late/app/index.html")).text == "<p>app</p>"
    gate = next(r for r in app.router.routes if isinstance(r, Unserved))
    assert not gate.index(fresh=True).complete


async def test_a_405_leaves_the_route_of_its_path_in_the_scope(app: FastAPI) -> None:
    """The metrics and traces label a 405 by the route of its path, the route object the table holds, as the router
    left it in the scope (a plain route itself; FastAPI's APIRoute of an included router): never a wrapper of
    FastAPI's, which would keep the application alive in the metrics."""
    from fastapi.routing import APIRoute

    gate = next(r for r in app.router.routes if isinstance(r, Unserved))
    token = next(r for r in app.router.routes if getattr(r, "path", None) == "/token")
    for method, path, expected in (("GET", "/token", PlainRoute), ("DELETE", "/healthz", APIRoute),
                                   ("PUT", "/logout", APIRoute)):
        match, child = gate.matches(_scope(app, method, path))
        assert match == Match.FULL and child["acar.unserved"] == 405
        assert type(child["route"]) is expected and child["route"].path == path, (method, path)
    assert gate.matches(_scope(app, "GET", "/token"))[1]["route"] is token
