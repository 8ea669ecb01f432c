"""Certificate revocation lists (RFC 5280 section 5), one per CA, DER, signed through the CA's key handle.

- Section 5.1.2.1: version v2, because the CRL carries extensions.
- Section 5.1.2.4/5.1.2.5: thisUpdate and nextUpdate (nextUpdate is mandatory for conforming CAs); a new CRL
  is published on every revocation and once the newest one has used up half of its lifetime, so relying
  parties always find one well before its nextUpdate.
- Section 5.1.2.6: "When there are no revoked certificates, the revoked certificates list MUST be absent."
- Section 5.2.1/5.2.3: authorityKeyIdentifier and a monotonically increasing cRLNumber (both required). The
  number is the thisUpdate's POSIX time in seconds, or one more than the highest stored when that is higher
  (`next_crl_number`): numbers keep increasing after a database is restored to an earlier point, where "highest
  stored + 1" would hand out again numbers already published with other content (docs/deployment.md, Backup and
  restore).
- Section 5.3.1: the reasonCode entry extension; "CRL issuers ... SHOULD omit the reasonCode entry extension
  rather than using the unspecified (0) reasonCode value", so unspecified revocations carry none.
- Revocation stays known after expiry, so a signature made before a revocation can be told from one made
  after it years later (ETSI EN 319 411-1 section 6.3.10, status information after expiry; RFC 5280 section
  3.3 only requires an entry until the certificate expires): an entry is never dropped, and every CRL we sign
  carries the ExpiredCertsOnCRL extension (ITU-T X.509 section 9.6.2.9, OID 2.5.29.60, GeneralizedTime, not
  critical) set to the CA certificate's notBefore: revoked certificates that expired at or after it, i.e. all
  of them, stay listed.

A CA whose key is kept offline (a national root) has its CRLs signed at the offline ceremony and imported
(`verify_crl`, `CrlPublisher.store_imported`): the CRL must name the CA as issuer, verify with the CA
certificate's key, carry a cRLNumber higher than the newest one stored (section 5.2.3) and a nextUpdate
still ahead. Such CRLs are served as they are and never re-signed here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from asn1crypto import core, x509
from asn1crypto import crl as asn1_crl
from cryptography import x509 as cx509
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keys.errors import InvalidCertificateRequest, InvalidCrl
from keys.interfaces import KeyHandle
from keys.models import CRLRecord, IssuedCertificate
from keys.x509 import key_identifier, sign_tbs, x509_time
from storage.base import utcnow

DEFAULT_CRL_LIFETIME: Final = dt.timedelta(hours=24)
"""From thisUpdate to nextUpdate; a fresh CRL is published at half of it (every 12 hours by default)."""

IMPORT_CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""How far in the future an imported CRL's thisUpdate may lie (the offline machine's clock runs ahead)."""

CRL_EXPIRY_WARNING_FRACTION: Final = 4
"""An offline CA's CRL is reported as expiring once less than 1/4 of its validity remains."""

ID_CE_EXPIRED_CERTS_ON_CRL: Final = "2.5.29.60"
"""ITU-T X.509 (10/2019) section 9.6.2.9 expiredCertsOnCRL (ETSI EN 319 411-1 refers to it)."""

MAX_CRL_NUMBER: Final = 2**63 - 1
"""The largest cRLNumber stored (BIGINT); RFC 5280 allows 20 octets, ceremonies count from 1."""


def next_crl_number(highest: int | None, this_update: dt.datetime) -> int:
    """The cRLNumber of the next CRL a CA signs here (RFC 5280 section 5.2.3, "monotonically increasing"): the
    thisUpdate in POSIX seconds, or the highest stored + 1 when that is higher (several CRLs in one second)."""
    return max((highest or 0) + 1, int(this_update.timestamp()))


REASON_CODES: Final[dict[str, int]] = {
    # RFC 5280 section 5.3.1 CRLReason: the names we accept and store, and their ENUMERATED values
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3, "superseded": 4,
    "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10,
}


