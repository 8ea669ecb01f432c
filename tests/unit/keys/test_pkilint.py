"""Every profile, CRL and OCSP answer of the built-in PKI, checked by an independent linter: pkilint (DigiCert's
linter for RFC 5280, RFC 6960 and the ETSI EN 319 412 profiles), on a production-like PKI: an https issuer
with a real domain name, http PKI URLs (ACAR_PKI_BASE_URL derived from it), the registered policy OID.

No finding of severity ERROR (or FATAL) is allowed. The warnings each linter is known to give are listed in
KNOWN_WARNINGS with the reason they stay; any other warning fails the test, so a new one is looked at. Below
warnings pkilint notes (NOTICE) pkix.certificate_policies_policy_has_qualifier on every certificate with the CPS
qualifier: RFC 5280 4.2.1.4 recommends bare policy OIDs, while ETSI EN 319 411-1 (CPS publication) and most
national schemes expect the CPS pointer; it stays.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pkilint import etsi, finding_filter, loader, pkix, validation
from pkilint.etsi.etsi_constants import CertificateType
from pkilint.pkix import certificate, crl, extension, name, ocsp

from api.deps import Services, build_pki
from api.settings import Settings
from keys.ca import ISSUING, ROOT
from keys.pki import PkiService
from keys.profiles import (
    ID_NCP,
    ID_QCP_LEGAL_QSCD,
    ID_QCP_NATURAL_QSCD,
    CertificatePolicy,
    LegalPerson,
    NaturalPerson,
    Profile,
)
from tests.pki_tools import ocsp_request

ISSUER = "https://imza.e-gov.az"
PKI_BASE = "http://imza.e-gov.az"
POLICY = "1.3.6.1.4.1.61234.1.1"
PERSON = NaturalPerson.create(fin="5ABC12D", given_name="Aysel", surname="Məmmədova")
ORG = LegalPerson.create(voen="1234567890", organization="Vergilər Nazirliyi")

KNOWN_WARNINGS: dict[str, str] = {}
"""pkilint warning code -> why the profile keeps it (none today: pkilint 0.13.3 gives no warning)."""


@dataclass(frozen=True, slots=True)
class Finding:
    severity: validation.ValidationFindingSeverity
    code: str
    where: str
    message: str | None

    def __str__(self) -> str:
        return f"{self.severity.name} {self.code} at {self.where}: {self.message or ''}"


def _findings(results: Sequence[validation.ValidationResult]) -> list[Finding]:
    """Every finding of WARNING or worse."""
    return [Finding(d.finding.severity, d.finding.code, r.node.path, d.message)
            for r in results for d in r.finding_descriptions
            if d.finding.severity <= validation.ValidationFindingSeverity.WARNING]


def _check(findings: list[Finding]) -> list[Finding]:
    """Fail on any error and on any warning not in KNOWN_WARNINGS; return the known warnings found."""
    errors = [f for f in findings if f.severity <= validation.ValidationFindingSeverity.ERROR]
    assert errors == [], "\n".join(map(str, findings))
    unknown = [f for f in findings if f.code not in KNOWN_WARNINGS]
    assert unknown == [], "\n".join(map(str, unknown))
    return findings


def lint_etsi_cert(der: bytes, certificate_type: CertificateType) -> list[Finding]:
    """pkilint's lint_etsi_cert for the given type (the CLI's code path, findings filtered as it does)."""
    cert = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    assert etsi.determine_certificate_type(cert) == certificate_type  # what pkilint itself reads it as
    validator = certificate.create_pkix_certificate_validator_container(
        etsi.create_decoding_validators(certificate_type), etsi.create_validators(certificate_type))
    results, _ = finding_filter.filter_results(etsi.create_etsi_finding_filters(certificate_type),
                                               validator.validate(cert.root))
    return _findings(results)


def lint_pkix_cert(der: bytes) -> list[Finding]:
    """pkilint's lint_pkix_cert (RFC 5280)."""
    cert = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
    validator = certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [certificate.create_issuer_validator_container([]), certificate.create_validity_validator_container(),
         certificate.create_subject_validator_container([]), certificate.create_extensions_validator_container([]),
         certificate.create_spki_validator_container([])])
    return _findings(validator.validate(cert.root))


