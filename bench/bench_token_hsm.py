"""Token endpoint with the token keys on a PKCS#11 token (SoftHSM2) against software keys, in the same run
(issue 11 target: the PKCS#11 rate is at least 70% of the software rate).

Two real `acar serve` (one worker each, access log off), each with a data dir and database of its own: one with
ACAR_KEY_BACKEND=software, one with ACAR_KEY_BACKEND=pkcs11 on a throwaway SoftHSM2 token (its own
SOFTHSM2_CONF, tokens under the work directory). Both are pinned to core 0 and the load generator to core 1;
they run side by side and the runs alternate (software, pkcs11, software, ...) so drift hits both alike. Each
run is --duration seconds of client_credentials requests (ES256 at+jwt, client_secret_basic, scope api) from
--conns keep-alive connections (asyncio on _common.Http1Connection); a non-200 answer is an error. Before
measuring, each server's first token is verified against its JWKS (ES256 signature, kid, iss, client_id).

The server's CPU time per token is printed beside the rate: it includes the PKCS#11 worker threads and the
token's own work (SoftHSM2 runs inside the server process).

Usage: .venv/bin/python bench/bench_token_hsm.py [--runs 3] [--duration 10] [--conns 16]
                                                 [--postgresql | --database-url postgresql+asyncpg://...]
--postgresql creates two throwaway databases on postgresql://postgres@127.0.0.1:5432 (psql), dropped after;
--database-url is not accepted (each server needs its own database).
Needs: softhsm2-util and libsofthsm2 (apt-get install softhsm2), taskset (util-linux).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from _common import (
    ACAR,
    ROOT,
    TOKEN_BODY,
    acar_server,
    acar_settings,
    add_database_options,
    database_url,
    free_port,
    require,
    sh,
    token_load,
    without_acar_settings,
)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

sys.path.insert(0, str(ROOT))  # bench/ is first on sys.path; the repository root holds tests.softhsm
from tests import softhsm

BACKENDS = ("software", "pkcs11")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def preflight(base: str, auth: str, client_id: str) -> None:
    """One token, checked against the server's JWKS: ES256 over header.payload with the key its kid names."""
    request = urllib.request.Request(base + "/token", data=TOKEN_BODY, method="POST", headers={
        "Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        token = json.loads(answer.read())["access_token"]
    with urllib.request.urlopen(base + "/jwks.json", timeout=30) as answer:
        jwks = json.loads(answer.read())
    head, payload, signature = token.split(".")
    header, claims = json.loads(b64url_decode(head)), json.loads(b64url_decode(payload))
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = ec.EllipticCurvePublicNumbers(int.from_bytes(b64url_decode(jwk["x"])),
                                           int.from_bytes(b64url_decode(jwk["y"])), ec.SECP256R1()).public_key()
    raw = b64url_decode(signature)
    public.verify(encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:])),
                  f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # raises InvalidSignature
    if header.get("alg") != "ES256" or claims.get("iss") != base or claims.get("client_id") != client_id:
        raise SystemExit(f"PREFLIGHT FAIL: unexpected token {header} {claims}")




@contextmanager
def server_for(backend: str, work: Path, url: str, token: softhsm.SoftHsmToken) -> Iterator[tuple[int, int, str, str]]:
    """`acar init`, a client_credentials client and a running `acar serve` on `backend`:
    (port, server pid, Authorization header, client id)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = without_acar_settings() | acar_settings(work / backend, base, url)
    if backend == "pkcs11":
        env |= token.acar_env()
    sh(ACAR, "init", "--json", env=env)
    client = json.loads(sh(ACAR, "client", "add", "--name", "bench", "--grant-type", "client_credentials",
                           "--scope", "api", "--auth-method", "client_secret_basic", "--json", env=env))
    auth = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
    with acar_server(port, work / f"{backend}.log", env) as server:
        preflight(base, auth, client["client_id"])
        yield port, server.pid, auth, client["client_id"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="measured runs per backend, alternating")
    ap.add_argument("--duration", type=float, default=10, help="seconds per run")
    ap.add_argument("--conns", type=int, default=16, help="keep-alive connections of the load generator")
    add_database_options(ap)
    args = ap.parse_args()
    require(("taskset", "softhsm2-util"), "util-linux softhsm2")
    if reason := softhsm.missing():
        raise SystemExit(reason)
    if args.database_url:
        raise SystemExit("--database-url: each server needs a database of its own; use --postgresql or SQLite")

    work = Path(tempfile.mkdtemp(prefix="acar-bench-token-hsm-"))
    results: dict[str, list[tuple[float, int, float]]] = {b: [] for b in BACKENDS}
    try:
        token = softhsm.create_token(work / "softhsm")
        with ExitStack() as stack:
            servers: dict[str, Any] = {}
            for backend in BACKENDS:
                url = stack.enter_context(database_url(args, prefix=f"acar_bench_{backend}_"))
                servers[backend] = stack.enter_context(server_for(backend, work, url, token))
            os.sched_setaffinity(0, {1})  # the load on the other core
            for backend in BACKENDS:  # warm-up
                port, pid, auth, _ = servers[backend]
                asyncio.run(token_load(port, auth, args.conns, 2, pid))
            for _ in range(args.runs):
                for backend in BACKENDS:
                    port, pid, auth, _ = servers[backend]
                    results[backend].append(asyncio.run(token_load(port, auth, args.conns, args.duration, pid)))
                    rate, errors, cpu_ms = results[backend][-1]
                    print(f"  {backend:8} {rate:8.0f} tokens/s  {errors} errors  {cpu_ms:.3f} ms server CPU/token",
                          flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {b: statistics.median(r[0] for r in results[b]) for b in BACKENDS}
    cpu = {b: statistics.median(r[2] for r in results[b]) for b in BACKENDS}
    db = "postgresql" if args.postgresql else "sqlite"
    print(json.dumps({"database": db, "runs": args.runs, "duration_s": args.duration, "conns": args.conns,
                      "tokens_per_s": {b: [round(r[0]) for r in results[b]] for b in BACKENDS},
                      "server_cpu_ms_per_token": {b: [round(r[2], 3) for r in results[b]] for b in BACKENDS},
                      "errors": {b: sum(r[1] for r in results[b]) for b in BACKENDS}}))
    print(f"client_credentials ES256, database {db}, server core 0, load core 1, median of {args.runs} x "
          f"{args.duration:g}s: software {medians['software']:.0f}/s ({cpu['software']:.3f} ms CPU/token), "
          f"pkcs11 (SoftHSM2) {medians['pkcs11']:.0f}/s ({cpu['pkcs11']:.3f} ms CPU/token)")
    print(f"ratio pkcs11/software: {medians['pkcs11'] / medians['software']:.2f} (target >= 0.70)")
    print(json.dumps({"bench": "token_hsm", "database": db, "software_per_s": round(medians["software"], 1),
                      "pkcs11_per_s": round(medians["pkcs11"], 1),  # the last line: read by bench/run_all.py
                      "ratio": round(medians["pkcs11"] / medians["software"], 3),
                      "errors": sum(r[1] for b in BACKENDS for r in results[b])}))


if __name__ == "__main__":
    main()
