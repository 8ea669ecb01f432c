"""Certificate profiles after ETSI EN 319 412 and RFC 5280: who a certificate names and what it may do.

- ETSI EN 319 412-1 section 5.1.3: the natural-person subject serialNumber uses the semantics identifier
  form "PNO" + ISO 3166 country code + "-" + national number ("PNOAZ-<FIN>"); the legal-person
  organizationIdentifier uses "NTR" + country + "-" + registration number ("NTRAZ-<VÖEN>"). The qcStatement
  id-qcs-pkixQCSyntax-v2 (RFC 3739) declares which of the two semantics the subject uses.
- ETSI EN 319 412-2 (natural persons): countryName, givenName, surname, serialNumber, commonName; a signing
  certificate limits keyUsage to nonRepudiation (contentCommitment), critical; an authentication certificate
  has digitalSignature and the clientAuth extended key usage; certificatePolicies is present.
- ETSI EN 319 412-3 (legal persons): countryName, organizationName, organizationIdentifier, commonName; a
  seal carries nonRepudiation.
- RFC 3161 section 2.3 / ETSI EN 319 422: the TSA certificate has exactly one, critical, extended key usage:
  id-kp-timeStamping.
- RFC 6960 section 4.2.2.2: the delegated OCSP responder certificate has id-kp-OCSPSigning and, per
  section 4.2.2.2.1, id-pkix-ocsp-nocheck so clients do not ask for its own status.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from asn1crypto import core, x509

from keys.errors import InvalidCertificateRequest
from keys.identifiers import InvalidIdentifierFormat, normalize_fin, normalize_voen
from keys.x509 import build_name

COUNTRY: Final = "AZ"
FIN_PREFIX: Final = "PNOAZ-"
VOEN_PREFIX: Final = "NTRAZ-"

# ETSI EN 319 412-1 section 5.1.3 semantics identifiers, declared in an RFC 3739 pkixQCSyntax-v2 statement.
ID_QCS_PKIX_QC_SYNTAX_V2: Final = "1.3.6.1.5.5.7.11.2"
ID_ETSI_QCS_SEMANTICS_ID_NATURAL: Final = "0.4.0.194121.1.1"
ID_ETSI_QCS_SEMANTICS_ID_LEGAL: Final = "0.4.0.194121.1.2"
ID_PE_QC_STATEMENTS: Final = "1.3.6.1.5.5.7.1.3"

_UB_NAME = 64  # RFC 5280 appendix A: ub-common-name and ub-organization-name; we apply it to every name


class Profile(enum.StrEnum):
    """The certificate profiles of the hierarchy: subscribers' (the first three), our services', the CAs'."""

    NATURAL_PERSON_SIGNING = "natural-person-signing"
    LEGAL_PERSON_SEAL = "legal-person-seal"
    AUTHENTICATION = "authentication"
    TSA = "tsa"
    OCSP_RESPONDER = "ocsp-responder"
    ROOT_CA = "root-ca"
    ISSUING_CA = "issuing-ca"


SUBSCRIBER_PROFILES: Final = (Profile.NATURAL_PERSON_SIGNING, Profile.LEGAL_PERSON_SEAL, Profile.AUTHENTICATION)
SERVICE_PROFILES: Final = (Profile.OCSP_RESPONDER, Profile.TSA)


def _clean_name(value: str | None, what: str) -> str:
    text = unicodedata.normalize("NFC", (value or "").strip())
    if not text:
        raise InvalidCertificateRequest(f"{what} must not be empty")
    if len(text) > _UB_NAME:
        raise InvalidCertificateRequest(f"{what} must be at most {_UB_NAME} characters (RFC 5280 upper bound)")
    if any(unicodedata.category(ch).startswith("C") for ch in text):
        raise InvalidCertificateRequest(f"{what} must not contain control characters")
    return text


def _identifier(normalize: Callable[[str | None], str], value: str | None) -> str:
    """A FIN or VÖEN by the rules of keys.identifiers, refused as an invalid certificate request."""
    try:
        return normalize(value)
    except InvalidIdentifierFormat as exc:
        raise InvalidCertificateRequest(str(exc)) from None


@dataclass(frozen=True, slots=True)
class NaturalPerson:
    """A validated natural-person subject (ETSI EN 319 412-2 section 4.2.4)."""

    fin: str
    given_name: str
    surname: str
    common_name: str

    @classmethod
    def create(cls, *, fin: str | None, given_name: str | None, surname: str | None,
               common_name: str | None = None) -> NaturalPerson:
        given = _clean_name(given_name, "given name")
        family = _clean_name(surname, "surname")
        cn = _clean_name(common_name or f"{given} {family}", "common name")
        return cls(fin=_identifier(normalize_fin, fin), given_name=given, surname=family, common_name=cn)

    def name(self) -> x509.Name:
        return build_name([
            ("country_name", COUNTRY), ("surname", self.surname), ("given_name", self.given_name),
            ("serial_number", FIN_PREFIX + self.fin), ("common_name", self.common_name),
        ])


@dataclass(frozen=True, slots=True)
class LegalPerson:
    """A validated legal-person subject (ETSI EN 319 412-3 section 4.2.1)."""

    voen: str
    organization: str
    common_name: str

    @classmethod
    def create(cls, *, voen: str | None, organization: str | None, common_name: str | None = None) -> LegalPerson:
        org = _clean_name(organization, "organization name")
        cn = _clean_name(common_name or org, "common name")
        return cls(voen=_identifier(normalize_voen, voen), organization=org, common_name=cn)

    def name(self) -> x509.Name:
        return build_name([
            ("country_name", COUNTRY), ("organization_name", self.organization),
            ("organization_identifier", VOEN_PREFIX + self.voen), ("common_name", self.common_name),
        ])


