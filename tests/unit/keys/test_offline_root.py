"""An offline root: the root CA imported as a certificate alone, its CRLs signed offline (here by `cryptography`,
standing in for the ceremony) and imported, revocation under it refused, and a root CRL that revokes the issuing
CA stopping issuance. The served CRL is checked with the real openssl."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import ColumnElement, func, select

from api.auth import mint_admin_token
from api.deps import Services
from api.settings import Settings
from keys.ca import ISSUING, ROOT
from keys.errors import CAKeyOffline, CANotInitialized, CAUnusable, InvalidCrl
from keys.models import CertificateAuthority, CRLRecord, IssuedCertificate
from keys.pki import PkiService
from keys.profiles import Profile
from keys.software import SoftwareKeyStore
from keys.status import IssuedCertificateStatus
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.clock import Clock
from tests.pki_tools import issue_certificate, openssl, verify_chain, write_pem

OFFLINE_MESSAGE = "the root CA key is offline; revoke by publishing a root CRL signed offline"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ceremony"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


@dataclass
class Ceremony:
    """What an offline key ceremony leaves: the root key (kept there), both certificates, the issuing key."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate

    def crl(self, number: int | None, *, revoked: Sequence[tuple[int, x509.ReasonFlags]] = (),
            this_update: dt.datetime | None = None, next_update: dt.timedelta = dt.timedelta(days=30),
            signer: ec.EllipticCurvePrivateKey | None = None, issuer: x509.Name | None = None,
            pem: bool = False, extra: Sequence[tuple[x509.ExtensionType, bool]] = ()) -> bytes:
        """A root CRL as the ceremony signs it (cryptography's builder, not the code under test)."""
        this = this_update or dt.datetime.now(dt.UTC).replace(microsecond=0)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer or self.root.subject)
                   .last_update(this).next_update(this + next_update)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                                  critical=False))
        if number is not None:
            builder = builder.add_extension(x509.CRLNumber(number), critical=False)
        for extension, critical in extra:
            builder = builder.add_extension(extension, critical=critical)
        for serial, reason in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this)
                .add_extension(x509.CRLReason(reason), critical=False).build())
        crl = builder.sign(signer or self.root_key, hashes.SHA384())
        return crl.public_bytes(serialization.Encoding.PEM if pem else serialization.Encoding.DER)


def make_ceremony() -> Ceremony:
    now = dt.datetime.now(dt.UTC)
    root_key, issuing_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = (x509.CertificateBuilder().subject_name(_name("Ceremony Root CA")).issuer_name(_name("Ceremony Root CA"))
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=7300))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA384()))
    issuing = (x509.CertificateBuilder().subject_name(_name("Ceremony Issuing CA")).issuer_name(root.subject)
               .public_key(issuing_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_ca_usage(), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing_key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                              critical=False)
               .sign(root_key, hashes.SHA384()))
    return Ceremony(root_key, root, issuing_key, issuing)


async def import_offline_hierarchy(services: Services, pki: PkiService, ceremony: Ceremony) -> dict[str, list[str]]:
    """`acar ca import --name root --cert` (no key), then the issuing CA with its key, as the CLI does it."""
    store = services.key_store
    assert isinstance(store, SoftwareKeyStore)
    pem = serialization.Encoding.PEM
    async with services.sessions() as session, session.begin():
        await pki.ca.import_ca(session, ROOT, ceremony.root.public_bytes(pem), None, actor="test")
        await pki.initialize(session, actor="test", create_hierarchy=False)
    async with services.sessions() as session, session.begin():
        key_pem = ceremony.issuing_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        handle = await store.import_private_key(session, key_pem, purpose="ca", label="ca-issuing")
        await pki.ca.import_ca(session, ISSUING, ceremony.issuing.public_bytes(pem), handle, actor="test")
        return await pki.initialize(session, actor="test", create_hierarchy=False)


@pytest.fixture
def ceremony() -> Ceremony:
    return make_ceremony()


@pytest.fixture
async def offline(initialized: Services, ceremony: Ceremony) -> Services:
    """Services whose root is imported without its key and whose issuing CA is imported with its key."""
    made = await import_offline_hierarchy(initialized, initialized.pki, ceremony)
    assert made["crls_published"] == [ISSUING]  # never the root's: its key is not here
    return initialized


