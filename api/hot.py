"""The endpoints every relying party calls on every login, answered past the framework's router.

FastAPI's routing (matching each included router in turn), dependency solving and its per-route request and
response wrappers cost about a fifth of a token request's CPU (bench/bench_code_exchange.py --profile). These
endpoints need none of it: they take the raw request and return a response. HotRoutes sits innermost among
the middlewares (after request ids and the page context) and calls the very functions the routes are
registered with, turning exceptions into responses through the application's own exception handlers; any other
method or path goes on to the router (which answers 405 for a wrong method, and documents the routes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    methods: Collection[str]
    endpoint: Endpoint
    parameter: str | None = None
    """For a route registered by its prefix ("/interaction/"): the path parameter the rest of the path is (one
    non-empty segment), found in request.path_params."""


class HotRoutes:
    """An ASGI middleware answering exact paths with plain endpoint functions (see module docstring)."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[str, HotRoute]) -> None:
        self.app = app
        self.routes = {path: route for path, route in routes.items() if route.parameter is None}
        self.prefixed = [(path, route) for path, route in routes.items() if route.parameter is not None]

    def _route(self, scope: Scope) -> HotRoute | None:
        path = scope["path"]
        route = self.routes.get(path)
        if route is not None:
            return route
        for prefix, candidate in self.prefixed:
            rest = path[len(prefix):]
            if path.startswith(prefix) and rest and "/" not in rest:
                scope["path_params"] = {candidate.parameter: rest}
                return candidate
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope) if scope["type"] == "http" else None
        if route is None or scope["method"] not in route.methods:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handler = _handler_for(scope, exc)
            if handler is None:
                raise  # answered as a 500 by api.middleware, like any unhandled exception
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(scope: Scope, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The application's exception handler for `exc` (by its class, most specific first), as Starlette's
    ExceptionMiddleware picks it."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]  # type: ignore[no-any-return]
    return None
