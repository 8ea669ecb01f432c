"""Two serve processes against one (issue 17 target: `acar serve --workers 2` on two cores gives at least 1.8 times
`--workers 1` on one), on the token endpoint (client_credentials, ES256 at+jwt, client_secret_basic, scope api).

The honest difficulty: this machine has two cores, and the load generator (wrk) and PostgreSQL need CPU too. Two
workers on two cores can never be given two free cores here, so the wall-clock ratio of the two rates understates
what a machine with a separate load generator and database would show. This script therefore measures both:

1. throughput, wall clock: `--workers 1` pinned to core 0 with wrk pinned to core 1 (as every other benchmark
   here), then `--workers 2` on cores 0 and 1 with the same wrk unpinned (it and PostgreSQL take their share from
   the two workers). The ratio rate(2) / rate(1) is printed as measured: a lower bound.
2. capacity per core (the figure compared with the target): the servers' own CPU time per token, summed over the
   whole process tree (supervisor and workers, from /proc/<pid>/stat), in each setup. If the two workers each had
   a core, they would answer 2 / cpu(2) tokens per second against 1 / cpu(1) for one worker on one core, so the
   scaling is 2 x cpu(1) / cpu(2). What this captures: whatever makes a request dearer when two processes serve at
   once (contention on PostgreSQL's locks and pool, group commits batching fewer events, shared caches). What it
   cannot capture: a cap outside the server's CPU (the database's own cores), and an uneven split of the load,
   which is printed beside it (each worker's share of the server CPU time; the kernel hands the shared listening
   socket's connections to whichever worker accepts first).

Both servers run side by side on one database (one data dir, two ports) and the runs alternate (1, 2, 1, 2, ...) so
drift hits both alike; wrk -t1 with --conns connections for both. Before measuring, each server's first token is
checked (200, a JWT). A non-2xx answer is an error. The last line is the JSON that bench/run_all.py reads.

Usage: .venv/bin/python bench/bench_scale.py [--runs 3] [--duration 8] [--conns 32]
                                             [--postgresql | --database-url postgresql+asyncpg://...]
Needs: wrk, taskset (apt-get install wrk util-linux).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import shutil
import statistics
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _common import (
    ACAR,
    TOKEN_BODY,
    acar_server,
    acar_settings,
    add_database_options,
    database_url,
    free_port,
    require,
    sh,
    without_acar_settings,
)

LUA = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
"""
CORES = {1: "0", 2: "0,1"}


@contextmanager
def server(workers: int, port: int, log: Path, env: dict[str, str]) -> Iterator[int]:
    """`acar serve --workers N` on cores CORES[N] in a session of its own, ready on /readyz; its session id."""
    with acar_server(port, log, env, workers=workers, cores=CORES[workers]) as proc:
        yield proc.pid


