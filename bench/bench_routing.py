"""The cost of the web edge per request: the whole application called as raw ASGI, no server, no socket.

Each measured request goes through every middleware, the route table, the endpoint and the exception handlers,
but through no database: the answers are refusals decided before any unit of work starts.

- token, bad content type: POST /token with text/plain, answered 400 invalid_request (RFC 6749 5.2 JSON): the
  token route, its form reader and the OAuth error handler;
- token, wrong method: GET /token, answered 405 problem+json with Allow: POST;
- authorize, bad query: GET /authorize with 101 parameters, answered with the invalid_request error page (HTML,
  translated): the authorization route and the page error handler;
- discovery: GET /.well-known/openid-configuration, a plain route since the fourth session of 2026-12-07 (a FastAPI
  route before, this script's control then);
- unknown path: GET /no/such/page, answered 404 problem+json (api.routing.Unserved, since the fifth session of
  2026-12-07; a walk through the whole table twice before, the second for the slash redirect);
- healthz, wrong method: DELETE /healthz, answered 405 with Allow: GET (a FastAPI route's path);
- healthz (control): GET /healthz, a FastAPI route the routing changes do not touch; the machine is shared, so
  compare the others against it too.

The application runs on a throwaway SQLite database in a temporary directory (migrated, token keys made, what
`acar init` does), with the access log off. Prints the median over the rounds of the CPU time per request
(process time, so the time other processes take the core from this one is not counted; on a loaded machine the
figures still move with cache and frequency effects, so compare commits in alternating runs).
To compare two commits, run the script with PYTHONPATH set to each checkout.

Usage: .venv/bin/python bench/bench_routing.py [--rounds 9] [--requests 2000]   (pins itself to one core)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from api import migrate
from api.app import create_app
from api.deps import build_services
from api.settings import Settings
from keys.software import MasterKey

Message = dict[str, Any]
TOO_MANY = "&".join(f"p{i}=x" for i in range(101))
CASES: dict[str, tuple[str, str, bytes, list[tuple[bytes, bytes]], int]] = {
    "token, bad content type": ("POST", "/token", b"grant_type=client_credentials",
                                [(b"content-type", b"text/plain")], 400),
    "token, wrong method": ("GET", "/token", b"", [], 405),
    "authorize, bad query": ("GET", "/authorize?" + TOO_MANY, b"", [], 400),
    "discovery": ("GET", "/.well-known/openid-configuration", b"", [], 200),
    "unknown path": ("GET", "/no/such/page", b"", [], 404),
    "healthz, wrong method": ("DELETE", "/healthz", b"", [], 405),
    "healthz (control)": ("GET", "/healthz", b"", [], 200),
}


async def call(app: Any, method: str, target: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One request straight into the ASGI application; its status."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"localhost:8000"), (b"content-length", str(len(body)).encode()), *headers],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(rounds: int, requests: int) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="acar-bench-routing-") as tmp:
        data = Path(tmp)
        url = f"sqlite+aiosqlite:///{data / 'acar.sqlite3'}"
        await asyncio.to_thread(migrate.upgrade, url)
        MasterKey.create_file(data / "master.key")
        settings = Settings(env="development", issuer="http://localhost:8000", data_dir=data, database_url=url,
                            master_key_file=data / "master.key", access_log=False, log_level="WARNING",
                            housekeeping_seconds=3600)
        services = build_services(settings)
        try:
            async with services.sessions() as session, session.begin():
                await services.token_keys.ensure_keys(session, actor="bench")
            app = create_app(services=services)
            async with app.router.lifespan_context(app):
                for name, (method, target, body, headers, expected) in CASES.items():
                    status = await call(app, method, target, body, headers)
                    if status != expected:
                        raise SystemExit(f"{name}: answered {status}, not {expected}")
                per_case: dict[str, list[float]] = {name: [] for name in CASES}
                for _ in range(rounds):
                    for name, (method, target, body, headers, _expected) in CASES.items():
                        started = time.process_time()
                        for _ in range(requests):
                            await call(app, method, target, body, headers)
                        per_case[name].append((time.process_time() - started) / requests * 1e6)
        finally:
            await services.close()
    return {name: (statistics.median(values), min(values)) for name, values in per_case.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    medians = asyncio.run(measure(args.rounds, args.requests))
    print(f"CPU time per request, median (min) of {args.rounds} rounds of {args.requests} requests, raw ASGI")
    for name, (median, fastest) in medians.items():
        print(f"  {name:<26} {median:8.1f} us  ({fastest:.1f})")


if __name__ == "__main__":
    main()
