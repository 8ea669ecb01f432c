"""The built-in PKI as a relying party sees it years later: pyhanko-certvalidator (what signing/ validates PAdES
signatures with) builds and checks paths to our root with revocation information required for every
certificate, taken from our own OCSP responder and CRLs, and nothing fetched from the network."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import RevokedError

from api.deps import Services
from keys.ca import ISSUING, ROOT
from keys.pki import PkiService
from keys.profiles import Profile
from tests.clock import Clock
from tests.pki_tools import PERSON, initialize_pki, issue_certificate, ocsp_request

EXPIRED_CERTS_ON_CRL = x509.ObjectIdentifier("2.5.29.60")  # ITU-T X.509 expiredCertsOnCRL


@pytest.fixture
async def pki(services: Services) -> PkiService:
    return await initialize_pki(services)


async def _asn1(pki: PkiService, name: str) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(await pki.ca_certificate(name))


async def _ocsp(pki: PkiService, der: bytes) -> bytes:
    issuing = x509.load_der_x509_certificate(await pki.ca_certificate(ISSUING))
    reply = await pki.ocsp(ocsp_request(x509.load_der_x509_certificate(der), issuing, nonce=b"fresh-nonce-0001"))
    assert reply.status == "successful"
    return reply.der


def _context(root: asn1_x509.Certificate, issuing: asn1_x509.Certificate, *, ocsps: list[bytes],
             crls: list[bytes], moment: dt.datetime | None = None) -> ValidationContext:
    """Our root as the only trust anchor; revocation information required for every certificate of the path
    ('require': an OCSP answer or a CRL, RFC 5280 section 6.1.3 (a)(3)); no fetching."""
    return ValidationContext(trust_roots=[root], other_certs=[issuing], ocsps=ocsps, crls=crls,
                             revocation_mode="require", allow_fetching=False, moment=moment)


async def test_a_signing_certificate_validates_through_our_ocsp_responder(services: Services,
                                                                          pki: PkiService) -> None:
    """The signer's status comes from the delegated responder (id-pkix-ocsp-nocheck, no AIA OCSP of its own:
    no "Recursion detected in OCSP responder authorisation check"), the issuing CA's from the root CRL."""
    row = await issue_certificate(services, Profile.NATURAL_PERSON_SIGNING)
    root, issuing = await _asn1(pki, ROOT), await _asn1(pki, ISSUING)
    context = _context(root, issuing, ocsps=[await _ocsp(pki, row.der)], crls=[await pki.crl(ROOT)])
    validator = CertificateValidator(asn1_x509.Certificate.load(row.der), intermediate_certs=[issuing],
                                     validation_context=context)
    path = await validator.async_validate_usage({"non_repudiation"})
    assert [cert.sha256 for cert in path] == [root.sha256, issuing.sha256, validator._certificate.sha256]
    responder = (await pki.certified_key(Profile.OCSP_RESPONDER)).certificate
    assert responder.ocsp_no_check_value is not None
    assert responder.ocsp_urls == []  # nothing points back at the responder itself


async def test_the_ocsp_responder_certificate_itself_validates(services: Services, pki: PkiService) -> None:
    """Validated as a leaf (as a signature's validation data collection does for every certificate in it), the
    responder certificate is checked against the issuing CA's CRL; the responder's answer about itself is
    there but never consulted, so no validator loops on it."""
    responder = (await pki.certified_key(Profile.OCSP_RESPONDER)).certificate
    root, issuing = await _asn1(pki, ROOT), await _asn1(pki, ISSUING)
    about_itself = await _ocsp(pki, bytes(responder.dump()))
    context = _context(root, issuing, ocsps=[about_itself], crls=[await pki.crl(ISSUING), await pki.crl(ROOT)])
    path = await CertificateValidator(responder, intermediate_certs=[issuing],
                                      validation_context=context).async_validate_usage({"digital_signature"})
    assert path.leaf.sha256 == responder.sha256


async def test_revocation_stays_known_after_the_certificate_expired(services: Services, pki: PkiService) -> None:
    """Issued, revoked six hours later, expired after a day; a month on, the CRL still lists it (ExpiredCertsOnCRL)
    and the OCSP answer still says revoked (archiveCutoff). A validator using that information (long-term
    validation: revocation information issued after the moment validated, ETSI EN 319 102-1 5.6.2.1) refuses the
    certificate at a moment after the revocation as revoked, from either source."""
    clock = Clock()
    clocked = PkiService(services.sessions, services.key_store, statuses=pki.statuses, pki_base_url=pki.urls.base,
                         policy=pki.ca.policy, cache_seconds=0, clock=clock)
    issued_at = clock.now.replace(microsecond=0)
    async with services.sessions() as session, session.begin():
        row = await clocked.ca.issue(session, profile=Profile.NATURAL_PERSON_SIGNING, subject=PERSON, days=1,
                                     public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), actor="test")
    clock.now = issued_at + dt.timedelta(hours=6)
    async with services.sessions() as session, session.begin():
        await clocked.revoke(session, row.serial_hex, "keyCompromise", actor="test")
    clock.now = row.not_after + dt.timedelta(days=30)

    crl = x509.load_der_x509_crl(await clocked.crl(ISSUING))
    assert crl.get_revoked_certificate_by_serial_number(int(row.serial_hex, 16)) is not None
    assert not crl.extensions.get_extension_for_oid(EXPIRED_CERTS_ON_CRL).critical
    issuing_der = await pki.ca_certificate(ISSUING)
    reply = await clocked.ocsp(ocsp_request(x509.load_der_x509_certificate(row.der),
                                            x509.load_der_x509_certificate(issuing_der)))
    assert reply.cert_statuses == ("revoked",)
    single = asn1_ocsp.OCSPResponse.load(reply.der).basic_ocsp_response["tbs_response_data"]["responses"][0]
    root, issuing = await _asn1(pki, ROOT), await _asn1(pki, ISSUING)
    assert single.archive_cutoff_value.native == issuing.not_valid_before

    signer = asn1_x509.Certificate.load(row.der)
    root_crl, issuing_crl = await clocked.crl(ROOT), await clocked.crl(ISSUING)
    for ocsps, crls in (([reply.der], [root_crl]), ([], [root_crl, issuing_crl])):  # each source on its own
        context = ValidationContext(trust_roots=[root], other_certs=[issuing], ocsps=ocsps, crls=crls,
                                    revocation_mode="require", allow_fetching=False,
                                    moment=issued_at + dt.timedelta(hours=12), retroactive_revinfo=True)
        validator = CertificateValidator(signer, intermediate_certs=[issuing], validation_context=context)
        with pytest.raises(RevokedError, match="revoked at .* due to a compromised key"):
            await validator.async_validate_usage({"non_repudiation"})
    await clocked.close()