def parse_reason(value: str) -> str:
    """A revocation reason by its RFC 5280 name (case-insensitive), or InvalidCertificateRequest listing them."""
    for name in REASON_CODES:
        if name.lower() == value.strip().lower():
            return name
    raise InvalidCertificateRequest(
        f"unknown revocation reason {value!r}; RFC 5280 section 5.3.1 names: {', '.join(REASON_CODES)}")


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One entry of the revokedCertificates list."""

    serial: int
    revoked_at: dt.datetime
    reason: str  # an RFC 5280 name from REASON_CODES


async def build_crl(
    *,
    issuer: x509.Certificate,
    handle: KeyHandle,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    revoked: Sequence[RevokedEntry],
    expired_certs_on_crl: dt.datetime | None = None,
) -> bytes:
    """Encode and sign a CRL of `issuer` (the CA certificate whose key `handle` is). Returns the DER.

    `expired_certs_on_crl`: the ExpiredCertsOnCRL date (module docstring); None leaves the extension out.
    """
    aki = issuer.key_identifier or key_identifier(issuer.public_key)
    tbs: dict[str, Any] = {
        "version": "v2",
        "issuer": issuer.subject,
        "this_update": x509_time(this_update),
        "next_update": x509_time(next_update),
        "crl_extensions": [
            {"extn_id": "authority_key_identifier", "critical": False, "extn_value": {"key_identifier": aki}},
            {"extn_id": "crl_number", "critical": False, "extn_value": number},
        ],
    }
    if expired_certs_on_crl is not None:  # asn1crypto has no spec for it: the value is its DER
        tbs["crl_extensions"].append({
            "extn_id": ID_CE_EXPIRED_CERTS_ON_CRL, "critical": False,
            "extn_value": core.GeneralizedTime(expired_certs_on_crl.astimezone(dt.UTC).replace(microsecond=0)).dump()})
    if revoked:
        entries = []
        for entry in sorted(revoked, key=lambda e: (e.revoked_at, e.serial)):
            item: dict[str, Any] = {"user_certificate": entry.serial, "revocation_date": x509_time(entry.revoked_at)}
            if entry.reason != "unspecified":
                item["crl_entry_extensions"] = [
                    {"extn_id": "crl_reason", "critical": False, "extn_value": REASON_CODES[entry.reason]}]
            entries.append(item)
        tbs["revoked_certificates"] = entries
    tbs_cert_list = asn1_crl.TbsCertList(tbs)
    algorithm, signature = await sign_tbs(handle, tbs_cert_list, algorithm_field="signature")
    crl = asn1_crl.CertificateList(
        {"tbs_cert_list": tbs_cert_list, "signature_algorithm": algorithm, "signature": signature})
    return bytes(crl.dump())


@dataclass(frozen=True, slots=True)
class VerifiedCrl:
    """An imported CRL that `verify_crl` accepted; only this type is stored as the CA's CRL."""

    der: bytes
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    revoked: tuple[RevokedEntry, ...]


def _load_crl(data: bytes) -> cx509.CertificateRevocationList:
    try:
        if data.lstrip().startswith(b"-----"):
            return cx509.load_pem_x509_crl(data)
        return cx509.load_der_x509_crl(data)
    except ValueError:
        raise InvalidCrl("the file is not a DER or PEM X.509 CRL") from None


def _entry_reason(entry: cx509.RevokedCertificate) -> str:
    """The RFC 5280 reason name of a CRL entry; absent (or removeFromCRL, a delta-CRL value) reads unspecified."""
    try:
        reason = entry.extensions.get_extension_for_class(cx509.CRLReason).value.reason
    except cx509.ExtensionNotFound:
        return "unspecified"
    return reason.value if reason.value in REASON_CODES else "unspecified"


def _check_scope_and_extensions(crl: cx509.CertificateRevocationList) -> None:
    """A complete, direct CRL whose critical extensions we all process (RFC 5280 sections 5.2, 5.2.4, 5.2.5)."""
    present = {extension.oid for extension in crl.extensions}
    if cx509.oid.ExtensionOID.DELTA_CRL_INDICATOR in present:
        raise InvalidCrl("the CRL is a delta CRL (RFC 5280 section 5.2.4); import the complete CRL")
    if cx509.oid.ExtensionOID.ISSUING_DISTRIBUTION_POINT in present:  # partial or indirect: not the whole CRL
        raise InvalidCrl("the CRL has an issuingDistributionPoint (RFC 5280 section 5.2.5); import a complete, "
                         "direct CRL")
    known = {cx509.oid.ExtensionOID.CRL_NUMBER, cx509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
             cx509.oid.ExtensionOID.ISSUER_ALTERNATIVE_NAME, cx509.oid.ExtensionOID.AUTHORITY_INFORMATION_ACCESS}
    unknown = [e.oid.dotted_string for e in crl.extensions if e.critical and e.oid not in known]
    if unknown:
        raise InvalidCrl(f"the CRL has critical extensions this service does not process: {', '.join(unknown)}")


