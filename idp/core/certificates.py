"""ID-card authentication certificates: path validation to the configured national ID-card anchors, revocation by
OCSP with CRL fallback, the authentication profile's usage rules, and the card holder named by the subject.

What a certificate must satisfy, checked in this order (the first failure is the refusal, each its own
CardLoginError subclass):

1. It parses as X.509 DER (RFC 5280 section 4.1) -> CertificateMalformed.
2. It is not self-signed (a self-signed certificate that is no configured anchor: anyone can make one)
   -> CertificateSelfSigned.
3. The validation time lies within notBefore..notAfter (RFC 5280 section 6.1.3 (a)(2)), exactly, without the
   clock-skew tolerance revocation data gets -> CertificateNotYetValid / CertificateExpired.
4. keyUsage is present with digitalSignature (RFC 5280 section 4.2.1.3) and extendedKeyUsage is present with
   id-kp-clientAuth (RFC 5280 section 4.2.1.12); ETSI EN 319 412-2 section 4.3.2 gives an authentication
   certificate both. anyExtendedKeyUsage is not accepted in place of clientAuth, and a missing extension is not
   read as "any purpose": a card signing certificate (nonRepudiation) must not log anyone in -> CertificateWrongUsage.
5. The subject serialNumber is an ETSI EN 319 412-1 section 5.1.3 natural-person semantics identifier
   (`parse_holder`) -> CertificateMalformed (not in that syntax, or a PNOAZ number that is no FIN) /
   CertificateIdentifierUnsupported (no serialNumber, or a type other than PNO, IDC, PAS).
6. certificatePolicies holds one of the required policy OIDs, when any are required (RFC 5280 section 4.2.1.4)
   -> CertificatePolicyMissing.
7. RFC 5280 section 6 path validation by pyhanko-certvalidator on an explicit ValidationContext (STYLE habit 7):
   trust roots = the policy's anchors only; other certificates = the policy's intermediates and the ones presented
   with the certificate; validation time = `at`; fetching allowed for OCSP and CRLs but NOT for caIssuers (an
   unvalidated certificate's AIA URL is the presenter's choice; intermediates come from configuration or the
   presented chain); revocation: the card certificate needs an OCSP response or a CRL (`CRL_OR_OCSP_REQUIRED`:
   a card naming no revocation source is refused too, fail-closed), the CAs above it are checked when they name
   a source ("hard-fail"). With `soft_fail`, a path refused ONLY for want of revocation data is validated again
   with unreachable sources tolerated (the same fetchers: nothing is asked twice) and passes as revocation
   "soft-fail"; "good" always means the fail-closed pass succeeded. An OCSP response saying "unknown" (RFC 6960
   section 2.2: the responder does not know the certificate) never passes, not even soft; nor does a card naming
   no OCSP responder and no CRL distribution point (soft-fail tolerates an outage, not a card without a source).
   Failures map to CertificateRevoked (the card or a CA of its path), RevocationUnavailable (no usable answer,
   fail-closed) and CertificateUntrusted (no path, a bad signature, an expired CA, "unknown").

Caching ("revocation responses are cached within their validity"): a certificate that passed with revocation
"good" is remembered per (certificate fingerprint, presented intermediates) until the earliest of: the nextUpdate of
the OCSP responses and CRLs used, the certificate's notAfter, and now + `cache_seconds`; an OCSP answer without
nextUpdate (RFC 6960 section 4.2.2.1: newer information is always available) is not cached. A remembered
certificate is answered without network and without path validation while the clock is before that time and the
validation time lies in [checked time - skew, that time). Soft-fail verdicts are never remembered (the next login
asks again). The cache holds at most `CACHE_ENTRIES` certificates, dropping the least recently used.

Where revocation data comes from (keys.fetchers, the mechanism signing uses too): a certificate of Açar's own PKI
(`CardPolicy.local`: in development the built-in CA is the ID-card anchor) names the built-in OCSP responder (RFC 6960
appendix A.1) and CRL distribution points (RFC 5280 section 4.2.1.13), URLs the service often cannot reach itself
(the http port of an https issuer). Those are answered in process by the built-in responder and CRL publisher, the
same signed objects the /pki routes serve, and validated exactly as fetched ones (responder signature and
authorisation, RFC 6960 section 4.2.2.2; nonce, RFC 8954; CRL signature, RFC 5280 section 6.3). Every other URL is
fetched over HTTP with the policy's timeout and `FETCH_LIMITS`.

The OCSP URL override (`CardPolicy.ocsp_url`) replaces the URL of a card certificate that names an OCSP
responder other than Açar's own (a mirror or proxy of the national responder); a certificate naming none is
checked by its CRL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from asn1crypto import cms, crl, ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.authority import Authority
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    OCSPFetchError,
    OCSPValidationError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.fetchers import Fetchers
from pyhanko_certvalidator.fetchers.aiohttp_fetchers.util import LazySession
from pyhanko_certvalidator.fetchers.api import FetchLimits
from pyhanko_certvalidator.fetchers.common_utils import (
    FetchBudget,
    FetchKind,
    format_ocsp_request,
    process_ocsp_response_data,
)
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
from pyhanko_certvalidator.registry import CertificateRegistry

from idp.core.errors import (
    CertificateExpired,
    CertificateIdentifierUnsupported,
    CertificateMalformed,
    CertificateNotYetValid,
    CertificatePolicyMissing,
    CertificateRevoked,
    CertificateSelfSigned,
    CertificateUntrusted,
    CertificateWrongUsage,
    RevocationUnavailable,
)
from keys.fetchers import (
    FetchSource,
    LocalAnswers,
    LocalFirstCertificateFetcher,
    LocalFirstCrlFetcher,
    LocalFirstOcspFetcher,
    LocalPki,
)
from keys.identifiers import InvalidIdentifierFormat, normalize_fin

IDENTIFIER_TYPES: Final = frozenset({"PNO", "IDC", "PAS"})
"""ETSI EN 319 412-1 section 5.1.3 natural-person identifier types Açar maps to a person: PNO (national personal
number; for AZ the FIN), IDC (identity card number), PAS (passport number)."""

MAX_CERTIFICATE_BYTES: Final = 16384
"""A card authentication certificate is 1-2 KiB; anything far larger is refused before parsing."""

CLOCK_SKEW: Final = dt.timedelta(minutes=2)
"""pyhanko-certvalidator's time tolerance: how far an OCSP response's thisUpdate may lie after our clock (another
server's clock) and its nextUpdate before it. The card's own validity period is checked exactly (step 3)."""

CACHE_ENTRIES: Final = 10_000
"""Most certificates the verdict cache holds (least recently used dropped first)."""

FETCH_LIMITS: Final = FetchLimits(max_requests=8, max_cert_requests=0, max_aia_urls_per_object=2)
"""Network requests one verification may cost: an OCSP request or a CRL per certificate of a short path."""

HARD_FAIL: Final = RevocationCheckingPolicy(
    ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
    intermediate_ca_cert_rule=RevocationCheckingRule.CHECK_IF_DECLARED,
)
"""Fail-closed revocation (ETSI TS 119 172-4 check types): the card needs OCSP or a CRL, CAs when they name one."""

SOFT_FAIL: Final = RevocationCheckingPolicy(
    ee_certificate_rule=RevocationCheckingRule.CHECK_IF_DECLARED_SOFT,
    intermediate_ca_cert_rule=RevocationCheckingRule.CHECK_IF_DECLARED_SOFT,
)
"""ACAR_IDCARD_REVOCATION_SOFT_FAIL: a source that cannot be reached is tolerated (the caller audits it); an
answer that says revoked or unknown still refuses."""

_SERIAL_NUMBER_RE: Final = re.compile(r"([A-Z]{3})([A-Z]{2})-([0-9A-Za-z]{1,64})")
_SERIAL_NUMBER: Final = NameOID.SERIAL_NUMBER
_DER: Final = Encoding.DER


@dataclass(frozen=True, slots=True)
class CardHolder:
    """The person a card certificate names: the subject serialNumber parsed as an ETSI EN 319 412-1 section 5.1.3
    semantics identifier, and the subject's name attributes (ETSI EN 319 412-2 section 4.2.4)."""

    identifier_type: str  # "PNO" | "IDC" | "PAS"
    country: str  # ISO 3166-1 alpha-2, e.g. "AZ"
    number: str  # FIN (canonical upper case) for PNOAZ, else the document number (upper case)
    given_name: str | None
    surname: str | None
    common_name: str | None

    @property
    def fin(self) -> str | None:
        """The FIN when the identifier is an Azerbaijani personal number (PNOAZ), else None."""
        return self.number if self.identifier_type == "PNO" and self.country == "AZ" else None

    @property
    def identifier(self) -> str:
        """The identifier as the certificate writes it, canonical: e.g. "PNOAZ-5ABC123"."""
        return f"{self.identifier_type}{self.country}-{self.number}"


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """A card certificate that passed every check of `CertificateVerifier` at one validation time; only the
    verifier makes one (STYLE habit 8)."""

    der: bytes
    fingerprint: str  # SHA-256 of the DER, lowercase hex
    serial_number: int
    subject: str  # RFC 4514 string
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    holder: CardHolder
    revocation: str  # "good" | "soft-fail" (status unobtainable, accepted because policy.soft_fail)
    revocation_source: str  # "ocsp" | "crl" | "none"


@dataclass(frozen=True, slots=True)
class CardPolicy:
    """What a card certificate must chain to and satisfy; there is no permissive default (STYLE habit 9): the
    anchors are always given."""

    anchors: tuple[bytes, ...]  # DER trust anchors (national ID-card roots, or the built-in CA's root)
    intermediates: tuple[bytes, ...] = ()  # DER intermediate CAs offered for path building
    required_policies: frozenset[str] = frozenset()  # any one of these OIDs must be in certificatePolicies
    ocsp_url: str | None = None  # override of the certificate's AIA OCSP URL (not of Açar's own responder)
    soft_fail: bool = False  # accept when no revocation source answers (audited by the caller)
    fetch_timeout: float = 5.0
    cache_seconds: int = 3600  # upper bound for a cached verdict (OCSP nextUpdate may shorten it)
    local: LocalPki | None = None  # Açar's own PKI, its OCSP responder and CRLs answered in process (keys.fetchers)


@dataclass(slots=True)
class _Remembered:
    verified: VerifiedCertificate
    checked_at: dt.datetime
    expires: dt.datetime


@dataclass(frozen=True, slots=True)
class _Evidence:
    revocation: str  # "good" | "soft-fail"
    source: str  # "ocsp" | "crl" | "none": what answered for the card certificate itself
    until: dt.datetime | None  # the earliest nextUpdate of the revocation data used; None: not cacheable


def load_certificates(paths: Sequence[Path]) -> tuple[bytes, ...]:
    """The certificates in `paths` (PEM bundles of one or more certificates, or single DER files) as DER, in
    order; ValueError naming the file when one holds none or does not parse (a configuration error)."""
    result: list[bytes] = []
    for path in paths:
        data = Path(path).read_bytes()
        try:
            if b"-----BEGIN" in data:
                certificates = x509.load_pem_x509_certificates(data)
            else:
                certificates = [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise ValueError(f"{path}: no readable X.509 certificate ({exc})") from exc
        result.extend(c.public_bytes(_DER) for c in certificates)
    return tuple(result)


def parse_holder(certificate: x509.Certificate) -> CardHolder:
    """The card holder named by the subject: serialNumber per ETSI EN 319 412-1 section 5.1.3 ("PNO", "IDC" or
    "PAS", an ISO 3166-1 alpha-2 country, "-", the number); the PNOAZ number normalised as a FIN
    (keys.identifiers.normalize_fin). CertificateIdentifierUnsupported: no serialNumber or another identifier type;
    CertificateMalformed: several serialNumbers, not in that syntax, or a PNOAZ number that is no FIN."""
    subject = certificate.subject
    serials = subject.get_attributes_for_oid(_SERIAL_NUMBER)
    if not serials:
        raise CertificateIdentifierUnsupported("the certificate subject has no serialNumber (ETSI EN 319 412-1 "
                                               "section 5.1.3 identifier)")
    if len(serials) > 1:
        raise CertificateMalformed("the certificate subject has more than one serialNumber")
    value = _text(serials[0].value)
    match = _SERIAL_NUMBER_RE.fullmatch(value)
    if match is None:
        raise CertificateMalformed(f"the subject serialNumber {value!r} is not an ETSI EN 319 412-1 section 5.1.3 "
                                   "identifier (type, country, '-', number)")
    identifier_type, country, number = match.groups()
    if identifier_type not in IDENTIFIER_TYPES:
        raise CertificateIdentifierUnsupported(
            f"the subject serialNumber {value!r} is a {identifier_type} identifier; Açar identifies persons by "
            "PNO (personal number), IDC (identity card) or PAS (passport)")
    if identifier_type == "PNO" and country == "AZ":
        try:
            number = normalize_fin(number)
        except InvalidIdentifierFormat as exc:
            raise CertificateMalformed(f"the subject serialNumber {value!r} holds no FIN: {exc}") from exc
    else:
        number = number.upper()
    return CardHolder(identifier_type=identifier_type, country=country, number=number,
                      given_name=_first(subject, NameOID.GIVEN_NAME), surname=_first(subject, NameOID.SURNAME),
                      common_name=_first(subject, NameOID.COMMON_NAME))


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    return _text(attributes[0].value) if attributes else None


class CertificateVerifier:
    """Verifies card authentication certificates under one `CardPolicy` (see the module docstring); holds the
    HTTP session for OCSP and CRL requests (`aclose`) and the verdict cache. `clock` gives the current time."""

    def __init__(self, policy: CardPolicy, *, clock: Callable[[], dt.datetime]) -> None:
        if not policy.anchors:
            raise ValueError("a card policy needs at least one trust anchor")
        self.policy = policy
        self._clock = clock
        self._anchors = tuple(asn1_x509.Certificate.load(der) for der in _load_der_list(policy.anchors))
        self._anchor_ders = frozenset(policy.anchors)
        self._intermediates = tuple(asn1_x509.Certificate.load(der) for der in _load_der_list(policy.intermediates))
        self._session = LazySession()  # type: ignore[no-untyped-call]  # unannotated in pyhanko-certvalidator
        self._source = LocalAnswers(policy.local)
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], _Remembered] = OrderedDict()
        self.validations = 0
        """Path validations run (cache misses): tests and the bench read it."""

    @property
    def cached(self) -> int:
        """How many verdicts the cache holds."""
        return len(self._cache)

    async def aclose(self) -> None:
        """Close the HTTP session (made again when next needed)."""
        await self._session.close()  # type: ignore[no-untyped-call]  # unannotated in pyhanko-certvalidator

    async def verify(self, der: bytes, *, intermediates: Sequence[bytes] = (),
                     at: dt.datetime | None = None) -> VerifiedCertificate:
        """The verified certificate `der` (presented with `intermediates`, e.g. a TLS client's chain) at `at`
        (default: now); raises the CardLoginError subclass of the first failed check."""
        now = self._clock()
        moment = at or now
        if moment.utcoffset() is None:
            raise ValueError("the validation time must be timezone-aware")
        if not isinstance(der, bytes) or not der or len(der) > MAX_CERTIFICATE_BYTES:
            raise CertificateMalformed(f"a certificate of {len(der) if isinstance(der, bytes) else 0} bytes")
        fingerprint = hashlib.sha256(der).hexdigest()
        key = (fingerprint, tuple(sorted(hashlib.sha256(i).hexdigest() for i in intermediates)))
        remembered = self._cache.get(key)
        if remembered is not None:
            if now < remembered.expires and remembered.checked_at - CLOCK_SKEW <= moment < remembered.expires:
                self._cache.move_to_end(key)
                return remembered.verified
            if now >= remembered.expires:
                del self._cache[key]

        certificate = _parse(der)
        self._check_local(certificate, der, moment)
        holder = parse_holder(certificate)
        self._check_policies(certificate)
        evidence = await self._validate_path(der, intermediates, moment)
        verified = VerifiedCertificate(
            der=der, fingerprint=fingerprint, serial_number=certificate.serial_number,
            subject=certificate.subject.rfc4514_string(), issuer=certificate.issuer.rfc4514_string(),
            not_before=certificate.not_valid_before_utc, not_after=certificate.not_valid_after_utc, holder=holder,
            revocation=evidence.revocation, revocation_source=evidence.source)
        if evidence.revocation == "good" and evidence.until is not None:
            expires = min(evidence.until, verified.not_after, now + dt.timedelta(seconds=self.policy.cache_seconds))
            if expires > now:
                self._remember(key, _Remembered(verified, checked_at=moment, expires=expires), now)
        return verified

    def _remember(self, key: tuple[str, tuple[str, ...]], entry: _Remembered, now: dt.datetime) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_ENTRIES:
            for stale in [k for k, v in self._cache.items() if v.expires <= now]:
                del self._cache[stale]
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    # --- the local checks (no network) -----------------------------------------------------------------------

    def _check_local(self, certificate: x509.Certificate, der: bytes, moment: dt.datetime) -> None:
        if certificate.issuer == certificate.subject and der not in self._anchor_ders and _signs_itself(certificate):
            raise CertificateSelfSigned(f"the certificate {certificate.subject.rfc4514_string()!r} is self-signed")
        if moment < certificate.not_valid_before_utc:
            raise CertificateNotYetValid(f"the certificate is valid from {certificate.not_valid_before_utc.isoformat()}"
                                         f" (validation time {moment.isoformat()})")
        if moment > certificate.not_valid_after_utc:
            raise CertificateExpired(f"the certificate expired at {certificate.not_valid_after_utc.isoformat()} "
                                     f"(validation time {moment.isoformat()})")
        try:
            usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            raise CertificateWrongUsage("the certificate has no keyUsage extension (RFC 5280 section 4.2.1.3; an "
                                        "authentication certificate has digitalSignature)") from None
        if not usage.digital_signature:
            raise CertificateWrongUsage("keyUsage lacks digitalSignature (RFC 5280 section 4.2.1.3): not an "
                                        "authentication certificate")
        try:
            ekus = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise CertificateWrongUsage("the certificate has no extendedKeyUsage extension (RFC 5280 section "
                                        "4.2.1.12; an authentication certificate has id-kp-clientAuth)") from None
        if ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
            raise CertificateWrongUsage("extendedKeyUsage lacks id-kp-clientAuth (RFC 5280 section 4.2.1.12)")

    def _check_policies(self, certificate: x509.Certificate) -> None:
        required = self.policy.required_policies
        if not required:
            return
        try:
            policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
        except x509.ExtensionNotFound:
            raise CertificatePolicyMissing("the certificate has no certificatePolicies extension (RFC 5280 section "
                                           f"4.2.1.4); one of {sorted(required)} is required") from None
        present = {p.policy_identifier.dotted_string for p in policies}
        if not present & required:
            raise CertificatePolicyMissing(f"certificatePolicies {sorted(present)} hold none of {sorted(required)}")

    # --- path validation and revocation (pyhanko-certvalidator) ---------------------------------------------

    def _fetchers(self, leaf: asn1_x509.Certificate) -> Fetchers:
        """Fresh fetchers for one verification of `leaf` (they remember what they fetched, failures included, so a
        second pass asks nobody again) on the verifier's shared session."""
        budget = FetchBudget(FETCH_LIMITS)
        timeout = self.policy.fetch_timeout
        return Fetchers(
            ocsp_fetcher=_OcspFetcher(self._source, self._session, url=self.policy.ocsp_url, leaf=leaf.dump(),
                                      per_request_timeout=timeout, budget=budget),
            crl_fetcher=LocalFirstCrlFetcher(self._source, self._session, per_request_timeout=timeout, budget=budget),
            cert_fetcher=LocalFirstCertificateFetcher(self._source, self._session, per_request_timeout=timeout,
                                                      budget=budget),
        )

    def _context(self, presented: Sequence[asn1_x509.Certificate], moment: dt.datetime, fetchers: Fetchers,
                 revocation: RevocationCheckingPolicy) -> ValidationContext:
        """The explicit context of one pass; the registry gets no certificate fetcher, so no caIssuers URL is
        ever followed (path building uses the configured and presented certificates only)."""
        other = [*self._intermediates, *presented]
        return ValidationContext(
            trust_roots=list(self._anchors),
            other_certs=other,
            moment=moment,
            allow_fetching=True,
            revinfo_policy=CertRevTrustPolicy(revocation),
            time_tolerance=CLOCK_SKEW,
            certificate_registry=CertificateRegistry.build(other, cert_fetcher=None),
            fetchers=fetchers,
        )

    async def _validate_path(self, der: bytes, intermediates: Sequence[bytes], moment: dt.datetime) -> _Evidence:
        """RFC 5280 section 6 validation under HARD_FAIL; with `soft_fail`, a path refused only for want of
        revocation data is validated again under SOFT_FAIL (same fetchers: nothing is asked twice) and reported
        "soft-fail". So "good" always means the fail-closed check passed."""
        try:
            leaf = asn1_x509.Certificate.load(der)
            presented = [asn1_x509.Certificate.load(i) for i in intermediates]
        except ValueError as exc:
            raise CertificateMalformed(f"the certificate does not parse: {exc}") from exc
        fetchers = self._fetchers(leaf)
        self.validations += 1
        context = self._context(presented, moment, fetchers, HARD_FAIL)
        try:
            await _validate(leaf, context)
            return _evidence(leaf, context.ocsps, context.crls)
        except RevocationUnavailable:
            if not self.policy.soft_fail:
                raise
            if not leaf.ocsp_urls and not leaf.crl_distribution_points:
                # soft-fail tolerates an outage of the card's revocation sources, never a card that names none
                raise RevocationUnavailable("the certificate names no OCSP responder and no CRL distribution point "
                                            "(RFC 5280 sections 4.2.1.13 and 4.2.2.1)") from None
        soft = self._context(presented, moment, fetchers, SOFT_FAIL)
        await _validate(leaf, soft)
        return _Evidence("soft-fail", _evidence(leaf, soft.ocsps, soft.crls).source, None)