@pytest.fixture
async def clocked(services: Services, settings: Settings) -> AsyncIterator[tuple[PkiService, Clock]]:
    clock = Clock()
    service = PkiService(services.sessions, services.key_store,
                         statuses=IssuedCertificateStatus(services.direct),
                         pki_base_url="http://localhost:8000", policy=services.pki.ca.policy,
                         cache_seconds=0, clock=clock)
    try:
        yield service, clock
    finally:
        await service.close()


async def _count(services: Services, model: type, *where: ColumnElement[bool]) -> int:
    async with services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def _import_crl(services: Services, data: bytes, ca: str = ROOT) -> tuple[CRLRecord, list[str]]:
    async with services.sessions() as session, session.begin():
        return await services.pki.import_crl(session, ca, data, actor="test")


async def _issue(services: Services) -> IssuedCertificate:
    return await issue_certificate(services, Profile.AUTHENTICATION)


async def test_root_imported_without_its_key_serves_the_crl_signed_offline(
    offline: Services, ceremony: Ceremony, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    async with offline.sessions() as session:
        root_row = await session.get(CertificateAuthority, ROOT)
        events = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "ca.imported"))).scalars()
        imported = {e.subject: e.detail for e in events}
    assert root_row is not None and root_row.key_id is None
    assert imported[ROOT]["key_offline"] is True and imported[ISSUING]["key_offline"] is False
    assert await _count(offline, CRLRecord, CRLRecord.ca_name == ROOT) == 0

    r = await client.get("/pki/crl/root.crl")  # nothing imported yet, and nothing is ever signed here
    assert r.status_code == 503 and r.json()["type"] == "urn:acar:problem:ca_not_initialized"
    assert await _count(offline, CRLRecord, CRLRecord.ca_name == ROOT) == 0

    first = ceremony.crl(7, pem=True)
    record, revoked = await _import_crl(offline, first)
    assert (record.number, revoked) == (7, [])
    r = await client.get("/pki/crl/root.crl")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-crl"
    assert r.content == x509.load_pem_x509_crl(first).public_bytes(serialization.Encoding.DER)
    root_pem = write_pem(tmp_path / "root.pem", ceremony.root.public_bytes(serialization.Encoding.DER))
    (tmp_path / "root.crl").write_bytes(r.content)
    checked = openssl("crl", "-inform", "DER", "-in", str(tmp_path / "root.crl"), "-CAfile", str(root_pem), "-noout")
    assert "verify OK" in checked.stderr + checked.stdout

    second = ceremony.crl(2**40)  # a ceremony may number its CRLs beyond 32 bits
    assert (await _import_crl(offline, second))[0].number == 2**40
    assert (await client.get("/pki/crl/root.crl")).content == second
    async with offline.sessions() as session:
        events = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "crl.imported"))).scalars()
        assert sorted((e.subject, e.detail["crl_number"], e.actor) for e in events) == [  # no order without ORDER BY
            (ROOT, 7, "test"), (ROOT, 2**40, "test")]

    # the issuing CA works as before: issues, publishes its own CRL; the chain verifies up to the offline root
    row = await _issue(offline)
    issuing_pem = write_pem(tmp_path / "issuing.pem", ceremony.issuing.public_bytes(serialization.Encoding.DER))
    verify_chain(tmp_path, root_pem, issuing_pem, write_pem(tmp_path / "leaf.pem", row.der))
    assert (await client.get("/pki/crl/issuing.crl")).status_code == 200


