"""The route table's own vocabulary: plain Starlette routes that name themselves in the scope, the template a
request matched, for the per-route metrics (api.metrics) and traces (api.tracing), and the index of what the table
serves by path, which answers the requests no route can serve without asking every route (`RouteIndex`,
`Unserved`).

FastAPI's routes leave themselves in the ASGI scope ("route") when they match. The plain Starlette routes at the
head of the table (the login and token endpoints: api.app) and the static files' mount would leave only their
endpoint, so their requests could not be told by route: `PlainRoute` and `PlainMount` leave themselves as FastAPI's
do, and `route_template` reads one rule for every kind.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final

from fastapi.routing import iter_route_contexts
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, NoMatchFound, Route, Router, WebSocketRoute, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

UNMATCHED: Final = "unmatched"
"""The template of a request no route matched (one label for every unknown path)."""


class PlainRoute(Route):
    """A Starlette route that, like FastAPI's, leaves itself in the scope when it matches."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


class PlainMount(Mount):
    """A Starlette mount (the static files) that leaves itself in the scope when it matches. `allows`: the methods
    its application answers (StaticFiles: GET and HEAD), which a 405 it answers names in Allow (api.allow); the
    mount itself matches every method, as Starlette's does."""

    def __init__(self, path: str, app: ASGIApp, *, name: str | None = None,
                 allows: Iterable[str] | None = None) -> None:
        super().__init__(path, app=app, name=name)
        self.allows = frozenset(allows) if allows is not None else None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child


def template_of(route: object) -> str:
    """A route's path template without converters ("/pki/ocsp/{encoded}"), or UNMATCHED for no route."""
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def route_template(scope: Mapping[str, Any]) -> str:
    """The template of the route the request in `scope` matched (after the router has run), else UNMATCHED."""
    return template_of(scope.get("route"))


_NAMED_GROUP = re.compile(r"\(\?P<[^>]+>")
_NOTHING = re.compile(r"(?!)")


def _alternation(patterns: Iterable[str]) -> re.Pattern[str]:
    """One expression matching what any of the anchored `patterns` matches (their named groups unnamed: names repeat
    across routes), or nothing for none."""
    alternatives = [_NAMED_GROUP.sub("(?:", pattern) for pattern in dict.fromkeys(patterns)]
    return re.compile("|".join(f"(?:{a})" for a in alternatives)) if alternatives else _NOTHING


class RouteIndex:
    """What a route table serves, by path and method, read off its routes' own path patterns (for the routers FastAPI
    included, the patterns their routes have there, prefix and all: `fastapi.routing.iter_route_contexts`).

    Asking the table itself is a walk: Starlette's router asks each entry in turn, and an included FastAPI router
    asks each of its routes, about 4-5 us each with FastAPI's bookkeeping; FastAPI asks again when a route of an
    included router matched; the slash redirect walks the whole table a second time. A request that no route serves
    (any stranger's 404) cost 365-650 us of CPU, more than a token (docs/performance.md). Here each answer is one or
    two regular expression matches: every route's pattern alternated, for any method and per method.

    `complete` is False when the table holds what this cannot read (a Host, a route with no path pattern, FastAPI's
    low-priority frontend routes, which its router tries after the slash redirect): then `unserved` never concludes
    and the walk decides, as without the index. A route of an HTTP request is matched by its path pattern and its
    methods only (no methods: any), which is all Starlette's Route, FastAPI's APIRoute and Mount look at; websocket
    routes never serve HTTP requests and are left out."""

    def __init__(self, routes: Iterable[BaseRoute], *, router: object = None) -> None:
        """`routes`: the table; `router`: the router holding it, whose own low-priority routes count too."""
        table = list(routes)
        self.complete = not (getattr(router, "_low_priority_routes", None) or _has_low_priority_routes(table, set()))
        self._routes: list[tuple[re.Pattern[str], frozenset[str] | None, BaseRoute]] = []
        """(pattern, methods or None for any, the route as the table holds it) in table order."""
        self._allows: list[tuple[re.Pattern[str], frozenset[str]]] = []
        """(pattern, the methods a 405 of the path names): a route's methods, a mount's `allows`."""
        for context in iter_route_contexts(table):
            original = context.original_route
            if isinstance(original, Unserved | WebSocketRoute):
                continue
            pattern = getattr(context, "path_regex", None)
            if not isinstance(original, Route | Mount) or not isinstance(pattern, re.Pattern):
                self.complete = False
                continue
            methods = None if isinstance(original, Mount) or not context.methods else frozenset(context.methods)
            self._routes.append((pattern, methods, original))
            allows = methods if methods is not None else getattr(original, "allows", None)
            if allows:
                self._allows.append((pattern, allows))
        self._any = _alternation(p.pattern for p, _, _ in self._routes)
        known = {m for _, methods, _ in self._routes for m in methods or ()}
        self._by_method = {m: _alternation(p.pattern for p, ms, _ in self._routes if ms is None or m in ms)
                           for m in known}
        self._other_methods = _alternation(p.pattern for p, methods, _ in self._routes if methods is None)
        """A method no route names (a client's own word): only the routes that take any method take it."""

    def allowed(self, path: str) -> set[str]:
        """The methods of every route of this path (RFC 9110 section 15.5.6: a 405 answer's Allow header), and of a
        mount those its application answers (`PlainMount.allows`); other mounts add none."""
        return {m for pattern, methods in self._allows if pattern.match(path) for m in methods}

    def first(self, path: str) -> BaseRoute | None:
        """The first route of the table whose path this is (the one whose 405 the router answered), else None."""
        return next((route for pattern, _, route in self._routes if pattern.match(path)), None)

    def unserved(self, path: str, method: str, *, redirect_slashes: bool) -> int | None:
        """404 when no route has this path (nor, with `redirect_slashes`, the path with its trailing slash added or
        removed, which the router answers with a redirect), 405 when routes have it but none takes `method`; None
        when a route serves the request or the index is not complete. The router's own rules (Starlette's Router,
        FastAPI's APIRouter.app): a full match wins, else the first partial (the path, not the method) is a 405,
        else the slash redirect, else 404."""
        if not self.complete:
            return None
        if self._any.match(path):
            return None if self._by_method.get(method, self._other_methods).match(path) else 405
        if redirect_slashes and path != "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            if self._any.match(other):
                return None
        return 404


