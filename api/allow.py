"""The Allow header of a 405 answer, from every route of the requested path."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts
from starlette._utils import get_route_path
from starlette.requests import Request


def allowed_methods(request: Request) -> str:
    """RFC 9110 section 15.5.6: "The origin server MUST generate an Allow header field in a 405 response
    containing a list of the target resource's currently supported methods". A path's methods can be spread
    over several routes (GET and POST of /logout are separate operations), and Starlette names only the first
    route that matched the path; here every route of the path counts (the included routers' too)."""
    path = get_route_path(request.scope)
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if route.methods and regex is not None and regex.match(path):
            methods |= route.methods
    return ", ".join(sorted(methods))
