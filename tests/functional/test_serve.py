"""The real server process: what `make run` does, ready within 60 s, Ctrl-C leaves nothing running."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api.server import STARTUP_FAILURE
from keys.software import MasterKey
from tests.functional.helpers import Server, run_acar
from tests.local_http import free_port


@pytest.mark.one_pass("postgresql")  # the server process, not the database: tests/conftest.py
@pytest.mark.parametrize("http_server", ["uvicorn", "granian"])
def test_serve_ready_and_ctrl_c_stops_everything(cli_env: dict[str, str], tmp_path: Path, http_server: str) -> None:
    run_acar(cli_env, "init")
    server = Server({**cli_env, "ACAR_SERVER": http_server}, log_path=tmp_path / "server.log")
    try:
        elapsed = server.wait_ready(timeout=60)
        assert elapsed < 60
        assert httpx.get(server.base + "/healthz").status_code == 200
        r = httpx.get(server.base + "/readyz")
        assert r.status_code == 200 and r.headers["x-request-id"]
    finally:
        code = server.stop(signal.SIGINT)
    assert code == 0, server.log()
    # nothing of the process group is left
    left = subprocess.run(["pgrep", "-g", str(server.proc.pid)], capture_output=True, text=True, check=False)
    assert left.stdout == ""
    try:
        httpx.get(server.base + "/healthz", timeout=1)
        raise AssertionError("port still answers after Ctrl-C")
    except httpx.ConnectError:
        pass
    # the log is JSON lines carrying the request id of the readiness probe
    import json

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(e.get("path") == "/readyz" and e.get("request_id") == r.headers["x-request-id"] for e in lines)


@pytest.mark.one_pass("postgresql")  # the server process, not the database: tests/conftest.py
@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_that_fails_its_start_makes_serve_exit_with_startup_failure(
    cli_env: dict[str, str], tmp_path: Path, workers: int
) -> None:
    """A worker's lifespan refuses a master key that does not open the stored keys; with one worker or several,
    the server exits with STARTUP_FAILURE (3), never 0, so a container runtime or service manager sees it. `acar
    serve` checks the key itself before it starts the server, so api.server.serve is called here as it calls it,
    with only the workers left to find the fault (as when the key file changes between the two)."""
    run_acar(cli_env, "init")
    wrong = tmp_path / "another.key"
    MasterKey.create_file(wrong)
    start = ("from api.server import serve; from api.settings import load_settings; "
             f"serve(load_settings(), host='127.0.0.1', port={free_port()}, workers={workers})")
    proc = subprocess.run([sys.executable, "-c", start], env={**cli_env, "ACAR_MASTER_KEY_FILE": str(wrong)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == STARTUP_FAILURE, proc.stderr[-3000:]
    assert "but ACAR_MASTER_KEY_FILE holds" in proc.stderr  # the cause, in the log of the worker that failed
