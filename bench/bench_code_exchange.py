"""Authorization-code exchange throughput on one core (issue 4 target: >= 1,000 exchanges/s).

Each request is the full exchange a relying party makes: POST /token with grant_type=authorization_code, a code
used once, redirect_uri, a PKCE code_verifier and client_secret_basic. The client is registered the default way
(`acar client add`: authorization_code + refresh_token, openid profile), so every exchange answers an access
token, an ID token and a refresh token, and writes: the code consumed, a refresh token, an audit event.

The codes are made before the server starts, in this process against the same database and settings, through
the real authorization endpoint service: `AuthorizationService.authorize` (login via `SessionService.login`, the
consent recorded by `resume`, exactly as the interaction pages do), each with its own random verifier and
grant. Only their lifetime differs: they must outlive the whole measurement, so they get CODE_LIFETIME instead
of ACAR_AUTHORIZATION_CODE_LIFETIME_SECONDS (at most 600 s); the token endpoint only compares expires_at.
The form bodies go to a file; wrk's Lua script takes one line per request (each wrk thread its own slice, each
run starting after the last line the previous run took), so no code is sent twice; any non-2xx is an error.

Before measuring, one code is exchanged by this script (the ID token's ES256 signature, iss, aud and nonce are
checked against the JWKS) and presented again (must be refused with invalid_grant). After measuring, the
database must hold exactly one consumed code and one refresh token per code sent.

A real `acar serve` (one worker, access log off) is pinned to core 0, wrk -t1 to core 1.

Usage: .venv/bin/python bench/bench_code_exchange.py [--codes 100000] [--runs 3] [--duration 10] [--conns 16]
                                                     [--postgresql | --database-url postgresql+asyncpg://...]
--postgresql creates a throwaway database on postgresql://postgres@127.0.0.1:5432 (psql) and drops it after.
Needs: wrk, taskset (apt-get install wrk util-linux).
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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

from _common import (
    ACAR,
    acar_server,
    acar_settings,
    add_database_options,
    cpu_seconds,
    database_url,
    free_port,
    median_run,
    require,
    sh,
)

REDIRECT_URI = "http://127.0.0.1:8080/cb"
CODE_LIFETIME = 4 * 3600
BATCH = 1000
LUA = """
-- one form body (one authorization code) per request, never twice; env BENCH_CODES (file), BENCH_OFFSET
-- (lines already used), BENCH_THREADS (= wrk -t), BENCH_AUTH (Authorization header)
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  bodies, used = {}, 0
  local skip, nth = tonumber(os.getenv("BENCH_OFFSET")), tonumber(os.getenv("BENCH_THREADS"))
  local i = 0
  for line in io.lines(os.getenv("BENCH_CODES")) do
    if i >= skip and (i - skip) % nth == id then bodies[#bodies + 1] = line end
    i = i + 1
  end
  count = #bodies
  headers = {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = os.getenv("BENCH_AUTH")}
end

function request()
  used = used + 1
  -- out of codes: a request that must fail, so it shows as an error instead of reusing a code
  local body = bodies[used] or "grant_type=authorization_code&code=exhausted"
  return wrk.format("POST", nil, headers, body)
end

function done(s, lat, req)
  local most, exhausted = 0, 0
  for _, t in ipairs(threads) do
    local u, n = t:get("used"), t:get("count")
    if u > most then most = u end
    if u > n then exhausted = exhausted + u - n end
  end
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f reqs=%d non2xx=%d sockerr=%d lines=%d "
    .. "exhausted=%d\\n",
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000, s.requests,
    s.errors.status, s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout, most * #threads,
    exhausted))
