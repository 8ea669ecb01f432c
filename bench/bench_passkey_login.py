"""Passkey login throughput on one core (issue 5 target: >= 300 logins/s): authorization request -> login page
(which comes with the passkey ceremony) -> assertion verification -> session -> authorization code.

A fresh data dir (`acar init`), then, in this process, one confidential client and N persons, each with one
device-bound passkey of the software authenticator (tests/webauthn_authenticator.py) registered through
idp.core.webauthn and consent already given, so every login ends in a code. A real `acar serve` (one worker, access
log off) is pinned to core 0; this process (the load) pins itself to core 1 and runs --flows concurrent browser
flows (asyncio on a lean HTTP/1.1 client, _common.Http1Connection: httpx cost about a millisecond of CPU per
request and capped the load near 130 logins/s; one keep-alive connection and no cookie carried between logins
each). A flow is what the login page's script does for its first prompt:

  GET /authorize                      303 -> /interaction/<id>
  GET /interaction/<id>               the login page: its pending id, CSRF token and passkey ceremony (#passkey-options;
                                      a page without one: POST /webauthn/login/options for it, as the script does)
  (the authenticator signs)           ECDSA P-256, counter + 1, user verified
  POST /webauthn/login/verify         200 {"redirect": "https://rp.example/cb?code=..."} and the session cookie

Until the seventh session of 2026-12-07 the page came without a ceremony and every flow asked
/webauthn/login/options for it (figures in docs/performance.md before then count that request).

Each flow owns its persons (their signature counters only ever increase). A login counts when its answer carries
a code. Median of --runs runs of --duration seconds after a warm-up; the server's CPU time per login (from
/proc/<pid>/stat) shows whether it was saturated.

8 flows stay within the direct units of work's pool (10 connections on PostgreSQL); on SQLite the units take
turns on one connection.

Usage: .venv/bin/python bench/bench_passkey_login.py [--runs 3] [--duration 10] [--flows 8] [--persons 64]
                                                     [--profile FILE] [--no-wait]
                                                     [--postgresql | --database-url postgresql+asyncpg://...]
--postgresql creates a throwaway database on postgresql://postgres@127.0.0.1:5432 (psql) and drops it after.
Needs taskset (util-linux). Do not run it while bench_token.py or bench_code_exchange.py is running: it waits for
them to end, unless --no-wait (bench/run_all.py runs the benchmarks one after the other and records the load).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from _common import (
    ACAR,
    ROOT,
    Http1Connection,
    acar_server,
    acar_settings,
    add_database_options,
    cpu_seconds,
    database_url,
    free_port,
    require,
    sh,
    without_acar_settings,
)

sys.path.insert(0, str(ROOT))  # tests.webauthn_authenticator
REDIRECT_URI = "https://rp.example/cb"
CSRF_RE = re.compile(r'data-csrf="([^"]+)"')
OPTIONS_RE = re.compile(r'<script type="application/json" id="passkey-options">(.*?)</script>')
"""The passkey ceremony the login page comes with (api.routes.interaction); a page without one (an older Açar, or
the per-IP options budget spent) sends the flow to /webauthn/login/options, as the page's script does."""


def other_benchmarks() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "bench_(token|code_exchange)"], capture_output=True, text=True,
                         check=False).stdout
    return [line for line in out.splitlines() if str(os.getpid()) != line.split()[0]]


