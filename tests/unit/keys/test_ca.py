"""The built-in CA: hierarchy, ETSI EN 319 412 profiles, revocation and CRLs, checked with the real openssl."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from sqlalchemy import func, select

from api.deps import Services
from api.settings import Settings
from keys.ca import ISSUING, ROOT, CertificateAuthorityService, PkiUrls
from keys.errors import (
    AlreadyRevoked,
    CANotInitialized,
    CAUnusable,
    CertificateNotFound,
    CertificateUnusable,
    InvalidCertificateRequest,
    KeyNotFound,
)
from keys.models import CertificateAuthority, CRLRecord, IssuedCertificate
from keys.pki import PkiService
from keys.profiles import LegalPerson, NaturalPerson, Profile, ServiceSubject
from keys.status import IssuedCertificateStatus
from keys.x509 import serial_to_hex
from storage.audit import AuditEvent
from tests.clock import Clock
from tests.pki_tools import crl_text, initialize_pki, openssl, verify_chain, write_pem, x509_text

ISSUER = "http://localhost:8000"
PERSON = NaturalPerson.create(fin="5abc12d", given_name="Aysel", surname="Məmmədova")
ORG = LegalPerson.create(voen="1234567890", organization="Nümunə MMC")


@pytest.fixture
async def pki(services: Services) -> PkiService:
    return await initialize_pki(services)


@pytest.fixture
async def clocked(services: Services, settings: Settings) -> AsyncIterator[tuple[PkiService, Clock]]:
    """A PKI service on the test database whose clock the test moves."""
    clock = Clock()
    service = PkiService(services.sessions, services.key_store,
                         statuses=IssuedCertificateStatus(services.direct),
                         pki_base_url=ISSUER, policy=services.pki.ca.policy,
                         cache_seconds=0, clock=clock)
    try:
        yield service, clock
    finally:
        await service.close()


async def _count(services: Services, model: type) -> int:
    async with services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def _events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        rows = await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type))
        return list(rows.scalars())


async def _chain(services: Services, tmp_path: Path) -> tuple[Path, Path]:
    pki = services.pki
    return (write_pem(tmp_path / "root.pem", await pki.ca_certificate(ROOT)),
            write_pem(tmp_path / "issuing.pem", await pki.ca_certificate(ISSUING)))


def _public_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


async def _issue(services: Services, profile: Profile, subject: NaturalPerson | LegalPerson = PERSON,
                 days: int | None = None) -> IssuedCertificate:
    async with services.sessions() as session, session.begin():
        return await services.pki.ca.issue(session, profile=profile, subject=subject, public_key=_public_key(),
                                           days=days, actor="test")


async def test_init_creates_the_hierarchy_once(services: Services, pki: PkiService, tmp_path: Path) -> None:
    async with services.sessions() as session, session.begin():
        again = await pki.initialize(session, actor="test", create_hierarchy=True)
    assert again == {"ca_created": [], "service_certificates_created": [], "crls_published": []}
    assert await _count(services, CertificateAuthority) == 2
    assert len(await _events(services, "ca.created")) == 2
    root, issuing = await _chain(services, tmp_path)
    assert openssl("verify", "-CAfile", str(root), str(issuing)).stdout.strip() == f"{issuing}: OK"
    text = x509_text(issuing)
    assert "CA:TRUE, pathlen:0" in text and "Certificate Sign, CRL Sign" in text
    assert f"URI:{ISSUER}/pki/crl/root.crl" in text and f"CA Issuers - URI:{ISSUER}/pki/ca/root.crt" in text
    assert "OCSP - URI" not in text  # our responder answers for the issuing CA's certificates only
    assert "Subject: C=AZ, O=Açar, CN=Açar Root CA" in x509_text(root)
    # the issuing CA lists every policy it issues under, so each stays in the valid policy tree (RFC 5280 6.1.3)
    policies = x509.load_pem_x509_certificate(issuing.read_bytes()).extensions.get_extension_for_class(
        x509.CertificatePolicies).value
    assert [p.policy_identifier.dotted_string for p in policies] == [
        "1.3.6.1.4.1.99999.1.1", "0.4.0.194112.1.2", "0.4.0.194112.1.3", "0.4.0.2042.1.1"]
    assert "Certificate Policies" not in x509_text(root)


async def test_natural_person_signing_certificate(services: Services, pki: PkiService, tmp_path: Path) -> None:
    row = await _issue(services, Profile.NATURAL_PERSON_SIGNING)
    root, issuing = await _chain(services, tmp_path)
    cert = write_pem(tmp_path / "cert.pem", row.der)
    verify_chain(tmp_path, root, issuing, cert)
    text = x509_text(cert)
    assert "Subject: C=AZ, SN=Məmmədova, GN=Aysel, serialNumber=PNOAZ-5ABC12D, CN=Aysel Məmmədova" in text
    assert "X509v3 Key Usage: critical\n                Non Repudiation\n" in text
    # the national policy with its CPS pointer, then ETSI EN 319 411-2 QCP-n-qscd
    assert (f"Policy: 1.3.6.1.4.1.99999.1.1\n                  CPS: {ISSUER}/pki/cps\n"
            "                Policy: 0.4.0.194112.1.2\n") in text
    assert f"OCSP - URI:{ISSUER}/pki/ocsp" in text
    assert f"CA Issuers - URI:{ISSUER}/pki/ca/issuing.crt" in text
    assert f"URI:{ISSUER}/pki/crl/issuing.crl" in text
    assert "Extended Key Usage" not in text
    parsed = x509.load_der_x509_certificate(row.der)
    assert parsed.serial_number.bit_length() == 159 and row.serial_hex == format(parsed.serial_number, "x")
    assert _qc_statements(row.der) == [
        ("0.4.0.1862.1.1", None),  # QcCompliance
        ("0.4.0.1862.1.4", None),  # QcSSCD
        ("0.4.0.1862.1.6", ["0.4.0.1862.1.6.1"]),  # QcType: id-etsi-qct-esign
        ("0.4.0.1862.1.5", [(f"{ISSUER}/pki/pds/en", "en")]),  # QcPDS
        ("0.4.0.1862.1.7", ["AZ"]),  # QcCClegislation: qualified under Azerbaijani law
        ("1.3.6.1.5.5.7.11.2", "0.4.0.194121.1.1"),  # pkixQCSyntax-v2: semantics id-etsi-qcs-semanticsId-Natural
    ]
    events = await _events(services, "certificate.issued")
    assert any(e.subject == row.serial_hex and e.detail["profile"] == "natural-person-signing" for e in events)


def _qc_statements(der: bytes) -> list[tuple[str, object]]:
    """The qcStatements of a certificate, decoded with pyasn1 and pkilint's ASN.1 modules (not asn1crypto, which
    built them): (statement id, its decoded information)."""
    from pkilint.etsi.asn1 import en_319_412_5 as qc
    from pyasn1.codec.der.decoder import decode
    from pyasn1_alt_modules import rfc3739

    value = x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(
        x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")).value.public_bytes()
    statements, rest = decode(value, asn1Spec=rfc3739.QCStatements())
    assert rest == b""
    decoded: list[tuple[str, object]] = []
    for statement in statements:
        oid, info = str(statement["statementId"]), statement["statementInfo"]
        if not info.isValue:
            decoded.append((oid, None))
        elif oid == "0.4.0.1862.1.6":
            decoded.append((oid, [str(t) for t in decode(info, asn1Spec=qc.QcType())[0]]))
        elif oid == "0.4.0.1862.1.5":
            decoded.append((oid, [(str(p["url"]), str(p["language"]))
                                  for p in decode(info, asn1Spec=qc.PdsLocations())[0]]))
        elif oid == "0.4.0.1862.1.7":
            decoded.append((oid, [str(c) for c in decode(info, asn1Spec=qc.QcCClegislation())[0]]))
        else:
            decoded.append((oid, str(decode(info, asn1Spec=rfc3739.SemanticsInformation())[0]["semanticsIdentifier"])))
    return decoded


async def test_legal_person_seal_certificate(services: Services, pki: PkiService, tmp_path: Path) -> None:
    row = await _issue(services, Profile.LEGAL_PERSON_SEAL, ORG)
    root, issuing = await _chain(services, tmp_path)
    cert = write_pem(tmp_path / "seal.pem", row.der)
    verify_chain(tmp_path, root, issuing, cert)
    text = x509_text(cert)
    assert "Subject: C=AZ, O=Nümunə MMC, organizationIdentifier=NTRAZ-1234567890, CN=Nümunə MMC" in text
    assert "X509v3 Key Usage: critical\n                Non Repudiation\n" in text
    assert row.subject == "CN=Nümunə MMC,organizationIdentifier=NTRAZ-1234567890,O=Nümunə MMC,C=AZ"
    assert "Policy: 0.4.0.194112.1.3\n" in text  # ETSI EN 319 411-2 QCP-l-qscd
    statements = dict(_qc_statements(row.der))
    assert statements["0.4.0.1862.1.6"] == ["0.4.0.1862.1.6.2"]  # QcType: id-etsi-qct-eseal
    assert statements["0.4.0.1862.1.7"] == ["AZ"] and "0.4.0.1862.1.4" in statements
    assert statements["1.3.6.1.5.5.7.11.2"] == "0.4.0.194121.1.2"  # semanticsId-Legal


async def test_authentication_certificate(services: Services, pki: PkiService, tmp_path: Path) -> None:
    row = await _issue(services, Profile.AUTHENTICATION)
    root, issuing = await _chain(services, tmp_path)
    cert = write_pem(tmp_path / "auth.pem", row.der)
    verify_chain(tmp_path, root, issuing, cert)
    text = x509_text(cert)
    assert "X509v3 Key Usage: critical\n                Digital Signature\n" in text
    assert "X509v3 Extended Key Usage: \n                TLS Web Client Authentication\n" in text
    assert openssl("verify", "-purpose", "sslclient", "-CAfile", str(root), "-untrusted", str(issuing),
                   str(cert)).returncode == 0
    assert "Policy: 0.4.0.2042.1.1\n" in text  # ETSI EN 319 411-1 NCP: never qualified
    assert _qc_statements(row.der) == [("1.3.6.1.5.5.7.11.2", "0.4.0.194121.1.1")]


async def test_tsa_and_ocsp_responder_certificates(services: Services, pki: PkiService, tmp_path: Path) -> None:
    root, issuing = await _chain(services, tmp_path)
    tsa = await pki.tsa_key()
    tsa_pem = write_pem(tmp_path / "tsa.pem", tsa.certificate.dump())
    verify_chain(tmp_path, root, issuing, tsa_pem)
    text = x509_text(tsa_pem)
    assert "X509v3 Extended Key Usage: critical\n                Time Stamping\n" in text
    assert openssl("verify", "-purpose", "timestampsign", "-CAfile", str(root), "-untrusted", str(issuing),
                   str(tsa_pem)).returncode == 0
    assert [c.dump() for c in tsa.chain] == [x509.load_pem_x509_certificate(issuing.read_bytes()).public_bytes(
        serialization.Encoding.DER)]
    assert tsa.handle.public_key().public_numbers() == x509.load_pem_x509_certificate(  # type: ignore[union-attr]
        tsa_pem.read_bytes()).public_key().public_numbers()

    responder = await pki.certified_key(Profile.OCSP_RESPONDER)
    ocsp_pem = write_pem(tmp_path / "ocsp.pem", responder.certificate.dump())
    verify_chain(tmp_path, root, issuing, ocsp_pem)
    text = x509_text(ocsp_pem)
    assert "OCSP No Check" in text and "X509v3 Extended Key Usage: \n                OCSP Signing\n" in text
    # no AIA OCSP pointing at the responder itself (a loop validators refuse); caIssuers and the CRL stay
    assert "OCSP - URI" not in text and f"CA Issuers - URI:{ISSUER}/pki/ca/issuing.crt" in text
    assert f"URI:{ISSUER}/pki/crl/issuing.crl" in text
    assert f"OCSP - URI:{ISSUER}/pki/ocsp" in x509_text(tsa_pem)
    assert responder.handle.key_id != tsa.handle.key_id


@pytest.mark.parametrize("case", [
    (Profile.NATURAL_PERSON_SIGNING, PERSON, 0, "validity must be 1 to 1095 days"),
    (Profile.NATURAL_PERSON_SIGNING, PERSON, 1096, "validity must be 1 to 1095 days"),
    (Profile.NATURAL_PERSON_SIGNING, ORG, None, "certifies a NaturalPerson subject"),
    (Profile.LEGAL_PERSON_SEAL, PERSON, None, "certifies a LegalPerson subject"),
    (Profile.TSA, ServiceSubject("X", "Y"), None, "is not issued on request"),
])
async def test_issuance_refusals_write_nothing(
    services: Services, pki: PkiService, case: tuple[Profile, NaturalPerson, int | None, str]
) -> None:
    profile, subject, days, message = case
    before = await _count(services, IssuedCertificate)
    with pytest.raises(InvalidCertificateRequest, match=message):
        await _issue(services, profile, subject, days)
    assert await _count(services, IssuedCertificate) == before


async def test_issuance_needs_the_ca(services: Services) -> None:
    with pytest.raises(CANotInitialized, match="run `acar init` or `acar ca import`"):
        await _issue(services, Profile.AUTHENTICATION)


async def test_revocation_publishes_a_crl_listing_the_serial(
    services: Services, pki: PkiService, tmp_path: Path
) -> None:
    good = await _issue(services, Profile.AUTHENTICATION)
    row = await _issue(services, Profile.NATURAL_PERSON_SIGNING)
    held = await _issue(services, Profile.LEGAL_PERSON_SEAL, ORG)
    first = await pki.crl(ISSUING)
    async with services.sessions() as session, session.begin():
        revoked = await pki.revoke(session, row.serial_hex.upper(), "keycompromise", actor="test")
    assert revoked.revocation_reason == "keyCompromise" and revoked.revoked_at is not None
    async with services.sessions() as session, session.begin():
        await pki.revoke(session, held.serial_hex, "unspecified", actor="test")
    crl = await pki.crl(ISSUING)
    _, issuing = await _chain(services, tmp_path)
    crl_path = tmp_path / "issuing.crl"
    crl_path.write_bytes(crl)
    checked = openssl("crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(issuing), "-noout")
    assert "verify OK" in checked.stderr + checked.stdout
    text = crl_text(crl)
    assert f"Serial Number: {row.serial_hex.upper()}\n" in text and "Key Compromise" in text
    assert f"Serial Number: {held.serial_hex.upper()}\n" in text
    assert text.count("CRL Reason Code") == 1  # RFC 5280 5.3.1: no reasonCode for unspecified
    assert good.serial_hex.upper() not in text
    number = x509.load_der_x509_crl(crl).extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value.crl_number
    assert number > x509.load_der_x509_crl(first).extensions.get_extension_for_oid(
        ExtensionOID.CRL_NUMBER).value.crl_number
    events = await _events(services, "certificate.revoked")
    assert {(e.subject, e.detail["reason"], e.actor) for e in events} == {
        (row.serial_hex, "keyCompromise", "test"), (held.serial_hex, "unspecified", "test")}
    # each CRL signed with the CA key is audited in the revocation's transaction (issue 16: key operations)
    published = [(e.subject, e.detail["crl_number"], e.actor) for e in await _events(services, "crl.published")]
    numbers = sorted(n for ca, n, actor in published if ca == ISSUING and actor == "test")
    assert len(numbers) >= 2 and numbers[-1] == number  # a CRL for each revocation, numbers increasing

    with pytest.raises(AlreadyRevoked, match="was revoked at"):
        async with services.sessions() as session, session.begin():
            await pki.revoke(session, row.serial_hex, "superseded", actor="test")


async def test_unknown_serial_or_reason_changes_nothing(services: Services, pki: PkiService) -> None:
    row = await _issue(services, Profile.AUTHENTICATION)
    crls = await _count(services, CRLRecord)
    with pytest.raises(CertificateNotFound, match="no certificate with serial abc123"):
        async with services.sessions() as session, session.begin():
            await pki.revoke(session, "ABC123", "keyCompromise", actor="test")
    with pytest.raises(InvalidCertificateRequest, match="unknown revocation reason"):
        async with services.sessions() as session, session.begin():
            await pki.revoke(session, row.serial_hex, "removeFromCRL", actor="test")
    with pytest.raises(InvalidCertificateRequest, match="positive hexadecimal"):
        async with services.sessions() as session, session.begin():
            await pki.revoke(session, "not-hex", "keyCompromise", actor="test")
    assert await _count(services, CRLRecord) == crls
    assert await _events(services, "certificate.revoked") == []
    async with services.sessions() as session:
        assert (await pki.ca.get(session, row.serial_hex)).revoked_at is None


async def test_crl_is_republished_at_half_its_lifetime(
    clocked: tuple[PkiService, Clock], services: Services, tmp_path: Path
) -> None:
    service, clock = clocked
    async with services.sessions() as session, session.begin():
        await service.initialize(session, actor="test", create_hierarchy=True)
    start = clock.now.replace(microsecond=0)
    first = x509.load_der_x509_crl(await service.crl(ROOT))
    assert first.next_update_utc - first.last_update_utc == dt.timedelta(hours=24)
    assert first.last_update_utc == start
    clock.now += dt.timedelta(hours=11, minutes=59)
    assert x509.load_der_x509_crl(await service.crl(ROOT)).last_update_utc == start
    clock.now += dt.timedelta(minutes=2)
    renewed = x509.load_der_x509_crl(await service.crl(ROOT))
    assert renewed.last_update_utc > start
    number = renewed.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value.crl_number
    # RFC 5280 5.2.3, keys.crl.next_crl_number: the renewal's thisUpdate in POSIX seconds (12 hours on)
    assert number == int(renewed.last_update_utc.timestamp())
    assert number > first.extensions.get_extension_for_oid(ExtensionOID.CRL_NUMBER).value.crl_number
    root = write_pem(tmp_path / "root.pem", await service.ca_certificate(ROOT))
    crl_path = tmp_path / "root.crl"
    crl_path.write_bytes(await service.crl(ROOT))
    checked = openssl("crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(root), "-noout")
    assert "verify OK" in checked.stderr + checked.stdout
    # the schedule republishes the issuing CA's too, without a request
    clock.now += dt.timedelta(hours=13)
    assert (await service.housekeeping())["crls_published"] == [ROOT, ISSUING]


async def test_service_certificates_are_renewed_before_they_expire(
    clocked: tuple[PkiService, Clock], services: Services
) -> None:
    service, clock = clocked
    async with services.sessions() as session, session.begin():
        await service.initialize(session, actor="test", create_hierarchy=True)
    old = await service.certified_key(Profile.OCSP_RESPONDER)
    clock.now += dt.timedelta(days=59)
    assert (await service.housekeeping())["service_certificates_created"] == []
    clock.now += dt.timedelta(days=2)  # under a third of the responder's 90 days left
    renewed = (await service.housekeeping())["service_certificates_created"]
    assert [r.split(":")[0] for r in renewed] == ["ocsp-responder"]
    new = await service.certified_key(Profile.OCSP_RESPONDER)
    assert new.serial_hex != old.serial_hex and new.handle.key_id != old.handle.key_id


def _ca_cert(key: ec.EllipticCurvePrivateKey, subject: str, issuer: x509.Certificate | None,
             issuer_key: ec.EllipticCurvePrivateKey | None, *, ca: bool = True) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "AZ"), x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    return builder.sign(issuer_key or key, hashes.SHA384())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


async def test_import_checks_certificates_and_keys(services: Services, tmp_path: Path) -> None:
    from keys.software import SoftwareKeyStore

    store = services.key_store
    assert isinstance(store, SoftwareKeyStore)
    ca = CertificateAuthorityService(store, urls=PkiUrls(ISSUER), policy=services.pki.ca.policy)
    root_key, issuing_key, other_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
    root = _ca_cert(root_key, "Ext Root", None, None)
    issuing = _ca_cert(issuing_key, "Ext Issuing", root, root_key)
    stranger = _ca_cert(issuing_key, "Ext Issuing", _ca_cert(other_key, "Other", None, None), other_key)
    pem = serialization.Encoding.PEM

    async def attempt(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        async with services.sessions() as session, session.begin():
            handle = await store.import_private_key(session, _key_pem(key), purpose="ca", label=name)
            await ca.import_ca(session, name, cert.public_bytes(pem), handle, actor="test")

    with pytest.raises(InvalidCertificateRequest, match="import the root CA before the issuing CA"):
        await attempt(ISSUING, issuing, issuing_key)
    with pytest.raises(InvalidCertificateRequest, match="key does not match"):
        await attempt(ROOT, root, other_key)
    leaf = _ca_cert(other_key, "Leaf", root, root_key, ca=False)
    with pytest.raises(InvalidCertificateRequest, match="basicConstraints cA is false"):
        await attempt(ROOT, leaf, other_key)
    with pytest.raises(InvalidCertificateRequest, match="is not self-signed"):
        await attempt(ROOT, issuing, issuing_key)
    assert await _count(services, CertificateAuthority) == 0

    await attempt(ROOT, root, root_key)
    with pytest.raises(InvalidCertificateRequest, match="the root CA already exists"):
        await attempt(ROOT, root, root_key)
    with pytest.raises(InvalidCertificateRequest, match="not issued by our root CA"):
        await attempt(ISSUING, stranger, issuing_key)
    await attempt(ISSUING, issuing, issuing_key)
    assert len(await _events(services, "ca.imported")) == 2

    # the imported hierarchy issues; openssl verifies against the operator's own root certificate
    async with services.sessions() as session, session.begin():
        await services.pki.initialize(session, actor="test", create_hierarchy=False)
    row = await _issue(services, Profile.NATURAL_PERSON_SIGNING)
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(root.public_bytes(pem))
    issuing_pem = tmp_path / "issuing.pem"
    issuing_pem.write_bytes(issuing.public_bytes(pem))
    verify_chain(tmp_path, root_pem, issuing_pem, write_pem(tmp_path / "leaf.pem", row.der))


# --- the certified key of an issued certificate, by key id or serial (for signing/) ---------------------------


async def test_certified_key_is_found_by_key_id_and_by_serial(services: Services, pki: PkiService) -> None:
    tsa = await pki.tsa_key()
    async with services.sessions() as session:
        by_key = await pki.ca.certified_key_of(session, key_id=tsa.handle.key_id)
        by_serial = await pki.ca.certified_key_of(session, serial="0x" + tsa.serial_hex.upper())
        issuing_row = await pki.ca.ca_row(session, ISSUING)
        issuing_serial = serial_to_hex(x509.load_der_x509_certificate(issuing_row.certificate_der).serial_number)
        issuing = await pki.ca.certified_key_of(session, serial=issuing_serial)  # issued by the root

    for found in (by_key, by_serial):
        assert found.serial_hex == tsa.serial_hex and found.handle.key_id == tsa.handle.key_id
        assert found.certificate.dump() == tsa.certificate.dump()
        assert [c.dump() for c in found.chain] == [issuing_row.certificate_der]
        certified = x509.load_der_x509_certificate(found.certificate.dump()).public_key()
        assert isinstance(certified, ec.EllipticCurvePublicKey)
        certified.verify(await found.handle.sign(b"a document digest"), b"a document digest",
                         ec.ECDSA(hashes.SHA256()))  # the handle signs with the key the certificate certifies
    assert issuing.handle.key_id == issuing_row.key_id and issuing.chain == ()


async def test_a_subscriber_key_kept_here_is_recorded_and_must_be_the_certified_key(
        services: Services, pki: PkiService) -> None:
    """issue(key_id=...): the certificate names a key of this key store (a seal or signing key), found afterwards by
    certified_key_of(key_id=...); a key that is not the certified public key, or no key at all, issues nothing."""
    async with services.sessions() as session, session.begin():
        handle = await services.key_store.generate(session, "EC-P256", purpose="seal", label="seal:test")
        other = await services.key_store.generate(session, "EC-P256", purpose="seal", label="seal:other")
    async with services.sessions() as session, session.begin():
        row = await pki.ca.issue(session, profile=Profile.LEGAL_PERSON_SEAL, subject=ORG,
                                 public_key=handle.public_key(), key_id=handle.key_id, actor="test")
    assert row.key_id == handle.key_id
    async with services.sessions() as session:
        found = await pki.ca.certified_key_of(session, key_id=handle.key_id)
    assert found.serial_hex == row.serial_hex and found.handle.key_id == handle.key_id
    certified = x509.load_der_x509_certificate(found.certificate.dump()).public_key()
    assert isinstance(certified, ec.EllipticCurvePublicKey)
    certified.verify(await found.handle.sign(b"a digest"), b"a digest", ec.ECDSA(hashes.SHA256()))

    before = await _count(services, IssuedCertificate)
    async with services.sessions() as session, session.begin():
        with pytest.raises(InvalidCertificateRequest, match=f"key {other.key_id} is not the public key"):
            await pki.ca.issue(session, profile=Profile.LEGAL_PERSON_SEAL, subject=ORG,
                               public_key=handle.public_key(), key_id=other.key_id, actor="test")
        with pytest.raises(KeyNotFound):
            await pki.ca.issue(session, profile=Profile.LEGAL_PERSON_SEAL, subject=ORG,
                               public_key=handle.public_key(), key_id="no-such-key", actor="test")
    assert await _count(services, IssuedCertificate) == before


async def test_certified_key_lookup_refusals(services: Services, pki: PkiService) -> None:
    subscriber = await _issue(services, Profile.NATURAL_PERSON_SIGNING)  # the subscriber's own key: not ours
    tsa = await pki.tsa_key()
    async with services.sessions() as session:
        with pytest.raises(CertificateNotFound, match="not in the key store"):
            await pki.ca.certified_key_of(session, serial=subscriber.serial_hex)
        with pytest.raises(CertificateNotFound, match="certifies key no-such-key"):
            await pki.ca.certified_key_of(session, key_id="no-such-key")
        with pytest.raises(CertificateNotFound):
            await pki.ca.certified_key_of(session, serial="0badc0ffee")
        for both_or_neither in ({"key_id": tsa.handle.key_id, "serial": tsa.serial_hex}, {}):
            with pytest.raises(InvalidCertificateRequest):
                await pki.ca.certified_key_of(session, **both_or_neither)
    async with services.sessions() as session, session.begin():
        await pki.revoke(session, tsa.serial_hex, "keyCompromise", actor="test")
    async with services.sessions() as session:
        for lookup in ({"key_id": tsa.handle.key_id}, {"serial": tsa.serial_hex}):
            with pytest.raises(CertificateUnusable, match=f"certificate {tsa.serial_hex} was revoked"):
                await pki.ca.certified_key_of(session, **lookup)


async def test_certified_key_of_an_expired_certificate_or_under_a_revoked_ca_is_refused(
    clocked: tuple[PkiService, Clock], services: Services
) -> None:
    service, clock = clocked
    async with services.sessions() as session, session.begin():
        await service.initialize(session, actor="test", create_hierarchy=True)
    responder = await service.certified_key(Profile.OCSP_RESPONDER)
    clock.now += dt.timedelta(days=91)  # past the responder certificate's 90 days
    async with services.sessions() as session:
        with pytest.raises(CertificateUnusable, match="expired at"):
            await service.ca.certified_key_of(session, key_id=responder.handle.key_id)
    clock.now -= dt.timedelta(days=91)
    async with services.sessions() as session:
        issuing_serial = serial_to_hex(x509.load_der_x509_certificate(
            (await service.ca.ca_row(session, ISSUING)).certificate_der).serial_number)
    async with services.sessions() as session, session.begin():
        await service.revoke(session, issuing_serial, "cACompromise", actor="test")
    async with services.sessions() as session:
        with pytest.raises(CAUnusable, match="issuing CA certificate was revoked"):
            await service.ca.certified_key_of(session, serial=responder.serial_hex)


@pytest.mark.parametrize(("highest", "this_update", "expected"), [
    (None, dt.datetime(2026, 12, 7, tzinfo=dt.UTC), 1_796_601_600),  # the first CRL: thisUpdate in POSIX seconds
    (1_796_601_600, dt.datetime(2026, 12, 7, tzinfo=dt.UTC), 1_796_601_601),  # a second CRL in the same second
    (5, dt.datetime(2026, 12, 7, tzinfo=dt.UTC), 1_796_601_600),  # numbers of before this rule: time is higher
    # a database restored to an earlier point: its highest is older than a number already published, and the
    # next CRL still gets a number above every one published before the restore (it is later in time)
    (1_796_000_000, dt.datetime(2026, 12, 7, 0, 0, 1, tzinfo=dt.UTC), 1_796_601_601),
])
def test_crl_numbers_keep_rising_across_a_restore(highest: int | None, this_update: dt.datetime,
                                                  expected: int) -> None:
    from keys.crl import next_crl_number

    assert next_crl_number(highest, this_update) == expected