def verify_crl(data: bytes, *, ca_name: str, issuer_der: bytes, current_number: int | None,
               now: dt.datetime) -> VerifiedCrl:
    """Check a CRL signed elsewhere for the CA whose certificate is `issuer_der` (see module docstring).

    Raises InvalidCrl with one line saying what is wrong: not a CRL, another issuer, a signature that does not
    verify with the CA certificate's key, a delta CRL, no cRLNumber or one not above `current_number`, no
    nextUpdate or one already past, a thisUpdate in the future.
    """
    crl = _load_crl(data)
    issuer = cx509.load_der_x509_certificate(issuer_der)
    if crl.issuer != issuer.subject:
        raise InvalidCrl(f"the CRL is issued by {crl.issuer.rfc4514_string()!r}, "
                         f"not by the {ca_name} CA {issuer.subject.rfc4514_string()!r}")
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]  # a CA key: EC, RSA or EdDSA
    except (ValueError, TypeError, CryptographyUnsupportedAlgorithm):
        signed = False
    if not signed:
        raise InvalidCrl(f"the CRL signature does not verify with the {ca_name} CA certificate's key")
    _check_scope_and_extensions(crl)
    try:
        number = crl.extensions.get_extension_for_class(cx509.CRLNumber).value.crl_number
    except cx509.ExtensionNotFound:
        raise InvalidCrl("the CRL has no cRLNumber extension (RFC 5280 section 5.2.3 requires one)") from None
    if number > MAX_CRL_NUMBER:
        raise InvalidCrl(f"the CRL number {number} is above {MAX_CRL_NUMBER}, the largest this service stores")
    if current_number is not None and number <= current_number:
        raise InvalidCrl(f"the CRL number {number} is not higher than that of the current {ca_name} CRL "
                         f"({current_number})")
    this_update, next_update = crl.last_update_utc, crl.next_update_utc
    if next_update is None:
        raise InvalidCrl("the CRL has no nextUpdate (RFC 5280 section 5.1.2.5)")
    if next_update <= now:
        raise InvalidCrl(f"the CRL expired at {next_update:%Y-%m-%d %H:%M:%S}Z (its nextUpdate); sign a new one")
    if this_update > now + IMPORT_CLOCK_SKEW:
        raise InvalidCrl(f"the CRL's thisUpdate {this_update:%Y-%m-%d %H:%M:%S}Z is in the future")
    revoked = tuple(RevokedEntry(entry.serial_number, entry.revocation_date_utc, _entry_reason(entry))
                    for entry in crl)
    return VerifiedCrl(der=crl.public_bytes(Encoding.DER), number=number, this_update=this_update,
                       next_update=next_update, revoked=revoked)


class CrlPublisher:
    """Stores and finds the CRLs of each CA; the caller holds the CA row lock (see keys.pki)."""

    def __init__(self, *, lifetime: dt.timedelta = DEFAULT_CRL_LIFETIME,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        if lifetime <= dt.timedelta(0):
            raise ValueError("the CRL lifetime must be positive")
        self.lifetime = lifetime
        self._clock = clock

    async def newest(self, session: AsyncSession, ca_name: str) -> CRLRecord | None:
        result = await session.execute(
            select(CRLRecord).where(CRLRecord.ca_name == ca_name).order_by(CRLRecord.number.desc()).limit(1))
        return result.scalars().first()

    async def store_imported(self, session: AsyncSession, ca_name: str, crl: VerifiedCrl) -> CRLRecord:
        """Store a CRL signed offline (checked by `verify_crl`); from now on it is the CA's newest CRL."""
        record = CRLRecord(ca_name=ca_name, number=crl.number, this_update=crl.this_update,
                           next_update=crl.next_update, der=crl.der)
        session.add(record)
        await session.flush()
        return record

    def expiring(self, record: CRLRecord | None) -> bool:
        """True when there is no CRL or the newest is in the last quarter of its validity (or past it)."""
        if record is None:
            return True
        quarter = (record.next_update - record.this_update) / CRL_EXPIRY_WARNING_FRACTION
        return self._clock() >= record.next_update - quarter

    def due(self, record: CRLRecord | None) -> bool:
        """True when there is no CRL yet or the newest has used up half of its lifetime."""
        if record is None:
            return True
        half = (record.next_update - record.this_update) / 2
        return self._clock() >= record.this_update + half

    async def publish(self, session: AsyncSession, ca_name: str, *, issuer: x509.Certificate,
                      handle: KeyHandle) -> CRLRecord:
        """Build, sign and store the next CRL of the CA: every certificate it issued and revoked, expired or not,
        with ExpiredCertsOnCRL set to the CA certificate's notBefore (module docstring)."""
        now = self._clock().replace(microsecond=0)
        highest = (await session.execute(
            select(func.max(CRLRecord.number)).where(CRLRecord.ca_name == ca_name))).scalar_one_or_none()
        number = next_crl_number(highest, now)
        rows = (await session.execute(
            select(IssuedCertificate.serial_hex, IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason)
            .where(IssuedCertificate.issuer_ca == ca_name, IssuedCertificate.revoked_at.is_not(None))
        )).all()
        revoked = [RevokedEntry(int(serial, 16), revoked_at, reason or "unspecified")
                   for serial, revoked_at, reason in rows if revoked_at is not None]
        next_update = now + self.lifetime
        der = await build_crl(issuer=issuer, handle=handle, number=number, this_update=now,
                              next_update=next_update, revoked=revoked,
                              expired_certs_on_crl=issuer.not_valid_before)
        record = CRLRecord(ca_name=ca_name, number=number, this_update=now, next_update=next_update, der=der)
        session.add(record)
        await session.flush()
        return record