end
"""


class Outcome(NamedTuple):
    runs: list[dict[str, float]]
    lines: list[str]
    cursor: int
    load: tuple[float, float, float]
    causes: dict[str, int]
    rows: tuple[int, int, int]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the codes, made through the real authorization endpoint service -------------------------------------


async def make_codes(count: int, client_id: str, person_id: str, out: Path) -> None:
    """`count` form bodies, each with a fresh code from AuthorizationService.authorize and its verifier."""
    from api.deps import build_services
    from api.settings import load_settings
    from idp.core.authorize import AuthorizationService, Interaction, Redirect, token_hash
    from idp.core.loa import DEV_LOGIN_METHODS
    from storage.base import utcnow

    settings = load_settings()
    services = build_services(settings)
    provider = services.oidc
    authorization = AuthorizationService(
        services.clients, issuer=provider.issuer, acr=provider.acr, subjects=provider.subjects,
        verify_id_token_hint=provider.verify_id_token_hint, code_lifetime=CODE_LIFETIME,
        grant_lifetime=settings.refresh_token_lifetime_seconds,
        interaction_lifetime=settings.interaction_lifetime_seconds, clock=utcnow)

    browser = token_hash(secrets.token_urlsafe(32))  # as the authorization endpoint binds its browser cookie

    def request() -> tuple[dict[str, list[str]], str, str]:
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(16)
        challenge = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
        params = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                  "scope": "openid profile", "state": secrets.token_urlsafe(8), "nonce": nonce,
                  "code_challenge": challenge, "code_challenge_method": "S256"}
        return {k: [v] for k, v in params.items()}, verifier, nonce

    def body(result: Any, verifier: str, nonce: str) -> str:
        if not isinstance(result, Redirect) or "code" not in result.params:
            raise SystemExit(f"authorize did not answer a code: {result!r}")
        form = {"grant_type": "authorization_code", "code": result.params["code"], "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier}
        return urlencode(form) + "\t" + nonce  # the nonce is for the preflight's ID token check only

    try:
        lines: list[str] = []
        async with provider.unit_of_work() as unit:  # the first request: login, then consent, then the code
            store = unit.oidc
            params, verifier, nonce = request()
            result = await authorization.authorize(params, store=store, session=None, browser=browser)
            if not (isinstance(result, Interaction) and result.kind == "login"):
                raise SystemExit(f"expected the login interaction, got {result!r}")
            _, login = await provider.login_sessions.login(store, person_id=person_id,
                                                           method=DEV_LOGIN_METHODS["substantial"], current=None)
            result = await authorization.resume(result.pending.id, store=store, session=login, browser=browser,
                                                fresh_login=True)
            if not (isinstance(result, Interaction) and result.kind == "consent"):
                raise SystemExit(f"expected the consent interaction, got {result!r}")
            result = await authorization.resume(result.pending.id, store=store, session=login, browser=browser,
                                                consent=True)
            lines.append(body(result, verifier, nonce))
        started = time.monotonic()
        while len(lines) < count:
            async with provider.unit_of_work() as unit:  # then one authorize call per code, as a logged-in user
                store = unit.oidc
                for _ in range(min(BATCH, count - len(lines))):
                    params, verifier, nonce = request()
                    lines.append(body(await authorization.authorize(params, store=store, session=login,
                                                                    browser=browser), verifier, nonce))
            if len(lines) % 20000 < BATCH:
                print(f"  {len(lines)} codes ({len(lines) / (time.monotonic() - started):.0f}/s)", flush=True)
    finally:
        await services.close()
    with out.open("w") as f:
        f.writelines(line + "\n" for line in lines)


async def count_rows() -> tuple[int, int, int]:
    """(codes consumed, refresh tokens, token.issued audit events for authorization_code) in the database."""
    from sqlalchemy import func, select

    from api.deps import build_services
    from api.settings import load_settings
    from idp.sql.models import AuthorizationCode, RefreshToken
    from storage.audit import AuditEvent

    services = build_services(load_settings())
    try:
        async with services.sessions() as session:
            consumed = await session.scalar(select(func.count()).select_from(AuthorizationCode)
                                            .where(AuthorizationCode.consumed_at.is_not(None)))
            refresh = await session.scalar(select(func.count()).select_from(RefreshToken))
            audited = await session.scalar(select(func.count()).select_from(AuditEvent)
                                           .where(AuditEvent.event_type == "token.issued"))
            return int(consumed or 0), int(refresh or 0), int(audited or 0)
    finally:
        await services.close()


# --- preflight: one exchange checked by hand, and its replay refused ---------------------------------------


def post_form(url: str, body: str, auth: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": auth})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def verify_es256(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The claims of an ES256 JWS whose signature verifies with the JWKS key its kid names (cryptography)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    head, payload, sig = token.split(".")
    header = json.loads(b64url_decode(head))
    if header.get("alg") != "ES256":
        raise SystemExit(f"PREFLIGHT FAIL: ID token alg {header.get('alg')}")
    jwk = next(k for k in jwks["keys"] if k.get("kid") == header.get("kid"))
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(b64url_decode(jwk["x"])), int.from_bytes(b64url_decode(
        jwk["y"])), ec.SECP256R1()).public_key()
    raw = b64url_decode(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    key.verify(der, f"{head}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    return dict(json.loads(b64url_decode(payload)))


def preflight(base: str, line: str, auth: str, client_id: str) -> None:
    form_body, nonce = line.split("\t")
    status, answer = post_form(base + "/token", form_body, auth)
    if status != 200 or not {"access_token", "id_token", "refresh_token"} <= answer.keys():
        raise SystemExit(f"PREFLIGHT FAIL: exchange answered {status} {answer}")
    with urllib.request.urlopen(base + "/jwks.json", timeout=10) as resp:
        jwks = json.loads(resp.read())
    claims = verify_es256(answer["id_token"], jwks)
    if claims.get("iss") != base or claims.get("aud") != client_id or claims.get("nonce") != nonce:
        raise SystemExit(f"PREFLIGHT FAIL: ID token claims {claims}")
    status, again = post_form(base + "/token", form_body, auth)
    if status != 400 or again.get("error") != "invalid_grant":
        raise SystemExit(f"PREFLIGHT FAIL: a used code answered {status} {again}")


# --- measurement -----------------------------------------------------------------------------------------


def wrk(url: str, seconds: int, conns: int, env: dict[str, str], offset: int, pid: int) -> dict[str, float]:
    """One wrk run; its RESULT fields, plus the server's CPU use (share of one core, ms per request)."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", env["BENCH_LUA"], url]
    before, started = cpu_seconds(pid), time.monotonic()
    out = sh(*cmd, env={**env, "BENCH_OFFSET": str(offset), "BENCH_THREADS": "1"})
    used, elapsed = cpu_seconds(pid) - before, time.monotonic() - started
    m = re.search(r"^RESULT (.*)$", out, re.MULTILINE)
    if m is None:
        raise SystemExit("wrk printed no RESULT: " + out)
    result = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    result.update(cpu=used / elapsed, cpu_ms=1000 * used / max(result["reqs"], 1))
    return result


