"""What the benchmark scripts share: running commands, a throwaway PostgreSQL database, the `acar` environment,
a real `acar serve` pinned to core 0, CPU time from /proc, and the median of the runs.

The scripts run as `.venv/bin/python bench/<script>.py`, so this directory is first on sys.path and they import
this module as `_common`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
ACAR = str(Path(sys.executable).with_name("acar"))
PG_ADMIN = ["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]
Run = TypeVar("Run")


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or exit with its stderr when it fails."""
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def require(tools: Sequence[str], install: str) -> None:
    """Exit naming the first of `tools` not on PATH and the packages (`install`) that bring them."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"missing {tool} (apt-get install {install})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_database_options(ap: argparse.ArgumentParser) -> None:
    """--database-url, or --postgresql for a throwaway database (see `database_url`)."""
    db = ap.add_mutually_exclusive_group()
    db.add_argument("--database-url", default="")
    db.add_argument("--postgresql", action="store_true", help="a throwaway database on 127.0.0.1:5432")


@contextmanager
def database_url(args: argparse.Namespace, prefix: str = "acar_bench_") -> Iterator[str]:
    """The database to measure on: --database-url as given ("" is SQLite in the data dir) or, with --postgresql,
    a database `prefix`<random> created on postgresql://postgres@127.0.0.1:5432 (psql) and dropped afterwards."""
    if not args.postgresql:
        yield args.database_url
        return
    name = prefix + secrets.token_hex(4)
    sh(*PG_ADMIN, "-c", f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        sh(*PG_ADMIN, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def without_acar_settings() -> dict[str, str]:
    """This process's environment without ACAR_*: every setting not given by `acar_settings` at its default
    (ACAR_KEY_CACHE_SECONDS, lifetimes, ...)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ACAR_")}


WIDE_OPEN_BUDGETS = {f"ACAR_RATE_LIMIT_{name}": "1000000/minute" for name in (
    "AUTHORIZE", "PASSKEY_OPTIONS", "PASSKEY_LOGIN", "ENROLLMENT", "ENROLLMENT_CODE", "CLIENT_AUTH_FAILURES",
    "INTROSPECTION", "ADMIN")}
"""A benchmark measures capacity from one loopback address, which the per-IP budgets (api.ratelimit) would
refuse after a few dozen logins; the budgets themselves are tested in tests/functional/test_rate_limits.py."""


def acar_settings(data_dir: Path, issuer: str, database_url: str = "") -> dict[str, str]:
    """The ACAR_* settings of a benchmarked server: its data dir and issuer, access log off, warnings only, rate
    limits wide open (WIDE_OPEN_BUDGETS)."""
    env = {"ACAR_DATA_DIR": str(data_dir), "ACAR_ACCESS_LOG": "false", "ACAR_LOG_LEVEL": "WARNING",
           "ACAR_ISSUER": issuer, **WIDE_OPEN_BUDGETS}
    if database_url:
        env["ACAR_DATABASE_URL"] = database_url
    return env


@contextmanager
def acar_server(port: int, log: Path, env: dict[str, str] | None = None, *, server: str = "uvicorn",
                workers: int = 1, cores: str = "0") -> Iterator[subprocess.Popen[bytes]]:
    """A real `acar serve --server SERVER --workers WORKERS` pinned to `cores` in a session of its own, answering
    /readyz on 127.0.0.1:`port`, its stderr in `log`; stopped afterwards (SIGTERM to its process group). `env` None:
    this process's environment. Workers serve from processes of their own: cpu_seconds(server.pid) counts them."""
    with log.open("wb") as stderr:
        server_ = subprocess.Popen(["taskset", "-c", cores, ACAR, "serve", "--port", str(port), "--server", server,
                                    "--workers", str(workers)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a first start compiles the checkout's modules: slow on a busy machine
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server_.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("server not ready: " + log.read_text()[-2000:]) from None
                time.sleep(0.2)
        yield server_
    finally:
        os.killpg(server_.pid, signal.SIGTERM)
        server_.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat; of a session leader (as
    acar_server starts it), of every live process of its session too (uvicorn's and granian's workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # a process that ended meanwhile
        if stat.parent.name == str(pid) or fields[3] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def median_run(runs: Sequence[Run], rate: Callable[[Run], float]) -> tuple[float, Run]:
    """The median rate of the runs, and the middle run by rate (the one whose latencies are printed)."""
    return statistics.median(rate(r) for r in runs), sorted(runs, key=rate)[len(runs) // 2]


class Http1Connection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams, for load generators that must not be the
    bottleneck (httpx spends about a millisecond of CPU per request; this a tenth of that). Answers with a
    Content-Length body only (what `acar serve` sends for every endpoint a benchmark calls); one cookie jar."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cookies: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, target: str, *, body: bytes = b"", content_type: str | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None  # noqa: S101 - opened above
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self._reader.readline()).split(b" ", 2)[1])
        answer: dict[str, str] = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookie = value.split(";", 1)[0]
                key, _, val = cookie.partition("=")
                self.cookies[key] = val
            answer[name] = value
        length = int(answer.get("content-length", "0"))
        return status, answer, await self._reader.readexactly(length) if length else b""

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


TOKEN_BODY = b"grant_type=client_credentials&scope=api"


async def token_load(port: int, auth: str, conns: int, seconds: float, server_pid: int) -> tuple[float, int, float]:
    """(tokens/s, errors, server CPU ms per token) for `seconds` of client_credentials requests (HTTP Basic `auth`)
    on `conns` keep-alive connections; an answer other than 200 is an error."""
    done, errors = 0, 0

    async def connection(until: float) -> None:
        nonlocal done, errors
        http = Http1Connection("127.0.0.1", port)
        try:
            while time.monotonic() < until:
                status, _, _ = await http.request("POST", "/token", body=TOKEN_BODY, headers={"Authorization": auth},
                                                  content_type="application/x-www-form-urlencoded")
                if status == 200:
                    done += 1
                else:
                    errors += 1
        finally:
            await http.close()

    start, cpu = time.monotonic(), cpu_seconds(server_pid)
    await asyncio.gather(*(connection(start + seconds) for _ in range(conns)))
    elapsed, used = time.monotonic() - start, cpu_seconds(server_pid) - cpu
    return done / elapsed, errors, used * 1000 / max(done, 1)