async def _validate(leaf: asn1_x509.Certificate, context: ValidationContext) -> None:
    """pyhanko-certvalidator's path validation, its failures mapped to the CardLoginError subclasses."""
    try:
        await CertificateValidator(leaf, validation_context=context).async_validate_path()
    except RevokedError as exc:
        which = "the certificate" if exc.is_ee_cert else "a CA certificate of its path"
        raise CertificateRevoked(f"{which} is revoked: {exc.failure_msg}") from exc
    except InsufficientRevinfoError as exc:
        if _ocsp_unknown(context.ocsps, leaf):
            raise CertificateUntrusted("the issuer's OCSP responder answered 'unknown' for the certificate "
                                       "(RFC 6960 section 2.2): the issuer does not vouch for it") from exc
        raise RevocationUnavailable(f"no usable OCSP response or CRL: {exc.failure_msg}") from exc
    except ExpiredError as exc:
        if exc.is_ee_cert:
            raise CertificateExpired(exc.failure_msg) from exc
        raise CertificateUntrusted(f"a CA certificate of the path has expired: {exc.failure_msg}") from exc
    except NotYetValidError as exc:
        if exc.is_ee_cert:
            raise CertificateNotYetValid(exc.failure_msg) from exc
        raise CertificateUntrusted(f"a CA certificate of the path is not valid yet: {exc.failure_msg}") from exc
    except InvalidCertificateError as exc:  # pyhanko-certvalidator's "self-signed" (no path from it)
        raise CertificateSelfSigned(exc.failure_msg) from exc
    except (PathBuildingError, PathValidationError, ValidationError) as exc:
        raise CertificateUntrusted(f"no valid certification path to an ID-card trust anchor: {exc}") from exc
    except AssertionError as exc:
        # pyhanko-certvalidator asserts that the issuer's key is of the signature algorithm's type
        # (sig_validate._validate_raw): a certificate signed with Ed25519 or Ed448 under the name of an EC or RSA
        # CA trips it. Anyone can make one (Web eID verifies the token with the certificate's own key first).
        raise CertificateUntrusted("no valid certification path to an ID-card trust anchor: the certificate's "
                                   "signature algorithm does not fit its issuer's key (RFC 5280 section "
                                   "6.1.3 (a)(1))") from exc
    except (ValueError, TypeError, KeyError) as exc:  # asn1crypto parses lazily: a field that does not decode
        raise CertificateMalformed(f"the certificate cannot be processed: {type(exc).__name__}: {exc}") from exc
    finally:
        await context.aclose()  # type: ignore[no-untyped-call]  # unannotated in pyhanko-certvalidator


