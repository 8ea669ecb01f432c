"""The agency signing API's intake (issue 13 target: at least 200 seal requests per second per core): a real
`acar serve` pinned to core 0 with its in-process worker off (intake alone: checking, inspecting and storing),
seal requests of one small PDF as JSON from keep-alive connections on core 1.

A fresh data dir (`acar init`), an agency client (client_credentials, scope signing) with its seal
(`acar seal assign`), its token, then --duration seconds of POST /api/v1/signing-requests per run; every answer
must be 201. Prints requests/s (median of --repeat runs) and the server's CPU milliseconds per request, whose
inverse is the rate one core sustains.

Usage: .venv/bin/python bench/bench_signing_api.py [--duration 10] [--repeat 3] [--conns 8] [--port 8000]
                                                   [--postgresql | --database-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import (
    ACAR,
    ROOT,
    Http1Connection,
    acar_server,
    acar_settings,
    add_database_options,
    cpu_seconds,
    database_url,
    median_run,
    sh,
    without_acar_settings,
)

sys.path.insert(0, str(ROOT))
from tests.signing_tools import minimal_pdf

API = "/api/v1/signing-requests"


async def intake(port: int, token: str, body: bytes, conns: int, seconds: float,
                 server_pid: int) -> tuple[float, int, float]:
    """(requests/s, errors, server CPU ms per request) of `seconds` of seal requests on `conns` connections."""
    done, errors = 0, 0

    async def connection(until: float) -> None:
        nonlocal done, errors
        http = Http1Connection("127.0.0.1", port)
        try:
            while time.monotonic() < until:
                status, _, _ = await http.request("POST", API, body=body, content_type="application/json",
                                                  headers={"Authorization": f"Bearer {token}"})
                done, errors = (done + 1, errors) if status == 201 else (done, errors + 1)
        finally:
            await http.close()

    start, cpu = time.monotonic(), cpu_seconds(server_pid)
    await asyncio.gather(*(connection(start + seconds) for _ in range(conns)))
    elapsed, used = time.monotonic() - start, cpu_seconds(server_pid) - cpu
    return done / elapsed, errors, used * 1000 / max(done, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--port", type=int, default=8000)
    add_database_options(ap)
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})  # the load generator on core 1, the server on core 0
    issuer = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory() as tmp, database_url(args) as url:
        env = {**without_acar_settings(), **acar_settings(Path(tmp) / "data", issuer, url),
               "ACAR_SIGNING_INPROCESS_WORKER": "false"}
        sh(ACAR, "init", env=env)
        client = json.loads(sh(ACAR, "client", "add", "--name", "Bench agency", "--grant-type", "client_credentials",
                               "--scope", "signing", "--json", env=env))
        sh(ACAR, "seal", "assign", client["client_id"], "--voen", "1234567891", "--organization", "Bench", env=env)
        body = json.dumps({"mode": "seal", "level": "B-B", "documents": [
            {"filename": "a.pdf", "content": base64.b64encode(minimal_pdf(1)).decode()}]}).encode()
        with acar_server(args.port, Path(tmp) / "server.log", env) as server:
            auth = base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
            request = urllib.request.Request(issuer + "/token", data=b"grant_type=client_credentials",
                                             headers={"Authorization": f"Basic {auth}"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                token = json.loads(answer.read())["access_token"]
            asyncio.run(intake(args.port, token, body, args.conns, 2.0, server.pid))  # warm-up
            runs = [asyncio.run(intake(args.port, token, body, args.conns, args.duration, server.pid))
                    for _ in range(args.repeat)]
        rate, middle = median_run(runs, lambda run: run[0])
        print(f"seal requests: {rate:.0f}/s on one server core, {middle[2]:.2f} ms server CPU per request "
              f"({1000 / middle[2]:.0f}/s per core), errors {sum(run[1] for run in runs)}; "
              f"database: {'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}")


if __name__ == "__main__":
    main()
