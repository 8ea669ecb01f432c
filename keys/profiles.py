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
  section 4.2.2.2.1, id-pkix-ocsp-nocheck so clients do not ask for its own status (keys.ca gives it no AIA
  OCSP pointer either: a responder vouching for itself is a loop validators refuse).
- ETSI EN 319 412-5 (qcStatements of a profile configured as qualified, `CertificatePolicy.qualified`):
  QcCompliance (4.2.1), QcSSCD (4.2.2: the private key is in a qualified signature/seal creation device),
  QcType esign or eseal (4.2.3), QcPDS with the PKI disclosure statement's https URL and its language (4.3.4)
  and QcCClegislation "AZ" (4.2.4): qualified under Azerbaijani law, not under the EU's eIDAS Regulation, so
  no EU relying party mistakes the certificate for an EU qualified one. RFC 3739 pkixQCSyntax-v2 with the
  EN 319 412-1 semantics identifier stays on every subscriber certificate.
- Certificate policies (RFC 5280 section 4.2.1.4, ETSI EN 319 411-1 section 5.3 and EN 319 411-2 section
  5.3): the operator's national policy OID with a CPS pointer qualifier (id-qt-cps), plus the ETSI policy the
  profile meets: QCP-n-qscd (natural person, qualified, key in a QSCD) / QCP-l-qscd (legal person) when
  qualified, NCP (0.4.0.2042.1.1) otherwise. The issuing CA's own certificate lists every policy it issues
  under, so each subscriber policy stays in the valid policy tree (RFC 5280 section 6.1.3 (d)).
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
# ETSI EN 319 412-5 section 5 (id-etsi-qcs 0.4.0.1862.1) statements and the QcType values
ID_ETSI_QCS_QC_COMPLIANCE: Final = "0.4.0.1862.1.1"
ID_ETSI_QCS_QC_SSCD: Final = "0.4.0.1862.1.4"
ID_ETSI_QCS_QC_PDS: Final = "0.4.0.1862.1.5"
ID_ETSI_QCS_QC_TYPE: Final = "0.4.0.1862.1.6"
ID_ETSI_QCT_ESIGN: Final = "0.4.0.1862.1.6.1"
ID_ETSI_QCT_ESEAL: Final = "0.4.0.1862.1.6.2"
ID_ETSI_QCS_QC_CC_LEGISLATION: Final = "0.4.0.1862.1.7"
# ETSI EN 319 411-2 section 5.3 (qualified) and EN 319 411-1 section 5.3 (normalized) certificate policies
ID_QCP_NATURAL_QSCD: Final = "0.4.0.194112.1.2"
ID_QCP_LEGAL_QSCD: Final = "0.4.0.194112.1.3"
ID_NCP: Final = "0.4.0.2042.1.1"
PDS_LANGUAGE: Final = "en"
"""ISO 639-1 language of the PKI disclosure statement at the QcPDS URL (EN 319 412-5 4.3.4: one in English)."""

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
QUALIFIABLE_PROFILES: Final = (Profile.NATURAL_PERSON_SIGNING, Profile.LEGAL_PERSON_SEAL)
"""The profiles that may be issued as qualified certificates (EN 319 411-2): signatures and seals."""
DEFAULT_QUALIFIED: Final = frozenset(QUALIFIABLE_PROFILES)
"""Both signing profiles are qualified unless configured otherwise: this service exists to make signatures and
seals with the legal effect of a handwritten signature and a stamp under Azerbaijani law (the national trust
service's qualified certificates), and a validator classifies a signature as qualified (ETSI TS 119 172-4,
EN 319 102-1) only from these statements and policies. An operator whose signing keys are not in a qualified
device (QSCD: an HSM certified for it, not the software key store) must configure them as not qualified, since
QcSSCD and QCP-x-qscd would then claim what is not true."""


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


class _QcType(core.SequenceOf):  # type: ignore[misc]
    """EN 319 412-5 section 4.2.3: QcType ::= SEQUENCE OF OBJECT IDENTIFIER."""

    _child_spec = core.ObjectIdentifier


class _PdsLocation(core.Sequence):  # type: ignore[misc]
    """EN 319 412-5 section 4.3.4: PdsLocation ::= SEQUENCE { url IA5String, language PrintableString (SIZE(2)) }."""

    _fields = [("url", core.IA5String), ("language", core.PrintableString)]  # noqa: RUF012


