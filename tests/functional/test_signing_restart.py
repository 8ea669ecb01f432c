"""A PostgreSQL restart in the middle of a batch (issue 13, "Durable work"): a real `acar worker` process on a
throwaway cluster of the test's own (tests/pg_cluster.py) that is restarted with `pg_ctl restart -m fast` while the
worker signs. The worker outlives the outage, and every document is signed exactly once: one
signing.document.signed event per document, every job done, each delivered PDF the original plus one signature
whose digest the database recorded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy.engine import make_url

from tests.functional.helpers import ACAR, Server, acar_env, acar_json, run_acar
from tests.pg_cluster import throwaway_cluster
from tests.signing_tools import minimal_pdf

pytestmark = pytest.mark.postgresql
DOCUMENTS = 40
API = "/api/v1/signing-requests"


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def _signed(url: str, request_id: str) -> int | None:
    """How many documents are signed; None while the server does not answer (restarting)."""
    try:
        rows = asyncio.run(_fetch(url, "SELECT count(*) FROM signing_documents WHERE request_id = $1 AND "
                                       "state = 'signed'", request_id))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    return int(rows[0][0])


def test_a_worker_goes_on_through_a_postgresql_restart_and_signs_each_document_once(
        master_key_file: Path, tmp_path: Path) -> None:
    with throwaway_cluster() as cluster:
        url = cluster.url
        env = acar_env({"ACAR_DATABASE_URL": url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                        "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0",
                        "ACAR_SIGNING_INPROCESS_WORKER": "false", "ACAR_SIGNING_LEASE_SECONDS": "2",
                        "ACAR_SIGNING_MAX_DOCUMENTS": str(DOCUMENTS), "ACAR_ACCESS_LOG": "false"})
        run_acar(env, "init")  # the schema by the application's own migration path (alembic upgrade head)
        client = acar_json(env, "client", "add", "--name", "Tax system", "--grant-type", "client_credentials",
                           "--scope", "signing")
        acar_json(env, "seal", "assign", client["client_id"], "--voen", "1234567891", "--organization", "Vergilər")
        pdfs = [minimal_pdf(1 + n % 2, f"Sənəd {n}") for n in range(DOCUMENTS)]
        server = Server(env, log_path=tmp_path / "server.log")
        try:
            server.wait_ready()
            token = httpx.post(server.base + "/token", data={"grant_type": "client_credentials"},
                               auth=(client["client_id"], client["client_secret"])).json()["access_token"]
            documents = [{"filename": f"{n}.pdf", "content": base64.b64encode(pdf).decode()}
                         for n, pdf in enumerate(pdfs)]
            r = httpx.post(server.base + API, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                           json={"mode": "seal", "level": "B-B", "documents": documents})
            assert r.status_code == 201, r.text
            request_id = r.json()["id"]
        finally:
            server.stop()

        log = tmp_path / "worker.log"
        with log.open("ab") as out:
            worker = subprocess.Popen([ACAR, "worker", "--interval", "0.2"], env=env, stdout=out, stderr=out,
                                      start_new_session=True)
            try:
                deadline = time.monotonic() + 60
                while (_signed(url, request_id) or 0) < 3:
                    assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.02)
                cluster.restart()
                restarted_at = _signed(url, request_id)
                assert restarted_at is not None and restarted_at < DOCUMENTS, \
                    "the batch ended before the restart; sign more documents"
                deadline = time.monotonic() + 180
                while (_signed(url, request_id) or 0) < DOCUMENTS:
                    assert worker.poll() is None, f"the worker died: {log.read_text()[-3000:]}"
                    assert time.monotonic() < deadline, (log.read_text()[-3000:], cluster.log())
                    time.sleep(0.1)
                assert worker.poll() is None  # it went on through the outage: no restart was needed
            finally:
                worker.send_signal(signal.SIGTERM)
                code = worker.wait(timeout=30)
        assert code == 0, log.read_text()[-3000:]  # and still stops cleanly
        assert "signing.worker_failed" in log.read_text()  # the outage was met (logged), not slept through

        events = asyncio.run(_fetch(url, "SELECT detail FROM audit_events WHERE subject = $1 AND "
                                         "event_type = 'signing.document.signed'", request_id))
        assert Counter(int(json.loads(e[0])["n"]) for e in events) == Counter(range(1, DOCUMENTS + 1))
        jobs = asyncio.run(_fetch(url, "SELECT state, attempts FROM signing_jobs WHERE request_id = $1", request_id))
        assert [job[0] for job in jobs] == ["done"] * DOCUMENTS  # none lost
        assert all(job[1] >= 1 for job in jobs)
        rows = asyncio.run(_fetch(url, "SELECT n, signed, signed_sha256, content FROM signing_documents "
                                       "WHERE request_id = $1 ORDER BY n", request_id))
        state = asyncio.run(_fetch(url, "SELECT state FROM signing_requests WHERE id = $1", request_id))
        assert state[0][0] == "completed"
        assert [row[0] for row in rows] == list(range(1, DOCUMENTS + 1))
        for (n, signed, digest, content), original in zip(rows, pdfs, strict=True):
            assert content is None, n  # the input went with the signature
            assert signed.startswith(original) and hashlib.sha256(signed).hexdigest() == digest, n
            assert len(PdfFileReader(io.BytesIO(signed)).embedded_signatures) == 1, n  # signed once, not twice
