"""The time-stamp authority in real `acar serve` processes after `acar init`: tokens signed with the TSA
certificate the built-in CA issued verify with `openssl ts -verify` against the published root, and two
processes sharing the database never hand out the same serial number."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.functional.helpers import Server, run_acar
from tests.tsa_pki import POLICY, openssl, openssl_query, parse_reply, tst_info

QUERY = {"Content-Type": "application/timestamp-query"}


def _root_pem(base: str, tmp_path: Path) -> Path:
    response = httpx.get(base + "/pki/ca/root.crt")
    assert response.status_code == 200, response.text
    der = tmp_path / "root.der"
    der.write_bytes(response.content)
    pem = tmp_path / "root.pem"
    openssl("x509", "-inform", "DER", "-in", der, "-out", pem)
    return pem


@pytest.mark.one_pass("postgresql")  # the server process, not the database: tests/conftest.py
def test_acar_serve_issues_time_stamps_that_openssl_verifies(cli_env: dict[str, str], tmp_path: Path) -> None:
    run_acar(cli_env, "init")
    document = tmp_path / "signed.pdf"
    document.write_bytes(b"%PDF-1.7 a document to time-stamp\n" * 20)
    query = openssl_query(tmp_path, document, "-sha256", "-cert")
    server = Server(cli_env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        response = httpx.post(server.base + "/pki/tsa", content=query, headers=QUERY)
        root = _root_pem(server.base, tmp_path)
    finally:
        server.stop()

    assert response.status_code == 200, server.log()
    assert response.headers["content-type"] == "application/timestamp-reply"
    reply = tmp_path / "reply.tsr"
    reply.write_bytes(response.content)
    text = openssl("ts", "-reply", "-in", reply, "-text").stdout
    assert "Status: Granted." in text and f"Policy OID: {POLICY}" in text
    verified = openssl("ts", "-verify", "-data", document, "-in", reply, "-CAfile", root)
    assert "Verification: OK" in verified.stdout


def test_two_server_processes_never_share_a_serial(cli_env: dict[str, str], tmp_path: Path) -> None:
    run_acar(cli_env, "init")
    document = tmp_path / "doc.txt"
    document.write_bytes(b"same document, many time-stamps")
    query = openssl_query(tmp_path, document, "-sha256")
    nodes = [Server(cli_env, log_path=tmp_path / f"node{i}.log") for i in range(2)]
    serials: dict[int, list[int]] = {0: [], 1: []}
    try:
        for node in nodes:
            node.wait_ready()
        with httpx.Client() as client:
            for i in range(40):
                response = client.post(nodes[i % 2].base + "/pki/tsa", content=query, headers=QUERY)
                assert response.status_code == 200, nodes[i % 2].log()
                serials[i % 2].append(tst_info(parse_reply(response.content))["serial_number"].native)
    finally:
        for node in nodes:
            node.stop()

    everything = serials[0] + serials[1]
    assert len(set(everything)) == 40
    assert not set(serials[0]) & set(serials[1])
