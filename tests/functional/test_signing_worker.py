"""Real `acar worker` processes beside a real `acar serve` (its in-process worker off) on one PostgreSQL: a worker
SIGKILLed in the middle of a batch loses nothing, and after a restart every document is signed exactly once (one
signing.document.signed event per document, each delivered PDF validating); SIGTERM stops a worker cleanly."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
import httpx
import pytest
from asn1crypto import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlalchemy.engine import make_url

from tests.functional.helpers import ACAR, InProcessAcar, Server, acar_env
from tests.signing_tools import minimal_pdf

pytestmark = pytest.mark.postgresql
DOCUMENTS = 60
API = "/api/v1/signing-requests"


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _query(url: str, sql: str, *args: Any) -> list[Any]:
    connection = await asyncpg.connect(_dsn(url))
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def _signed_count(url: str, request_id: str) -> int:
    rows = asyncio.run(_query(url, "SELECT count(*) FROM signing_documents WHERE request_id = $1 AND state = "
                                   "'signed'", request_id))
    return int(rows[0][0])


def _client(server: Server) -> httpx.Client:
    """One client for a test's requests to `server` (httpx.get makes a client, and loads the CA bundle, per call)."""
    return httpx.Client(base_url=server.base, timeout=30)


def _worker(env: dict[str, str], out: BinaryIO) -> subprocess.Popen[bytes]:
    return subprocess.Popen([ACAR, "worker", "--interval", "0.2"], env=env, stdout=out, stderr=out,
                            start_new_session=True)


