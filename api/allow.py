"""The Allow header of a 405 answer, from every route of the requested path."""

from __future__ import annotations

from starlette._utils import get_route_path
from starlette.requests import Request

from api.routing import route_index


def allowed_methods(request: Request) -> str:
    """RFC 9110 section 15.5.6: "The origin server MUST generate an Allow header field in a 405 response
    containing a list of the target resource's currently supported methods". A path's methods can be spread
    over several routes (GET and POST of /logout are separate operations), and Starlette names only the first
    route that matched the path; here every route of the path counts (the included routers' too: api.routing's
    index of the route table). The path is the application's, also when a mounted application refused (a mount
    moves the root path to itself; Starlette keeps the application's as app_root_path)."""
    scope = request.scope
    path = get_route_path({**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))})
    return ", ".join(sorted(route_index(request.app.router).allowed(path)))
