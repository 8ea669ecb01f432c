"""The application-wide FastAPI dependency that refuses, at the edge, text storage cannot hold (api.text's rules:
NUL, unpaired surrogates, noncharacters, JSON nested too deep) in the path, the declared query parameters and a
declared JSON body, answering in the route's own format: the translated error page on a page, 422 problem+json
elsewhere. Apart from api.text so that the text rules import no web framework (`acar` checks every argument)."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError

from api.errors import InvalidPageRequest
from api.text import NOT_UTF8, PAGE_TAGS, TOO_DEEP, not_utf8_param, refusal, refused_json, too_deep


def _is_page(request: Request) -> bool:
    route = request.scope.get("route")
    return bool(PAGE_TAGS.intersection(str(tag) for tag in getattr(route, "tags", None) or ()))


def _refuse(request: Request, location: tuple[str | int, ...], reason: str) -> None:
    if _is_page(request):
        raise InvalidPageRequest(f"{location[-1]} {reason}")
    raise RequestValidationError([{"type": "text_refused", "loc": location, "msg": f"Value {reason}",
                                   "input": None}])


async def edge_text(request: Request) -> None:
    """The application-wide dependency of the FastAPI routes: their path parameters, the query parameters and
    the JSON body they declare, checked before the endpoint runs (the plain routes, the form readers of api.web
    and the endpoints reading their own JSON check their own input)."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (reason := refusal(value)) is not None:
            _refuse(request, ("path", name), reason)
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    declared = {param.alias for param in getattr(dependant, "query_params", ())}
    for name, value in request.query_params.multi_items():
        if name in declared and (reason := refusal(value)) is not None:
            _refuse(request, ("query", name), reason)
    not_utf8 = not_utf8_param(request.scope["query_string"].decode("latin-1"), declared) if declared else None
    if not_utf8 is not None:
        _refuse(request, ("query", not_utf8), NOT_UTF8)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if getattr(dependant, "body_params", None) and (media == "application/json" or media.endswith("+json")):
        try:
            document = await request.json()  # Starlette keeps it: FastAPI's body parsing reads the same
        except (ValueError, RecursionError):
            return  # unreadable JSON: FastAPI's own refusal answers it (api.bodies)
        if too_deep(document):  # FastAPI decoded it with json.loads, which knows no depth limit
            if _is_page(request):
                raise InvalidPageRequest(f"the body {TOO_DEEP}")
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error",
                                           "input": {}, "ctx": {"error": TOO_DEEP}}])
        found = refused_json(document, ("body",))
        if found is not None:
            _refuse(request, found[0], found[1])
