"""Validation reports made by hand (signing.core.report records), for the renderers of the report: the page, the
PDF report and `acar validate` (api.report_view, api.report_pdf), independent of the engine."""

from __future__ import annotations

import datetime as dt

from signing.core.report import (
    CertificateInfo,
    Change,
    ChangeClass,
    Coverage,
    Finding,
    Indication,
    Qualification,
    Revision,
    SignatureKind,
    SignatureReport,
    SignerIdentity,
    SubIndication,
    TimeProof,
    ValidationReport,
)

NOW = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
ROOT = CertificateInfo(subject="Common Name: Açar Root CA", issuer="Common Name: Açar Root CA", serial_number="01",
                       not_before=NOW - dt.timedelta(days=365), not_after=NOW + dt.timedelta(days=3650),
                       sha256="ab" * 32, der_b64="MIIB")
PERSON = CertificateInfo(subject="Common Name: Aysel Məmmədova; Serial Number: PNOAZ-1AB2C3D",
                         issuer="Common Name: Açar Issuing CA", serial_number="7f3a",
                         not_before=NOW - dt.timedelta(days=10), not_after=NOW + dt.timedelta(days=700),
                         sha256="cd" * 32, der_b64="MIIC")


def signature(n: int, indication: Indication = Indication.TOTAL_PASSED, sub: SubIndication | None = None,
              findings: tuple[Finding, ...] = ()) -> SignatureReport:
    return SignatureReport(
        id=f"sig-{n}", field_name=f"Signature{n}", kind=SignatureKind.APPROVAL, indication=indication,
        sub_indication=sub, findings=findings,
        signer=SignerIdentity(name="Aysel Məmmədova", identifier="PNOAZ-1AB2C3D", identifier_type="PNO", country="AZ",
                              organization=None, certificate=PERSON, chain=(PERSON, ROOT)),
        claimed_signing_time=NOW - dt.timedelta(hours=1),
        best_signature_time=TimeProof(NOW - dt.timedelta(hours=1), "signature-timestamp", "Açar TSA"),
        timestamps=(TimeProof(NOW - dt.timedelta(hours=1), "signature-timestamp", "Açar TSA"),),
        level="B-LT", qualification=Qualification(qualified=True, qc_type="esign", qscd=True, source="qcStatements"),
        coverage=Coverage(revision=n + 1, byte_range=(0, 100, 200, 300), whole_revision=True, whole_file=n == 1),
        sub_filter="ETSI.CAdES.detached", digest_algorithm="sha256", signature_algorithm="ecdsa",
        docmdp_permission=None, modification_level="none")


def sample_report(*, failed: bool = True, many: int = 0) -> ValidationReport:
    """Two signatures, the second (when `failed`) not valid with every finding code the catalogs translate and an
    unknown one; `many` more valid signatures to fill pages."""
    from api.report_view import FINDING_CODES

    findings = (*(Finding(code, f"english {code}", SubIndication.FORMAT_FAILURE, 3) for code in FINDING_CODES),
                Finding("brand_new_check", "An English message for a code no catalog knows", None, None))
    second = signature(2, Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE, findings) if failed else signature(2)
    signatures = (signature(1), second, *(signature(3 + i) for i in range(many)))
    revisions = (Revision(1, 1000, (), (), None),
                 Revision(2, 2000, ("sig-1",), (Change("signature", "a signature", ChangeClass.ALLOWED),),
                          ChangeClass.ALLOWED),
                 Revision(3, 3000, ("sig-2",), (Change("annotation", "an annotation over page 1",
                                                       ChangeClass.NOT_ALLOWED),), ChangeClass.NOT_ALLOWED))
    return ValidationReport(sha256="ef" * 32, size=3000, validation_time=NOW, embedded_only=False,
                            signatures=signatures, revisions=revisions, trust_sources=("built-in CA",))
