"""OCSP responder and RFC 3161 TSA throughput on one core (issue 3 target: each >= 1,000 responses/s).

Starts a real `acar serve` pinned to core 0 (taskset), drives it with wrk pinned to core 1, and measures
POST /pki/ocsp (a request with a nonce, so nothing can be served from a cache), POST /pki/tsa and, as the
same-run reference, GET /healthz (the framework's ceiling on this machine). Before measuring, one response
of each kind is checked with openssl (`openssl ocsp -respin ... -CAfile`, `openssl ts -verify`).

Usage: .venv/bin/python bench/bench_pki.py [--runs 3] [--duration 10] [--conns 16]
                                           [--postgresql | --database-url postgresql+asyncpg://...]
--postgresql creates a throwaway database on postgresql://postgres@127.0.0.1:5432 (psql) and drops it after.
Needs: wrk, taskset, openssl (apt-get install wrk util-linux openssl).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import urllib.request
from pathlib import Path

from _common import (
    ACAR,
    acar_server,
    acar_settings,
    add_database_options,
    database_url,
    free_port,
    median_run,
    require,
    sh,
    without_acar_settings,
)

LUA = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")
"""


def post(url: str, body: bytes, ctype: str) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bytes(resp.read())


def wrk(url: str, seconds: int, conns: int, body: Path | None, ctype: str, lua: Path) -> tuple[float, int, str]:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    env = dict(os.environ)
    if body is not None:
        cmd += ["-s", str(lua)]
        env.update(BENCH_BODY=str(body), BENCH_CTYPE=ctype)
    out = sh(*cmd, url, env=env)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    return rps, int(bad.group(1)) if bad else 0, p50.group(1) if p50 else "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=16)
    add_database_options(ap)
    args = ap.parse_args()
    require(("wrk", "taskset", "openssl"), "wrk util-linux openssl")
    with database_url(args, prefix="acar_bench_pki_") as url:
        args.database_url = url
        measure(args)


def measure(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="acar-bench-pki-"))
    env = without_acar_settings() | acar_settings(work / "data", "http://localhost:8000", args.database_url)
    sh(ACAR, "init", "--json", env=env)
    sh("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(work / "leaf.key"))
    sh("openssl", "ec", "-in", str(work / "leaf.key"), "-pubout", "-out", str(work / "leaf.pub"))
    issued = json.loads(sh(ACAR, "cert", "issue", "--profile", "authentication", "--fin", "5ABC12D",
                           "--given-name", "Aysel", "--surname", "Mammadova", "--public-key", str(work / "leaf.pub"),
                           env=env))
    (work / "leaf.pem").write_text(issued["certificate_pem"])
    (work / "issuing.pem").write_text(issued["chain_pem"][0])
    (work / "root.pem").write_text(issued["chain_pem"][1])
    (work / "chain.pem").write_text(issued["chain_pem"][0] + issued["chain_pem"][1])
    sh("openssl", "ocsp", "-issuer", str(work / "issuing.pem"), "-cert", str(work / "leaf.pem"),
       "-reqout", str(work / "ocsp.req"))
    (work / "data.txt").write_bytes(os.urandom(4096))
    sh("openssl", "ts", "-query", "-data", str(work / "data.txt"), "-sha256", "-cert", "-out", str(work / "ts.tsq"))
    (work / "post.lua").write_text(LUA)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with acar_server(port, work / "server.log", env):
        # preflight: the responses are right, checked by openssl
        (work / "ocsp.resp").write_bytes(post(base + "/pki/ocsp", (work / "ocsp.req").read_bytes(),
                                              "application/ocsp-request"))
        ocsp = sh("openssl", "ocsp", "-respin", str(work / "ocsp.resp"), "-issuer", str(work / "issuing.pem"),
                  "-cert", str(work / "leaf.pem"), "-CAfile", str(work / "chain.pem"), "-no_nonce")
        if ": good" not in ocsp:
            raise SystemExit("PREFLIGHT FAIL ocsp: " + ocsp)
        (work / "ts.tsr").write_bytes(post(base + "/pki/tsa", (work / "ts.tsq").read_bytes(),
                                           "application/timestamp-query"))
        sh("openssl", "ts", "-verify", "-data", str(work / "data.txt"), "-in", str(work / "ts.tsr"),
           "-CAfile", str(work / "root.pem"), "-untrusted", str(work / "issuing.pem"))

        targets = {
            "healthz": (base + "/healthz", None, ""),
            "ocsp": (base + "/pki/ocsp", work / "ocsp.req", "application/ocsp-request"),
            "tsa": (base + "/pki/tsa", work / "ts.tsq", "application/timestamp-query"),
        }
        for url, body, ctype in targets.values():  # warm up
            wrk(url, 2, args.conns, body, ctype, work / "post.lua")
        results: dict[str, list[tuple[float, int, str]]] = {name: [] for name in targets}
        for _ in range(args.runs):
            for name, (url, body, ctype) in targets.items():
                results[name].append(wrk(url, args.duration, args.conns, body, ctype, work / "post.lua"))

    db = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    print(f"server on core 0, wrk on core 1, {args.conns} connections, {args.runs} runs x {args.duration}s, "
          f"database {db}")
    ref = statistics.median(r[0] for r in results["healthz"])
    print(f"{'endpoint':10} {'median req/s':>12} {'p50':>9} {'errors':>7} {'vs 1000/s':>9} {'vs healthz':>10}")
    for name, runs in results.items():
        med, mid = median_run(runs, lambda r: r[0])
        errors = sum(r[1] for r in runs)
        print(f"{name:10} {med:12.0f} {mid[2]:>9} {errors:7d} {med / 1000:9.2f} {med / ref:10.2f}")
    print(json.dumps({"bench": "pki", "database": db, **{  # the last line: read by bench/run_all.py
        name: {"per_s": round(statistics.median(r[0] for r in runs), 1), "errors": sum(r[1] for r in runs)}
        for name, runs in results.items()}}))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
