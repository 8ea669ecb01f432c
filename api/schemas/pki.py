"""Schemas of the PKI admin API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from keys.ca import certificate_pem
from keys.crl import REASON_CODES
from keys.models import IssuedCertificate


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": "keyCompromise"}]})

    reason: str = Field(min_length=1, max_length=40,
                        description="an RFC 5280 section 5.3.1 CRLReason name, e.g. keyCompromise (case-insensitive)",
                        json_schema_extra={"enum": list(REASON_CODES)})


class CertificateView(BaseModel):
    serial: str = Field(description="lower-case hexadecimal")
    issuer: str
    profile: str
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    status: str = Field(description="valid, expired or revoked")
    revoked_at: dt.datetime | None
    revocation_reason: str | None
    certificate_pem: str

    @classmethod
    def from_row(cls, row: IssuedCertificate, now: dt.datetime) -> CertificateView:
        status = "revoked" if row.revoked_at is not None else "expired" if row.not_after <= now else "valid"
        return cls(serial=row.serial_hex, issuer=row.issuer_ca, profile=row.profile, subject=row.subject,
                   not_before=row.not_before, not_after=row.not_after, status=status, revoked_at=row.revoked_at,
                   revocation_reason=row.revocation_reason, certificate_pem=certificate_pem(row))