def measure(args: argparse.Namespace, work: Path, base: str, port: int) -> Outcome:
    """Register, make the codes, start the server, preflight, run wrk; the runs and what the database holds."""
    runs: list[dict[str, float]] = []
    sh(ACAR, "init", "--json")
    client = json.loads(sh(ACAR, "client", "add", "--name", "bench-rp", "--redirect-uri", REDIRECT_URI, "--json"))
    person = json.loads(sh(ACAR, "person", "add", "--fin", "5ABC12D", "--given-name", "Aysel",
                           "--family-name", "Mammadova", "--birthdate", "1990-04-01"))
    print(f"client {client['client_id']}: grants {' '.join(client['grant_types'])}, scopes "
          f"{' '.join(client['scopes'])}, {client['auth_method']}; making {args.codes} codes", flush=True)
    codes = work / "codes.txt"
    asyncio.run(make_codes(args.codes, client["client_id"], person["id"], codes))
    lines = codes.read_text().splitlines()
    bodies = work / "bodies.txt"
    bodies.write_text("".join(line.split("\t")[0] + "\n" for line in lines))
    (work / "codes.lua").write_text(LUA)
    auth = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    wrk_env = {**os.environ, "BENCH_CODES": str(bodies), "BENCH_AUTH": auth, "BENCH_LUA": str(work / "codes.lua")}

    with acar_server(port, work / "server.log") as server:
        preflight(base, lines[0], auth, client["client_id"])
        cursor = 1
        load = os.getloadavg()
        result = wrk(base + "/token", args.warmup, args.conns, wrk_env, cursor, server.pid)
        cursor += int(result["lines"])
        for run in range(args.runs):
            spy = None
            if args.profile and run == 0:
                spy = subprocess.Popen(["taskset", "-c", "1", str(Path(sys.executable).with_name("py-spy")), "record",
                                        "--pid", str(server.pid), "--duration", str(args.duration), "--rate", "200",
                                        "--nonblocking", "--gil", "--format", "raw", "--output", args.profile],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = wrk(base + "/token", args.duration, args.conns, wrk_env, cursor, server.pid)
            if spy is not None:
                spy.wait(timeout=60)
            cursor += int(result["lines"])
            runs.append(result)
            print(f"  run: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                  f"non-2xx {int(result['non2xx'])}, socket errors/timeouts (> 2 s) {int(result['sockerr'])}, "
                  f"codes exhausted {int(result['exhausted'])}, "
                  f"server CPU {100 * result['cpu']:.0f}% of a core, {result['cpu_ms']:.2f} ms per request",
                  flush=True)

    causes: dict[str, int] = {}
    for entry in (work / "server.log").read_text(errors="replace").splitlines():
        if '"level": "error"' in entry:  # the JSON log lines of requests answered 500, by exception type
            cause = re.search(r'"exc_type": "([^"]+)".*?(database is locked|$)', entry)
            key = " ".join(filter(None, cause.groups())) if cause else entry[:120]
            causes[key] = causes.get(key, 0) + 1
    return Outcome(runs, lines, cursor, load, causes, asyncio.run(count_rows()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codes", type=int, default=100_000, help="enough for 3,000/s over 3 runs of 10 s and the "
                    "warmup; a run that runs out counts the missing codes as errors")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--profile", metavar="FILE", help="py-spy (pip install py-spy) samples the server during the "
                    "first measured run into FILE (collapsed stacks of the thread holding the GIL); costs throughput")
    add_database_options(ap)
    args = ap.parse_args()
    require(("wrk", "taskset"), "wrk util-linux")

    work = Path(tempfile.mkdtemp(prefix="acar-bench-code-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with database_url(args) as url:
        for name in [k for k in os.environ if k.startswith("ACAR_")]:
            del os.environ[name]  # every other setting at its default (ACAR_KEY_CACHE_SECONDS, lifetimes, ...)
        os.environ.update(acar_settings(work / "data", base, url))  # this process's and the server's
        try:
            runs, lines, cursor, load, causes, (consumed, refresh, audited) = measure(args, work, base, port)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    sent = min(cursor, len(lines))
    errors = sum(int(r["non2xx"] + r["sockerr"] + r["exhausted"]) for r in runs)
    med, mid = median_run(runs, lambda r: r["rps"])
    db_name = "postgresql" if url else "sqlite"
    print(f"\nPOST /token authorization_code (+PKCE, client_secret_basic, refresh token issued); database {db_name}")
    print(f"server on core 0, wrk -t1 -c{args.conns} on core 1, {args.runs} runs x {args.duration}s "
          f"(+{args.warmup}s warmup); load before measuring {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"codes sent {sent} of {len(lines)}; in the database: {consumed} consumed, {refresh} refresh tokens, "
          f"{audited} token.issued events")
    print(f"median {med:.0f} req/s, p50 {mid['p50_ms']:.2f} ms, p99 {mid['p99_ms']:.2f} ms, errors {errors}; "
          f"vs 1,000/s: {med / 1000:.2f}")
    cpu_ms = statistics.median(r["cpu_ms"] for r in runs)
    print(f"server CPU per exchange (median): {cpu_ms:.2f} ms, i.e. at most {1000 / cpu_ms:.0f}/s on a free core "
          f"if CPU were the only limit")
    print(json.dumps({"bench": "code_exchange", "database": db_name, "per_s": round(med, 1),
                      "runs_per_s": [round(r["rps"], 1) for r in runs], "server_cpu_ms": round(cpu_ms, 3),
                      "p50_ms": mid["p50_ms"], "errors": errors}))  # the last line: read by bench/run_all.py
    # a request wrk built as the time ran out may never have been sent: at most one per connection
    if causes:
        print("server errors: " + ", ".join(f"{n} x {cause}" for cause, n in causes.items()))
    if errors or not consumed == refresh == audited or not sent - args.conns <= consumed <= sent:
        raise SystemExit("FAIL: errors, or the database does not hold one exchange per code sent")


if __name__ == "__main__":
    main()
