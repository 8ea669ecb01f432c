"""Errors on the wire: RFC 9457 problem details for the APIs, RFC 6749 error JSON for OAuth endpoints, the
translated error page for a page request that cannot be read and for a browser's unknown address or method.

The one place where exceptions become responses (STYLE habit 6). No stack trace, SQL or secret reaches a
client: unexpected exceptions are logged with the request id and answered with a bare 500 problem.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.allow import allowed_methods
from api.bodies import authentication_refusal, unreadable_json, unreadable_reason
from api.errors import ApiProblem, BearerTokenMissing, ContentTooLarge, InvalidPageRequest, RateLimited
from api.logging import request_id_var
from api.rendering import API_ADDRESS, METHOD_NOT_ALLOWED, NOT_FOUND, error_page, prefers_html
from api.web import NO_STORE
from idp.core.errors import CardLoginError, IdpError, InvalidClient, OAuthError
from idp.core.webauthn import PasskeyError, WrongOrigin
from keys.errors import KeysError
from signing.core.errors import SigningError
from storage.direct import WriteLockTimeout

log = logging.getLogger("acar.api")
PROBLEM = "application/problem+json"


def problem(status: int, code: str, title: str, detail: str | None = None, *, instance: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": f"urn:acar:problem:{code}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def internal_error() -> JSONResponse:
    """The bare 500 for an unexpected exception: no cause, only the request id to quote."""
    return problem(500, "internal_error", "Internal server error",
                   "an unexpected error occurred; quote the request id when reporting it")


def content_too_large(exc: ContentTooLarge, path: str) -> JSONResponse:
    """413 (RFC 9110 section 15.5.14) for a body over the edge limit, closing the connection (its headers)."""
    return problem(413, "content_too_large", "Content too large", str(exc.detail), instance=path,
                   headers=dict(exc.headers or {}))


BEARER_CHALLENGE_ERRORS = ("invalid_token", "insufficient_scope")
"""Errors of a protected resource answered with a Bearer challenge (RFC 6750 section 3)."""


def _bearer_challenge(exc: OAuthError) -> str:
    """RFC 6750 section 3: the WWW-Authenticate challenge of a protected resource's error."""
    if isinstance(exc, BearerTokenMissing):
        return 'Bearer realm="acar"'
    # error_description: %x20-21 / %x23-5B / %x5D-7E only (RFC 6750 section 3)
    description = "".join(c for c in exc.description if " " <= c <= "~" and c not in '"\\')
    return f'Bearer realm="acar", error="{exc.error}", error_description="{description}"'


def passkey_problem(request: Request, exc: PasskeyError) -> JSONResponse:
    """The problem of a passkey endpoint (coded_problem)."""
    if isinstance(exc, WrongOrigin):
        # a configuration problem, not the citizen's: the operator needs both sides to fix ACAR_WEBAUTHN_ORIGINS
        log.warning("webauthn.wrong_origin", extra={"received": exc.received, "expected": list(exc.expected),
                                                    "path": request.url.path})
    return coded_problem(request, exc.status_code, exc.code, exc.title, exc.detail, headers=NO_STORE)


def coded_problem(request: Request, status: int, code: str, title: str, detail: str, *, headers: dict[str, str],
                  **extra: Any) -> JSONResponse:
    """RFC 9457 problem with the machine code also as the extra member "code" (the pages' JavaScript translates
    it), built here rather than by `problem`, whose own parameter `code` cannot also be passed as an extra member."""
    body: dict[str, Any] = {"type": f"urn:acar:problem:{code}", "title": title, "status": status, "detail": detail,
                            "instance": request.url.path, "code": code, **extra}
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def oauth_error(exc: OAuthError) -> JSONResponse:
    """RFC 6749 section 5.2 error JSON; never cached (section 5.1), 401 with a challenge for invalid_client, and
    the Bearer challenge of RFC 6750 section 3 for invalid_token (401) and insufficient_scope (403)."""
    headers = dict(NO_STORE)
    if isinstance(exc, InvalidClient):
        headers["WWW-Authenticate"] = 'Basic realm="acar", error="invalid_client"'
    elif exc.error in BEARER_CHALLENGE_ERRORS:
        headers["WWW-Authenticate"] = _bearer_challenge(exc)
    return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status_code,
                        headers=headers)


BROWSER_PAGES = {404: ("not_found", NOT_FOUND), 405: ("method_not_allowed", METHOD_NOT_ALLOWED)}
"""The routing errors a browser gets as a translated page (api.rendering.prefers_html); API clients keep their
RFC 9457 problem."""


def rate_limited(request: Request, exc: RateLimited) -> Response:
    """429 (503 when the limiter's storage is down) with Retry-After, in the endpoint's error form: OAuth error
    JSON for the OAuth endpoints (error temporarily_unavailable: RFC 6749 defines no rate-limit code, and this
    is the registered one that tells a client to retry later), the translated error page for a page or a request
    that accepts text/html, else problem+json with the machine code "rate_limited" (the pages' JavaScript
    translates it)."""
    headers = {**NO_STORE, "Retry-After": str(exc.retry_after)}
    if exc.answer == "oauth":
        return JSONResponse({"error": "temporarily_unavailable", "error_description": exc.description},
                            status_code=exc.status_code, headers=headers)
    if exc.answer == "page" or prefers_html(request.headers.get("accept")):
        page = error_page(exc.code, exc.description, status=exc.status_code)
        page.headers["Retry-After"] = headers["Retry-After"]
        return page
    return coded_problem(request, exc.status_code, exc.code, exc.title, exc.description, headers=headers,
                         retry_after=exc.retry_after)