def session_cpu(session: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live process of `session`, from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session:
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return sum(values) - values[3] - values[4], sum(values)


def run(workers: int, session: int, port: int, args: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    pin = ["taskset", "-c", "1"] if workers == 1 else []  # one worker: wrk on the other core; two: wherever it can
    cmd = [*pin, "wrk", "-t1", f"-c{args.conns}", f"-d{args.duration}s", "--latency", "-s", str(args.lua),
           f"http://127.0.0.1:{port}/token"]
    before, busy = session_cpu(session), machine_busy()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = sh(*cmd, env=env)
    after, busy_after = session_cpu(session), machine_busy()
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    server_cpu = sum(used.values())
    shares = sorted((u / server_cpu for pid, u in used.items() if pid != session), reverse=True) if server_cpu else []
    wrk_cpu = (done.ru_utime + done.ru_stime) - (children.ru_utime + children.ru_stime)
    return {"rps": rps, "errors": int(bad.group(1)) if bad else 0, "cpu_ms": server_cpu * 1000 / max(total, 1),
            "server_cores": server_cpu / args.duration, "wrk_cores": wrk_cpu / args.duration,
            "machine_busy": (busy_after[0] - busy[0]) / max(busy_after[1] - busy[1], 1),
            "top_worker_share": shares[0] if shares else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="measured runs per setup, alternating")
    ap.add_argument("--duration", type=int, default=8, help="seconds per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--conns", type=int, default=32, help="wrk connections (one thread), the same for both setups")
    add_database_options(ap)
    args = ap.parse_args()
    require(("wrk", "taskset"), "wrk util-linux")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores")
    work = Path(tempfile.mkdtemp(prefix="acar-bench-scale-"))
    args.lua = work / "token.lua"
    args.lua.write_text(LUA)
    results: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    try:
        with database_url(args, prefix="acar_bench_scale_") as url, ExitStack() as stack:
            ports = {1: free_port(), 2: free_port()}
            env = without_acar_settings() | acar_settings(work / "data", f"http://127.0.0.1:{ports[1]}", url)
            sh(ACAR, "init", "--json", env=env)
            client = json.loads(sh(ACAR, "client", "add", "--name", "bench", "--grant-type", "client_credentials",
                                   "--scope", "api", "--auth-method", "client_secret_basic", "--json", env=env))
            auth = "Basic " + base64.b64encode(f"{client['client_id']}:{client['client_secret']}".encode()).decode()
            sessions = {n: stack.enter_context(server(n, ports[n], work / f"server{n}.log", env)) for n in (1, 2)}
            for n in (1, 2):  # preflight: a token
                request = urllib.request.Request(f"http://127.0.0.1:{ports[n]}/token", data=TOKEN_BODY,
                                                 headers={"Authorization": auth})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    if answer.read().count(b".") < 2:
                        raise SystemExit(f"PREFLIGHT FAIL: --workers {n} answered no JWT")
            wrk_env = {**os.environ, "BENCH_BODY": TOKEN_BODY.decode(), "BENCH_AUTH": auth}
            warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
            for n in (1, 2):
                run(n, sessions[n], ports[n], warm, wrk_env)
            for _ in range(args.runs):
                for n in (1, 2):
                    results[n].append(run(n, sessions[n], ports[n], args, wrk_env))
                    r = results[n][-1]
                    print(f"  --workers {n}: {r['rps']:7.0f} tokens/s, {r['cpu_ms']:.3f} ms server CPU/token, "
                          f"server {r['server_cores']:.2f} cores, wrk {r['wrk_cores']:.2f} cores, machine "
                          f"{r['machine_busy']:.0%} busy, busiest worker {r['top_worker_share']:.0%} of server CPU, "
                          f"{r['errors']} errors", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in results[n][0]} for n in (1, 2)}
    raw = med[2]["rps"] / med[1]["rps"]
    capacity = 2 * med[1]["cpu_ms"] / med[2]["cpu_ms"]
    errors = sum(int(r["errors"]) for n in (1, 2) for r in results[n])
    db = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(f"token endpoint, database {db}, wrk -t1 -c{args.conns}, median of {args.runs} x {args.duration}s")
    print(f"--workers 1 (core 0, wrk core 1): {med[1]['rps']:.0f} tokens/s, {med[1]['cpu_ms']:.3f} ms server CPU/token")
    print(f"--workers 2 (cores 0-1, wrk too): {med[2]['rps']:.0f} tokens/s, {med[2]['cpu_ms']:.3f} ms server CPU/token"
          f", busiest worker {med[2]['top_worker_share']:.0%} of the server CPU")
    print(f"throughput ratio (wall clock, load generator and database on the same 2 cores): {raw:.2f}")
    print(f"capacity ratio 2 x cpu(1)/cpu(2) (each worker on a core of its own): {capacity:.2f} (target >= 1.8)")
    print(json.dumps({"bench": "scale", "database": db, "rps_1": round(med[1]["rps"], 1),  # for bench/run_all.py
                      "rps_2": round(med[2]["rps"], 1), "cpu_ms_1": round(med[1]["cpu_ms"], 4),
                      "cpu_ms_2": round(med[2]["cpu_ms"], 4), "throughput_ratio": round(raw, 3),
                      "capacity_ratio": round(capacity, 3), "top_worker_share": round(med[2]["top_worker_share"], 3),
                      "errors": errors}))
    if errors:
        raise SystemExit(f"FAIL: {errors} non-2xx answers")


if __name__ == "__main__":
    main()
