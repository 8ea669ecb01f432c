"""A small HTTP server on 127.0.0.1 serving fixed documents (a client's JWK Set, a sector identifier list).

Tests change `routes` while it runs and read `hits` to see what was fetched; nothing leaves the loopback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            route = routes.get(self.path, Route(status=404, body=b"not found"))
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the overridden signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalHttp(base=f"http://127.0.0.1:{server.server_address[1]}", routes=routes, hits=hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
