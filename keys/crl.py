"""Certificate revocation lists (RFC 5280 section 5), one per CA, DER, signed through the CA's key handle.

- Section 5.1.2.1: version v2, because the CRL carries extensions.
- Section 5.1.2.4/5.1.2.5: thisUpdate and nextUpdate (nextUpdate is mandatory for conforming CAs); a new CRL
  is published on every revocation and once the newest one has used up half of its lifetime, so relying
  parties always find one well before its nextUpdate.
- Section 5.1.2.6: "When there are no revoked certificates, the revoked certificates list MUST be absent."
- Section 5.2.1/5.2.3: authorityKeyIdentifier and a monotonically increasing cRLNumber (both required).
- Section 5.3.1: the reasonCode entry extension; "CRL issuers ... SHOULD omit the reasonCode entry extension
  rather than using the unspecified (0) reasonCode value", so unspecified revocations carry none.
- Section 3.3: an entry stays on the CRL at least until the certificate expires; expired ones are dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from asn1crypto import crl as asn1_crl
from asn1crypto import x509
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keys.errors import InvalidCertificateRequest
from keys.interfaces import KeyHandle
from keys.models import CRLRecord, IssuedCertificate
from keys.x509 import key_identifier, sign_tbs, x509_time
from storage.base import utcnow

DEFAULT_CRL_LIFETIME: Final = dt.timedelta(hours=24)
"""From thisUpdate to nextUpdate; a fresh CRL is published at half of it (every 12 hours by default)."""

REVOCATION_REASONS: Final[dict[str, str]] = {
    # RFC 5280 section 5.3.1 CRLReason names -> asn1crypto's names of the same values
    "unspecified": "unspecified",  # 0
    "keyCompromise": "key_compromise",  # 1
    "cACompromise": "ca_compromise",  # 2
    "affiliationChanged": "affiliation_changed",  # 3
    "superseded": "superseded",  # 4
    "cessationOfOperation": "cessation_of_operation",  # 5
    "certificateHold": "certificate_hold",  # 6
    "privilegeWithdrawn": "privilege_withdrawn",  # 9
    "aACompromise": "aa_compromise",  # 10
}

REASON_CODES: Final[dict[str, int]] = {
    "unspecified": 0, "keyCompromise": 1, "cACompromise": 2, "affiliationChanged": 3, "superseded": 4,
    "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9, "aACompromise": 10,
}


def parse_reason(value: str) -> str:
    """A revocation reason by its RFC 5280 name (case-insensitive), or InvalidCertificateRequest listing them."""
    for name in REVOCATION_REASONS:
        if name.lower() == value.strip().lower():
            return name
    raise InvalidCertificateRequest(
        f"unknown revocation reason {value!r}; RFC 5280 section 5.3.1 names: {', '.join(REVOCATION_REASONS)}")


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One entry of the revokedCertificates list."""

    serial: int
    revoked_at: dt.datetime
    reason: str  # an RFC 5280 name from REVOCATION_REASONS


def build_crl(
    *,
    issuer: x509.Certificate,
    handle: KeyHandle,
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    revoked: Sequence[RevokedEntry],
) -> bytes:
    """Encode and sign a CRL of `issuer` (the CA certificate whose key `handle` is). Returns the DER."""
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
    if revoked:
        entries = []
        for entry in sorted(revoked, key=lambda e: (e.revoked_at, e.serial)):
            item: dict[str, Any] = {"user_certificate": entry.serial, "revocation_date": x509_time(entry.revoked_at)}
            if entry.reason != "unspecified":
                item["crl_entry_extensions"] = [
                    {"extn_id": "crl_reason", "critical": False, "extn_value": REVOCATION_REASONS[entry.reason]}]
            entries.append(item)
        tbs["revoked_certificates"] = entries
    tbs_cert_list = asn1_crl.TbsCertList(tbs)
    algorithm, signature = sign_tbs(handle, tbs_cert_list, algorithm_field="signature")
    crl = asn1_crl.CertificateList(
        {"tbs_cert_list": tbs_cert_list, "signature_algorithm": algorithm, "signature": signature})
    return bytes(crl.dump())


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

    def due(self, record: CRLRecord | None) -> bool:
        """True when there is no CRL yet or the newest has used up half of its lifetime."""
        if record is None:
            return True
        half = (record.next_update - record.this_update) / 2
        return self._clock() >= record.this_update + half

    async def publish(self, session: AsyncSession, ca_name: str, *, issuer: x509.Certificate,
                      handle: KeyHandle) -> CRLRecord:
        """Build, sign and store the next CRL of the CA: every unexpired revoked certificate it issued."""
        now = self._clock().replace(microsecond=0)
        highest = (await session.execute(
            select(func.max(CRLRecord.number)).where(CRLRecord.ca_name == ca_name))).scalar_one_or_none()
        number = (highest or 0) + 1
        rows = (await session.execute(
            select(IssuedCertificate.serial_hex, IssuedCertificate.revoked_at, IssuedCertificate.revocation_reason)
            .where(IssuedCertificate.issuer_ca == ca_name, IssuedCertificate.revoked_at.is_not(None),
                   IssuedCertificate.not_after > now)
        )).all()
        revoked = [RevokedEntry(int(serial, 16), revoked_at, reason or "unspecified")
                   for serial, revoked_at, reason in rows if revoked_at is not None]
        next_update = now + self.lifetime
        der = build_crl(issuer=issuer, handle=handle, number=number, this_update=now, next_update=next_update,
                        revoked=revoked)
        record = CRLRecord(ca_name=ca_name, number=number, this_update=now, next_update=next_update, der=der)
        session.add(record)
        await session.flush()
        return record
