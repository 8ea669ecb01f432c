"""The validation report in words: what the /verify page, the PDF report and `acar validate` say about each status.

The report (signing.core.report) carries machine codes: ETSI TS 119 102-1 indications and sub-indications
(section 5.1.3, tables 5 and 6) and the stable finding codes of the engine and of the attack checks. Each has a
message id in the catalogs (api/locales: report.indication.*, report.sub_indication.*, report.finding.*); a code
the catalogs do not know yet (a new check) falls back to the English message the finding carries, so nothing is
ever left unexplained.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from api.i18n import Translator
from signing.core.report import (
    Change,
    ChangeClass,
    Finding,
    Indication,
    Qualification,
    SignatureKind,
    SignatureReport,
    SubIndication,
    ValidationReport,
)

FINDING_CODES = (
    "no_subfilter", "usf_contents", "usf_byte_range", "usf_cert", "byte_range_gap", "byte_range_invalid",
    "signature_wrapping", "incremental_save_unsigned_objects", "incremental_save_no_xref", "shadow_hide",
    "shadow_replace", "shadow_hide_and_replace", "docmdp_violation", "key_usage", "extended_key_usage",
    "trailing_bytes", "unsupported_subfilter", "fieldmdp_violation", "signature_replaced", "modification_not_allowed",
    "certificate_expired", "self_signed_untrusted", "unreadable_signature", "not_a_signature_to_pyhanko",
    "lenient_read", "pdf_content", "ades", "revocation_unavailable")
"""The finding codes the catalogs translate (report.finding.<code>); any other falls back to its message."""
BUILT_IN_CA = "built-in CA"
"""The trust source api/deps.py names Açar's own root by (ValidationReport.trust_sources)."""
CHANGE_KINDS = ("dss", "document-timestamp", "metadata", "signature", "form-filling", "annotation", "form-field",
                "page-content", "catalog", "optional-content", "object-override", "unsigned-objects", "freed")
"""The kinds of change the revision review names (signing.core.attacks), each in words (report.change_kind.<kind>)."""
TIME_SOURCES = ("signature-timestamp", "document-timestamp", "validation-time")
STATUS_CLASS = {Indication.TOTAL_PASSED: "passed", Indication.TOTAL_FAILED: "failed",
                Indication.INDETERMINATE: "indeterminate"}


@dataclass(frozen=True, slots=True)
class ReportText:
    """The report's codes in one language (api.i18n.Translator)."""

    tr: Translator

    def indication(self, value: Indication) -> str:
        return self.tr.gettext(f"report.indication.{value.value}")

    def sub_indication(self, value: SubIndication | None) -> str:
        return self.tr.gettext(f"report.sub_indication.{value.value}") if value is not None else ""

    def finding(self, finding: Finding) -> str:
        key = f"report.finding.{finding.code}"
        return self.tr.gettext(key) if key in self.tr.catalog else finding.message

    def kind(self, value: SignatureKind) -> str:
        return self.tr.gettext(f"report.kind.{value.value}")

    def trust_sources(self, report: ValidationReport) -> str:
        """Where the trust came from, in words: the built-in CA named in the page's language, files and trusted
        lists by their own names, each once."""
        names = [self.tr.gettext("report.trust.built_in") if name == BUILT_IN_CA else name
                 for name in dict.fromkeys(report.trust_sources)]
        return ", ".join(names) or "—"

    def change(self, change: Change) -> str:
        """What kind of change a revision made, in words (report.change_kind.<kind>); an unknown kind in its
        English description."""
        key = f"report.change_kind.{change.kind}"
        return self.tr.gettext(key) if key in self.tr.catalog else change.description

    def change_class(self, value: ChangeClass | None) -> str:
        return self.tr.gettext(f"report.change.{value.value}") if value is not None else "—"

    def time_source(self, value: str) -> str:
        key = f"report.time_source.{value}"
        return self.tr.gettext(key) if key in self.tr.catalog else value

    def level(self, value: str | None) -> str:
        return value if value else self.tr.gettext("report.level.none")

    def qualification(self, value: Qualification | None) -> str:
        if value is None or not value.qualified:
            return self.tr.gettext("report.no")
        kind = self.tr.gettext(f"report.qc_type.{value.qc_type}") if value.qc_type in ("esign", "eseal", "eweb") \
            else ""
        qscd = self.tr.gettext("report.qscd") if value.qscd else ""
        return ", ".join(part for part in (self.tr.gettext("report.yes"), kind, qscd) if part)

    def when(self, value: dt.datetime | None) -> str:
        return self.tr.datetime(value) if value is not None else "—"

    def title(self, signature: SignatureReport, n: int) -> str:
        """"Signature 2: Aysel Məmmədova" (or the field name, for a signature without a readable signer)."""
        who = signature.signer.name if signature.signer is not None else (signature.field_name or signature.id)
        timestamp = signature.kind is SignatureKind.DOCUMENT_TIMESTAMP
        return self.tr.gettext("report.timestamp_title" if timestamp else "report.signature_title", n=n, name=who)

    def status(self, signature: SignatureReport) -> str:
        """The indication, and the reason when there is one: "Not valid: the signed content was changed"."""
        main = self.indication(signature.indication)
        if signature.sub_indication is None:
            return main
        return self.tr.gettext("report.status_with_reason", status=main,
                               reason=self.sub_indication(signature.sub_indication))

    def coverage(self, signature: SignatureReport) -> str:
        coverage = signature.coverage
        if coverage is None:
            return "—"
        if coverage.whole_file:
            return self.tr.gettext("report.coverage.whole_file")
        if coverage.whole_revision:
            return self.tr.gettext("report.coverage.whole_revision", revision=coverage.revision or "?")
        return self.tr.gettext("report.coverage.partial")

    def summary(self, report: ValidationReport) -> str:
        """One sentence for the whole document (the page's status, announced to screen readers)."""
        total = len(report.signatures)
        if total == 0:
            return self.tr.gettext("report.summary.none")
        passed = sum(1 for s in report.signatures if s.indication is Indication.TOTAL_PASSED)
        if passed == total:
            return self.tr.ngettext("report.summary.passed", total)
        return self.tr.gettext("report.summary.not_passed", passed=passed, total=total)


def status_class(signature: SignatureReport) -> str:
    """The CSS class of a signature's status (the words say it too: never colour alone, WCAG 1.4.1)."""
    return STATUS_CLASS[signature.indication]