async def unreadable_json_answer(request: Request, exc: Exception) -> JSONResponse:
    """A JSON body that could not be decoded: the route's authentication refusal if it has one, else one 422
    problem whether the JSON was malformed, not UTF-8 or nested too deeply (api.bodies)."""
    refused = await authentication_refusal(request)
    if refused is not None:
        return problem(refused.status, refused.code, refused.title, refused.detail, instance=request.url.path,
                       headers=refused.headers)
    reason = unreadable_reason(exc)
    return problem(422, "invalid_request", "Invalid request", reason, instance=request.url.path,
                   errors=[{"field": "", "message": reason}])


OAUTH_ENDPOINTS = frozenset({"/token", "/introspect", "/revoke", "/userinfo"})
"""The endpoints whose errors are RFC 6749 section 5.2 error JSON."""
BUSY_RETRY_SECONDS = 5


def busy(request: Request) -> Response:
    """503 with Retry-After (RFC 9110 section 15.6.4) when the embedded database's writers queued longer than its
    busy timeout (storage.direct.WriteLockTimeout): an overload, never a 500. OAuth endpoints answer
    temporarily_unavailable (RFC 6749 section 5.2's "retry later" code), browsers the translated page."""
    headers = {**NO_STORE, "Retry-After": str(BUSY_RETRY_SECONDS)}
    description = "the service is temporarily unavailable; try again later"
    if request.url.path in OAUTH_ENDPOINTS:
        return JSONResponse({"error": "temporarily_unavailable", "error_description": description},
                            status_code=503, headers=headers)
    if prefers_html(request.headers.get("accept")):
        page = error_page("temporarily_unavailable", description, status=503)
        page.headers["Retry-After"] = headers["Retry-After"]
        return page
    return problem(503, "temporarily_unavailable", "Service unavailable", description, instance=request.url.path,
                   headers=headers)


def install(app: FastAPI) -> None:
    """Register the exception handlers on the application."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, exc: ApiProblem) -> Response:
        if prefers_html(request.headers.get("accept")):  # a browser landed on an API address: a page, not JSON
            page = error_page(exc.code, API_ADDRESS, status=exc.status)
            page.headers.update(exc.headers or {})
            return page
        return problem(exc.status, exc.code, exc.title, exc.detail, instance=request.url.path, headers=exc.headers)

    @app.exception_handler(RateLimited)
    async def _rate_limited(request: Request, exc: RateLimited) -> Response:
        return rate_limited(request, exc)

    @app.exception_handler(WriteLockTimeout)
    async def _busy(request: Request, exc: WriteLockTimeout) -> Response:
        return busy(request)

    @app.exception_handler(ContentTooLarge)
    async def _too_large(request: Request, exc: ContentTooLarge) -> JSONResponse:
        return content_too_large(exc, request.url.path)

    @app.exception_handler(OAuthError)
    async def _oauth(request: Request, exc: OAuthError) -> JSONResponse:
        return oauth_error(exc)

    @app.exception_handler(PasskeyError)
    async def _passkey(request: Request, exc: PasskeyError) -> JSONResponse:
        return passkey_problem(request, exc)  # EnrollmentErrors too

    @app.exception_handler(CardLoginError)
    async def _card(request: Request, exc: CardLoginError) -> JSONResponse:
        """A refused ID-card login of the Web eID endpoints (the mutual-TLS form answers its page itself)."""
        return coded_problem(request, exc.status_code, exc.code, exc.title, exc.detail, headers=NO_STORE)

    @app.exception_handler(InvalidPageRequest)
    async def _page(request: Request, exc: InvalidPageRequest) -> HTMLResponse:
        return error_page(exc.error, exc.description, status=exc.status_code)

    @app.exception_handler(IdpError)
    async def _idp(request: Request, exc: IdpError) -> JSONResponse:
        return problem(exc.status_code, exc.code, exc.title, exc.detail, instance=request.url.path)

    @app.exception_handler(KeysError)
    async def _keys(request: Request, exc: KeysError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("keys.error", extra={"error": exc.code, "detail": exc.detail})
            return problem(exc.status_code, exc.code, exc.title, instance=request.url.path)
        return problem(exc.status_code, exc.code, exc.title, exc.detail, instance=request.url.path)

    @app.exception_handler(SigningError)
    async def _signing(request: Request, exc: SigningError) -> JSONResponse:
        """The signing API's refusals, with their machine code (signing.core.errors)."""
        return coded_problem(request, exc.status_code, exc.code, exc.title, exc.detail, headers=NO_STORE)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if unreadable_json(exc):
            return await unreadable_json_answer(request, exc)
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return problem(422, "invalid_request", "Invalid request", "the request does not match the schema",
                       instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # every route of the path, not only the first one's (api.allow)
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        if exc.status_code in BROWSER_PAGES and prefers_html(request.headers.get("accept")):
            error, description = BROWSER_PAGES[exc.status_code]
            page = error_page(error, description, status=exc.status_code)
            for name, value in (headers or {}).items():
                page.headers[name] = value  # a 405's Allow
            return page
        titles = {404: "Not found", 405: "Method not allowed", 413: "Content too large", 415: "Unsupported media type"}
        if unreadable_json(exc):
            return await unreadable_json_answer(request, exc)
        return problem(exc.status_code, "http_" + str(exc.status_code), titles.get(exc.status_code, "HTTP error"),
                       str(exc.detail) if exc.status_code != 404 else None, instance=request.url.path,
                       headers=headers)


