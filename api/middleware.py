"""Request id and access log, and the request body limit, as plain ASGI middleware (no per-request framework
overhead)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ContentTooLarge
from api.logging import request_id_var

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("acar.access")
log = logging.getLogger("acar.api")


class RequestContextMiddleware:
    """Gives every request an id (a safe incoming X-Request-ID is kept), echoes it, logs one access line.

    The access line holds the method, the path without its query (queries can carry codes) and the status.
    """

    def __init__(self, app: ASGIApp, *, access_log_enabled: bool = True) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled

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
            if self.access_log_enabled:
                access_log.info(
                    "http.request",
                    extra={"method": scope["method"], "path": scope["path"], "status": status,
                           "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
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
        limit = next((size for prefix, size in self.larger if path.startswith(prefix)), self.limit)
        for name, value in scope["headers"]:
            # a malformed Content-Length is the server's to refuse (RFC 9112 section 6.3); uvicorn does
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                from api.problems import content_too_large

                await content_too_large(ContentTooLarge(limit), path)(scope, receive, send)
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