def test_a_worker_killed_mid_batch_loses_nothing_and_signs_each_document_once(
        pg_database_url: str, master_key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    env = acar_env({"ACAR_DATABASE_URL": pg_database_url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0",
                    "ACAR_SIGNING_INPROCESS_WORKER": "false", "ACAR_SIGNING_LEASE_SECONDS": "2",
                    "ACAR_SIGNING_MAX_DOCUMENTS": str(DOCUMENTS),
                    "ACAR_ACCESS_LOG": "false"})
    acar = InProcessAcar(env, monkeypatch, capsys)
    acar("init")
    server = Server(env, log_path=tmp_path / "server.log")  # starts while the seal is assigned in this process
    http = _client(server)
    log = tmp_path / "worker.log"
    out = log.open("ab")
    first = _worker(env, out)  # starts with the server; it finds nothing to sign before the request is made
    try:
        client = acar.json("client", "add", "--name", "Tax system", "--grant-type", "client_credentials",
                           "--scope", "signing")
        seal = acar.json("seal", "assign", client["client_id"], "--voen", "1234567891", "--organization",
                         "Vergilər Nazirliyi")
        assert seal["new_key"] and seal["signing_scope"]
        again = acar.json("seal", "assign", client["client_id"], "--voen", "1234567891", "--organization",
                          "Vergilər Nazirliyi")
        assert again["key_id"] == seal["key_id"] and not again["new_key"]  # kept: same legal person, usable
        server.wait_ready()
        token = http.post("/token", data={"grant_type": "client_credentials"},
                          auth=(client["client_id"], client["client_secret"])).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        pdfs = [minimal_pdf(1 + n % 3, f"Sənəd {n}") for n in range(DOCUMENTS)]
        documents = [{"filename": f"{n}.pdf", "content": base64.b64encode(pdf).decode()} for n, pdf in enumerate(pdfs)]
        r = http.post(API, headers=headers, json={"mode": "seal", "level": "B-B", "documents": documents})
        assert r.status_code == 201, r.text
        request_id = r.json()["id"]

        deadline = time.monotonic() + 60
        while _signed_count(pg_database_url, request_id) < 5:
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = _signed_count(pg_database_url, request_id)
        assert killed_at < DOCUMENTS, "the batch ended before the kill; sign more documents"
        running = asyncio.run(_query(pg_database_url, "SELECT count(*) FROM signing_jobs WHERE state = 'running'"))
        time.sleep(0.5)
        assert _signed_count(pg_database_url, request_id) == killed_at  # nothing moves without a worker

        second = _worker(env, out)
        try:
            deadline = time.monotonic() + 120
            while (state := http.get(f"{API}/{request_id}", headers=headers).json())["state"] != "completed":
                assert state["state"] in ("approved", "signing") and time.monotonic() < deadline, state
                time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0, log.read_text()  # SIGTERM: a clean stop

        events = asyncio.run(_query(pg_database_url, "SELECT detail FROM audit_events WHERE subject = $1 AND "
                                                     "event_type = 'signing.document.signed'", request_id))
        numbers = Counter(int(json.loads(e[0])["n"]) for e in events)
        assert numbers == Counter(range(1, DOCUMENTS + 1))  # every document once: none lost, none twice
        jobs = asyncio.run(_query(pg_database_url, "SELECT state, attempts FROM signing_jobs"))
        assert {job[0] for job in jobs} == {"done"} and len(jobs) == DOCUMENTS
        assert sum(job[1] for job in jobs) == DOCUMENTS + int(running[0][0])  # the killed claim's job, twice
        # each job was finished by one of the two workers (a claim is the worker's name and a random part): none by
        # the server, whose worker is off
        workers = {json.loads(line)["worker"] for line in log.read_text().splitlines() if '"started": true' in line}
        assert len(workers) == 2
        claims = asyncio.run(_query(pg_database_url, "SELECT leased_by FROM signing_jobs"))
        assert {claim[0].rsplit(":", 1)[0] for claim in claims} == workers
        root = x509.Certificate.load(http.get("/pki/ca/root.crt").content)
        assert root.subject
        for document, original in zip(state["documents"], pdfs, strict=True):
            r = http.get(f"{API}/{request_id}/documents/{document['n']}", headers=headers)
            assert r.status_code == 200 and r.content.startswith(original)
            assert len(PdfFileReader(io.BytesIO(r.content)).embedded_signatures) == 1
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        http.close()
        server.stop()
        out.close()


def test_acar_serve_alone_seals(pg_database_url: str, master_key_file: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded setup is one command: `acar serve` signs with its in-process worker (the default)."""
    env = acar_env({"ACAR_DATABASE_URL": pg_database_url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0",
                    "ACAR_ACCESS_LOG": "false"})
    acar = InProcessAcar(env, monkeypatch, capsys)
    acar("init")
    server = Server(env, log_path=tmp_path / "server.log")  # starts while the seal is assigned in this process
    http = _client(server)
    try:
        client = acar.json("client", "add", "--name", "Registry", "--grant-type", "client_credentials",
                           "--scope", "signing")
        acar.json("seal", "assign", client["client_id"], "--voen", "1234567891", "--organization", "Reyestr")
        server.wait_ready()
        token = http.post("/token", data={"grant_type": "client_credentials"},
                          auth=(client["client_id"], client["client_secret"])).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        pdf = minimal_pdf(2)
        r = http.post(API, headers=headers, data={"mode": "seal", "level": "B-LTA"},
                      files=[("document", ("a.pdf", pdf, "application/pdf"))])
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while (state := http.get(f"{API}/{r.json()['id']}", headers=headers).json())["state"] != "completed":
            assert state["state"] in ("approved", "signing") and time.monotonic() < deadline, (state, server.log())
            time.sleep(0.1)
        signed = http.get(f"{API}/{state['id']}/documents/1", headers=headers).content
        reader = PdfFileReader(io.BytesIO(signed))
        assert signed.startswith(pdf) and len(reader.embedded_signatures) == 2  # the seal and the document time-stamp
    finally:
        http.close()
        server.stop()


def test_a_worker_survives_its_database_connections_being_cut_mid_batch(
        pg_database_url: str, master_key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every connection of the database terminated (pg_terminate_backend, as a PostgreSQL restart does) while a
    worker signs: it goes on with fresh connections, and every document is still signed exactly once."""
    env = acar_env({"ACAR_DATABASE_URL": pg_database_url, "ACAR_MASTER_KEY_FILE": str(master_key_file),
                    "ACAR_DATA_DIR": str(tmp_path / "data"), "ACAR_KEY_CACHE_SECONDS": "0",
                    "ACAR_SIGNING_INPROCESS_WORKER": "false", "ACAR_SIGNING_LEASE_SECONDS": "2",
                    "ACAR_SIGNING_MAX_DOCUMENTS": str(DOCUMENTS), "ACAR_ACCESS_LOG": "false"})
    acar = InProcessAcar(env, monkeypatch, capsys)
    acar("init")
    server = Server(env, log_path=tmp_path / "server.log")  # starts while the seal is assigned in this process
    http = _client(server)
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = _worker(env, out)  # starts with the server; it finds nothing to sign before the request is made
        try:
            try:
                client = acar.json("client", "add", "--name", "Tax system", "--grant-type", "client_credentials",
                                   "--scope", "signing")
                acar.json("seal", "assign", client["client_id"], "--voen", "1234567891", "--organization",
                          "Vergilər")
                server.wait_ready()
                token = http.post("/token", data={"grant_type": "client_credentials"},
                                  auth=(client["client_id"], client["client_secret"])).json()["access_token"]
                documents = [{"filename": f"{n}.pdf", "content": base64.b64encode(minimal_pdf(1, f"{n}")).decode()}
                             for n in range(DOCUMENTS)]
                r = http.post(API, headers={"Authorization": f"Bearer {token}"},
                              json={"mode": "seal", "level": "B-B", "documents": documents})
                assert r.status_code == 201, r.text
                request_id = r.json()["id"]
            finally:
                http.close()
                server.stop()  # the connections cut below are the worker's
            deadline = time.monotonic() + 60
            while _signed_count(pg_database_url, request_id) < 5:
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            terminate = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            cut = [asyncio.run(_query(pg_database_url, terminate))[0][0] for _ in range(3) if not time.sleep(0.2)]
            assert sum(cut) >= 1
            deadline = time.monotonic() + 120
            while _signed_count(pg_database_url, request_id) < DOCUMENTS:
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    events = asyncio.run(_query(pg_database_url, "SELECT detail FROM audit_events WHERE subject = $1 AND "
                                                 "event_type = 'signing.document.signed'", request_id))
    assert Counter(int(json.loads(e[0])["n"]) for e in events) == Counter(range(1, DOCUMENTS + 1))
    state = asyncio.run(_query(pg_database_url, "SELECT state FROM signing_requests WHERE id = $1", request_id))
    assert state[0][0] == "completed"
