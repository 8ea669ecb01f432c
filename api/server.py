"""`acar serve`: uvicorn with the connection limits of the settings (abuse resistance at the edge).

Every security decision about connections, in one place:

- Header deadline (ACAR_HEADER_TIMEOUT_SECONDS): a request's head (request line and header fields, RFC 9112
  section 2.1) must arrive whole within this time of the connection opening or, on a kept-alive connection, of
  its first byte. A deadline, not an idle timer: trickling a byte at a time does not extend it (slowloris).
  Past it the connection is closed; with 408 Request Timeout and "Connection: close" when part of a request had
  come (RFC 9110 section 15.5.9), silently when nothing had. uvicorn has no such timeout, hence the protocol here.
- Head size (MAX_HEAD_BYTES): httptools buffers header fields without bound, so a head still incomplete past
  this size is answered 431 Request Header Fields Too Large (RFC 6585 section 5) and the connection closed.
- Keep-alive (ACAR_KEEP_ALIVE_SECONDS): an idle connection between requests is closed (RFC 9112 section 9.3;
  uvicorn's timeout_keep_alive).
- Concurrency (ACAR_MAX_CONNECTIONS): above this many open connections or requests in progress per process,
  uvicorn answers 503 (its limit_concurrency); the header deadline bounds how long a slow client holds a slot.
- Bodies are capped by api.middleware.BodyLimitMiddleware (ACAR_MAX_BODY_BYTES), inside the application.
"""

from __future__ import annotations

import asyncio
import json
import sys
from asyncio.events import TimerHandle
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from api.settings import Settings

MAX_HEAD_BYTES = 32 * 1024
"""Largest request head (request line and all header fields); browsers send a few KiB (nginx allows 32 KiB)."""
STARTUP_FAILURE = 3
"""uvicorn's exit code when the application failed to start."""


class ServeConfig(uvicorn.Config):
    """uvicorn's configuration with the header deadline EdgeHttpProtocol reads (pickled to each worker)."""

    def __init__(self, app: str | Callable[..., Any], *, header_timeout: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout = header_timeout


def _refusal(status: int, phrase: str, code: str) -> bytes:
    """A whole RFC 9457 problem response that closes the connection, written before any ASGI request exists."""
    body = json.dumps({"type": f"urn:acar:problem:{code}", "title": phrase, "status": status}).encode()
    return (f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


REQUEST_TIMEOUT = _refusal(408, "Request Timeout", "request_timeout")
HEAD_TOO_LARGE = _refusal(431, "Request Header Fields Too Large", "request_header_fields_too_large")


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit for each request head (see the module)."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if not isinstance(config, ServeConfig):
            raise TypeError("EdgeHttpProtocol needs a ServeConfig (its header deadline)")
        self.header_timeout = config.header_timeout
        self.head_deadline: TimerHandle | None = None
        self.head_bytes = 0
        self.request_begun = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it to asyncio.Transport
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_deadline is not None:  # bytes of an incomplete head (a head begun in this read is not counted)
            self.head_bytes += len(data)
        super().data_received(data)
        if self.head_deadline is not None and self.head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_begun = True
        if self.head_deadline is None:  # the next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self.head_bytes = 0
        self.head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        self.request_begun = False
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head waiting behind a request still being answered: another period, until that is done
            self.head_deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)
            return
        if self.request_begun:
            self._refuse(REQUEST_TIMEOUT)
        else:
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self.transport.write(response)
        self.transport.close()


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Run the application under uvicorn with the connection limits of `settings` (as uvicorn.run does)."""
    config = ServeConfig(
        "api.app:create_app", factory=True, host=host, port=port, workers=workers,
        http="api.server:EdgeHttpProtocol", header_timeout=settings.header_timeout_seconds,
        timeout_keep_alive=settings.keep_alive_seconds, limit_concurrency=settings.max_connections,
        log_config=None, access_log=False, server_header=False, proxy_headers=False,
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
            return
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
