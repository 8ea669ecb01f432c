"""HTTP on 127.0.0.1 for tests: `serving` runs a request handler in a thread (the relying parties' endpoints
of the OIDC suites are built on it), and `local_http` serves fixed documents (a client's JWK Set, a sector
identifier list): tests change `routes` while it runs and read `hits` to see what was fetched. Nothing leaves
the loopback.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output clean: no access log on stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the overridden signature
        pass

    def reply(self, body: bytes, content_type: str, status: int = 200) -> None:
        """Answer `status` with `body` of `content_type` and its Content-Length."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], port: int = 0, *,
            poll_interval: float = 0.02) -> Iterator[ThreadingHTTPServer]:
    """`handler` answering on 127.0.0.1:`port` (0: a free one, see server_address) in a thread of its own;
    shut down and closed afterwards.

    The shutdown waits until serve_forever next looks at its flag, up to `poll_interval`: socketserver's default of
    0.5 s cost every test that served something nearly half a second at its end."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalHttp:
    base: str
    routes: dict[str, Route]
    hits: list[str]

    def serve_json(self, path: str, document: Any) -> str:
        self.routes[path] = Route(body=json.dumps(document).encode(), headers={"Content-Type": "application/json"})
        return self.base + path

    def count(self, path: str) -> int:
        return self.hits.count(path)


@contextmanager
def local_http() -> Iterator[LocalHttp]:
    routes: dict[str, Route] = {}
    hits: list[str] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            route = routes.get(self.path, Route(status=404, body=b"not found"))
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

    with serving(Handler) as server:
        yield LocalHttp(base=f"http://127.0.0.1:{server.server_address[1]}", routes=routes, hits=hits)
