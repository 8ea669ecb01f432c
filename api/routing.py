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
from starlette.types import Receive, Scope, Send

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
    """A Starlette mount (the static files) that leaves itself in the scope when it matches."""

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
    (any stranger's 404) cost 600-650 us of CPU, more than twice a token (docs/performance.md). Here each answer is
    one or two regular expression matches: every route's pattern alternated, for any method and per method.

    `complete` is False when the table holds an entry this cannot read (a Host, a route with no path pattern): then
    `unserved` never concludes and the walk decides, as without the index. A route of an HTTP request is matched by
    its path pattern and its methods only (no methods: any), which is all Starlette's Route, FastAPI's APIRoute and
    Mount look at; websocket routes never serve HTTP requests and are left out."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.complete = True
        self._routes: list[tuple[re.Pattern[str], frozenset[str] | None, object]] = []
        """(pattern, methods or None for any, the route context) in table order."""
        for context in iter_route_contexts(list(routes)):
            original = context.original_route
            if isinstance(original, Unserved | WebSocketRoute):
                continue
            pattern = getattr(context, "path_regex", None)
            if not isinstance(original, Route | Mount) or not isinstance(pattern, re.Pattern):
                self.complete = False
                continue
            methods = None if isinstance(original, Mount) or not context.methods else frozenset(context.methods)
            self._routes.append((pattern, methods, context))
        self._any = _alternation(p.pattern for p, _, _ in self._routes)
        self._by_method: dict[str, re.Pattern[str]] = {}

    def _for(self, method: str) -> re.Pattern[str]:
        found = self._by_method.get(method)
        if found is None:
            found = _alternation(p.pattern for p, methods, _ in self._routes if methods is None or method in methods)
            if len(self._by_method) < 64:  # methods are the client's words: keep the known ones only
                self._by_method[method] = found
        return found

    def allowed(self, path: str) -> set[str]:
        """The methods of every route of this path (RFC 9110 section 15.5.6: a 405 answer's Allow header); a route
        taking any method (a mount) adds none, as Starlette's own 405 names none for it."""
        return {m for pattern, methods, _ in self._routes if methods and pattern.match(path) for m in methods}

    def first(self, path: str) -> object | None:
        """The first route of the table whose path this is (the one Starlette picks for a 405), else None."""
        return next((context for pattern, _, context in self._routes if pattern.match(path)), None)

    def unserved(self, path: str, method: str, *, redirect_slashes: bool) -> int | None:
        """404 when no route has this path (nor, with `redirect_slashes`, the path with its trailing slash added or
        removed, which the router answers with a redirect), 405 when routes have it but none takes `method`; None
        when a route serves the request or the index is not complete. The router's own rules (Starlette's Router,
        FastAPI's APIRouter.app): a full match wins, else the first partial (the path, not the method) is a 405,
        else the slash redirect, else 404."""
        if not self.complete:
            return None
        if self._any.match(path):
            return None if self._for(method).match(path) else 405
        if redirect_slashes and path != "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            if self._any.match(other):
                return None
        return 404


def route_index(router: Router) -> RouteIndex:
    """The index of `router`'s table: the one its `Unserved` route keeps, else (a table without one) built now."""
    for route in router.routes:
        if isinstance(route, Unserved):
            return route.index()
    return RouteIndex(router.routes)


class Unserved(BaseRoute):
    """The route table's answer to a request no route of it can serve, placed right after the plain routes (which
    then pay nothing for it): it matches exactly the requests `RouteIndex.unserved` refuses and raises the
    HTTPException the router would (404; 405 with Allow naming every route's methods for the path), answered by
    the application's exception handlers as before. Every other request goes on down the table."""

    def __init__(self, router: Router) -> None:
        self._router = weakref.ref(router)  # the router holds this route
        self._index: tuple[int, RouteIndex] | None = None
        self.app = request_response(self._refuse)

    def index(self) -> RouteIndex:
        """The index of the table this route is in, built at its first use and again when entries are added to or
        taken from the table (tests add routes to a built application). Routes are registered before the
        application serves: one added later to a router already included is not seen."""
        router = self._router()
        routes = router.routes if router is not None else []
        if self._index is None or self._index[0] != len(routes):
            self._index = (len(routes), RouteIndex(routes))
        return self._index[1]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        router = self._router()
        if scope["type"] != "http" or router is None:
            return Match.NONE, {}
        index = self.index()
        path = get_route_path(scope)
        status = index.unserved(path, scope["method"], redirect_slashes=getattr(router, "redirect_slashes", True))
        if status is None:
            return Match.NONE, {}
        child: dict[str, Any] = {"endpoint": self._refuse, "acar.unserved": status}
        if status == 405:
            child["route"] = index.first(path)  # the route the metrics and traces name, as the router's 405 did
        return Match.FULL, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def _refuse(self, request: Request) -> Response:  # always raises: the exception handlers answer
        if request.scope["acar.unserved"] == 405:
            allowed = self.index().allowed(get_route_path(request.scope))
            raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        raise HTTPException(status_code=404)
