"""The validation report: what Açar says about each signature of a PDF (issue 14), shaped after ETSI TS 119 102-2.

ETSI TS 119 102-2 (signature validation report) gives every signature and time-stamp a validation status made of
a main indication (ETSI TS 119 102-1 section 5.1.3: TOTAL-PASSED, TOTAL-FAILED, INDETERMINATE) and, unless
passed, a sub-indication (section 5.1.3, table 6: HASH_FAILURE, SIG_CRYPTO_FAILURE, REVOKED, ...). The report
here carries the same statuses, the signer's identity (ETSI EN 319 412-1 section 5.1.3 semantics identifiers:
PNOAZ-<FIN>, NTRAZ-<VÖEN>), the best proof of existence (TS 119 102-1 section 5.6.2.1 "best-signature-time"),
the PAdES baseline level reached (ETSI EN 319 142-1 section 6), the qualified status (ETSI EN 319 412-5
qcStatements, or an ETSI TS 119 612 trusted list), the byte ranges each signature covers and what every later
revision changed (ISO 32000-2 section 12.8.2.2 DocMDP, 12.8.2.4 FieldMDP).

These are plain frozen records: `signing.core.validation` builds them, api/ renders them (JSON, the /verify page,
the PDF report, `acar validate`). `as_json` is the wire form documented in the OpenAPI description.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any


class Indication(enum.StrEnum):
    """ETSI TS 119 102-1 section 5.1.3, table 5: the main status indication."""

    TOTAL_PASSED = "TOTAL-PASSED"
    TOTAL_FAILED = "TOTAL-FAILED"
    INDETERMINATE = "INDETERMINATE"


class SubIndication(enum.StrEnum):
    """ETSI TS 119 102-1 section 5.1.3, table 6 (TOTAL-FAILED: the first five; the rest INDETERMINATE)."""

    # TOTAL-FAILED
    FORMAT_FAILURE = "FORMAT_FAILURE"
    HASH_FAILURE = "HASH_FAILURE"
    SIG_CRYPTO_FAILURE = "SIG_CRYPTO_FAILURE"
    REVOKED = "REVOKED"
    SIG_CONSTRAINTS_FAILURE = "SIG_CONSTRAINTS_FAILURE"
    CHAIN_CONSTRAINTS_FAILURE = "CHAIN_CONSTRAINTS_FAILURE"
    CERTIFICATE_CHAIN_GENERAL_FAILURE = "CERTIFICATE_CHAIN_GENERAL_FAILURE"
    CRYPTO_CONSTRAINTS_FAILURE = "CRYPTO_CONSTRAINTS_FAILURE"
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    POLICY_PROCESSING_ERROR = "POLICY_PROCESSING_ERROR"
    SIGNATURE_POLICY_NOT_AVAILABLE = "SIGNATURE_POLICY_NOT_AVAILABLE"
    TIMESTAMP_ORDER_FAILURE = "TIMESTAMP_ORDER_FAILURE"
    # INDETERMINATE
    NO_SIGNING_CERTIFICATE_FOUND = "NO_SIGNING_CERTIFICATE_FOUND"
    NO_CERTIFICATE_CHAIN_FOUND = "NO_CERTIFICATE_CHAIN_FOUND"
    REVOKED_NO_POE = "REVOKED_NO_POE"
    REVOKED_CA_NO_POE = "REVOKED_CA_NO_POE"
    OUT_OF_BOUNDS_NO_POE = "OUT_OF_BOUNDS_NO_POE"
    OUT_OF_BOUNDS_NOT_REVOKED = "OUT_OF_BOUNDS_NOT_REVOKED"
    CRYPTO_CONSTRAINTS_FAILURE_NO_POE = "CRYPTO_CONSTRAINTS_FAILURE_NO_POE"
    NO_POE = "NO_POE"
    TRY_LATER = "TRY_LATER"
    SIGNED_DATA_NOT_FOUND = "SIGNED_DATA_NOT_FOUND"
    GENERIC = "GENERIC"

    @property
    def indication(self) -> Indication:
        """The main indication this sub-indication belongs to (TS 119 102-1 table 6)."""
        return Indication.TOTAL_FAILED if self in _FAILED else Indication.INDETERMINATE


_FAILED = frozenset({SubIndication.FORMAT_FAILURE, SubIndication.HASH_FAILURE, SubIndication.SIG_CRYPTO_FAILURE,
                     SubIndication.REVOKED, SubIndication.EXPIRED, SubIndication.NOT_YET_VALID})
"""TS 119 102-1 table 6 lists these under TOTAL-FAILED; the constraint failures are INDETERMINATE in some
processes and FAILED in others: here a constraint failure is reported INDETERMINATE unless a finding says more."""


class SignatureKind(enum.StrEnum):
    """What a signature dictionary is (ISO 32000-2 section 12.8.1 /Type /Sig, 12.8.5 /Type /DocTimeStamp)."""

    APPROVAL = "approval"
    CERTIFICATION = "certification"
    """An approval signature carrying a DocMDP transform (ISO 32000-2 section 12.8.2.2): the author's signature."""
    DOCUMENT_TIMESTAMP = "document-timestamp"