def lint_crl(der: bytes, crl_type: crl.CertificateRevocationListType) -> list[Finding]:
    """pkilint's lint_crl with the PKIX profile (RFC 5280 section 5)."""
    document_ = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
    validator = crl.create_pkix_crl_validator_container(
        [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
        [crl.create_issuer_validator_container([]), crl.create_validity_validator_container([]),
         crl.create_extensions_validator_container([])])
    return _findings(validator.validate(document_.root))


def lint_ocsp_response(der: bytes) -> list[Finding]:
    """pkilint's lint_ocsp_response (RFC 6960)."""
    response = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "ocsp")
    validator = ocsp.create_pkix_ocsp_response_validator_container(
        [ocsp.create_response_decoder(), pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)], [])
    return _findings(validator.validate(response.root))


@pytest.fixture
async def production_pki(services: Services, settings: Settings) -> AsyncIterator[PkiService]:
    """The PKI as api.deps builds it from a production-like configuration, initialized on the test database."""
    production = settings.model_copy(update={"issuer": ISSUER, "certificate_policy_oid": POLICY,
                                             "qualified_profiles": ["natural-person-signing", "legal-person-seal"]})
    assert production.resolved_pki_base_url == PKI_BASE
    pki = build_pki(production, services.sessions, services.key_store, services.direct)
    async with services.sessions() as session, session.begin():
        await pki.initialize(session, actor="test", create_hierarchy=True)
    try:
        yield pki
    finally:
        await pki.close()


async def _issue(services: Services, pki: PkiService, profile: Profile, subject: NaturalPerson | LegalPerson,
                 ) -> bytes:
    async with services.sessions() as session, session.begin():
        row = await pki.ca.issue(session, profile=profile, subject=subject, actor="test",
                                 public_key=ec.generate_private_key(ec.SECP256R1()).public_key())
    return row.der


def _policies(der: bytes) -> list[str]:
    value = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.CertificatePolicies).value
    return [p.policy_identifier.dotted_string for p in value]


@pytest.mark.parametrize(("profile", "subject", "expected"), [
    (Profile.NATURAL_PERSON_SIGNING, PERSON,
     (CertificateType.QCP_N_QSCD_NON_EIDAS_FINAL_CERTIFICATE, ID_QCP_NATURAL_QSCD)),
    # pkilint 0.13 has no QCP-l type: a qualified seal is linted with the legal-person rules (EN 319 412-3)
    (Profile.LEGAL_PERSON_SEAL, ORG, (CertificateType.NCP_LEGAL_PERSON_CERTIFICATE, ID_QCP_LEGAL_QSCD)),
    (Profile.AUTHENTICATION, PERSON, (CertificateType.NCP_NATURAL_PERSON_CERTIFICATE, ID_NCP)),
])
async def test_qualified_and_ncp_subscriber_certificates_pass_pkilint(
    services: Services, production_pki: PkiService, profile: Profile, subject: NaturalPerson | LegalPerson,
    expected: tuple[CertificateType, str],
) -> None:
    certificate_type, etsi_policy = expected
    der = await _issue(services, production_pki, profile, subject)
    assert _policies(der) == [POLICY, etsi_policy]
    _check(lint_etsi_cert(der, certificate_type))
    _check(lint_pkix_cert(der))