def _load_der_list(ders: Iterable[bytes]) -> list[bytes]:
    """`ders` checked to be X.509 DER (ValueError on the first that is not: a configuration error)."""
    result = []
    for der in ders:
        x509.load_der_x509_certificate(der)
        result.append(der)
    return result


def _parse(der: bytes) -> x509.Certificate:
    try:
        certificate = x509.load_der_x509_certificate(der)
        certificate.extensions  # noqa: B018 - parses them: a malformed extension fails here, not later
        certificate.subject  # noqa: B018
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateMalformed(f"not an X.509 DER certificate (RFC 5280 section 4.1): {exc}") from exc
    return certificate


def _signs_itself(certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _single_responses(responses: Iterable[ocsp.OCSPResponse], leaf: asn1_x509.Certificate) -> list[Any]:
    """The SingleResponses about `leaf` (RFC 6960 section 4.1.1 CertID: its issuer's name hash and its serial)."""
    found: list[Any] = []
    for response in responses:
        try:
            basic = response.basic_ocsp_response
            if basic is None:
                continue
            for single in basic["tbs_response_data"]["responses"]:
                cert_id = single["cert_id"]
                name_hash = getattr(leaf.issuer, cert_id["hash_algorithm"]["algorithm"].native, None)
                if cert_id["serial_number"].native == leaf.serial_number and cert_id["issuer_name_hash"].native == \
                        name_hash:
                    found.append(single)
        except (ValueError, KeyError, TypeError):
            continue
    return found


def _ocsp_unknown(responses: Iterable[ocsp.OCSPResponse], leaf: asn1_x509.Certificate) -> bool:
    return any(single["cert_status"].name == "unknown" for single in _single_responses(responses, leaf))


def _evidence(leaf: asn1_x509.Certificate, responses: list[ocsp.OCSPResponse],
              crls: list[crl.CertificateList]) -> _Evidence:
    """What answered for the card certificate after a HARD_FAIL pass ("ocsp": a good OCSP answer about it; "crl":
    a CRL of its issuer), and until when the data used holds: the earliest nextUpdate of every OCSP response and CRL
    the context fetched (None, not cacheable, when the card's OCSP answer or a CRL has no nextUpdate)."""
    updates: list[dt.datetime] = []
    good = [s for s in _single_responses(responses, leaf) if s["cert_status"].name == "good"]
    issuer_crls = [c for c in crls if c["tbs_cert_list"]["issuer"] == leaf.issuer]
    source = "ocsp" if good else ("crl" if issuer_crls else "none")
    for single in good:
        if single["next_update"].native is None:
            return _Evidence("good", source, None)
    for response in responses:
        basic = response.basic_ocsp_response
        singles = basic["tbs_response_data"]["responses"] if basic is not None else ()
        updates.extend(s["next_update"].native for s in singles if s["next_update"].native is not None)
    for revocation_list in crls:
        next_update = revocation_list["tbs_cert_list"]["next_update"].native
        if next_update is None:
            return _Evidence("good", source, None)
        updates.append(next_update)
    return _Evidence("good", source, min(updates) if updates else None)


class _OcspFetcher(LocalFirstOcspFetcher):
    """The shared local-first OCSP fetcher (nonce requested, RFC 8954; Açar's own responder answered in process),
    sent to `url` instead of the card certificate's AIA URL when the policy overrides it: the override applies to
    the card (`leaf`, DER) and to other responders than Açar's own only; the CAs of its path ask their own
    (RFC 6960 appendix A.1 request over HTTP POST)."""

    def __init__(self, source: FetchSource, session: LazySession, *, url: str | None, per_request_timeout: float,
                 budget: FetchBudget, leaf: bytes) -> None:
        super().__init__(source, session, per_request_timeout=per_request_timeout, budget=budget)
        self._url = url
        self._leaf = leaf

    async def _remote(self, cert: asn1_x509.Certificate | cms.AttributeCertificateV2, authority: Authority) -> Any:
        if self._url is None or cert.dump() != self._leaf:
            return await super()._remote(cert, authority)
        if (reason := await self._source.refused(self._url)) is not None:
            raise OCSPFetchError(f"OCSP request not sent: {reason}")
        request = format_ocsp_request(cert, authority, certid_hash_algo=self.certid_hash_algo,
                                      request_nonces=self.request_nonces)
        self._charge(FetchKind.OCSP)
        try:
            async with self.get_session().post(
                url=self._url, data=request.dump(), raise_for_status=True,
                timeout=aiohttp.ClientTimeout(total=self.per_request_timeout),
                headers={"Accept": "application/ocsp-response", "Content-Type": "application/ocsp-request",
                         "User-Agent": self.user_agent},
            ) as response:
                body = await response.read()
            return process_ocsp_response_data(body, ocsp_request=request, ocsp_url=self._url)
        except (aiohttp.ClientError, TimeoutError, OCSPValidationError) as exc:
            raise OCSPFetchError(f"Failed to fetch OCSP response from {self._url}") from exc
