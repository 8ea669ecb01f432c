"""What the login pages' JSON endpoints share (the passkey endpoints, api.routes.passkeys; the Web eID login,
api.routes.idcard): the JSON body, its members, the Origin and CSRF checks, the pending request, and the answer that
sends the browser on after a login.

JSON in, JSON out: refusals are PasskeyErrors (idp.core.webauthn: invalid_request, request_expired, wrong_origin)
and CsrfRefused, answered as RFC 9457 problems with the member "code" (api.problems) that the pages' JavaScript
(api/static/json_endpoints.js) hands to their translations.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from api.body import read_limited
from api.deps import Services
from api.errors import CsrfRefused
from api.problems import passkey_problem
from api.text import UnreadableJson, parse_json, refused_json
from api.web import NO_STORE, browser_binding, interaction_path, provider_of, query_url
from idp.core.authorize import AuthorizeResult, ErrorPage, Interaction, Redirect
from idp.core.interfaces import PendingRequest
from idp.core.webauthn import InvalidPasskeyRequest, RequestExpired, WrongOrigin
from idp.sql.store import SqlOidcStore

MAX_BODY = 64 * 1024
"""The largest JSON body of these endpoints (a WebAuthn credential or a Web eID token is a few KiB)."""
CSRF_HEADER = "X-CSRF-Token"
EXPIRED = "this sign-in request has expired or was already completed; start again from the service you were using"


async def read_json(request: Request) -> dict[str, Any]:
    """The body: a JSON object (application/json, at most MAX_BODY bytes, read by api.text.parse_json) of text
    storage can hold (api.text); else InvalidPasskeyRequest (invalid_request)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise InvalidPasskeyRequest("the body must be application/json")
    body = await read_limited(request, MAX_BODY)
    if body is None:
        raise InvalidPasskeyRequest("the request body is too large")
    try:
        value = parse_json(body)
    except UnreadableJson as exc:
        raise InvalidPasskeyRequest(f"the body {exc.reason}") from None
    if not isinstance(value, dict):
        raise InvalidPasskeyRequest("the body must be a JSON object")
    refused = refused_json(value)
    if refused is not None:  # text storage cannot hold (api.text)
        raise InvalidPasskeyRequest(f"{'.'.join(str(p) for p in refused[0]) or 'the body'} {refused[1]}")
    return value


def text_member(body: Mapping[str, Any], name: str, *, limit: int = 64, required: bool = True) -> str | None:
    """The member `name`: a non-empty string of at most `limit` characters (None when absent and not `required`);
    else InvalidPasskeyRequest."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidPasskeyRequest(f"{name} must be a non-empty string of at most {limit} characters")
    return value



def credential_member(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The member `name`: an object, the JSON of the browser's PublicKeyCredential (WebAuthn Level 3 section
    5.1.8, toJSON); else InvalidPasskeyRequest."""
    value = body.get(name)
    if not isinstance(value, dict):
        raise InvalidPasskeyRequest(f"{name} must be the JSON of the browser's PublicKeyCredential")
    return value

def check_origin(request: Request, services: Services) -> None:
    """An Origin header, when present, must be one of the relying party's origins (ACAR_WEBAUTHN_ORIGINS, by
    default the issuer's): else WrongOrigin, which names the address problem instead of an expired page."""
    origin = request.headers.get("origin")
    expected = services.passkeys.rp.origins
    if origin is not None and origin not in expected:
        raise WrongOrigin(f"requests from the origin {origin[:WrongOrigin.MAX_LOGGED]} are not accepted here",
                          received=origin, expected=expected)


def check_csrf(request: Request, services: Services, expected: str) -> None:
    """check_origin, then the X-CSRF-Token header must equal `expected` (compared in constant time); else
    CsrfRefused."""
    check_origin(request, services)
    sent = request.headers.get(CSRF_HEADER)
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused("the page has expired; reload it and try again")


async def pending_request(request: Request, oidc: SqlOidcStore, pending_id: str) -> PendingRequest:
    """The pending request, only in the browser that made it (AuthorizationService.pending_for); else
    RequestExpired."""
    pending = await provider_of(request).authorization.pending_for(oidc, pending_id, browser_binding(request))
    if pending is None:
        raise RequestExpired(EXPIRED)
    return pending


def next_step(request: Request, result: AuthorizeResult) -> JSONResponse:
    """Where the browser goes after a login: what api.web.answer would answer, as JSON.
      {"redirect": "<url>"}                                 go there (the client's redirect URI with the code, or
                                                            consent)
      {"form_post": {"action": "<uri>", "params": {...}}}   response_mode=form_post (OAuth 2.0 Form Post Response
                                                            Mode): the page builds and submits the form"""
    if isinstance(result, Redirect):
        if result.response_mode == "form_post":
            return JSONResponse({"form_post": {"action": result.redirect_uri, "params": dict(result.params)}},
                                headers=NO_STORE)
        return JSONResponse({"redirect": query_url(result)}, headers=NO_STORE)
    if isinstance(result, Interaction):
        return JSONResponse({"redirect": interaction_path(result)}, headers=NO_STORE)
    assert isinstance(result, ErrorPage)  # noqa: S101 - the three results
    # the login itself succeeded (its session is kept) but the request can no longer complete
    return passkey_problem(request, RequestExpired(result.description))
