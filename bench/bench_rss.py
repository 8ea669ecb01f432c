"""Resident memory of one serving process after warm-up (issue 17 target: one `acar serve` under 200 MB RSS).

A fresh data dir (`acar init`), an agency client (client_credentials, scopes api and signing) with its seal
(`acar seal assign`), and persons with one passkey each registered in this process (bench_passkey_login.setup).
A real `acar serve` (one worker, access log off, the in-process signing worker on as by default) is pinned to
core 0, and this process sends it --rounds rounds of the main endpoints, one after the other, every answer checked:

  GET /.well-known/openid-configuration, GET /jwks.json, GET /healthz, GET /readyz
  POST /token (client_credentials) x 10
  one passkey login (authorize, login page, options, verify -> code) and the code exchanged at POST /token
  one seal request (POST /api/v1/signing-requests, --level, ~200 KB PDF), polled until completed, the signed
      PDF fetched and validated (POST /api/v1/validations, must answer all_passed)

The server's VmRSS (resident now) and VmHWM (the peak) from /proc/<pid>/status are read after start-up and after
the warm-up; the last line is the JSON that bench/run_all.py reads. VmRSS counts shared pages (the interpreter,
libraries) in full, so it is what a container's memory limit sees for one process.

Usage: .venv/bin/python bench/bench_rss.py [--rounds 30] [--level B-LTA] [--postgresql | --database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from _common import (
    ACAR,
    ROOT,
    TOKEN_BODY,
    Http1Connection,
    acar_server,
    acar_settings,
    add_database_options,
    database_url,
    free_port,
    require,
    sh,
    without_acar_settings,
)
from bench_passkey_login import REDIRECT_URI, Flows, setup

sys.path.insert(0, str(ROOT))
from tests.pdf_tools import make_pdf  # the tests' PDF writer (ROOT put on the path just above)

TARGET_MB = 200


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid` in MB (10^6 bytes), from /proc/<pid>/status (kB there are KiB)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024 / 1e6
    return found


class Warmup:
    """One round of the main endpoints on one keep-alive connection; every answer is checked."""

    def __init__(self, port: int, agency_auth: str, flows: Flows, client_secret: str, level: str) -> None:
        self.http = Http1Connection("127.0.0.1", port)
        self.agency_auth, self.flows, self.client_secret = agency_auth, flows, client_secret
        self.pdf = make_pdf(pages=3, image_bytes=200_000)
        self.level = level
        self.requests = 0

    async def call(self, method: str, target: str, expect: int, **kwargs: Any) -> tuple[dict[str, str], bytes]:
        status, headers, body = await self.http.request(method, target, **kwargs)
        self.requests += 1
        if status != expect:
            raise SystemExit(f"{method} {target.partition('?')[0]}: {status} (expected {expect}): {body[:300]!r}")
        return headers, body

    async def round(self, authenticator: Any) -> None:
        for target in ("/.well-known/openid-configuration", "/jwks.json", "/healthz", "/readyz"):
            await self.call("GET", target, 200)
        basic = {"Authorization": "Basic " + self.agency_auth}
        for _ in range(10):
            _, body = await self.call("POST", "/token", 200, body=TOKEN_BODY + b"%20signing", headers=basic,
                                      content_type="application/x-www-form-urlencoded")
        bearer = {"Authorization": "Bearer " + json.loads(body)["access_token"]}
        await self.login(authenticator)
        _, body = await self.call("POST", "/api/v1/signing-requests", 201, headers=bearer,
                                  content_type="application/json", body=json.dumps({
                                      "mode": "seal", "level": self.level, "documents": [
                                          {"filename": "a.pdf", "content": base64.b64encode(self.pdf).decode()}]
                                  }).encode())
        request_id = json.loads(body)["id"]
        for _ in range(600):
            _, body = await self.call("GET", f"/api/v1/signing-requests/{request_id}", 200, headers=bearer)
            state = json.loads(body)["state"]
            if state == "completed":
                break
            if state not in ("pending", "approved", "signing"):
                raise SystemExit(f"seal request {state}: {body[:300]!r}")
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("seal request not completed in 30 s")
        _, signed = await self.call("GET", f"/api/v1/signing-requests/{request_id}/documents/1", 200, headers=bearer)
        _, body = await self.call("POST", "/api/v1/validations", 200, headers=bearer, body=signed,
                                  content_type="application/pdf")
        if not json.loads(body).get("all_passed"):
            raise SystemExit(f"the sealed document does not validate: {body[:500]!r}")

    async def login(self, authenticator: Any) -> None:
        """A passkey login through the benchmark's flow (bench_passkey_login.Flows.login), then the code exchange
        at the token endpoint with the verifier of the flow's PKCE challenge."""
        if not await self.flows.login(self.http, authenticator):
            raise SystemExit("passkey login failed: " + self.flows.failed[-1])
        self.requests += 4
        code = parse_qs(urlsplit(self.flows.redirect).query)["code"][0]
        basic = base64.b64encode(f"{self.flows.client_id}:{self.client_secret}".encode()).decode()
        await self.call("POST", "/token", 200, headers={"Authorization": "Basic " + basic},
                        content_type="application/x-www-form-urlencoded", body=urlencode({
                            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                            "code_verifier": self.flows.verifier}).encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--level", default="B-LTA", choices=["B-B", "B-T", "B-LT", "B-LTA"])
    add_database_options(ap)
    args = ap.parse_args()
    require(("taskset",), "util-linux")
    with database_url(args, prefix="acar_bench_rss_") as url:
        measure(args, url)


def measure(args: argparse.Namespace, url: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="acar-bench-rss-"))
    port = free_port()
    settings = acar_settings(work / "data", f"http://127.0.0.1:{port}", url)
    env = without_acar_settings() | settings
    try:
        sh(ACAR, "init", "--json", env=env)
        agency = json.loads(sh(ACAR, "client", "add", "--name", "Bench agency", "--grant-type", "client_credentials",
                               "--scope", "api", "--scope", "signing", "--json", env=env))
        sh(ACAR, "seal", "assign", agency["client_id"], "--voen", "1234567891", "--organization", "Bench", env=env)
        client_id, client_secret, authenticators = asyncio.run(setup(settings, 4))
        agency_auth = base64.b64encode(f"{agency['client_id']}:{agency['client_secret']}".encode()).decode()
        with acar_server(port, work / "server.log", env) as server:
            os.sched_setaffinity(0, {1})  # the load on the other core
            started = memory(server.pid)
            flows = Flows("127.0.0.1", port, client_id, authenticators, 1)
            warmup = Warmup(port, agency_auth, flows, client_secret, args.level)
            began = time.monotonic()

            async def rounds() -> None:
                try:
                    for i in range(args.rounds):
                        await warmup.round(authenticators[i % len(authenticators)])
                finally:
                    await warmup.http.close()

            asyncio.run(rounds())
            elapsed = time.monotonic() - began
            time.sleep(1)  # the worker's and the audit log's last writes settle
            after = memory(server.pid)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    db = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(f"one `acar serve` (1 worker, database {db}): after start-up VmRSS {started['VmRSS']:.0f} MB; after "
          f"{args.rounds} rounds ({warmup.requests} requests incl. {args.rounds} passkey logins, {args.rounds} "
          f"{args.level} seals and validations, {elapsed:.0f} s): VmRSS {after['VmRSS']:.0f} MB, "
          f"VmHWM {after['VmHWM']:.0f} MB (target < {TARGET_MB} MB)")
    print(json.dumps({"bench": "rss", "database": db, "requests": warmup.requests, "rounds": args.rounds,
                      "level": args.level, "start_rss_mb": round(started["VmRSS"], 1),
                      "rss_mb": round(after["VmRSS"], 1), "hwm_mb": round(after["VmHWM"], 1)}))


if __name__ == "__main__":
    main()