async def setup(env: dict[str, str], persons: int) -> tuple[str, str, list[Any]]:
    """One client, `persons` persons with one registered passkey each (through idp.core.webauthn) and consent:
    (client id, client secret, the persons' authenticators)."""
    os.environ.update(env)
    from api.deps import build_services
    from api.settings import load_settings
    from idp.sql.clients import ClientRegistration, ClientRegistry
    from idp.sql.passkeys_store import SqlPasskeyStore
    from idp.sql.persons import PersonService
    from idp.sql.store import SqlOidcStore
    from storage.base import utcnow
    from storage.direct import SessionTransaction
    from tests.webauthn_authenticator import SoftwareAuthenticator

    services = build_services(load_settings())
    authenticators = []
    try:
        async with services.sessions() as session, session.begin():
            client, secret = await ClientRegistry(session, signing_algs=services.settings.token_key_algorithms).add(
                ClientRegistration(name="Bench portal", redirect_uris=[REDIRECT_URI], scopes=["openid", "profile"]),
                actor="bench")
            tx = SessionTransaction(session)
            oidc, passkeys = SqlOidcStore(tx), SqlPasskeyStore(tx)
            for i in range(persons):
                person = await PersonService(session).add(fin=f"B{i:06d}", given_name="Bench", family_name=str(i),
                                                          actor="bench")
                ceremony = await services.passkeys.registration_options(passkeys, person_id=person.id)
                authenticator = SoftwareAuthenticator(origin=services.settings.resolved_webauthn_origins[0])
                verified = await services.passkeys.verify_registration(
                    passkeys, ceremony_id=ceremony.id, person_id=person.id, enrollment_id=None,
                    credential=authenticator.create(ceremony.options))
                await services.passkeys.save(passkeys, verified, max_level="high", actor="bench")
                await oidc.save_consent(person.id, client.client_id, frozenset({"openid", "profile"}),
                                        frozenset({"sub", "name", "given_name", "family_name"}), utcnow())
                authenticators.append(authenticator)
            await tx.flush()  # the audit events of the registrations
    finally:
        await services.close()
    return client.client_id, secret, authenticators


class Flows:
    def __init__(self, host: str, port: int, client_id: str, authenticators: list[Any], flows: int) -> None:
        self.host, self.port = host, port
        self.client_id = client_id
        self.groups = [authenticators[i::flows] for i in range(flows)]
        self.verifier = verifier = secrets.token_urlsafe(48)
        self.challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        self.done = 0
        self.failed: list[str] = []
        self.redirect = ""
        """The last login's redirect (with its code)."""

    async def login(self, http: Http1Connection, authenticator: Any) -> bool:
        http.cookies.clear()
        query = urlencode({
            "client_id": self.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
            "scope": "openid profile", "nonce": secrets.token_urlsafe(8), "state": secrets.token_urlsafe(8),
            "code_challenge": self.challenge, "code_challenge_method": "S256"})
        status, headers, _ = await http.request("GET", "/authorize?" + query)
        location = headers.get("location", "")
        if status != 303 or not location.startswith("/interaction/"):
            self.failed.append(f"authorize {status} {location[:80]}")
            return False
        pending_id = location.split("/")[2]
        status, _, body = await http.request("GET", location)
        page = body.decode()
        found = CSRF_RE.search(page)
        if status != 200 or found is None:
            self.failed.append(f"login page {status}")
            return False
        csrf = {"X-CSRF-Token": found.group(1)}
        prepared = OPTIONS_RE.search(page)
        if prepared is not None:  # the ceremony the page came with, as its script takes it
            options = json.loads(prepared.group(1))
        else:
            status, _, answer = await http.request("POST", "/webauthn/login/options", headers=csrf,
                                                   body=json.dumps({"pending_id": pending_id}).encode(),
                                                   content_type="application/json")
            if status != 200:
                self.failed.append(f"options {status} {answer[:120]!r}")
                return False
            options = json.loads(answer)
        assertion = authenticator.get(options["publicKey"])
        status, _, answer = await http.request("POST", "/webauthn/login/verify", headers=csrf, body=json.dumps({
            "ceremony": options["ceremony"], "pending_id": pending_id, "credential": assertion}).encode(),
            content_type="application/json")
        self.redirect = json.loads(answer).get("redirect", "") if status == 200 else ""
        if "code=" not in self.redirect:
            self.failed.append(f"verify {status} {answer[:120]!r}")
            return False
        return True

    async def worker(self, group: list[Any], until: float) -> None:
        http = Http1Connection(self.host, self.port)
        try:
            i = 0
            while time.monotonic() < until:
                if await self.login(http, group[i % len(group)]):
                    self.done += 1
                i += 1
        finally:
            await http.close()

    async def run(self, seconds: float, server_pid: int) -> tuple[float, int, float, float]:
        """(logins/s, failed logins, server CPU ms per login, server CPU utilisation)."""
        self.done, self.failed = 0, []
        start, cpu = time.monotonic(), cpu_seconds(server_pid)
        await asyncio.gather(*(self.worker(g, start + seconds) for g in self.groups))
        elapsed, used = time.monotonic() - start, cpu_seconds(server_pid) - cpu
        return self.done / elapsed, len(self.failed), used * 1000 / max(self.done, 1), used / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--flows", type=int, default=8)
    ap.add_argument("--persons", type=int, default=64)
    ap.add_argument("--profile", metavar="FILE", help="py-spy (pip install py-spy) samples the server during the "
                    "first run, as collapsed stacks")
    ap.add_argument("--no-wait", action="store_true", help="measure even while another benchmark runs")
    add_database_options(ap)
    args = ap.parse_args()
    require(("taskset",), "util-linux")
    while not args.no_wait and (others := other_benchmarks()):
        print("waiting for another benchmark to finish: " + others[0][:100], flush=True)
        time.sleep(15)
    if args.persons < args.flows:
        raise SystemExit("--persons must be at least --flows (each flow owns its persons)")

    with database_url(args, prefix="acar_bench_passkey_") as url:
        args.database_url = url
        measure(args)