@pytest.mark.parametrize(("profile", "subject", "certificate_type"), [
    (Profile.NATURAL_PERSON_SIGNING, PERSON, CertificateType.NCP_NATURAL_PERSON_CERTIFICATE),
    (Profile.LEGAL_PERSON_SEAL, ORG, CertificateType.NCP_LEGAL_PERSON_CERTIFICATE),
])
async def test_signing_profiles_configured_not_qualified_are_ncp(
    services: Services, settings: Settings, profile: Profile, subject: NaturalPerson | LegalPerson,
    certificate_type: CertificateType,
) -> None:
    production = settings.model_copy(update={"issuer": ISSUER, "certificate_policy_oid": POLICY,
                                             "qualified_profiles": []})
    pki = build_pki(production, services.sessions, services.key_store, services.direct)
    async with services.sessions() as session, session.begin():
        await pki.initialize(session, actor="test", create_hierarchy=True)
    der = await _issue(services, pki, profile, subject)
    assert _policies(der) == [POLICY, ID_NCP]
    _check(lint_etsi_cert(der, certificate_type))
    _check(lint_pkix_cert(der))


async def test_the_linter_refuses_what_the_profiles_avoid(services: Services) -> None:
    """The checks have teeth: an https CRL distribution point (the PKI base URL as it was: the issuer's) and an
    http disclosure statement are ETSI errors."""
    pki = PkiService(services.sessions, services.key_store, statuses=services.pki.statuses, pki_base_url=ISSUER,
                     policy=CertificatePolicy(policy_oid=POLICY, cps_url=f"{ISSUER}/pki/cps",
                                              pds_url=f"{PKI_BASE}/pki/pds/en"))
    async with services.sessions() as session, session.begin():
        await pki.initialize(session, actor="test", create_hierarchy=True)
    der = await _issue(services, pki, Profile.NATURAL_PERSON_SIGNING, PERSON)
    codes = {f.code for f in lint_etsi_cert(der, CertificateType.QCP_N_QSCD_NON_EIDAS_FINAL_CERTIFICATE)
             if f.severity <= validation.ValidationFindingSeverity.ERROR}
    assert codes == {"etsi.en_319_412_2.gen-4.3.11-4.http_or_ldap_crldp_distribution_point_uri_missing",
                     "etsi.en_319_412_5.gen-4.3.4.url_scheme_not_https"}


async def test_ca_and_service_certificates_pass_pkilint(services: Services, production_pki: PkiService) -> None:
    for name_ in (ROOT, ISSUING):
        _check(lint_pkix_cert(await production_pki.ca_certificate(name_)))
    for profile in (Profile.OCSP_RESPONDER, Profile.TSA):
        _check(lint_pkix_cert(bytes((await production_pki.certified_key(profile)).certificate.dump())))


async def test_crls_pass_pkilint(services: Services, production_pki: PkiService) -> None:
    for reason in ("keyCompromise", "unspecified"):
        der = await _issue(services, production_pki, Profile.NATURAL_PERSON_SIGNING, PERSON)
        async with services.sessions() as session, session.begin():
            await production_pki.revoke(session, format(x509.load_der_x509_certificate(der).serial_number, "x"),
                                        reason, actor="test")
    issuing = await production_pki.crl(ISSUING)
    assert len(list(x509.load_der_x509_crl(issuing))) == 2
    _check(lint_crl(issuing, crl.CertificateRevocationListType.CRL))
    _check(lint_crl(await production_pki.crl(ROOT), crl.CertificateRevocationListType.ARL))


async def test_ocsp_responses_pass_pkilint(services: Services, production_pki: PkiService) -> None:
    issuing = x509.load_der_x509_certificate(await production_pki.ca_certificate(ISSUING))
    good = x509.load_der_x509_certificate(
        await _issue(services, production_pki, Profile.NATURAL_PERSON_SIGNING, PERSON))
    revoked = x509.load_der_x509_certificate(await _issue(services, production_pki, Profile.LEGAL_PERSON_SEAL, ORG))
    async with services.sessions() as session, session.begin():
        await production_pki.revoke(session, format(revoked.serial_number, "x"), "keyCompromise", actor="test")
    for cert, status in ((good, "good"), (revoked, "revoked")):
        reply = await production_pki.ocsp(ocsp_request(cert, issuing, nonce=b"0123456789abcdef"))
        assert reply.cert_statuses == (status,)
        _check(lint_ocsp_response(reply.der))


