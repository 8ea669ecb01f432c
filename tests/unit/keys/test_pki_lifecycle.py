"""The PKI's write paths under concurrency and over time, on the test database (SQLite or PostgreSQL):

- two nodes (each with its own engine, as two processes would have) publishing CRLs and renewing service
  certificates at the same moment do it once, and no request fails;
- superseded OCSP responder and TSA keys are destroyed through the key store, only after the grace period;
- an issuing CA whose certificate is revoked or expired issues nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from sqlalchemy import ColumnElement, func, select

from api.deps import Services
from api.settings import Settings
from keys.ca import ISSUING, ROOT, SERVICE_VALIDITY, SUPERSEDED_KEY_GRACE
from keys.errors import CAUnusable
from keys.models import CRLRecord, IssuedCertificate, StoredKey
from keys.pki import PkiService
from keys.profiles import Profile
from keys.status import IssuedCertificateStatus
from storage import create_engine, create_session_factory
from storage.audit import AuditEvent
from tests.clock import Clock
from tests.pki_tools import PERSON, ocsp_request

Nodes = tuple[PkiService, PkiService, Clock]


@pytest.fixture
async def nodes(services: Services, settings: Settings) -> AsyncIterator[Nodes]:
    """Two PKI services on the test database, each on its own engine, sharing one clock the test moves."""
    clock = Clock()
    url = settings.resolved_database_url
    engines = [create_engine(url) for _ in range(2)]
    statuses = IssuedCertificateStatus(services.direct)
    built = [PkiService(create_session_factory(engine), services.key_store, statuses=statuses,
                        pki_base_url="http://localhost:8000", policy=services.pki.ca.policy,
                        cache_seconds=0, clock=clock) for engine in engines]
    async with services.sessions() as session, session.begin():
        await built[0].initialize(session, actor="test", create_hierarchy=True)
    try:
        yield built[0], built[1], clock
    finally:
        for service in built:
            await service.close()
        for engine in engines:
            await engine.dispose()


async def _count(services: Services, model: type, *where: ColumnElement[bool]) -> int:
    async with services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


def _number(der: bytes) -> int:
    return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


async def _together(*calls: Callable[[], Awaitable[object]]) -> list[object]:
    """Start every call at once; any exception fails the test (a request must never fail with a 500)."""
    return list(await asyncio.gather(*(call() for call in calls)))


async def test_concurrent_crl_publication_publishes_once(nodes: Nodes, services: Services) -> None:
    a, b, clock = nodes
    first_root, first_issuing = _number(await a.crl(ROOT)), _number(await a.crl(ISSUING))
    clock.now += dt.timedelta(hours=13)  # past half of the 24-hour lifetime: every request finds them due
    for _ in range(3):
        results = await _together(lambda: a.crl(ROOT), lambda: b.crl(ROOT), a.housekeeping, b.housekeeping,
                                  lambda: a.crl(ISSUING), lambda: b.crl(ISSUING), lambda: b.crl(ROOT))
        roots = {bytes(r) for r in (results[0], results[1], results[6]) if isinstance(r, bytes)}
        issuings = {bytes(r) for r in (results[4], results[5]) if isinstance(r, bytes)}
        assert len(roots) == 1 and len(issuings) == 1  # everybody serves the one CRL the winner published
        clock.now += dt.timedelta(hours=13)
    async with services.sessions() as session:
        numbers = sorted((await session.execute(select(CRLRecord.ca_name, CRLRecord.number))).all())
    for ca, first in ((ISSUING, first_issuing), (ROOT, first_root)):  # one CRL per half-lifetime, numbers rising
        mine = [n for name, n in numbers if name == ca]
        assert len(mine) == 4 and mine[0] == first and mine == sorted(set(mine))


async def test_concurrent_housekeeping_renews_once_then_destroys_the_superseded_key(
    nodes: Nodes, services: Services
) -> None:
    a, b, clock = nodes
    old = await a.certified_key(Profile.OCSP_RESPONDER)
    old_tsa = await a.tsa_key()
    clock.now += SERVICE_VALIDITY[Profile.OCSP_RESPONDER] * 2 / 3 + dt.timedelta(hours=1)
    results = await _together(a.housekeeping, b.housekeeping, a.housekeeping)
    renewed = [item for result in results if isinstance(result, dict)
               for item in result["service_certificates_created"]]
    assert [item.split(":")[0] for item in renewed] == ["ocsp-responder"]
    profile = IssuedCertificate.profile == Profile.OCSP_RESPONDER.value
    assert await _count(services, IssuedCertificate, profile) == 2
    new = await b.certified_key(Profile.OCSP_RESPONDER)
    assert new.handle.key_id != old.handle.key_id

    async def alive(key_id: str) -> bool:
        async with services.sessions() as session:
            row = await session.get(StoredKey, key_id, populate_existing=True)
            return row is not None and row.destroyed_at is None and row.ciphertext is not None

    clock.now += SUPERSEDED_KEY_GRACE - dt.timedelta(minutes=1)  # nodes may still hold the old key: keep it
    assert (await a.housekeeping())["service_keys_destroyed"] == []
    assert await alive(old.handle.key_id)

    clock.now += dt.timedelta(minutes=2)
    results = await _together(a.housekeeping, b.housekeeping)
    destroyed = [item for result in results if isinstance(result, dict) for item in result["service_keys_destroyed"]]
    assert destroyed == [f"ocsp-responder:{old.serial_hex}"]
    assert not await alive(old.handle.key_id)
    assert await alive(new.handle.key_id) and await alive(old_tsa.handle.key_id)  # the TSA key is still current
    async with services.sessions() as session:
        events = (await session.execute(
            select(AuditEvent).where(AuditEvent.event_type == "service_key.destroyed"))).scalars().all()
    assert [(e.subject, e.detail["superseded_by"]) for e in events] == [(old.handle.key_id, new.serial_hex)]

    # the responder signs with the new key; the old certificate still names its (destroyed) key for the record
    async with services.sessions() as session, session.begin():
        row = await a.ca.issue(session, profile=Profile.AUTHENTICATION, subject=PERSON,
                               public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), actor="test")
    issuing = x509.load_der_x509_certificate(await a.ca_certificate(ISSUING))
    reply = await b.ocsp(ocsp_request(x509.load_der_x509_certificate(row.der), issuing))
    answer = ocsp.load_der_ocsp_response(reply.der)
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert answer.certificates[0].serial_number == int(new.serial_hex, 16)


async def test_a_revoked_or_expired_issuing_ca_issues_nothing(
    nodes: Nodes, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    a, _, clock = nodes

    async def issue() -> IssuedCertificate:
        async with services.sessions() as session, session.begin():
            return await a.ca.issue(session, profile=Profile.NATURAL_PERSON_SIGNING, subject=PERSON,
                                    public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), actor="test")

    await issue()
    later = clock.now
    async with services.sessions() as session:
        issuing = x509.load_der_x509_certificate((await a.ca.ca_row(session, ISSUING)).certificate_der)
    clock.now = issuing.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CAUnusable, match="the issuing CA certificate expired at .*; it issues nothing"):
        await issue()
    clock.now = later

    async with services.sessions() as session, session.begin():  # the root is online here (development)
        await a.revoke(session, format(issuing.serial_number, "x"), "cACompromise", actor="test")
    issued = await _count(services, IssuedCertificate)
    keys = await _count(services, StoredKey)
    with pytest.raises(CAUnusable, match=r"the issuing CA certificate was revoked at .* \(cACompromise\)"):
        await issue()
    # the schedule cannot renew the service certificates with it: it says so and still publishes CRLs
    caplog.set_level(logging.WARNING, logger="acar.pki")
    clock.now += SERVICE_VALIDITY[Profile.OCSP_RESPONDER]
    result = await a.housekeeping()
    assert result["service_certificates_created"] == [] and result["crls_published"] == [ROOT, ISSUING]
    assert [r.getMessage() for r in caplog.records] == ["pki.service_certificates_not_renewed"]
    assert (await _count(services, IssuedCertificate), await _count(services, StoredKey)) == (issued, keys)


async def test_service_certificates_capped_by_the_issuing_ca_are_not_renewed_again_and_again(
    nodes: Nodes, services: Services
) -> None:
    """Near the issuing CA's end a renewal cannot outlive it: renew once (capped), then leave it alone."""
    a, _, clock = nodes
    async with services.sessions() as session:
        issuing = x509.load_der_x509_certificate((await a.ca.ca_row(session, ISSUING)).certificate_der)
    clock.now = issuing.not_valid_after_utc - dt.timedelta(days=20)  # inside every service renewal window
    first = await a.housekeeping()
    assert sorted(first["service_certificates_created"]) != []
    keys = await _count(services, StoredKey)
    certificates = await _count(services, IssuedCertificate)
    for _ in range(3):
        clock.now += dt.timedelta(minutes=1)
        assert (await a.housekeeping())["service_certificates_created"] == []
    assert await _count(services, StoredKey) == keys
    assert await _count(services, IssuedCertificate) == certificates
