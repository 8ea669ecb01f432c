"""Server CPU time per client_credentials token for several checkouts of Açar, side by side, in alternating runs
(PostgreSQL): the measure that locates a change in the token path's cost, steadier than a rate.

Each checkout gets a throwaway database, a data dir (`acar init`), a client_credentials client and its own
`acar serve` (one worker, pinned to core 0, access log off), run from this venv with PYTHONPATH set to the
checkout; the load (16 keep-alive connections, client_secret_basic, scope api) runs on core 1. Prints each run
(tokens/s, errors, server CPU us per token from /proc) and the medians. The audit sealing schedule is off
(ACAR_AUDIT_SEAL_SECONDS=0): the servers share core 0, and one's sealing pass (about 30 us of CPU per event written
since the last) would land in another's run; the token path's own cost is what this script compares.

Usage: .venv/bin/python bench/bench_token_cpu.py CHECKOUT[,CHECKOUT...] [--runs 4] [--duration 6]
  e.g. git worktree add /tmp/old c5ef180 && ln -s "$PWD/.venv" /tmp/old/.venv
       .venv/bin/python bench/bench_token_cpu.py /tmp/old,.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from _common import (
    ACAR,
    PG_ADMIN,
    acar_server,
    acar_settings,
    free_port,
    require,
    sh,
    token_load,
    without_acar_settings,
)


def psql(sql: str) -> None:
    subprocess.run([*PG_ADMIN, "-c", sql], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", help="comma-separated checkout directories")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--duration", type=float, default=6)
    args = ap.parse_args()
    require(("taskset", "psql"), "util-linux postgresql-client")
    checkouts = [os.path.abspath(c) for c in args.checkouts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="acar-bench-token-cpu-"))
    results: dict[str, list[tuple[float, int, float]]] = {c: [] for c in checkouts}
    databases = [f"acar_bench_token_cpu_{i}" for i in range(len(checkouts))]
    try:
        with ExitStack() as stack:
            servers = {}
            for checkout, db in zip(checkouts, databases, strict=True):
                psql(f"DROP DATABASE IF EXISTS {db}")
                psql(f"CREATE DATABASE {db}")
                port = free_port()
                env = (without_acar_settings() | {"PYTHONPATH": checkout}
                       | acar_settings(work / db, f"http://127.0.0.1:{port}",
                                       f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}")
                       | {"ACAR_AUDIT_SEAL_SECONDS": "0"})
                sh(ACAR, "init", "--json", env=env)
                client = json.loads(sh(ACAR, "client", "add", "--name", "bench", "--grant-type", "client_credentials",
                                       "--scope", "api", "--auth-method", "client_secret_basic", "--json", env=env))
                secret = f"{client['client_id']}:{client['client_secret']}".encode()
                server = stack.enter_context(acar_server(port, work / f"{db}.log", env))
                servers[checkout] = (port, server.pid, "Basic " + base64.b64encode(secret).decode())
            os.sched_setaffinity(0, {1})  # the load on the other core
            for port, pid, auth in servers.values():  # warm-up
                asyncio.run(token_load(port, auth, 16, 2, pid))
            for _ in range(args.runs):
                for checkout, (port, pid, auth) in servers.items():
                    rate, errors, cpu_ms = asyncio.run(token_load(port, auth, 16, args.duration, pid))
                    results[checkout].append((rate, errors, cpu_ms * 1000))
                    rate, errors, cpu = results[checkout][-1]
                    print(f"  {checkout:40} {rate:7.0f} tokens/s  {errors} errors  {cpu:6.0f} us CPU/token", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for db in databases:
            subprocess.run([*PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {db}"], check=False, capture_output=True)
    for checkout, runs in results.items():
        print(f"{checkout}: median {statistics.median(r[0] for r in runs):.0f} tokens/s, "
              f"{statistics.median(r[2] for r in runs):.0f} us CPU/token (min {min(r[2] for r in runs):.0f}), "
              f"{sum(r[1] for r in runs)} errors")


if __name__ == "__main__":
    main()