class ChangeClass(enum.StrEnum):
    """How a later revision's changes are judged against the signatures before it."""

    ALLOWED = "allowed"
    NOT_ALLOWED = "not-allowed"


@dataclass(frozen=True, slots=True)
class Finding:
    """A reason a signature or revision is not valid (or, with `sub_indication` None, a remark that changes no
    verdict). `code` is stable and machine-readable (e.g. "no_subfilter", "byte_range_gap", "shadow_hide",
    "incremental_save_unsigned_objects", "signature_wrapping", "usf_contents", "key_usage", "docmdp_violation");
    `message` is English for logs and the JSON report; api/ translates by `code`."""

    code: str
    message: str
    sub_indication: SubIndication | None = None
    revision: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message,
                "sub_indication": self.sub_indication.value if self.sub_indication else None,
                "revision": self.revision}


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """One certificate of a path, as a reader needs it (RFC 5280 fields) and the DER for tools."""

    subject: str
    issuer: str
    serial_number: str
    """Hexadecimal, as openssl prints it."""
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    der_b64: str

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "issuer": self.issuer, "serial_number": self.serial_number,
                "not_before": _iso(self.not_before), "not_after": _iso(self.not_after), "sha256": self.sha256,
                "certificate": self.der_b64}


@dataclass(frozen=True, slots=True)
class SignerIdentity:
    """Who signed (ETSI EN 319 412-1 section 5.1.3 for the identifiers): `identifier` is the subject's
    serialNumber (natural person, "PNOAZ-1AB2C3D", also IDCAZ-/PASAZ-) or organizationIdentifier (legal person,
    "NTRAZ-1234567891"); `identifier_type` its three-letter semantics type (PNO, IDC, PAS, NTR, VAT, ...)."""

    name: str
    identifier: str | None
    identifier_type: str | None
    country: str | None
    organization: str | None
    certificate: CertificateInfo
    chain: tuple[CertificateInfo, ...]
    """The path from the signer's certificate (first) to the trust anchor (last), when one was built; else the
    certificates the signature carries."""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "identifier": self.identifier, "identifier_type": self.identifier_type,
                "country": self.country, "organization": self.organization,
                "certificate": self.certificate.as_json(), "chain": [c.as_json() for c in self.chain]}


@dataclass(frozen=True, slots=True)
class Qualification:
    """Whether the signing certificate is qualified (ETSI EN 319 412-5 qcStatements; ETSI TS 119 612 trusted
    list). `source` names where the answer came from: "qcStatements", "trusted-list" or "none"."""

    qualified: bool
    qc_type: str | None
    """"esign", "eseal" or "eweb" (QcType, EN 319 412-5 section 4.2.3)."""
    qscd: bool
    """The key is in a qualified signature/seal creation device (QcSSCD)."""
    source: str
    trusted_service: str | None = None
    """The trusted list's service name, when the list says so."""

    def as_json(self) -> dict[str, Any]:
        return {"qualified": self.qualified, "type": self.qc_type, "qscd": self.qscd, "source": self.source,
                "trusted_service": self.trusted_service}


