"""Memory (issue 13, "Input policy"): signing a 50 MB PDF keeps the worker under 400 MB RSS. A real `acar worker`
process signs a PDF just under the document limit (one page, one uncompressed image of random pixels:
tests/pdf_tools.large_pdf) at B-LTA, the level that rewrites the document most (signature, DSS, document
time-stamp); its peak resident set (VmHWM in /proc/<pid>/status, the kernel's own high-water mark) is the bound.
The server that took the upload is measured too, and its figure printed (docs/performance.md)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader

from tests.functional.helpers import ACAR, Server, acar_env, acar_json, run_acar
from tests.pdf_tools import large_pdf

pytestmark = pytest.mark.postgresql
API = "/api/v1/signing-requests"
WORKER_PEAK_RSS = 400 * 1024 * 1024
"""The issue's bound on a worker signing a 50 MB PDF."""
DOCUMENT_BYTES = 50 * 1024 * 1024 - 64 * 1024
"""Just under ACAR_SIGNING_MAX_DOCUMENT_BYTES' default (50 MiB): the largest document an agency may send."""


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM, Linux proc(5))."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB"
            return int(value) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_a_worker_signs_a_50_mb_pdf_in_under_400_mb(pg_database_url: str, master_key_file: Path,
                                                    tmp_path: Path) -> None:
    env = acar_env({"ACAR_DATABASE_URL": pg_database_url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0",
                    "ACAR_SIGNING_INPROCESS_WORKER": "false", "ACAR_ACCESS_LOG": "false"})
    run_acar(env, "init")
    client = acar_json(env, "client", "add", "--name", "Registry", "--grant-type", "client_credentials",
                       "--scope", "signing")
    acar_json(env, "seal", "assign", client["client_id"], "--voen", "1234567891", "--organization", "Reyestr")
    pdf = large_pdf(DOCUMENT_BYTES - 4096)
    assert 49 * 1024 * 1024 < len(pdf) <= DOCUMENT_BYTES
    server = Server(env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        token = httpx.post(server.base + "/token", data={"grant_type": "client_credentials"},
                           auth=(client["client_id"], client["client_secret"])).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        server_before = peak_rss(server.proc.pid)
        r = httpx.post(server.base + API, headers=headers, data={"mode": "seal", "level": "B-LTA"},
                       files=[("document", ("large.pdf", pdf, "application/pdf"))], timeout=120)
        assert r.status_code == 201, r.text
        server_after = peak_rss(server.proc.pid)
        request_id = r.json()["id"]
        assert r.json()["documents"][0]["sha256"] == hashlib.sha256(pdf).hexdigest()

        log = tmp_path / "worker.log"
        with log.open("ab") as out:
            worker = subprocess.Popen([ACAR, "worker", "--interval", "0.2"], env=env, stdout=out, stderr=out,
                                      start_new_session=True)
            try:
                deadline = time.monotonic() + 300
                while (state := httpx.get(f"{server.base}{API}/{request_id}", headers=headers).json())["state"] \
                        != "completed":
                    assert state["state"] in ("approved", "signing"), (state, log.read_text()[-3000:])
                    assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.2)
                worker_peak = peak_rss(worker.pid)
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=30)
        print(f"\npeak RSS: worker {worker_peak / 2**20:.0f} MiB signing {len(pdf) / 2**20:.1f} MiB at B-LTA; "
              f"server {server_before / 2**20:.0f} MiB before the upload, {server_after / 2**20:.0f} MiB after")
        assert worker_peak < WORKER_PEAK_RSS, f"the worker peaked at {worker_peak / 2**20:.0f} MiB"

        signed = httpx.get(f"{server.base}{API}/{request_id}/documents/1", headers=headers, timeout=60).content
        assert signed.startswith(pdf) and len(PdfFileReader(io.BytesIO(signed)).embedded_signatures) == 2
    finally:
        server.stop()

    server = Server(env, log_path=tmp_path / "server-json.log")  # a fresh process: its own high-water mark
    try:
        server.wait_ready()
        body = json.dumps({"mode": "seal", "documents": [
            {"filename": "large.pdf", "content": base64.b64encode(pdf).decode()}]}).encode()
        json_before = peak_rss(server.proc.pid)
        r = httpx.post(server.base + API, headers={**headers, "Content-Type": "application/json"}, content=body,
                       timeout=120)
        assert r.status_code == 201, r.text
        json_after = peak_rss(server.proc.pid)
    finally:
        server.stop()
    print(f"peak RSS: server {json_before / 2**20:.0f} MiB before a JSON upload ({len(body) / 2**20:.1f} MiB), "
          f"{json_after / 2**20:.0f} MiB after")
