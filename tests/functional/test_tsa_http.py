"""POST /pki/tsa through the application: RFC 3161 over HTTP, audit events, HTTP-level refusals.

The TSA here signs with a test PKI built in the test; the serials come from the real allocator on the test
database, and `openssl ts -verify` checks what the endpoint returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from api.app import create_app
from api.deps import Services, build_services
from api.settings import Settings
from keys.models import IssuedCertificate
from keys.profiles import Profile
from keys.serials import SerialAllocator
from keys.software import SoftwareKeyHandle, generate_private_key
from keys.tsa import TimestampService, TsaProvider
from keys.x509 import serial_to_hex
from storage.audit import AuditEvent
from tests.tsa_pki import (
    ISSUER,
    POLICY,
    CertificateRecords,
    TsaTestPki,
    build_test_pki,
    openssl,
    openssl_query,
    parse_reply,
    tst_info,
)

QUERY = {"Content-Type": "application/timestamp-query"}


@pytest.fixture
def pki() -> TsaTestPki:
    return build_test_pki(SoftwareKeyHandle("tsa-http", generate_private_key("EC-P256")))


@pytest.fixture
def tsa_services(initialized: Services, pki: TsaTestPki) -> Services:
    """The app's services with a TSA on the test PKI and the real serial allocator."""

    async def load() -> TsaTestPki:
        return pki

    provider = TsaProvider(load, policy_oid=POLICY, serials=SerialAllocator(initialized.sessions, purpose="tsa"),
                           statuses=CertificateRecords(pki), issuer=ISSUER, refresh_seconds=0)
    initialized.tsa = TimestampService(provider, initialized.audit_log)
    return initialized


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "contract.pdf"
    path.write_bytes(b"%PDF-1.7 contract between two parties\n" * 50)
    return path


async def _events(services: Services) -> list[AuditEvent]:
    async with services.sessions() as session:
        result = await session.execute(select(AuditEvent).where(AuditEvent.event_type == "tsa.timestamp"))
        return list(result.scalars())


async def test_timestamp_over_http_verifies_with_openssl_and_is_audited(
    tsa_services: Services, client: httpx.AsyncClient, pki: TsaTestPki, document: Path, tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, document, "-sha256", "-cert")

    response = await client.post("/pki/tsa", content=query, headers=QUERY)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/timestamp-reply"
    assert response.headers["cache-control"] == "no-store"
    (tmp_path / "resp.tsr").write_bytes(response.content)
    files = pki.write(tmp_path)
    verified = openssl("ts", "-verify", "-data", document, "-in", tmp_path / "resp.tsr", "-CAfile", files.root)
    assert "Verification: OK" in verified.stdout
    serial = tst_info(parse_reply(response.content))["serial_number"].native
    (event,) = await _events(tsa_services)
    assert event.subject == str(serial) and event.actor == "anonymous"
    assert event.detail == {"serial": serial, "hash_algorithm": "sha256", "policy": POLICY}
    assert event.request_id == response.headers["x-request-id"]


async def test_every_timestamp_gets_its_own_serial(
    tsa_services: Services, client: httpx.AsyncClient, document: Path, tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, document, "-sha512")
    serials = []
    for _ in range(5):
        response = await client.post("/pki/tsa", content=query, headers=QUERY)
        serials.append(tst_info(parse_reply(response.content))["serial_number"].native)

    assert len(set(serials)) == 5
    assert sorted(e.detail["serial"] for e in await _events(tsa_services)) == sorted(serials)


async def test_malformed_request_is_a_rejection_reply_not_an_http_error(
    tsa_services: Services, client: httpx.AsyncClient
) -> None:
    response = await client.post("/pki/tsa", content=b"\x30\x03garbage", headers=QUERY)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/timestamp-reply"
    assert parse_reply(response.content)["status"].native["fail_info"] == {"bad_request", "bad_data_format"}
    assert await _events(tsa_services) == []  # only granted time-stamps are audit events


async def test_sha1_and_foreign_policy_are_rejected_in_the_reply(
    tsa_services: Services, client: httpx.AsyncClient, document: Path, tmp_path: Path
) -> None:
    sha1 = openssl_query(tmp_path, document, "-sha1", name="sha1.tsq")
    policy = openssl_query(tmp_path, document, "-sha256", "-tspolicy", "1.2.3.4", name="policy.tsq")

    replies = [await client.post("/pki/tsa", content=body, headers=QUERY) for body in (sha1, policy)]

    assert [parse_reply(r.content)["status"].native["fail_info"] for r in replies] == [
        {"bad_alg"}, {"unaccepted_policy"}]


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "application/json",
                                          "application/timestamp-reply"])