def measure(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="acar-bench-passkey-"))
    settings = acar_settings(work / "data", "http://localhost:8000", args.database_url)
    env = without_acar_settings() | settings
    sh(ACAR, "init", "--json", env=env)
    client_id, _secret, authenticators = asyncio.run(setup(settings, args.persons))

    port = free_port()
    results: list[tuple[float, int, float, float]] = []
    with acar_server(port, work / "server.log", env) as server:
        os.sched_setaffinity(0, {1})  # the load on the other core
        flows = Flows("127.0.0.1", port, client_id, authenticators, args.flows)
        warm = asyncio.run(flows.run(2, server.pid))  # warm-up, and the preflight: every login must succeed
        if warm[1]:
            raise SystemExit(f"PREFLIGHT FAIL: {warm[1]} failed logins, first: {flows.failed[0]}")
        for run in range(args.runs):
            spy = None
            if args.profile and run == 0:
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                        str(server.pid), "--duration", str(int(args.duration)), "--rate", "200",
                                        "--nonblocking", "--gil", "--format", "raw", "--output", args.profile],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            results.append(asyncio.run(flows.run(args.duration, server.pid)))
            if spy is not None:
                spy.wait(timeout=60)
            rate, failed, cpu_ms, util = results[-1]
            print(f"  run: {rate:.0f} logins/s, {failed} failed, server {cpu_ms:.2f} ms CPU per login, "
                  f"{util:.0%} of its core" + (f"; first failure: {flows.failed[0]}" if failed else ""), flush=True)

    db = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    median = statistics.median(r[0] for r in results)
    print(json.dumps({"database": db, "flows": args.flows, "persons": args.persons, "runs": args.runs,
                      "duration_s": args.duration, "logins_per_s": [round(r[0]) for r in results],
                      "server_cpu_ms_per_login": [round(r[2], 2) for r in results],
                      "failed": sum(r[1] for r in results)}))
    print(f"passkey login (authorize, page with its ceremony, verify -> code), server on core 0, load on core 1, "
          f"database {db}: median {median:.0f} logins/s ({median / 300:.2f} x target 300/s)")
    print(json.dumps({"bench": "passkey_login", "database": db, "per_s": round(median, 1),
                      "server_cpu_ms": round(statistics.median(r[2] for r in results), 3),
                      "failed": sum(r[1] for r in results)}))  # the last line: read by bench/run_all.py
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