async def test_housekeeping_never_signs_the_offline_root_crl_and_warns_before_it_runs_out(
    clocked: tuple[PkiService, Clock], services: Services, ceremony: Ceremony, caplog: pytest.LogCaptureFixture
) -> None:
    service, clock = clocked
    await import_offline_hierarchy(services, service, ceremony)
    crl = ceremony.crl(1, this_update=clock.now.replace(microsecond=0), next_update=dt.timedelta(days=8))
    async with services.sessions() as session, session.begin():
        await service.import_crl(session, ROOT, crl, actor="test")

    caplog.set_level(logging.WARNING, logger="acar.pki")
    clock.now += dt.timedelta(days=5, hours=23)  # past half of its validity: our own CRLs would be republished
    assert (await service.housekeeping())["crls_published"] == [ISSUING]
    assert await service.crl(ROOT) == crl
    assert not [r for r in caplog.records if r.getMessage() == "pki.offline_crl_expiring"]

    clock.now += dt.timedelta(hours=2)  # the last quarter: 2 of 8 days left
    assert (await service.housekeeping())["crls_published"] == []
    warnings = [r for r in caplog.records if r.getMessage() == "pki.offline_crl_expiring"]
    assert len(warnings) == 1 and warnings[0].__dict__["ca"] == ROOT and warnings[0].__dict__["crl_number"] == 1
    assert await _count(services, CRLRecord, CRLRecord.ca_name == ROOT) == 1

    clock.now += dt.timedelta(days=3)  # expired: still served as it is (never re-signed), still warned about
    assert await service.crl(ROOT) == crl
    await service.housekeeping()
    assert len([r for r in caplog.records if r.getMessage() == "pki.offline_crl_expiring"]) == 2


async def test_an_imported_crl_is_checked(offline: Services, ceremony: Ceremony) -> None:
    await _import_crl(offline, ceremony.crl(5))
    stranger = ec.generate_private_key(ec.SECP384R1())
    refusals = [
        (ceremony.crl(6, signer=stranger), "the CRL signature does not verify with the root CA certificate's key"),
        (ceremony.crl(6, issuer=_name("Somebody Else")), "is issued by 'CN=Somebody Else,O=Ceremony,C=AZ'"),
        (ceremony.crl(4), "the CRL number 4 is not higher than that of the current root CRL (5)"),
        (ceremony.crl(5), "the CRL number 5 is not higher"),
        (ceremony.crl(6, this_update=utcnow().replace(microsecond=0) - dt.timedelta(days=31)),
         "the CRL expired at"),
        (ceremony.crl(6, this_update=utcnow().replace(microsecond=0) + dt.timedelta(hours=1)),
         "thisUpdate"),
        (ceremony.crl(None), "the CRL has no cRLNumber extension"),
        (ceremony.crl(6, extra=[(x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier("http://x/partial.crl")], relative_name=None,
            only_contains_user_certs=True, only_contains_ca_certs=False, only_some_reasons=None,
            indirect_crl=False, only_contains_attribute_certs=False), True)]), "issuingDistributionPoint"),
        (ceremony.crl(6, extra=[(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.61234.9"), b"\x05\x00"),
                                 True)]), "critical extensions this service does not process: 1.3.6.1.4.1.61234.9"),
        (ceremony.crl(2**63), "is above 9223372036854775807"),
        (b"not a CRL at all", "not a DER or PEM X.509 CRL"),
        (ceremony.root.public_bytes(serialization.Encoding.PEM), "not a DER or PEM X.509 CRL"),
    ]
    for data, message in refusals:
        with pytest.raises(InvalidCrl, match=re.escape(message)) as caught:
            await _import_crl(offline, data)
        assert "\n" not in str(caught.value)
    with pytest.raises(InvalidCrl, match="the issuing CA key is online: the service signs the issuing CRLs itself"):
        await _import_crl(offline, ceremony.crl(6), ca=ISSUING)
    assert await _count(offline, CRLRecord, CRLRecord.ca_name == ROOT) == 1
    async with offline.sessions() as session:
        events = (await session.execute(select(func.count()).select_from(AuditEvent)
                                        .where(AuditEvent.event_type == "crl.imported"))).scalar_one()
    assert events == 1


