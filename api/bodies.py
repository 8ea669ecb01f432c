"""JSON bodies FastAPI cannot read (malformed, or not UTF-8): one answer for both, after authentication.

FastAPI decodes a JSON body before it solves any dependency, so on its own it would answer a malformed body
before the bearer token is checked (422 to a caller without credentials), and answer bytes that are not UTF-8
with another code (400) than malformed JSON (422). Both are the same defect of the same body (RFC 8259 section
8.1: "JSON text exchanged between systems that are not part of a closed ecosystem MUST be encoded using
UTF-8"), and authentication comes first (RFC 6750 section 3.1: a request without valid credentials is
answered 401, whatever else is wrong with it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from api import text
from api.auth import AUTHENTICATORS
from api.errors import ApiProblem

NOT_JSON = "the body " + text.NOT_JSON
TOO_DEEP = "the body " + text.TOO_DEEP


def unreadable_json(exc: Exception) -> bool:
    """Whether `exc` is FastAPI's refusal of a JSON body it could not decode: malformed JSON (json_invalid), a
    body that is not UTF-8 (a 400 raised from the UnicodeDecodeError), or one nested past the interpreter's
    recursion limit (a 400 raised from json.loads' RecursionError; api.edge_text.edge_text refuses a shallower one past
    api.text.MAX_JSON_DEPTH as json_invalid)."""
    if isinstance(exc, RequestValidationError):
        return any(error.get("type") == "json_invalid" for error in exc.errors())
    return isinstance(exc, HTTPException) and exc.status_code == 400 and isinstance(
        exc.__cause__, (UnicodeDecodeError, RecursionError))


def unreadable_reason(exc: Exception) -> str:
    """What is wrong with the body of an `unreadable_json` refusal: NOT_JSON, or TOO_DEEP."""
    if isinstance(exc, HTTPException):
        return TOO_DEEP if isinstance(exc.__cause__, RecursionError) else NOT_JSON
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - the two kinds unreadable_json accepts
    deep = any((error.get("ctx") or {}).get("error") == text.TOO_DEEP for error in exc.errors())
    return TOO_DEEP if deep else NOT_JSON


def authenticators(dependant: Any) -> Iterator[Any]:
    for dependency in getattr(dependant, "dependencies", ()):
        if dependency.call in AUTHENTICATORS:
            yield dependency.call
        yield from authenticators(dependency)


async def authentication_refusal(request: Request) -> ApiProblem | None:
    """The refusal of the route's own authentication (api.auth.require_scope), run as the route would have run
    it, or None when the request passes it (or the route has none)."""
    for authenticate in authenticators(getattr(request.scope.get("route"), "dependant", None)):
        try:
            await authenticate(request)
        except ApiProblem as exc:
            return exc
    return None
