"""A throwaway PostgreSQL cluster of a test's own (initdb + pg_ctl in a temporary directory, on a free port), for
fault tests that stop or restart the server: the shared server the other tests use (ACAR_TEST_POSTGRES_URL) is
never touched.

The binaries come from Debian's postgresql package (/usr/lib/postgresql/<version>/bin, or PATH). PostgreSQL refuses
to run as root: as root, the cluster belongs to the `postgres` user and every command runs through `runuser`. A
missing binary fails the test with the reason, it never skips it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.local_http import free_port

CLUSTER_USER = "postgres"
"""The owner of the cluster's files when the tests run as root (Debian's postgresql package creates it)."""


def _bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are required and were not found under "
                "/usr/lib/postgresql/*/bin or on PATH: install Debian's postgresql package", pytrace=False)


class Cluster:
    """One cluster: `url` is its SQLAlchemy URL (user postgres, trust authentication on loopback only)."""

    def __init__(self, directory: Path, port: int, bin_dir: Path, run_as: list[str]) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self._bin = bin_dir
        self._run_as = run_as
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/acar"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run([*self._run_as, str(self._bin / tool), *args], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.directory)
        if proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc.stdout

    def _pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w",
                  "-t", "60", "-o", options, *extra)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")
        self._pg_ctl("start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "acar")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is ended and open transactions roll back, as in a failover."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A started cluster with an empty database `acar`; stopped and deleted afterwards."""
    bin_dir = _bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="acar-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam(CLUSTER_USER)
        except KeyError:
            pytest.fail(f"running as root, the throwaway PostgreSQL cluster needs the user {CLUSTER_USER!r} "
                        "(PostgreSQL refuses to run as root)", pytrace=False)
        os.chown(directory, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", CLUSTER_USER, "--"]
    cluster = Cluster(directory, free_port(), bin_dir, run_as)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