async def test_revocation_under_the_offline_root_is_refused_and_changes_nothing(
    offline: Services, ceremony: Ceremony, client: httpx.AsyncClient
) -> None:
    await _import_crl(offline, ceremony.crl(1))
    serial = format(ceremony.issuing.serial_number, "x")
    crls_before = await _count(offline, CRLRecord)
    with pytest.raises(CAKeyOffline) as caught:
        async with offline.sessions() as session, session.begin():
            await offline.pki.revoke(session, serial, "cACompromise", actor="test")
    assert str(caught.value) == OFFLINE_MESSAGE

    token = await mint_admin_token(offline, subject="operator-7", scopes={"acar:cert:revoke"}, ttl_seconds=300)
    r = await client.post(f"/admin/certificates/{serial}/revoke", json={"reason": "keyCompromise"},
                          headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "urn:acar:problem:ca_key_offline" and r.json()["detail"] == OFFLINE_MESSAGE

    assert await _count(offline, CRLRecord) == crls_before
    assert await _count(offline, IssuedCertificate, IssuedCertificate.revoked_at.is_not(None)) == 0
    assert await _count(offline, AuditEvent, AuditEvent.event_type == "certificate.revoked") == 0
    await _issue(offline)  # the issuing CA still issues


async def test_a_root_crl_revoking_the_issuing_ca_stops_issuance(offline: Services, ceremony: Ceremony) -> None:
    await _import_crl(offline, ceremony.crl(1))
    await _issue(offline)
    serial = ceremony.issuing.serial_number
    record, revoked = await _import_crl(offline, ceremony.crl(2, revoked=[(serial, x509.ReasonFlags.ca_compromise)]))
    assert revoked == [format(serial, "x")]
    async with offline.sessions() as session:
        row = await offline.pki.ca.get(session, format(serial, "x"))
        event = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "certificate.revoked")
                                       )).scalars().one()
    assert (row.issuer_ca, row.revocation_reason, row.revoked_at) == (ROOT, "cACompromise", record.this_update)
    assert (event.subject, event.detail["crl_number"], event.detail["reason"]) == (
        format(serial, "x"), 2, "cACompromise")

    issued = await _count(offline, IssuedCertificate)
    with pytest.raises(CAUnusable, match=r"the issuing CA certificate was revoked at .* \(cACompromise\); "
                                         "it issues nothing"):
        await _issue(offline)
    assert await _count(offline, IssuedCertificate) == issued
    # a later CRL that lists it again changes nothing more
    assert (await _import_crl(offline, ceremony.crl(3, revoked=[(serial, x509.ReasonFlags.key_compromise)])))[1] == []


async def test_only_the_root_may_be_imported_without_its_key(services: Services, ceremony: Ceremony) -> None:
    pem = serialization.Encoding.PEM
    async with services.sessions() as session, session.begin():
        await services.pki.ca.import_ca(session, ROOT, ceremony.root.public_bytes(pem), None, actor="test")
    with pytest.raises(Exception, match="only the root CA may stay offline"):
        async with services.sessions() as session, session.begin():
            await services.pki.ca.import_ca(session, ISSUING, ceremony.issuing.public_bytes(pem), None, actor="test")
    # development `acar init` cannot make an issuing CA under a root whose key is elsewhere
    with pytest.raises(CAKeyOffline, match="the root CA key is offline"):
        async with services.sessions() as session, session.begin():
            await services.pki.initialize(session, actor="test", create_hierarchy=True)
    with pytest.raises(CANotInitialized, match="no root CRL has been imported yet"):
        await services.pki.crl(ROOT)


async def test_a_hold_is_released_by_a_later_crl(offline: Services, ceremony: Ceremony) -> None:
    """certificateHold is the one revocation a later complete CRL may lift (RFC 5280 section 5.3.1)."""
    serial = ceremony.issuing.serial_number
    hold = [(serial, x509.ReasonFlags.certificate_hold)]
    assert (await _import_crl(offline, ceremony.crl(1, revoked=hold)))[1] == [format(serial, "x")]
    with pytest.raises(CAUnusable, match="certificateHold"):
        await _issue(offline)
    await _import_crl(offline, ceremony.crl(2))  # the hold is no longer listed
    await _issue(offline)
    async with offline.sessions() as session:
        row = await offline.pki.ca.get(session, format(serial, "x"))
        released = await _count(offline, AuditEvent, AuditEvent.event_type == "certificate.released")
    assert (row.revoked_at, row.revocation_reason, released) == (None, None, 1)
    # a hold that becomes a final revocation takes the new reason
    await _import_crl(offline, ceremony.crl(3, revoked=hold))
    await _import_crl(offline, ceremony.crl(4, revoked=[(serial, x509.ReasonFlags.ca_compromise)]))
    async with offline.sessions() as session:
        row = await offline.pki.ca.get(session, format(serial, "x"))
    assert row.revocation_reason == "cACompromise"
