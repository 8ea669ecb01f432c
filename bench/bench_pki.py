"""OCSP responder and RFC 3161 TSA throughput on one core (issue 3 target: each >= 1,000 responses/s).

Starts a real `acar serve` pinned to core 0 (taskset), drives it with wrk pinned to core 1, and measures
POST /pki/ocsp (a request with a nonce, so nothing can be served from a cache), POST /pki/tsa and, as the
same-run reference, GET /healthz (the framework's ceiling on this machine). Before measuring, one response
of each kind is checked with openssl (`openssl ocsp -respin ... -CAfile`, `openssl ts -verify`).

Usage: .venv/bin/python bench/bench_pki.py [--runs 3] [--duration 10] [--conns 16]
                                           [--database-url postgresql+asyncpg://...]
Needs: wrk, taskset, openssl (apt-get install wrk util-linux openssl).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACAR = str(Path(sys.executable).with_name("acar"))
LUA = """
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")
"""


def sh(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    for tool in ("wrk", "taskset", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"missing {tool} (apt-get install wrk util-linux openssl)")

    work = Path(tempfile.mkdtemp(prefix="acar-bench-pki-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACAR_")}
    env.update(ACAR_DATA_DIR=str(work / "data"), ACAR_ACCESS_LOG="false", ACAR_LOG_LEVEL="WARNING",
               ACAR_ISSUER="http://localhost:8000")
    if args.database_url:
        env["ACAR_DATABASE_URL"] = args.database_url
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
    server = subprocess.Popen(["taskset", "-c", "0", ACAR, "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "wb"),  # noqa: SIM115
                              start_new_session=True)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("server not ready: " + (work / "server.log").read_text()[-2000:])

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
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    db = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    print(f"server on core 0, wrk on core 1, {args.conns} connections, {args.runs} runs x {args.duration}s, "
          f"database {db}")
    ref = statistics.median(r[0] for r in results["healthz"])
    print(f"{'endpoint':10} {'median req/s':>12} {'p50':>9} {'errors':>7} {'vs 1000/s':>9} {'vs healthz':>10}")
    for name, runs in results.items():
        med = statistics.median(r[0] for r in runs)
        p50 = sorted(runs, key=lambda r: r[0])[len(runs) // 2][2]
        errors = sum(r[1] for r in runs)
        print(f"{name:10} {med:12.0f} {p50:>9} {errors:7d} {med / 1000:9.2f} {med / ref:10.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
