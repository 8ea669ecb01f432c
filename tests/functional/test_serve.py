"""The real server process: what `make run` does, ready within 60 s, Ctrl-C leaves nothing running."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.functional.helpers import Server, run_acar


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
