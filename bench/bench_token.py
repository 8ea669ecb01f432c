"""Token issuance (client_credentials, ES256 JWT access token): Açar against node-oidc-provider (issue 4 target:
product/peer >= 1.25), through the shared harness (/work/shared/bench, copied to /tmp/acar-bench with `npm ci`).

A fresh data dir (`acar init`), a client registered with `acar client add` (client_credentials, scope api,
client_secret_basic), then the harness's bench.sh twice per round: the peer alone, then `acar serve` as the
product. bench.sh pins each server to core 0 and wrk (-t1, 16 connections) to core 1, preflights one token
against the server's JWKS and measures token, discovery and jwks. Both servers get the same request body
(grant_type=client_credentials&scope=api, HTTP Basic). The peer cannot be run in the same bench.sh call as the
product: the harness sends one client to every server, and the peer's is bench:secret while Açar's is generated.
With --rounds 2 or more the order alternates (peer first, then product first, ...).

Usage: .venv/bin/python bench/bench_token.py [--rounds 1] [--repeat 3] [--duration 20] [--port 8000]
                                             [--harness /tmp/acar-bench] [--with-ref] [--server granian]
                                             [--postgresql | --database-url postgresql+asyncpg://...]
--postgresql creates a throwaway database on postgresql://postgres@127.0.0.1:5432 (psql) and drops it after.
--server: the HTTP server of `acar serve` (uvicorn, the default, or granian); the harness counts the CPU of the
server's whole session, so granian's worker process is measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import ACAR, ROOT, acar_settings, add_database_options, database_url, median_run, sh, without_acar_settings

ROW = re.compile(r"^(\S+)\s+(token|discovery|jwks)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)"
                 r"\s+(\S+)\s+(\S+)\s+(\S+)\s*$")
HARNESS = "/tmp/acar-bench"  # noqa: S108 - where the harness README has it copied (its folder is read-only)


def harness(script: Path, args: list[str], env: dict[str, str]) -> dict[tuple[str, str], list[str]]:
    """Run bench.sh, echo its table, return its rows: (server, endpoint) -> [req/s, p50, p99, errors, srv%, ...]."""
    print("$ " + shlex.join([str(script), *args]), flush=True)
    proc = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, check=False)
    rows: dict[tuple[str, str], list[str]] = {}
    for line in proc.stdout.splitlines():
        print("  " + line)
        m = ROW.match(line)
        if m:
            rows[(m.group(1), m.group(2))] = list(m.groups()[2:])
    if proc.returncode != 0:
        raise SystemExit(f"bench.sh failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", default=os.environ.get("ACAR_BENCH_HARNESS", HARNESS))
    ap.add_argument("--rounds", type=int, default=1, help="peer + product invocations of bench.sh")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs per endpoint in each invocation")
    ap.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--with-ref", action="store_true", help="also the harness's minimal FastAPI endpoint")
    ap.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn", help="acar serve --server")
    add_database_options(ap)
    args = ap.parse_args()
    script = Path(args.harness) / "bench.sh"
    if not script.is_file() or not (Path(args.harness) / "node_modules" / "oidc-provider").is_dir():
        raise SystemExit(f"no ready harness at {args.harness}: cp -r /work/shared/bench there and run `npm ci`")

    work = Path(tempfile.mkdtemp(prefix="acar-bench-token-"))
    issuer = f"http://127.0.0.1:{args.port}"  # bench.sh finds discovery at the token URL's origin: same origin
    env = without_acar_settings()  # everything else at its default
    with database_url(args) as url:
        acar_env = acar_settings(work / "data", issuer, url)
        try:
            sh(ACAR, "init", "--json", env={**env, **acar_env})
            client = json.loads(sh(ACAR, "client", "add", "--name", "bench", "--grant-type", "client_credentials",
                                   "--scope", "api", "--auth-method", "client_secret_basic", "--json",
                                   env={**env, **acar_env}))
            product = (f"cd {shlex.quote(str(ROOT))} && exec env "
                       + " ".join(f"{k}={shlex.quote(v)}" for k, v in acar_env.items())
                       + f" .venv/bin/acar serve --port {args.port} --server {args.server}")
            common = ["--repeat", str(args.repeat), "--duration", str(args.duration), "--form", "&scope=api"]
            peer_args = ["--servers", "peer,ref" if args.with_ref else "peer", *common]
            credentials = f"{client['client_id']}:{client['client_secret']}"
            product_args = ["--servers", "product", "--name", "acar", "--product", product,
                            "--token-url", issuer + "/token", "--client", credentials, *common]
            results: dict[tuple[str, str], list[list[str]]] = {}
            ratios: list[float] = []
            for round_no in range(args.rounds):
                order = [peer_args, product_args] if round_no % 2 == 0 else [product_args, peer_args]
                got: dict[tuple[str, str], list[str]] = {}
                for call in order:
                    got.update(harness(script, call, env))
                for key, row in got.items():
                    results.setdefault(key, []).append(row)
                if ("acar", "token") in got and ("peer", "token") in got:
                    ratios.append(float(got[("acar", "token")][0]) / float(got[("peer", "token")][0]))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nclient_credentials, ES256 at+jwt; database {'postgresql' if url else 'sqlite'}; acar serve --server "
          f"{args.server}; "
          f"{args.rounds} round(s) x median of {args.repeat} runs of {args.duration}s; server core 0, wrk core 1")
    print(f"{'server':8} {'endpoint':10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'CPU ms/req':>10}")
    cpu: dict[tuple[str, str], float] = {}
    for (server, endpoint), rows in sorted(results.items()):
        rps, mid = median_run(rows, lambda r: float(r[0]))
        # the server's own CPU time per request (srv% of one core / req/s): what the load of others moves least
        cpu[(server, endpoint)] = statistics.median(float(r[4]) * 10 / float(r[0]) for r in rows if r[4] != "-")
        print(f"{server:8} {endpoint:10} {rps:9.0f} {mid[1]:>7} {mid[2]:>7} {sum(int(r[3]) for r in rows):6d} "
              f"{cpu[(server, endpoint)]:10.3f}")
    if not ratios:
        raise SystemExit("no ratio: a server failed its preflight or its run (see the tables above)")
    print(f"token ratio acar/peer: {statistics.median(ratios):.2f} (target >= 1.25; per round: "
          + ", ".join(f"{r:.2f}" for r in ratios) + ")")
    print(f"CPU per token, peer/acar: {cpu[('peer', 'token')] / cpu[('acar', 'token')]:.2f} "
          f"(the same ratio from each server's own CPU time per request)")


if __name__ == "__main__":
    main()