def _has_low_priority_routes(routes: Iterable[BaseRoute], seen: set[int]) -> bool:
    """Whether FastAPI's low-priority routes (`APIRouter.frontend`) serve anything in this table or the routers it
    includes (FastAPI 0.165 keeps them apart from the routes, `_low_priority_routes`)."""
    for route in routes:
        router = getattr(route, "original_router", None)  # an included router
        if router is not None and id(router) not in seen:
            seen.add(id(router))
            if getattr(router, "_low_priority_routes", None) or _has_low_priority_routes(router.routes, seen):
                return True
    return False


def route_index(router: Router) -> RouteIndex:
    """The index of `router`'s table: the one its `Unserved` route keeps, else (a table without one) built now."""
    for route in router.routes:
        if isinstance(route, Unserved):
            return route.index()
    return RouteIndex(router.routes, router=router)


class Unserved(BaseRoute):
    """The route table's answer to a request no route of it can serve, placed right after the plain routes (which
    then pay nothing for it): it matches exactly the requests `RouteIndex.unserved` refuses and raises the
    HTTPException the router would (404, 405), answered by the application's exception handlers as before (a
    405's Allow names every route's methods for the path: api.allow reads this index). Every other request goes on
    down the table.

    The index is built at the first request and checked again before every refusal: when the table changed since
    (an entry added, taken or replaced, or a route added to a router it includes: FastAPI's routes version), it is
    built anew and decides again. A request the index lets through is the walk's to decide, so a stale index can
    only cost time there, never a wrong answer."""

    def __init__(self, router: Router) -> None:
        self._router = weakref.ref(router)  # the router holds this route
        self._index: tuple[object, RouteIndex] | None = None
        self.app = request_response(self._refuse)

    @staticmethod
    def _version(router: Router) -> object:
        routes_version = getattr(router, "_get_routes_version", None)  # FastAPI's APIRouter: routes added below it
        return tuple(map(id, router.routes)), routes_version() if routes_version is not None else None

    def index(self, *, fresh: bool = False) -> RouteIndex:
        """The index of the table this route is in; `fresh`: checked against the table first."""
        router = self._router()
        if router is None:
            return RouteIndex([])
        if self._index is None or (fresh and self._index[0] != self._version(router)):
            self._index = (self._version(router), RouteIndex(router.routes, router=router))
        return self._index[1]

    def _refused(self, router: Router, scope: Scope, *, fresh: bool) -> int | None:
        return self.index(fresh=fresh).unserved(get_route_path(scope), scope["method"],
                                                redirect_slashes=getattr(router, "redirect_slashes", True))

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        router = self._router()
        if scope["type"] != "http" or router is None:
            return Match.NONE, {}
        status = self._refused(router, scope, fresh=False)
        if status is not None:
            status = self._refused(router, scope, fresh=True)
        if status is None:
            return Match.NONE, {}
        child: dict[str, Any] = {"endpoint": self._refuse, "acar.unserved": status}
        if status == 405:
            # the route the metrics and traces name, as the router's 405 left it in the scope
            child["route"] = self.index().first(get_route_path(scope))
        return Match.FULL, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def _refuse(self, request: Request) -> Response:  # always raises: the exception handlers answer
        raise HTTPException(status_code=request.scope["acar.unserved"])  # a 405's Allow: api.allow, from this index
