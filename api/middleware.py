"""Request id, access log and the security headers of every response, and the request body limit, as plain ASGI
middleware (no per-request framework overhead: the headers are built once, a response costs one scan of its
header list)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Final, Protocol
from urllib.parse import quote

from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ContentTooLarge
from api.logging import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("acar.access")
log = logging.getLogger("acar.api")

NON_PAGE_CSP = "default-src 'none'; frame-ancestors 'none'"
"""The Content-Security-Policy of every response that is not a page (JSON, problems, keys, certificates): nothing
may load or frame it if a browser is ever made to render it (CSP Level 3; OWASP REST Security Cheat Sheet)."""
PERMISSIONS_POLICY = ("camera=(), microphone=(), geolocation=(), publickey-credentials-get=(self), "
                      "publickey-credentials-create=(self)")
"""W3C Permissions Policy: no camera, microphone or location for anyone; the WebAuthn ceremonies for this origin
only, never for a page that frames it (WebAuthn Level 2 section 5.9, Permissions Policy integration)."""
HSTS = "max-age=31536000; includeSubDomains"
"""RFC 6797 Strict-Transport-Security, one year, subdomains included: sent when the issuer is https."""


class SecurityHeaders:
    """The headers added to every response, built once (about half a microsecond per response). A page (a response
    with its own Content-Security-Policy, api.rendering) keeps its policy and gets Cross-Origin-Opener-Policy:
    same-origin (HTML Standard, cross-origin opener policies: no opener across origins); anything else gets
    NON_PAGE_CSP and X-Content-Type-Options: nosniff. All get X-Frame-Options: DENY (RFC 7034, for browsers without
    CSP frame-ancestors), the Permissions-Policy and, on an https issuer, HSTS."""

    __slots__ = ("other", "page")

    def __init__(self, *, https: bool) -> None:
        common = [(b"x-frame-options", b"DENY"), (b"permissions-policy", PERMISSIONS_POLICY.encode())]
        if https:
            common.append((b"strict-transport-security", HSTS.encode()))
        self.page = (*common, (b"cross-origin-opener-policy", b"same-origin"))
        self.other = (*common, (b"content-security-policy", NON_PAGE_CSP.encode()),
                      (b"x-content-type-options", b"nosniff"))

    def add_to(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Append the headers that fit this response (ASGI header names are lowercase)."""
        for name, _ in headers:
            if name == b"content-security-policy":
                headers.extend(self.page)
                return
        headers.extend(self.other)


class RequestMeter(Protocol):
    """Told of every answered request: its scope (the route it matched, if any), status and duration in seconds
    (api.metrics.instruments.HttpMeter)."""

    def observe(self, scope: Mapping[str, Any], status: int, seconds: float) -> None: ...


class RequestContextMiddleware:
    """Gives every request an id (a safe incoming X-Request-ID is kept), echoes it, logs one access line, and tells
    the `meter` of it (the metrics).

    The access line holds the method, the path without its query (queries can carry codes) and the status. Every
    response, the 500 answered here included, gets the `security` headers.
    """

    def __init__(self, app: ASGIApp, *, security: SecurityHeaders, access_log_enabled: bool = True,
                 meter: RequestMeter | None = None) -> None:
        self.app = app
        self.security = security
        self.access_log_enabled = access_log_enabled
        self.meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = incoming if incoming and _SAFE_ID.fullmatch(incoming) else os.urandom(16).hex()
        token = request_id_var.set(rid)
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                self.security.add_to(headers)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            # Answered here, inside the request's context, so the 500 carries its request id like every other
            # response; the client learns nothing of the cause (RFC 9457 problem without detail).
            log.exception("request.unhandled_exception", extra={"path": scope["path"]})
            if response_started:
                raise
            from api.problems import internal_error

            await internal_error()(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            if self.meter is not None:
                self.meter.observe(scope, status, elapsed)
            if self.access_log_enabled:
                access_log.info(
                    "http.request",
                    extra={"method": scope["method"], "path": scope["path"], "status": status,
                           "duration_ms": round(elapsed * 1000, 2)},
                )
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Caps every request body before anything parses it (RFC 9110 section 15.5.14, 413 Content Too Large).

    A Content-Length over the limit is answered at once, before the route runs and without reading a byte of the
    body; a body without one (chunked) is counted as it streams, and the read that passes the limit raises
    ContentTooLarge (api.problems answers it). Both answers close the connection, so the rest of the body is not
    read either. `larger` gives the paths under a prefix a larger limit (an upload endpoint); endpoints that take
    less read their bodies with api.body.read_limited and their own smaller limit.
    """

    def __init__(self, app: ASGIApp, *, limit: int, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.larger = tuple((larger or {}).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.limit
        if self.larger:
            limit = next((size for prefix, size in self.larger if path.startswith(prefix)), limit)
        for name, value in scope["headers"]:
            # a malformed Content-Length is the server's to refuse (RFC 9112 section 6.3); uvicorn does
            if name == b"content-length" and value.isdigit():
                if int(value) > limit:
                    from api.problems import content_too_large

                    await content_too_large(ContentTooLarge(limit), path)(scope, receive, send)
                    return
                # within the limit: the server delivers no more than Content-Length bytes (RFC 9112 section 6.2),
                # so the body needs no counting
                await self.app(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ContentTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


MTLS_PATHS: Final = ("/idcard/tls/", "/static/", "/healthz", "/readyz")
"""What the mTLS listener serves: the ID-card login form's target, the style sheet of its refusal page, the probes."""


class MtlsListenerPaths:
    """The mTLS listener (ACAR_MTLS_PORT) answers the ID-card login only (MTLS_PATHS). Its TLS context asks every
    connection for a client certificate, so a browser sent anywhere else there would be asked for its card on an
    ordinary page: a GET or HEAD is sent to the same path on the issuer (303, RFC 9110 section 15.4.4), any other
    method gets 404 (a problem, RFC 9457). A request is the listener's when it came over TLS to its port."""

    def __init__(self, app: ASGIApp, *, port: int, issuer: str) -> None:
        self.app = app
        self.port = port
        self.issuer = issuer.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or "tls" not in (scope.get("extensions") or {})
                or not scope.get("server") or scope["server"][1] != self.port
                or scope["path"].startswith(MTLS_PATHS)):
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD"):
            query = scope.get("query_string", b"").decode("latin-1")
            target = self.issuer + quote(scope["path"]) + (f"?{query}" if query else "")
            response: Response = RedirectResponse(target, status_code=303)
        else:
            response = JSONResponse({"type": "urn:acar:problem:not_found", "title": "Not Found", "status": 404,
                                     "detail": "the ID-card login listener serves only the ID-card login"},
                                    status_code=404, media_type="application/problem+json")
        await response(scope, receive, send)