class _PdsLocations(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _PdsLocation


class _QcCClegislation(core.SequenceOf):  # type: ignore[misc]
    """EN 319 412-5 section 4.2.4: QcCClegislation ::= SEQUENCE OF CountryName (PrintableString (SIZE (2)))."""

    _child_spec = core.PrintableString


@dataclass(frozen=True, slots=True)
class CertificatePolicy:
    """What the operator's certificate policy makes of each profile (module docstring): the national policy
    OID, where its CPS and the PKI disclosure statement are published, and which profiles are qualified."""

    policy_oid: str
    cps_url: str
    pds_url: str
    qualified: frozenset[Profile] = DEFAULT_QUALIFIED
    legislation: str = COUNTRY

    def __post_init__(self) -> None:
        if not self.qualified <= DEFAULT_QUALIFIED:
            names = ", ".join(sorted(p.value for p in self.qualified - DEFAULT_QUALIFIED))
            raise ValueError(f"only {', '.join(p.value for p in QUALIFIABLE_PROFILES)} can be qualified (got {names})")
        if len(self.legislation) != 2 or not self.legislation.isascii() or not self.legislation.isupper():
            raise ValueError("the legislation is an ISO 3166-1 alpha-2 country code (EN 319 412-5 section 4.2.4)")

    def is_qualified(self, profile: Profile) -> bool:
        return profile in self.qualified

    def etsi_policy(self, profile: Profile) -> str:
        """The ETSI policy a certificate of this profile is issued under (EN 319 411-2 / EN 319 411-1 5.3)."""
        if profile is Profile.NATURAL_PERSON_SIGNING and self.is_qualified(profile):
            return ID_QCP_NATURAL_QSCD
        if profile is Profile.LEGAL_PERSON_SEAL and self.is_qualified(profile):
            return ID_QCP_LEGAL_QSCD
        return ID_NCP

    def policies(self, profile: Profile) -> list[dict[str, Any]]:
        """certificatePolicies: the national policy with its CPS qualifier, then the ETSI one(s). The root has
        none; the issuing CA lists every policy of the profiles it issues."""
        national = {"policy_identifier": self.policy_oid, "policy_qualifiers": [
            {"policy_qualifier_id": "certification_practice_statement", "qualifier": self.cps_url}]}
        if profile is Profile.ISSUING_CA:
            etsi = list(dict.fromkeys(self.etsi_policy(p) for p in (*SUBSCRIBER_PROFILES, *SERVICE_PROFILES)))
        else:
            etsi = [self.etsi_policy(profile)]
        return [national, *({"policy_identifier": oid} for oid in etsi)]

    def qc_statements(self, profile: Profile) -> x509.Extension | None:
        """The qcStatements extension of a subscriber profile (module docstring), None for the others."""
        semantics = _SEMANTICS.get(profile)
        if semantics is None:
            return None
        items: list[dict[str, Any]] = []
        if self.is_qualified(profile):
            qc_type = ID_ETSI_QCT_ESIGN if profile is Profile.NATURAL_PERSON_SIGNING else ID_ETSI_QCT_ESEAL
            items += [
                {"statement_id": ID_ETSI_QCS_QC_COMPLIANCE},
                {"statement_id": ID_ETSI_QCS_QC_SSCD},
                {"statement_id": ID_ETSI_QCS_QC_TYPE, "statement_info": _QcType([qc_type])},
                {"statement_id": ID_ETSI_QCS_QC_PDS,
                 "statement_info": _PdsLocations([{"url": self.pds_url, "language": PDS_LANGUAGE}])},
                {"statement_id": ID_ETSI_QCS_QC_CC_LEGISLATION,
                 "statement_info": _QcCClegislation([self.legislation])},
            ]
        items.append({"statement_id": ID_QCS_PKIX_QC_SYNTAX_V2,
                      "statement_info": _SemanticsInformation({"semantics_identifier": semantics})})
        # asn1crypto has no spec for qcStatements; the extension value is its DER (RFC 3739 section 3.2.6),
        # never critical (EN 319 412-5 QCS-4.1-02)
        # as an opaque OCTET STRING value: whichever qcStatements spec another library registered in asn1crypto
        # (pyHanko's signers do) would otherwise reinterpret the value; the DER is the same either way
        return _extension(ID_PE_QC_STATEMENTS, core.ParsableOctetString(_QcStatements(items).dump()), critical=False)


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


def profile_extensions(profile: Profile, *, policy: CertificatePolicy) -> list[x509.Extension]:
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
    if profile is not Profile.ROOT_CA:  # EN 319 412-2 GEN-4.3.3-1: not critical
        extensions.append(_extension("certificate_policies", policy.policies(profile), critical=False))
    statements = policy.qc_statements(profile)
    if statements is not None:
        extensions.append(statements)
    return extensions
