"""Schemas of the validation API (POST /api/v1/validations): the report of signing.core.report as its `as_json`
writes it, field for field, so the OpenAPI document describes the wire form (ETSI TS 119 102-2 shaped).

A test validates real reports against `ValidationReportOut` (extra fields forbidden), so the two cannot drift.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from signing.core.report import ChangeClass, Indication, SignatureKind, SubIndication


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FindingOut(_Out):
    """A reason a signature, revision or the document is not valid; with sub_indication null a remark."""

    code: str = Field(description="stable machine code, e.g. no_subfilter, byte_range_gap, shadow_hide, "
                                  "signature_wrapping, usf_contents, key_usage, docmdp_violation")
    message: str = Field(description="English text; the /verify page and the PDF report translate by code")
    sub_indication: SubIndication | None
    revision: int | None


class CertificateOut(_Out):
    subject: str
    issuer: str
    serial_number: str = Field(description="hexadecimal")
    not_before: str = Field(description="RFC 3339, UTC")
    not_after: str = Field(description="RFC 3339, UTC")
    sha256: str = Field(description="SHA-256 of the DER certificate, hexadecimal")
    certificate: str = Field(description="the DER certificate, base64")


class SignerOut(_Out):
    """The signer (ETSI EN 319 412-1 section 5.1.3 semantics identifiers: PNOAZ-..., NTRAZ-...)."""

    name: str
    identifier: str | None
    identifier_type: str | None = Field(description="PNO, IDC, PAS, NTR, VAT, ...")
    country: str | None
    organization: str | None
    certificate: CertificateOut
    chain: list[CertificateOut] = Field(description="the signer's certificate first, the trust anchor last")


class QualificationOut(_Out):
    """ETSI EN 319 412-5 qcStatements or an ETSI TS 119 612 trusted list."""

    qualified: bool
    type: Literal["esign", "eseal", "eweb"] | None
    qscd: bool
    source: str = Field(description="qcStatements, trusted-list or none")
    trusted_service: str | None


class TimeProofOut(_Out):
    """A proof of existence (ETSI TS 119 102-1 section 5.6.2.1)."""

    time: str = Field(description="RFC 3339, UTC")
    source: str = Field(description="signature-timestamp, document-timestamp or validation-time")
    tsa: str | None


class CoverageOut(_Out):
    """What the /ByteRange covers (ISO 32000-2 section 12.8.1)."""

    revision: int | None
    byte_range: list[int]
    whole_revision: bool
    whole_file: bool


class SignatureOut(_Out):
    """One signature or document time-stamp and its status (ETSI TS 119 102-1 section 5.1.3)."""

    id: str = Field(description="sig-1, sig-2, ... in file order")
    field_name: str | None
    kind: SignatureKind
    indication: Indication
    sub_indication: SubIndication | None
    findings: list[FindingOut]
    signer: SignerOut | None
    claimed_signing_time: str | None
    best_signature_time: TimeProofOut | None
    timestamps: list[TimeProofOut]
    level: Literal["B-B", "B-T", "B-LT", "B-LTA"] | None = Field(description="ETSI EN 319 142-1 baseline level "
                                                                             "reached, or null")
    qualification: QualificationOut | None
    coverage: CoverageOut | None
    sub_filter: str | None
    digest_algorithm: str | None
    signature_algorithm: str | None
    docmdp_permission: int | None = Field(description="1, 2 or 3 for a certification signature (ISO 32000-2 "
                                                      "table 257)")
    modification_level: str | None


class ChangeOut(_Out):
    kind: str
    description: str
    classification: ChangeClass


class RevisionOut(_Out):
    """One revision (ISO 32000-2 section 7.5.6) and what it changed, allowed or not."""

    number: int
    end: int
    signatures: list[str]
    changes: list[ChangeOut]
    classification: ChangeClass | None


class DocumentOut(_Out):
    sha256: str
    size: int


class ValidationReportOut(_Out):
    """The validation report of one PDF (signing.core.report.ValidationReport.as_json)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "document": {"sha256": "9f2c...", "size": 48213}, "validation_time": "2026-12-01T09:30:00Z",
        "embedded_only": False, "all_passed": True, "signatures": [], "revisions": [], "findings": [],
        "trust_sources": ["built-in CA"]}]})

    document: DocumentOut
    validation_time: str = Field(description="RFC 3339, UTC")
    embedded_only: bool = Field(description="validated as of a past time from the embedded data only")
    all_passed: bool = Field(description="at least one signature, and every one TOTAL-PASSED")
    signatures: list[SignatureOut]
    revisions: list[RevisionOut]
    findings: list[FindingOut]
    trust_sources: list[str]