async def test_other_media_types_get_415_problem(
    tsa_services: Services, client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = await client.post("/pki/tsa", content=b"\x30\x00", headers=headers)

    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:acar:problem:unsupported_media_type"


async def test_media_type_parameters_and_case_are_accepted(
    tsa_services: Services, client: httpx.AsyncClient, document: Path, tmp_path: Path
) -> None:
    query = openssl_query(tmp_path, document, "-sha256")

    response = await client.post("/pki/tsa", content=query,
                                 headers={"Content-Type": "Application/TimeStamp-Query; charset=binary"})

    assert response.status_code == 200 and parse_reply(response.content)["status"].native["status"] == "granted"


async def test_oversized_body_gets_413_problem(tsa_services: Services, client: httpx.AsyncClient) -> None:
    declared = await client.post("/pki/tsa", content=b"\x30" * (64 * 1024 + 1), headers=QUERY)

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"\x00" * 1024

    streamed = await client.post("/pki/tsa", content=stream(), headers=QUERY)  # chunked: no Content-Length

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["type"] == "urn:acar:problem:content_too_large"


async def test_get_is_not_allowed(tsa_services: Services, client: httpx.AsyncClient) -> None:
    response = await client.get("/pki/tsa")

    assert response.status_code == 405


async def test_tsa_without_certificate_answers_503_problem(initialized: Services, client: httpx.AsyncClient,
                                                           document: Path, tmp_path: Path) -> None:
    """Services whose TSA credentials are not available (no certificate issued yet)."""
    response = await client.post("/pki/tsa", content=openssl_query(tmp_path, document, "-sha256"), headers=QUERY)

    assert response.status_code == 503
    assert response.json()["type"] in {"urn:acar:problem:tsa_not_configured", "urn:acar:problem:ca_not_initialized"}


CACHE_SECONDS = 0.5


async def _tsa_serial(services: Services) -> list[str]:
    async with services.sessions() as session:
        result = await session.execute(select(IssuedCertificate.serial_hex)
                                       .where(IssuedCertificate.profile == Profile.TSA.value)
                                       .order_by(IssuedCertificate.id))
        return list(result.scalars())


@pytest.fixture
async def short_cache_node(initialized: Services, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second node (its own services) with ACAR_KEY_CACHE_SECONDS=CACHE_SECONDS, over the initialized PKI."""
    async with initialized.sessions() as session, session.begin():
        await initialized.pki.initialize(session, actor="test", create_hierarchy=True)
    node = build_services(settings.model_copy(update={"key_cache_seconds": CACHE_SECONDS}))
    app = create_app(services=node)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost:8000"
        ) as client:
            # the node's own first housekeeping pass would renew a revoked TSA certificate itself: let it finish
            # first, so the revocation and renewal below happen on the other node, as the tests mean
            await asyncio.wait_for(app.state.housekeeping_passed.wait(), timeout=30)
            yield client
    finally:
        await node.close()


async def test_a_revoked_tsa_certificate_stops_every_node_within_the_key_cache_time(
    initialized: Services, short_cache_node: httpx.AsyncClient, document: Path, tmp_path: Path
) -> None:
    """A node with ACAR_KEY_CACHE_SECONDS serves; the revocation and the renewal happen on another node."""
    client = short_cache_node
    query = openssl_query(tmp_path, document, "-sha256", "-cert")
    granted = await client.post("/pki/tsa", content=query, headers=QUERY)
    assert parse_reply(granted.content)["status"].native["status"] == "granted"
    (first_serial,) = await _tsa_serial(initialized)

    async with initialized.sessions() as session, session.begin():
        await initialized.pki.revoke(session, first_serial, "keyCompromise", actor="test")
    await asyncio.sleep(CACHE_SECONDS)  # at most one key cache time later, the node refuses
    refused = await client.post("/pki/tsa", content=query, headers=QUERY)
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"] == "urn:acar:problem:tsa_not_configured"

    await initialized.pki.housekeeping(actor="test")  # the CA issues the TSA a new key and certificate
    await asyncio.sleep(CACHE_SECONDS)
    renewed = await client.post("/pki/tsa", content=query, headers=QUERY)
    root = x509.load_der_x509_certificate((await client.get("/pki/ca/root.crt")).content)
    (_, second_serial) = await _tsa_serial(initialized)
    reply = parse_reply(renewed.content)
    assert reply["status"].native["status"] == "granted"
    signer = reply["time_stamp_token"]["content"]["signer_infos"][0]["sid"].chosen  # RFC 5652 IssuerAndSerialNumber
    assert serial_to_hex(signer["serial_number"].native) == second_serial != first_serial
    (tmp_path / "root.pem").write_bytes(root.public_bytes(Encoding.PEM))
    (tmp_path / "renewed.tsr").write_bytes(renewed.content)
    verified = openssl("ts", "-verify", "-data", document, "-in", tmp_path / "renewed.tsr",
                       "-CAfile", tmp_path / "root.pem")
    assert "Verification: OK" in verified.stdout


async def test_a_revoked_issuing_ca_stops_the_tsa(
    initialized: Services, short_cache_node: httpx.AsyncClient, document: Path, tmp_path: Path
) -> None:
    """Revoking the issuing CA voids the TSA certificate it issued: no node keeps granting with it."""
    client = short_cache_node
    query = openssl_query(tmp_path, document, "-sha256", "-cert")
    granted = await client.post("/pki/tsa", content=query, headers=QUERY)
    assert parse_reply(granted.content)["status"].native["status"] == "granted"
    async with initialized.sessions() as session:
        issuing_serial = (await session.execute(
            select(IssuedCertificate.serial_hex).where(IssuedCertificate.issuer_ca == "root"))).scalar_one()
    async with initialized.sessions() as session, session.begin():
        await initialized.pki.revoke(session, issuing_serial, "cACompromise", actor="test")
    await asyncio.sleep(CACHE_SECONDS)
    refused = await client.post("/pki/tsa", content=query, headers=QUERY)
    assert refused.status_code == 503, refused.text
    assert refused.json()["type"] == "urn:acar:problem:tsa_not_configured"
