"""The route table's own vocabulary: plain Starlette routes that name themselves in the scope, and the template a
request matched, for the per-route metrics (api.metrics) and traces (api.tracing).

FastAPI's routes leave themselves in the ASGI scope ("route") when they match. The plain Starlette routes at the
head of the table (the login and token endpoints: api.app) and the static files' mount would leave only their
endpoint, so their requests could not be told by route: `PlainRoute` and `PlainMount` leave themselves as FastAPI's
do, and `route_template` reads one rule for every kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from starlette.routing import Match, Mount, Route
from starlette.types import Scope

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