@dataclass(frozen=True, slots=True)
class TimeProof:
    """A proof of existence (ETSI TS 119 102-1 section 5.6.2.1): a time-stamp's time and what gave it."""

    time: dt.datetime
    source: str
    """"signature-timestamp", "document-timestamp", or "validation-time" (no proof: the time of validation)."""
    tsa: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"time": _iso(self.time), "source": self.source, "tsa": self.tsa}


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a signature's /ByteRange covers (ISO 32000-2 section 12.8.1): the revision it signs, the ranges, and
    whether they are that whole revision minus the /Contents hole and whether that revision is the whole file."""

    revision: int | None
    byte_range: tuple[int, ...]
    whole_revision: bool
    whole_file: bool

    def as_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "byte_range": list(self.byte_range),
                "whole_revision": self.whole_revision, "whole_file": self.whole_file}


@dataclass(frozen=True, slots=True)
class SignatureReport:
    """One signature or document time-stamp: its status and everything the report says about it."""

    id: str
    """"sig-1", "sig-2", ... in file order (by the offset of the signature dictionary's revision)."""
    field_name: str | None
    kind: SignatureKind
    indication: Indication
    sub_indication: SubIndication | None
    findings: tuple[Finding, ...]
    signer: SignerIdentity | None
    claimed_signing_time: dt.datetime | None
    best_signature_time: TimeProof | None
    timestamps: tuple[TimeProof, ...]
    """The signature's own time-stamps and the document time-stamps after it."""
    level: str | None
    """"B-B", "B-T", "B-LT", "B-LTA" or None (not a PAdES baseline signature, e.g. adbe.pkcs7.detached)."""
    qualification: Qualification | None
    coverage: Coverage | None
    sub_filter: str | None
    digest_algorithm: str | None
    signature_algorithm: str | None
    docmdp_permission: int | None
    """1, 2 or 3 for a certification signature (ISO 32000-2 table 257), else None."""
    modification_level: str | None
    """pyHanko's verdict on the revisions after this signature: "none", "lta-updates", "form-filling",
    "annotations" or "other"."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "field_name": self.field_name, "kind": self.kind.value,
            "indication": self.indication.value,
            "sub_indication": self.sub_indication.value if self.sub_indication else None,
            "findings": [f.as_json() for f in self.findings],
            "signer": self.signer.as_json() if self.signer else None,
            "claimed_signing_time": _iso(self.claimed_signing_time),
            "best_signature_time": self.best_signature_time.as_json() if self.best_signature_time else None,
            "timestamps": [t.as_json() for t in self.timestamps],
            "level": self.level,
            "qualification": self.qualification.as_json() if self.qualification else None,
            "coverage": self.coverage.as_json() if self.coverage else None,
            "sub_filter": self.sub_filter, "digest_algorithm": self.digest_algorithm,
            "signature_algorithm": self.signature_algorithm, "docmdp_permission": self.docmdp_permission,
            "modification_level": self.modification_level,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One change a revision made (e.g. kind "dss", "document-timestamp", "signature", "form-filling",
    "annotation", "appearance", "page-content", "catalog", "unsigned-objects") and its class."""

    kind: str
    description: str
    classification: ChangeClass

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "classification": self.classification.value}


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of the file (ISO 32000-2 section 7.5.6 incremental updates): bytes [0, end) are the
    document as of that revision; `signatures` are the ids of the signatures whose /ByteRange ends there."""

    number: int
    """1 for the original document."""
    end: int
    signatures: tuple[str, ...]
    changes: tuple[Change, ...]
    classification: ChangeClass | None
    """None for revision 1; else "allowed" when every change is allowed after the signatures before it."""

    def as_json(self) -> dict[str, Any]:
        return {"number": self.number, "end": self.end, "signatures": list(self.signatures),
                "changes": [c.as_json() for c in self.changes],
                "classification": self.classification.value if self.classification else None}


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The whole report of one document."""

    sha256: str
    size: int
    validation_time: dt.datetime
    embedded_only: bool
    """True when validated "as of" a past date from the embedded validation data only (no fetching)."""
    signatures: tuple[SignatureReport, ...]
    revisions: tuple[Revision, ...]
    findings: tuple[Finding, ...] = field(default=())
    """Document-level findings (e.g. bytes after the last revision that no cross-reference describes)."""
    trust_sources: tuple[str, ...] = field(default=())
    """What the trust anchors came from: "built-in CA", a file name, "trusted list <territory> <sequence>"."""

    @property
    def all_passed(self) -> bool:
        """True when the document has at least one signature and every one is TOTAL-PASSED (`acar validate`'s
        exit code 0)."""
        return bool(self.signatures) and all(s.indication is Indication.TOTAL_PASSED for s in self.signatures)

    def as_json(self) -> dict[str, Any]:
        return {
            "document": {"sha256": self.sha256, "size": self.size},
            "validation_time": _iso(self.validation_time),
            "embedded_only": self.embedded_only,
            "all_passed": self.all_passed,
            "signatures": [s.as_json() for s in self.signatures],
            "revisions": [r.as_json() for r in self.revisions],
            "findings": [f.as_json() for f in self.findings],
            "trust_sources": list(self.trust_sources),
        }


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