@dataclass(frozen=True, slots=True)
class ServiceSubject:
    """The subject of one of our own service certificates (CA, OCSP responder, TSA)."""

    organization: str
    common_name: str

    def name(self) -> x509.Name:
        return build_name([("country_name", COUNTRY), ("organization_name", self.organization),
                           ("common_name", self.common_name)])


Subject = NaturalPerson | LegalPerson | ServiceSubject


class _SemanticsInformation(core.Sequence):  # type: ignore[misc]  # asn1crypto is untyped
    """RFC 3739 section 3.2.6.1 SemanticsInformation (only the identifier)."""

    _fields = [("semantics_identifier", core.ObjectIdentifier, {"optional": True})]  # noqa: RUF012


class _QcStatement(core.Sequence):  # type: ignore[misc]
    _fields = [("statement_id", core.ObjectIdentifier), ("statement_info", core.Any, {"optional": True})]  # noqa: RUF012


class _QcStatements(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _QcStatement


def _extension(extn_id: str, value: Any, *, critical: bool) -> x509.Extension:
    return x509.Extension({"extn_id": extn_id, "critical": critical, "extn_value": value})


def _semantics_statement(semantics: str) -> x509.Extension:
    statements = _QcStatements([
        {"statement_id": ID_QCS_PKIX_QC_SYNTAX_V2,
         "statement_info": _SemanticsInformation({"semantics_identifier": semantics})},
    ])
    # asn1crypto has no spec for qcStatements; the extension value is its DER (RFC 3739 section 3.2.6), given as
    # an octet string that may be parsed, so it also builds once pyHanko registered a spec of its own for the OID
    # (pyhanko.sign.ades.qualified_asn1, loaded by the signing service)
    return _extension(ID_PE_QC_STATEMENTS, core.ParsableOctetString(statements.dump()), critical=False)


def check_subject(profile: Profile, subject: Subject) -> None:
    """The subject type each profile certifies."""
    expected: type[Any] = {
        Profile.NATURAL_PERSON_SIGNING: NaturalPerson, Profile.AUTHENTICATION: NaturalPerson,
        Profile.LEGAL_PERSON_SEAL: LegalPerson, Profile.TSA: ServiceSubject, Profile.OCSP_RESPONDER: ServiceSubject,
        Profile.ROOT_CA: ServiceSubject, Profile.ISSUING_CA: ServiceSubject,
    }[profile]
    if not isinstance(subject, expected):
        raise InvalidCertificateRequest(f"profile {profile.value} certifies a {expected.__name__} subject")


_KEY_USAGE: Final[dict[Profile, frozenset[str]]] = {
    Profile.NATURAL_PERSON_SIGNING: frozenset({"non_repudiation"}),  # EN 319 412-2 4.3.2: contentCommitment
    Profile.LEGAL_PERSON_SEAL: frozenset({"non_repudiation"}),
    Profile.AUTHENTICATION: frozenset({"digital_signature"}),
    Profile.TSA: frozenset({"digital_signature"}),
    Profile.OCSP_RESPONDER: frozenset({"digital_signature"}),
    Profile.ROOT_CA: frozenset({"key_cert_sign", "crl_sign"}),
    Profile.ISSUING_CA: frozenset({"key_cert_sign", "crl_sign"}),
}
_EXTENDED_KEY_USAGE: Final[dict[Profile, tuple[str, bool]]] = {  # purpose, critical
    Profile.AUTHENTICATION: ("client_auth", False),
    Profile.TSA: ("time_stamping", True),  # RFC 3161 section 2.3: the only purpose, and critical
    Profile.OCSP_RESPONDER: ("ocsp_signing", False),
}
_SEMANTICS: Final[dict[Profile, str]] = {
    Profile.NATURAL_PERSON_SIGNING: ID_ETSI_QCS_SEMANTICS_ID_NATURAL,
    Profile.AUTHENTICATION: ID_ETSI_QCS_SEMANTICS_ID_NATURAL,
    Profile.LEGAL_PERSON_SEAL: ID_ETSI_QCS_SEMANTICS_ID_LEGAL,
}


def profile_extensions(profile: Profile, *, policy_oid: str) -> list[x509.Extension]:
    """The profile-specific extensions: basicConstraints, keyUsage, extended key usage, ocsp-nocheck,
    policies, qcStatements. Key identifiers, AIA and CRL distribution points are the issuer's (keys.ca)."""
    extensions = []
    if profile is Profile.ROOT_CA:  # RFC 5280 section 4.2.1.9: critical in CA certificates
        extensions.append(_extension("basic_constraints", {"ca": True}, critical=True))
    elif profile is Profile.ISSUING_CA:  # issues end-entity certificates only
        extensions.append(_extension("basic_constraints", {"ca": True, "path_len_constraint": 0}, critical=True))
    # RFC 5280 section 4.2.1.3: "conforming CAs SHOULD mark this extension as critical"
    extensions.append(_extension("key_usage", x509.KeyUsage(set(_KEY_USAGE[profile])), critical=True))
    if profile in _EXTENDED_KEY_USAGE:
        purpose, critical = _EXTENDED_KEY_USAGE[profile]
        extensions.append(_extension("extended_key_usage", [purpose], critical=critical))
    if profile is Profile.OCSP_RESPONDER:  # RFC 6960 section 4.2.2.2.1
        extensions.append(_extension("ocsp_no_check", core.Null(), critical=False))
    if profile is not Profile.ROOT_CA:
        extensions.append(_extension("certificate_policies", [{"policy_identifier": policy_oid}], critical=False))
    if profile in _SEMANTICS:
        extensions.append(_semantics_statement(_SEMANTICS[profile]))
    return extensions
