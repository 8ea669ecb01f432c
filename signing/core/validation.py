"""The validation engine (issue 14): a signed PDF in, an ETSI TS 119 102-2 shaped `ValidationReport` out.

The engine is pyHanko's implementation of the AdES validation processes of ETSI EN 319 102-1 (the processes
ETSI TS 119 102-1 specifies): `ades_lta_validation` (section 5.6.3, validation with long-term availability, which
includes past-signature validation, so a certificate revoked or expired after a proof of existence still
validates) for every signature, `ades_timestamp_validation` (section 5.4) for every document time-stamp. Around it
the engine adds what a library's verdict leaves out: the certificate checks of a signature's purpose, the PAdES
level reached, the signer's identity and qualified status, and, always, the structure analysis of
`signing.core.structure` (the raw bytes) and `signing.core.attacks` (what each later revision changed): the
attacks a library's verdict misses.

Security decisions, in the order they run:

1. Input: the same input policy as signing (`signing.core.inspect.inspect_pdf`: size, object and page bounds,
   decompression bombs, loops), with `refuse_active_content` forced off: a validator reports a signed form with
   JavaScript, it does not refuse it. A refusal raises the `PdfRefused` subclass signing raises.
2. One parse: `signing.core.inspect.open_signed_pdf` opens pyHanko's strict reader (its lenient one only when
   the strict one refuses the cross-reference history, as for poppler's pdfsig output: see there; the report then
   carries the remark "lenient_read"), bounded by the policy's `DecodeLimits`, walks it under the input policy
   and hands it over with the signature dictionaries cached; the engine and the revision review read that same
   reader (no re-parse per signature or per step), and no page content is decoded. The structure analysis reads
   the raw bytes on its own, by design (it must not see the file through a PDF library).
3. Trust (RFC 5280 section 6.1.1 (d)): an explicit `CertValidationPolicySpec` per validation (STYLE habit 7)
   with `TrustPolicy.all_anchors` as the only anchors.
4. Revocation (RFC 6960 OCSP, RFC 5280 CRLs): end-entity certificates require revocation data
   (`CRL_OR_OCSP_REQUIRED`), CA certificates when they declare a source (`CHECK_IF_DECLARED`). The embedded data
   (the DSS, ISO 32000-2 section 12.8.4.3, and the CMS revocation values) is always used. Fetching online, with
   OCSP first and the CRL as fallback (pyhanko-certvalidator's order), happens only for a validation at the
   current time with a `ValidationDataSource` given, and only for a signature the embedded data leaves
   INDETERMINATE (validated again with fetching: `_assess`); with `at` (validation "as of" a past date), nothing is
   fetched and the report says `embedded_only`. A path that fails only because no revocation data was embedded
   or could be fetched is INDETERMINATE / TRY_LATER (TS 119 102-1 table 6, EN 319 102-1 section 5.2.6).
5. Freshness (EN 319 102-1 section 5.2.5.4): revocation data is usable while the validation time is within
   `REVOCATION_FRESHNESS` of its issue (`MAX_DIFF_REVOCATION_VALIDATION`); older data leaves the signature to the
   past-signature validation of section 5.6.2.4, which needs a proof of existence (a time-stamp).
6. Certificate purpose (ETSI EN 319 412-2 section 4.3.2, RFC 5280 sections 4.2.1.3 and 4.2.1.12), checked by the
   engine, not pyHanko (whose generic key-usage error would hide which rule failed): an approval or
   certification signature needs keyUsage nonRepudiation (contentCommitment), finding "key_usage"; its
   extendedKeyUsage, if present, must allow document signing (anyExtendedKeyUsage, id-kp-documentSigning of RFC
   9336, emailProtection, Adobe's and Microsoft's document-signing purposes), finding "extended_key_usage". Both
   are SIG_CONSTRAINTS_FAILURE, INDETERMINATE: TS 119 102-1 section 5.2.8 (signature acceptance validation)
   reports a signature whose attributes or signer do not meet the validation constraints as INDETERMINATE with
   SIG_CONSTRAINTS_FAILURE, and the constraint here is the purpose of the key. Unknown critical extensions,
   validity period, revocation and path building stay pyHanko's (its sub-indications are reported as given).
7. Structure, one mechanism (`merge_structure`): every validation runs `analyse_structure` (raw bytes: revisions,
   every signature dictionary, USF, /ByteRange, SWA, ISA) and `review_revisions` (each later revision's changes,
   classified, and the shadow, DocMDP and FieldMDP findings), and merges their findings into pyHanko's verdicts.
   pyHanko's own difference analysis (`DEFAULT_DIFF_POLICY`) is not run: the review replaces it (it is stricter
   where pyHanko's lets an attack through, and allows the comments pyHanko's rejects), so the report's
   `modification_level` is None; pyHanko computes each signature's coverage only.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from asn1crypto import cms, crl, ocsp, x509
from cryptography import x509 as cx509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.qualified_asn1 import get_qc_statements
from pyhanko.sign.ades.report import AdESFailure, AdESIndeterminate, AdESPassed, AdESStatus, AdESSubIndic
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.general import SignedDataCerts
from pyhanko.sign.validation.ades import (
    ades_basic_validation,
    ades_lta_validation,
    ades_timestamp_validation,
    ades_with_time_validation,
)
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko.sign.validation.generic_cms import extract_certs_for_validation, extract_tst_data_iter
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.policy_decl import (
    CertificateFetchingRule,
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
    bootstrap_validation_data_handlers,
)
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureCoverageLevel
from pyhanko_certvalidator import CertificateValidator
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.errors import InsufficientRevinfoError, StaleRevinfoError
from pyhanko_certvalidator.fetchers import FetcherBackend, Fetchers
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    FreshnessReqType,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer, OCSPContainer

from keys.x509 import serial_to_hex
from signing.core.attacks import RevisionReview, review_revisions
from signing.core.errors import ValidationTimedOut
from signing.core.inspect import InputPolicy, open_signed_pdf
from signing.core.pades import utcnow
from signing.core.report import (
    CertificateInfo,
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
from signing.core.revocation import ValidationDataSource
from signing.core.structure import PdfStructure, RawRevision, RawSignature, analyse_structure
from signing.core.trust import TrustPolicy

__all__ = ["Validator", "merge_structure"]

REVOCATION_FRESHNESS: Final = dt.timedelta(days=30)
"""EN 319 102-1 section 5.2.5.4: how long after its issue revocation data may serve a validation at the current
time (`MAX_DIFF_REVOCATION_VALIDATION`); beyond it, only past-signature validation with a proof of existence."""

TIME_TOLERANCE: Final = dt.timedelta(seconds=1)
"""Clock drift tolerated between a time-stamp, revocation data and the validation time (pyHanko's default)."""

DOCUMENT_SIGNING_PURPOSES: Final = frozenset({
    "any_extended_key_usage",
    "1.3.6.1.5.5.7.3.36",  # id-kp-documentSigning, RFC 9336
    "email_protection",  # RFC 5280 4.2.1.12; EN 319 412-2 signing certificates commonly carry it
    "1.2.840.113583.1.1.5",  # Adobe Authentic Documents Trust
    "1.3.6.1.4.1.311.10.3.12",  # Microsoft document signing
})
"""extendedKeyUsage purposes that let a certificate sign a document (RFC 5280 section 4.2.1.12: when the
extension is present, the key may only be used for the purposes it lists)."""

_SEMANTICS_ID: Final = re.compile(r"^([A-Z]{3})([A-Z]{2})(?::[A-Z]{2})?-(.+)$")
"""EN 319 412-1 section 5.1.3: three-letter type, ISO 3166 country, optional ":" state, "-", identifier."""
_NATURAL_TYPES: Final = frozenset({"PAS", "IDC", "PNO", "TIN"})
"""EN 319 412-1 section 5.1.3 identifier types of natural persons (the rest: legal persons, e.g. NTR, VAT)."""
_QC_TYPES: Final = {"qct_esign": "esign", "qct_eseal": "eseal", "qct_web": "eweb"}
_RANK: Final = {Indication.TOTAL_PASSED: 0, Indication.INDETERMINATE: 1, Indication.TOTAL_FAILED: 2}


# --- the engine ------------------------------------------------------------------------------------------------


VALIDATION_DEADLINE: Final = 60.0
"""Seconds a validation at the current time may take in all: each fetch has its own timeout and each fetcher set
its FetchLimits, but pyHanko's processes ask for fresh fetchers at each step, so only a deadline bounds the whole
(an uploaded document's certificates choose the URLs)."""


class Validator:
    """Validates the signatures and document time-stamps of PDFs (see the module docstring).

    `fetching` is where revocation data comes from when the document lacks it (None: never fetch, embedded data
    only).
    """

    def __init__(self, *, trust: TrustPolicy, input_policy: InputPolicy, fetching: ValidationDataSource | None,
                 clock: Callable[[], dt.datetime] = utcnow, deadline: float = VALIDATION_DEADLINE) -> None:
        self._trust = trust
        self._deadline = deadline
        self._policy = dataclasses.replace(input_policy, refuse_active_content=False)
        self._fetching = fetching
        self._clock = clock
        self._trust_manager = SimpleTrustManager.build(trust_roots=list(trust.all_anchors))
        self._anchor_digests = frozenset(cert.sha256 for cert in trust.all_anchors)

    async def validate(self, source: BinaryIO, *, at: dt.datetime | None = None) -> ValidationReport:
        """The report of `source` (seekable) as of `at` (embedded data only), or now (fetching if configured).

        The whole validation runs in a worker thread on an event loop of its own (pyHanko's processes are CPU
        work: about 70 ms for a B-LTA document), so the caller's loop keeps serving; revocation data is fetched
        from there (`ValidationDataSource.thread_backend`, the built-in PKI still answered on the caller's loop).
        Raises the input policy's `PdfRefused` subclasses for input it refuses, and `ValidationTimedOut` past the
        deadline."""
        validation_time = at if at is not None else self._clock()
        home = asyncio.get_running_loop() if self._fetching is not None and at is None else None
        return await asyncio.to_thread(self._validate_in_thread, source, validation_time, at is not None, home)

    def _validate_in_thread(self, source: BinaryIO, validation_time: dt.datetime, embedded_only: bool,
                            home: asyncio.AbstractEventLoop | None) -> ValidationReport:
        document = self._read(source)

        async def run() -> ValidationReport:
            if home is None or self._fetching is None:  # no I/O at all
                return await self._assess(document, validation_time, embedded_only=embedded_only, backend=None)
            backend = self._fetching.thread_backend(home)
            try:
                async with asyncio.timeout(self._deadline):
                    return await self._assess(document, validation_time, embedded_only=False, backend=backend)
            except TimeoutError:
                raise ValidationTimedOut(f"the validation did not finish within {self._deadline:g} s: the "
                                         "revocation sources its certificates name are too slow; try again later"
                                         ) from None
            finally:
                await backend.close()  # type: ignore[no-untyped-call]  # unannotated in pyhanko-certvalidator

        return asyncio.run(run())

    # --- reading -------------------------------------------------------------------------------------------------

    def _read(self, source: BinaryIO) -> _Document:
        """One parse (module docstring 2): the reader the input policy walked serves the engine and the review."""
        opened = open_signed_pdf(source, self._policy)
        structure = analyse_structure(source, self._policy)
        reader = opened.reader
        signatures = _collect_signatures(reader)
        for entry in signatures:
            if entry.embedded is not None:
                try:
                    # coverage only: what later revisions changed is the revision review's (module docstring 7)
                    entry.embedded.compute_integrity_info(skip_diff=True)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
                except Exception as exc:  # noqa: BLE001 - pyHanko raises many types on a malformed signature
                    entry.error = f"the signature's integrity could not be computed: {_describe(exc)}"
        review = review_revisions(structure, reader)
        # the input policy's findings (JavaScript, embedded files, actions; ISO 32000-2 sections 12.6, 7.11.4):
        # remarks that change no verdict, so a reader knows what else the signed file carries
        notes: tuple[Finding, ...] = tuple(Finding("pdf_content", text) for text in opened.inspected.findings)
        if opened.lenient is not None:
            notes += (Finding("lenient_read", "pyHanko's strict reader refuses the file's cross-reference data "
                             f"({opened.lenient}); it was read with pyHanko's lenient reader (ISO 32000-2 section "
                             "7.5.4), the structure analysis unchanged"),)
        return _Document(sha256=opened.inspected.sha256, size=opened.inspected.size, reader=reader,
                         signatures=signatures, dss=_read_dss(reader), structure=structure, review=review,
                         notes=notes)

    # --- validating ----------------------------------------------------------------------------------------------

    async def _assess(self, document: _Document, validation_time: dt.datetime, *, embedded_only: bool,
                      backend: FetcherBackend | None) -> ValidationReport:
        # EN 319 102-1 section 5.2.5 / issue 14: revocation is fetched online only when the embedded data does not
        # settle a signature. pyhanko-certvalidator, given fetchers, asks the responders and ignores the embedded
        # OCSP responses (RevinfoManager.async_retrieve_ocsps): so each signature is validated from the embedded
        # data first, and again with fetching only when that leaves it INDETERMINATE (a failure is final)
        offline = self._spec(None)
        online = self._spec(backend) if backend is not None else None
        outcomes = []
        for entry in document.signatures:
            outcome = await self._validate_one(document, entry, offline, validation_time, embedded_only)
            if online is not None and outcome.indication is Indication.INDETERMINATE:
                outcome = await self._validate_one(document, entry, online, validation_time, embedded_only)
            outcomes.append(outcome)
        doc_timestamps = [o for o in outcomes if o.kind is SignatureKind.DOCUMENT_TIMESTAMP]
        reports = [self._report(document, outcome, doc_timestamps, validation_time) for outcome in outcomes]
        signatures, revisions, findings = merge_structure(reports, document.structure, document.review)
        return ValidationReport(
            sha256=document.sha256, size=document.size, validation_time=validation_time,
            embedded_only=embedded_only, signatures=signatures, revisions=revisions,
            findings=(*document.notes, *findings),
            trust_sources=self._trust.sources + ((self._trust.trusted_list.description,)
                                                 if self._trust.trusted_list is not None else ()))

    def _spec(self, backend: FetcherBackend | None) -> SignatureValidationSpec:
        """The validation policy, spelled out (STYLE habit 7; module docstring points 3 to 5)."""
        policy = CertValidationPolicySpec(
            trust_manager=self._trust_manager,
            revinfo_policy=CertRevTrustPolicy(
                RevocationCheckingPolicy(ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
                                         intermediate_ca_cert_rule=RevocationCheckingRule.CHECK_IF_DECLARED),
                freshness=REVOCATION_FRESHNESS,
                freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION),
            time_tolerance=TIME_TOLERANCE,
        )
        gathering = RevocationInfoGatheringSpec(
            online_fetching_rule=(RevinfoOnlineFetchingRule.LOCAL_ONLY if backend is None
                                  else RevinfoOnlineFetchingRule.NO_HISTORICAL_FETCH),
            fetcher_backend=backend if backend is not None else _NO_FETCHING,
            certificate_fetching_rule=(CertificateFetchingRule.NEVER_FETCH if backend is None
                                       else CertificateFetchingRule.FOLLOW_ONLINE_RULE),
        )
        # key usage is the engine's own check (module docstring point 6): pyHanko is told to accept any
        return SignatureValidationSpec(cert_validation_policy=policy, revinfo_gathering_policy=gathering,
                                       key_usage_settings=KeyUsageConstraints(key_usage=set(), extd_key_usage=None))

    async def _validate_one(self, document: _Document, entry: _Entry, spec: SignatureValidationSpec,
                            validation_time: dt.datetime, embedded_only: bool) -> _Outcome:
        embedded = entry.embedded
        kind = _kind(entry)
        if embedded is None or entry.error is not None:
            return _Outcome(entry=entry, kind=kind, indication=Indication.TOTAL_FAILED,
                            sub_indication=SubIndication.FORMAT_FAILURE,
                            findings=(Finding("unreadable_signature", entry.error or "unreadable signature",
                                              SubIndication.FORMAT_FAILURE),))
        timing = ValidationTimingInfo(validation_time=validation_time, best_signature_time=validation_time,
                                      point_in_time_validation=embedded_only)
        try:
            if kind is SignatureKind.DOCUMENT_TIMESTAMP:
                result: Any = await ades_timestamp_validation(
                    tst_signed_data=embedded.signed_data,
                    validation_spec=dataclasses.replace(spec, local_knowledge=document.dss.knowledge),
                    expected_tst_imprint=embedded.compute_digest, timing_info=timing)
            elif _has_signature_timestamp(embedded):
                # EN 319 102-1 5.6.3 step 1: the validation of a signature with time at the current time; only
                # when it is INDETERMINATE the LTA process's past-signature validation follows (pyHanko's LTA
                # process runs the past validation even after a pass, and fails NO_POE without a later
                # document time-stamp: a passed B-LT signature would not pass)
                result = await ades_with_time_validation(
                    embedded.signed_data, dataclasses.replace(spec, local_knowledge=document.dss.knowledge),
                    timing_info=timing, raw_digest=embedded.compute_digest(),
                    extra_status_kwargs=embedded.summarise_integrity_info(), status_cls=PdfSignatureStatus)
                if result.ades_subindic.status is AdESStatus.INDETERMINATE:
                    # diff_policy None: pyHanko's difference analysis is not run (module docstring 7)
                    past = await ades_lta_validation(
                        embedded, PdfSignatureValidationSpec(spec, diff_policy=None), timing_info=timing)
                    # EN 319 102-1 section 5.6.2.4 (past signature validation) step 4: when no proof of existence
                    # lets the past validation conclude, the result of the validation at the current time is
                    # returned (e.g. REVOKED_NO_POE for a signer revoked before a time-stamp that cannot help)
                    if past.ades_subindic is not AdESIndeterminate.NO_POE:
                        result = past
            else:  # pyHanko's with-time and LTA processes require a signature time-stamp: EN 319 102-1 5.3
                result = await ades_basic_validation(
                    embedded.signed_data, dataclasses.replace(spec, local_knowledge=document.dss.knowledge),
                    timing_info=timing, raw_digest=embedded.compute_digest())
        except Exception as exc:  # noqa: BLE001 - a malformed CMS structure surfaces as any exception type
            return _Outcome(entry=entry, kind=kind, indication=Indication.TOTAL_FAILED,
                            sub_indication=SubIndication.FORMAT_FAILURE,
                            findings=(Finding("unreadable_signature", f"pyHanko could not validate the "
                                              f"signature: {_describe(exc)}", SubIndication.FORMAT_FAILURE),))
        indication, sub_indication = _map_ades(result.ades_subindic)
        findings: list[Finding] = []
        if indication is not Indication.TOTAL_PASSED:
            findings.append(Finding("ades", result.failure_msg or _ades_message(result), sub_indication))
        signer = _signer_cert(embedded)
        if (kind is not SignatureKind.DOCUMENT_TIMESTAMP and signer is not None
                and sub_indication is SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
                and signer.not_valid_after < validation_time):
            # EN 319 102-1 section 5.2.6 (X.509 certificate validation): a signing certificate expired at the
            # validation time, with no revocation data and no proof of existence from its validity period, is
            # INDETERMINATE / OUT_OF_BOUNDS_NO_POE; pyHanko stops first at another certificate of the path and
            # says only CERTIFICATE_CHAIN_GENERAL_FAILURE
            indication, sub_indication = Indication.INDETERMINATE, SubIndication.OUT_OF_BOUNDS_NO_POE
            findings.append(Finding("certificate_expired", f"the signer's certificate expired on "
                                    f"{signer.not_valid_after.isoformat()}, before the validation time, and no "
                                    "proof of existence or revocation data from its validity period is available",
                                    sub_indication))
        if (kind is not SignatureKind.DOCUMENT_TIMESTAMP and signer is not None
                and sub_indication is SubIndication.CHAIN_CONSTRAINTS_FAILURE and signer.self_signed != "no"
                and signer.sha256 not in self._anchor_digests):
            # EN 319 102-1 section 5.2.6: a self-signed signer certificate that is not a trust anchor has no chain
            # to one (NO_CERTIFICATE_CHAIN_FOUND); pyHanko refuses the self-signed path as a constraint failure
            indication, sub_indication = Indication.INDETERMINATE, SubIndication.NO_CERTIFICATE_CHAIN_FOUND
            findings.append(Finding("self_signed_untrusted", "the signer's certificate is self-signed and not a "
                                    "trust anchor of this service", sub_indication))
        if (kind is not SignatureKind.DOCUMENT_TIMESTAMP and signer is not None and not embedded_only
                and sub_indication is SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
                and spec.revinfo_gathering_policy.fetcher_backend is not _NO_FETCHING
                and await _revocation_unavailable(embedded, signer, dataclasses.replace(
                    spec, local_knowledge=document.dss.knowledge), timing)):
            # ETSI TS 119 102-1 table 6 / EN 319 102-1 section 5.2.6 (X.509 certificate validation): when the
            # revocation status of a certificate of the path cannot be determined because the revocation data is
            # not available (not embedded, and neither the OCSP responder nor a CRL distribution point answered
            # when asked), the result is INDETERMINATE / TRY_LATER (it may be available later); pyHanko reports
            # pyhanko-certvalidator's InsufficientRevinfoError only as CERTIFICATE_CHAIN_GENERAL_FAILURE
            indication, sub_indication = Indication.INDETERMINATE, SubIndication.TRY_LATER
            findings.append(Finding("revocation_unavailable", "no revocation data for the signer's certificate "
                                    "path is embedded and none could be obtained online (no usable answer from "
                                    "its OCSP responder or CRL distribution points); the validation may be "
                                    "repeated later",
                                    sub_indication))
        status = result.api_status
        path: ValidationPath | None = getattr(status, "validation_path", None) if status is not None else None
        timestamp_ok = _timestamp_ok(result)
        if not timestamp_ok and kind is not SignatureKind.DOCUMENT_TIMESTAMP and _has_signature_timestamp(embedded):
            timestamp_ok = await _signature_timestamp_valid(
                embedded, dataclasses.replace(spec, local_knowledge=document.dss.knowledge), timing)
        return _Outcome(entry=entry, kind=kind, indication=indication, sub_indication=sub_indication,
                        findings=tuple(findings), path=path, signature_timestamp_ok=timestamp_ok)

    # --- reporting -----------------------------------------------------------------------------------------------

    def _report(self, document: _Document, outcome: _Outcome, doc_timestamps: Sequence[_Outcome],
                validation_time: dt.datetime) -> SignatureReport:
        entry, embedded = outcome.entry, outcome.entry.embedded
        sig_object = entry.sig_object
        sub_filter = _name(sig_object.get("/SubFilter")) if sig_object is not None else None
        byte_range = _byte_range(sig_object)
        if embedded is None:
            return SignatureReport(
                id="", field_name=entry.field_name, kind=outcome.kind, indication=outcome.indication,
                sub_indication=outcome.sub_indication, findings=outcome.findings, signer=None,
                claimed_signing_time=None, best_signature_time=None, timestamps=(), level=None,
                qualification=None, sub_filter=sub_filter, digest_algorithm=None, signature_algorithm=None,
                coverage=Coverage(None, byte_range, False, False) if byte_range else None,
                docmdp_permission=None, modification_level=None)
        signer_cert = _signer_cert(embedded)
        findings = list(outcome.findings)
        indication, sub_indication = outcome.indication, outcome.sub_indication
        if signer_cert is not None and outcome.kind is not SignatureKind.DOCUMENT_TIMESTAMP:
            for finding in _purpose_findings(signer_cert):
                findings.append(finding)
                indication, sub_indication = _worse(indication, sub_indication, finding.sub_indication, False)
        timestamps, best = self._times(outcome, doc_timestamps, validation_time)
        chain = _chain(outcome.path, signer_cert, embedded)
        coverage = embedded.coverage
        return SignatureReport(
            id="", field_name=entry.field_name, kind=outcome.kind, indication=indication,
            sub_indication=sub_indication, findings=tuple(findings),
            signer=_identity(signer_cert, chain) if signer_cert is not None else None,
            claimed_signing_time=_claimed_time(embedded),
            best_signature_time=best, timestamps=timestamps,
            level=_level(document, outcome, doc_timestamps, sub_filter),
            qualification=self._qualification(signer_cert, chain, best.time if best else validation_time),
            coverage=Coverage(revision=embedded.signed_revision + 1, byte_range=byte_range,
                              whole_revision=coverage is not None
                              and coverage >= SignatureCoverageLevel.ENTIRE_REVISION,
                              whole_file=coverage == SignatureCoverageLevel.ENTIRE_FILE),
            sub_filter=sub_filter, digest_algorithm=embedded.md_algorithm,
            signature_algorithm=embedded.signer_info["signature_algorithm"]["algorithm"].native,
            docmdp_permission=(int(embedded.docmdp_level.value)
                               if outcome.kind is SignatureKind.CERTIFICATION and embedded.docmdp_level else None),
            modification_level=None,  # pyHanko's difference analysis is not run (module docstring 7)
        )

    def _times(self, outcome: _Outcome, doc_timestamps: Sequence[_Outcome],
               validation_time: dt.datetime) -> tuple[tuple[TimeProof, ...], TimeProof | None]:
        """The signature's own time-stamps and the document time-stamps after it; the best signature time (TS
        119 102-1 section 5.6.2.1): a valid signature time-stamp, else a later valid document time-stamp, else the
        validation time."""
        embedded = outcome.entry.embedded
        assert embedded is not None  # noqa: S101 - _report checked
        proofs: list[TimeProof] = []
        best: TimeProof | None = None
        if outcome.kind is SignatureKind.DOCUMENT_TIMESTAMP:
            own = _tst_proof(embedded.signed_data, "document-timestamp")
            if own is not None:
                proofs.append(own)
                best = own if outcome.indication is Indication.TOTAL_PASSED else None
        else:
            for token in extract_tst_data_iter(embedded.signer_info, signed=False):
                proof = _tst_proof(token, "signature-timestamp")
                if proof is not None:
                    proofs.append(proof)
                    if best is None and outcome.signature_timestamp_ok:
                        best = proof
        for later in doc_timestamps:
            other = later.entry.embedded
            if later is outcome or other is None or other.signed_revision <= embedded.signed_revision:
                continue
            proof = _tst_proof(other.signed_data, "document-timestamp")
            if proof is not None:
                proofs.append(proof)
                if best is None and later.indication is Indication.TOTAL_PASSED:
                    best = proof
        return tuple(proofs), best or TimeProof(time=validation_time, source="validation-time")

    def _qualification(self, cert: x509.Certificate | None, chain: Sequence[x509.Certificate],
                       at: dt.datetime) -> Qualification | None:
        """ETSI TS 119 612 trusted list when configured and it answers (TS 119 615), else the certificate's own
        qcStatements (EN 319 412-5 section 4.2.1 QcCompliance, 4.2.2 QcSSCD, 4.2.3 QcType)."""
        if cert is None:
            return None
        if self._trust.trusted_list is not None and chain:
            listed = self._trust.trusted_list.qualification(chain, at)
            if listed is not None:
                return listed
        return _qc_statements(cert)


# --- the internal records --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """One signature field with a value, as pyHanko reads it (`embedded` None when its CMS does not parse)."""

    field_name: str | None
    sig_object: generic.DictionaryObject | None
    embedded: EmbeddedPdfSignature | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Dss:
    knowledge: LocalKnowledge
    ocsps: tuple[ocsp.OCSPResponse, ...]
    crls: tuple[crl.CertificateList, ...]

    def has_revocation_data(self, cert: x509.Certificate) -> bool:
        """An OCSP response about `cert` or a CRL of its issuer (EN 319 142-1 section 5.4.2: B-LT)."""
        for response in self.ocsps:
            try:
                basic = response["response_bytes"]["response"].parsed
                for single in basic["tbs_response_data"]["responses"]:
                    cert_id = single["cert_id"]
                    # RFC 6960 section 4.1.1 CertID: the serial number within its issuer (the name's hash): a
                    # response about another CA's certificate of the same serial is not about this one
                    if cert_id["serial_number"].native != cert.serial_number:
                        continue
                    name_hash = hashlib.new(cert_id["hash_algorithm"]["algorithm"].native, cert.issuer.dump())
                    if name_hash.digest() == cert_id["issuer_name_hash"].native:
                        return True
            except (KeyError, ValueError, TypeError):
                continue
        return any(revocation_list.issuer == cert.issuer for revocation_list in self.crls)


@dataclass(frozen=True, slots=True)
class _Document:
    sha256: str
    size: int
    reader: PdfFileReader
    signatures: list[_Entry]
    dss: _Dss
    structure: PdfStructure
    review: RevisionReview
    notes: tuple[Finding, ...]
    """Document remarks of the reading (a lenient read)."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    entry: _Entry
    kind: SignatureKind
    indication: Indication
    sub_indication: SubIndication | None
    findings: tuple[Finding, ...]
    path: ValidationPath | None = None
    signature_timestamp_ok: bool = False


class _NoFetching(FetcherBackend):
    """The backend of a validation that must not fetch (`LOCAL_ONLY`): it is never asked, and refuses if it is,
    so that pyHanko does not provision an HTTP backend of its own."""

    def get_fetchers(self) -> Fetchers:
        raise RuntimeError("this validation uses embedded validation data only")

    async def close(self) -> None:
        """Nothing to release."""


_NO_FETCHING: Final = _NoFetching()


# --- reading helpers -------------------------------------------------------------------------------------------


def _collect_signatures(reader: PdfFileReader) -> list[_Entry]:
    """Every filled signature field, each read on its own so that one malformed signature (a missing /Contents,
    CMS that does not parse, an unknown /SubFilter) is reported as such instead of hiding the others. pyHanko's
    own collection (`reader.embedded_signatures`, which its LTA process reads for the document time-stamps)
    skips unknown SubFilters and stops at the first malformed one; it is given the readable ones, in pyHanko's
    order (by signed revision), through its cache attribute (pyHanko 0.38, pinned in constraints.txt)."""
    entries: list[_Entry] = []
    for fq_name, sig_ref, field_ref in enumerate_sig_fields(reader, filled_status=True):
        sig_object = _dictionary(sig_ref)
        try:
            embedded = EmbeddedPdfSignature(reader, field_ref, fq_name)
        except Exception as exc:  # noqa: BLE001 - pyHanko raises many types on a malformed signature
            entries.append(_Entry(fq_name, sig_object, None, f"the signature cannot be read: {_describe(exc)}"))
            continue
        entries.append(_Entry(fq_name, sig_object, embedded))
    entries.sort(key=lambda e: (e.embedded.signed_revision if e.embedded is not None else 1 << 30))
    readable = [e.embedded for e in entries if e.embedded is not None and _known_sub_filter(e.sig_object)]
    reader._embedded_signatures = readable  # type: ignore[assignment]  # see the docstring
    for entry in entries:
        if entry.embedded is not None and not _known_sub_filter(entry.sig_object):
            entry.error = (f"the /SubFilter {_name(entry.sig_object.get('/SubFilter')) if entry.sig_object else None}"
                           " is not a PDF signature format (ISO 32000-2 section 12.8.3)")
    return entries


_SUB_FILTERS: Final = frozenset({"/adbe.pkcs7.detached", "/adbe.pkcs7.sha1", "/ETSI.CAdES.detached",
                                 "/ETSI.RFC3161"})


def _known_sub_filter(sig_object: generic.DictionaryObject | None) -> bool:
    return sig_object is not None and str(sig_object.get("/SubFilter")) in _SUB_FILTERS


def _dictionary(obj: Any) -> generic.DictionaryObject | None:
    try:
        value = obj.get_object() if isinstance(obj, generic.IndirectObject) else obj  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    except Exception:  # noqa: BLE001 - a dangling reference
        return None
    return value if isinstance(value, generic.DictionaryObject) else None


def _read_dss(reader: PdfFileReader) -> _Dss:
    """The document security store's revocation data, once per document (ISO 32000-2 section 12.8.4.3)."""
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return _Dss(LocalKnowledge(), (), ())
    ocsps = tuple(ocsp.OCSPResponse.load(ref.get_object().data) for ref in dss.ocsps)
    crls = tuple(crl.CertificateList.load(ref.get_object().data) for ref in dss.crls)
    knowledge = LocalKnowledge(
        known_ocsps=[c for response in ocsps for c in OCSPContainer.load_multi(response)],
        known_crls=[CRLContainer(c) for c in crls], known_certs=list(dss.load_certs()))
    return _Dss(knowledge, ocsps, crls)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def _name(value: Any) -> str | None:
    return str(value).removeprefix("/") if isinstance(value, generic.NameObject) else None


def _byte_range(sig_object: generic.DictionaryObject | None) -> tuple[int, ...]:
    if sig_object is None:
        return ()
    value = sig_object.get("/ByteRange")
    if not isinstance(value, generic.ArrayObject):
        return ()
    return tuple(int(v) for v in value if isinstance(v, generic.NumberObject))


def _kind(entry: _Entry) -> SignatureKind:
    """ISO 32000-2 section 12.8.5 /Type /DocTimeStamp; a /Reference with /TransformMethod /DocMDP (12.8.2.2)
    makes an approval signature a certification signature."""
    sig = entry.sig_object
    if sig is None:
        return SignatureKind.APPROVAL
    if sig.get("/Type") == "/DocTimeStamp" or sig.get("/SubFilter") == "/ETSI.RFC3161":
        return SignatureKind.DOCUMENT_TIMESTAMP
    references = sig.get("/Reference")
    if isinstance(references, generic.ArrayObject):
        for reference in references:
            ref = _dictionary(reference)
            if ref is not None and ref.get("/TransformMethod") == "/DocMDP":
                return SignatureKind.CERTIFICATION
    return SignatureKind.APPROVAL


# --- verdict helpers -------------------------------------------------------------------------------------------


def _map_ades(sub: AdESSubIndic) -> tuple[Indication, SubIndication | None]:
    """EN 319 102-1 section 5.1.3 as pyHanko reports it, to the report's indication and sub-indication. The main
    indication is pyHanko's (AdESStatus), since the sub-indication alone is ambiguous (NOT_YET_VALID)."""
    if sub.status is AdESStatus.PASSED:
        return Indication.TOTAL_PASSED, None
    indication = Indication.TOTAL_FAILED if sub.status is AdESStatus.FAILED else Indication.INDETERMINATE
    assert isinstance(sub, (AdESFailure, AdESIndeterminate))  # noqa: S101 - pyHanko's two non-passed enums
    if sub is AdESIndeterminate.REVOCATION_OUT_OF_BOUNDS_NO_POE:
        return indication, SubIndication.OUT_OF_BOUNDS_NO_POE
    return indication, SubIndication(sub.name)


def _ades_message(result: Any) -> str:
    status = result.api_status
    if status is not None and hasattr(status, "summary"):
        return f"pyHanko: {result.ades_subindic.name} ({status.summary()})"
    return f"pyHanko: {result.ades_subindic.name}"


def _worse(indication: Indication, sub_indication: SubIndication | None, candidate: SubIndication | None,
           failed: bool) -> tuple[Indication, SubIndication | None]:
    """The verdict after a finding: a worse main indication wins (TOTAL-FAILED beats INDETERMINATE); with an equal
    one the verdict already reached stays (it came first: pyHanko's)."""
    if candidate is None:
        return indication, sub_indication
    new = Indication.TOTAL_FAILED if failed else candidate.indication
    if _RANK[new] > _RANK[indication]:
        return new, candidate
    return indication, sub_indication


def _purpose_findings(cert: x509.Certificate) -> list[Finding]:
    """Module docstring point 6: nonRepudiation, and an extendedKeyUsage that allows document signing."""
    findings: list[Finding] = []
    key_usage = cert.key_usage_value
    if key_usage is None or "non_repudiation" not in key_usage.native:
        have = ", ".join(sorted(key_usage.native)) if key_usage is not None else "no keyUsage extension"
        findings.append(Finding(
            "key_usage", f"the signer's certificate does not assert keyUsage nonRepudiation (contentCommitment), "
            f"which a signature on a document needs (ETSI EN 319 412-2 section 4.3.2); it has: {have}",
            SubIndication.SIG_CONSTRAINTS_FAILURE))
    eku = cert.extended_key_usage_value
    if eku is not None:
        purposes = set(eku.native)
        if not purposes & DOCUMENT_SIGNING_PURPOSES:
            findings.append(Finding(
                "extended_key_usage", "the signer's certificate limits its key to purposes other than signing "
                f"documents ({', '.join(sorted(purposes))}; RFC 5280 section 4.2.1.12)",
                SubIndication.SIG_CONSTRAINTS_FAILURE))
    return findings


# --- report helpers --------------------------------------------------------------------------------------------


def _signer_cert(embedded: EmbeddedPdfSignature) -> x509.Certificate | None:
    try:
        return embedded.signer_cert
    except Exception:  # noqa: BLE001 - no signer certificate in the CMS: pyHanko says NO_SIGNING_CERTIFICATE_FOUND
        return None


def _chain(path: ValidationPath | None, signer: x509.Certificate | None,
           embedded: EmbeddedPdfSignature) -> tuple[x509.Certificate, ...]:
    """The validated path, signer first and anchor last; else the certificates the signature carries."""
    if path is not None:
        certs = list(path.iter_certs(include_root=True))
        certs.reverse()
        if signer is not None and (not certs or certs[0].sha256 != signer.sha256):
            certs.insert(0, signer)
        return tuple(certs)
    if signer is None:
        return ()
    try:
        others = list(embedded.other_embedded_certs)
    except Exception:  # noqa: BLE001 - malformed certificate set
        others = []
    return (signer, *others)


def _certificate_info(cert: x509.Certificate) -> CertificateInfo:
    parsed = cx509.load_der_x509_certificate(cert.dump())
    return CertificateInfo(
        subject=parsed.subject.rfc4514_string(), issuer=parsed.issuer.rfc4514_string(),
        serial_number=serial_to_hex(cert.serial_number),
        not_before=cert.not_valid_before, not_after=cert.not_valid_after,
        sha256=cert.sha256.hex(), der_b64=base64.b64encode(cert.dump()).decode())


def _identity(cert: x509.Certificate, chain: Sequence[x509.Certificate]) -> SignerIdentity:
    """ETSI EN 319 412-1 section 5.1.3 semantics identifiers: a natural person's serialNumber (PNO, IDC, PAS, TIN)
    first, else the legal person's organizationIdentifier, else a serialNumber as it is."""
    subject = cert.subject.native
    serial = _text(subject.get("serial_number"))
    org_id = _text(subject.get("organization_identifier"))
    identifier, identifier_type = None, None
    serial_match = _SEMANTICS_ID.match(serial) if serial else None
    if serial_match is not None and serial_match.group(1) in _NATURAL_TYPES:
        identifier, identifier_type = serial, serial_match.group(1)
    elif org_id is not None:
        match = _SEMANTICS_ID.match(org_id)
        identifier, identifier_type = org_id, match.group(1) if match else None
    elif serial is not None:
        identifier, identifier_type = serial, serial_match.group(1) if serial_match else None
    given, surname = _text(subject.get("given_name")), _text(subject.get("surname"))
    organization = _text(subject.get("organization_name"))
    name = (_text(subject.get("common_name")) or " ".join(p for p in (given, surname) if p) or organization
            or cert.subject.human_friendly)
    return SignerIdentity(name=name, identifier=identifier, identifier_type=identifier_type,
                          country=_text(subject.get("country_name")), organization=organization,
                          certificate=_certificate_info(cert),
                          chain=tuple(_certificate_info(c) for c in (chain or (cert,))))


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value is not None else None


def _claimed_time(embedded: EmbeddedPdfSignature) -> dt.datetime | None:
    try:
        return embedded.self_reported_timestamp
    except Exception:  # noqa: BLE001 - a malformed /M date is no claimed time
        return None


def _tst_proof(token: cms.SignedData, source: str) -> TimeProof | None:
    """An RFC 3161 token's genTime and its TSA's name."""
    try:
        tst_info = token["encap_content_info"]["content"].parsed
        time: dt.datetime = tst_info["gen_time"].native
        certs: SignedDataCerts = extract_certs_for_validation(token)
        tsa = certs.signer_cert.subject.native.get("common_name")
    except Exception:  # noqa: BLE001 - a malformed token gives no proof
        return None
    return TimeProof(time=time, source=source, tsa=_text(tsa))


def _timestamp_ok(result: Any) -> bool:
    """The signature time-stamp validated (EN 319 102-1 section 5.4): the LTA process's own result for it, or
    the with-time process's status of the token."""
    ts_result = getattr(result, "signature_timestamp_status", None)
    if ts_result is not None:
        return bool(ts_result.ades_subindic is AdESPassed.OK)
    token = getattr(result.api_status, "timestamp_validity", None)
    return token is not None and bool(token.trusted)


async def _signature_timestamp_valid(embedded: EmbeddedPdfSignature, spec: SignatureValidationSpec,
                                     timing: ValidationTimingInfo) -> bool:
    """The signature time-stamp validated on its own (EN 319 102-1 section 5.4, its imprint the digest of the
    signature value, EN 319 122-1 section 5.3), for the level reached when pyHanko's verdict on the signature
    stopped before the time-stamp was judged: EN 319 142-1 section 6 makes B-T a time-stamp over the signature
    (whatever the signer's chain) and leaves the TSA's revocation data to B-LT (section 5.4), so the token must
    be intact, signed by its TSA and chain to a trust anchor; the TSA's revocation status is not asked here
    (a validation "as of" a date after a B-T signature has none embedded)."""
    token = next(iter(extract_tst_data_iter(embedded.signer_info, signed=False)), None)
    if token is None:
        return False
    no_revocation = CertRevTrustPolicy(RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.NO_CHECK, intermediate_ca_cert_rule=RevocationCheckingRule.NO_CHECK))
    spec = dataclasses.replace(spec, cert_validation_policy=dataclasses.replace(
        spec.cert_validation_policy, revinfo_policy=no_revocation))
    value: bytes = embedded.signer_info["signature"].native

    def imprint(algorithm: str) -> bytes:
        return hashlib.new(algorithm, value).digest()

    try:
        result = await ades_timestamp_validation(tst_signed_data=token, validation_spec=spec,
                                                 expected_tst_imprint=imprint, timing_info=timing)
    except Exception:  # noqa: BLE001 - a malformed token is no valid time-stamp
        return False
    return result.ades_subindic is AdESPassed.OK


async def _revocation_unavailable(embedded: EmbeddedPdfSignature, signer: x509.Certificate,
                                  spec: SignatureValidationSpec, timing: ValidationTimingInfo) -> bool:
    """Whether the signer's path fails for want of revocation data and for nothing else it met first: the path
    validated again by pyhanko-certvalidator under the same policy, validation data and fetchers, failing with
    `InsufficientRevinfoError` (no revocation data found or fetched; not `StaleRevinfoError`, which pyHanko
    already reports as TRY_LATER). Runs only after pyHanko's CERTIFICATE_CHAIN_GENERAL_FAILURE with fetching
    allowed, so its requests are bounded like the first ones (the source's timeout and FetchLimits)."""
    context = spec.cert_validation_policy.build_validation_context(
        timing, bootstrap_validation_data_handlers(spec, timing))
    try:
        intermediates = extract_certs_for_validation(embedded.signed_data).other_certs
        await CertificateValidator(signer, intermediate_certs=list(intermediates),
                                   validation_context=context).async_validate_path()
    except StaleRevinfoError:
        return False
    except InsufficientRevinfoError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is pyHanko's verdict to keep
        return False
    return False


def _has_signature_timestamp(embedded: EmbeddedPdfSignature) -> bool:
    return next(iter(extract_tst_data_iter(embedded.signer_info, signed=False)), None) is not None


def _tsa_cert(embedded: EmbeddedPdfSignature) -> x509.Certificate | None:
    for token in extract_tst_data_iter(embedded.signer_info, signed=False):
        try:
            cert: x509.Certificate = extract_certs_for_validation(token).signer_cert
        except Exception:  # noqa: BLE001 - no TSA certificate in the token
            return None
        return cert
    return None


def _level(document: _Document, outcome: _Outcome, doc_timestamps: Sequence[_Outcome],
           sub_filter: str | None) -> str | None:
    """The PAdES baseline level reached (ETSI EN 319 142-1 section 6): B-B an ETSI.CAdES.detached signature with
    signing-certificate-v2 (5.2); B-T plus a valid signature time-stamp (5.3); B-LT plus the signer's and the
    TSA's revocation data in the DSS (5.4); B-LTA plus a valid document time-stamp over a revision holding that
    DSS (5.5). None for a document time-stamp and for other formats (adbe.pkcs7.detached)."""
    embedded = outcome.entry.embedded
    if embedded is None or outcome.kind is SignatureKind.DOCUMENT_TIMESTAMP or sub_filter != "ETSI.CAdES.detached":
        return None
    signed_attrs = embedded.signer_info["signed_attrs"]
    names = {attribute["type"].native for attribute in signed_attrs} if signed_attrs else set()
    if "signing_certificate_v2" not in names:
        return None
    if not outcome.signature_timestamp_ok:
        return "B-B"
    signer, tsa = _signer_cert(embedded), _tsa_cert(embedded)
    if signer is None or tsa is None or not (document.dss.has_revocation_data(signer)
                                             and document.dss.has_revocation_data(tsa)):
        return "B-T"
    for later in doc_timestamps:
        other = later.entry.embedded
        if (other is not None and later.indication is Indication.TOTAL_PASSED
                and other.signed_revision > embedded.signed_revision
                and "/DSS" in document.reader.get_historical_root(other.signed_revision)):
            return "B-LTA"
    return "B-LT"


def _qc_statements(cert: x509.Certificate) -> Qualification:
    """EN 319 412-5: QcCompliance (4.2.1) makes the certificate qualified; QcSSCD (4.2.2); QcType (4.2.3)."""
    statements = {s["statement_id"].native: s for s in get_qc_statements(cert)}
    if not statements:
        return Qualification(qualified=False, qc_type=None, qscd=False, source="none")
    qc_type = None
    if "qc_type" in statements:
        types = statements["qc_type"]["statement_info"].native or []
        qc_type = next((_QC_TYPES[t] for t in types if t in _QC_TYPES), None)
    return Qualification(qualified="qc_compliance" in statements, qc_type=qc_type,
                         qscd="qc_sscd" in statements, source="qcStatements")


# --- the merge with the structure analysis ---------------------------------------------------------------------


def merge_structure(signatures: Sequence[SignatureReport], structure: PdfStructure, review: RevisionReview,
                    ) -> tuple[tuple[SignatureReport, ...], tuple[Revision, ...], tuple[Finding, ...]]:
    """Merge the structure analysis (`signing.core.structure`, raw bytes) and the revision review
    (`signing.core.attacks`) into pyHanko's verdicts (issue 14 contract, "Structure analysis"):

    1. A raw signature is matched to a reported one by its /ByteRange (else, without one, by field name); the
       report takes the raw signature's revision (the raw revision numbering every record shares). The raw
       signature's findings and the review's findings for that /ByteRange are added (`by_signature` already
       holds every later-revision and incremental-saving finding that applies to it: nothing else is
       propagated); a finding with a sub-indication sets the verdict when it is worse (TOTAL-FAILED beats
       INDETERMINATE beats TOTAL-PASSED; on a tie pyHanko's stays). A finding from a later revision makes the
       signature TOTAL-FAILED whatever its sub-indication (EN 319 102-1 section 5.2.2 format checking).
    2. A raw signature pyHanko does not list (e.g. no /SubFilter), and a /ByteRange the review judged that
       neither lists, are reported too, TOTAL-FAILED, with their findings (FORMAT_FAILURE unless they say
       otherwise).
    3. The revisions are the raw ones (`RawRevision`: number, end) with the review's changes, classified
       allowed only when every change is; the document's findings are the structure's own, and the review's
       findings of a revision no signature precedes (the others are in the signatures' findings).
    Signatures are ordered by revision and file position and numbered sig-1, sig-2, ...; revisions refer to them.
    """
    taken: set[int] = set()
    merged: list[tuple[int, int, SignatureReport]] = []  # (revision, file position, report)
    consumed: set[tuple[int, ...]] = set()
    for position, report in enumerate(signatures):
        raw_index = _match(report, structure.signatures, taken)
        raw = structure.signatures[raw_index] if raw_index is not None else None
        if raw_index is not None:
            taken.add(raw_index)
        merged_report = _merge_one(report, raw, review)
        if merged_report.coverage is not None and merged_report.coverage.byte_range:
            consumed.add(tuple(merged_report.coverage.byte_range))
        revision = merged_report.coverage.revision if merged_report.coverage is not None else None
        merged.append((revision or 1 << 30, raw.offset if raw is not None else position, merged_report))
    for raw_index, raw in enumerate(structure.signatures):
        if raw_index in taken:
            continue
        if raw.byte_range:
            consumed.add(tuple(raw.byte_range))
        merged.append((raw.revision or 1 << 30, raw.offset, _raw_only(raw, review)))
    for judged, judged_findings in review.by_signature.items():
        if judged not in consumed:
            signed = structure.revision_at(judged[-2] + judged[-1]) if len(judged) >= 2 else None
            number = signed.number if signed is not None else None
            merged.append((number or 1 << 30, 1 << 62, _review_only(judged, judged_findings, number)))
    merged.sort(key=lambda item: (item[0], item[1]))
    reports = [dataclasses.replace(report, id=f"sig-{i}") for i, (_, _, report) in enumerate(merged, start=1)]
    return tuple(reports), _merge_revisions(reports, structure, review), _document_findings(reports, structure,
                                                                                            review)


def _merge_one(report: SignatureReport, raw: RawSignature | None, review: RevisionReview) -> SignatureReport:
    """Merge rule 1 for one signature pyHanko lists (`raw`: its raw dictionary, when matched)."""
    findings = list(report.findings)
    coverage = report.coverage
    byte_range = coverage.byte_range if coverage is not None else ()
    if raw is not None:
        findings.extend(raw.findings)
        byte_range = raw.byte_range or byte_range
        if coverage is not None and raw.revision is not None:
            coverage = dataclasses.replace(coverage, revision=raw.revision)
    added = len(findings)
    if byte_range:
        findings.extend(review.by_signature.get(tuple(byte_range), ()))
    indication, sub_indication = report.indication, report.sub_indication
    for index in range(len(report.findings), len(findings)):
        indication, sub_indication = _worse(indication, sub_indication, findings[index].sub_indication,
                                            index >= added)
    return dataclasses.replace(report, findings=tuple(findings), indication=indication,
                               sub_indication=sub_indication, coverage=coverage)


def _document_findings(reports: Sequence[SignatureReport], structure: PdfStructure,
                       review: RevisionReview) -> tuple[Finding, ...]:
    """Merge rule 3: the structure's findings and those of revisions no signature precedes."""
    first_signed = min((r.coverage.revision for r in reports if r.coverage is not None
                        and r.coverage.revision is not None), default=None)
    document_findings = list(structure.findings)
    for number in sorted(review.by_revision):
        if first_signed is None or number <= first_signed:
            document_findings.extend(dataclasses.replace(f, revision=f.revision or number)
                                     for f in review.by_revision[number])
    return tuple(document_findings)


def _merge_revisions(reports: Sequence[SignatureReport], structure: PdfStructure,
                     review: RevisionReview) -> tuple[Revision, ...]:
    """Merge rule 3: the raw revisions with the review's classified changes and the signatures ending there."""
    revisions = []
    for raw_revision in structure.revisions or (RawRevision(1, structure.size, None),):
        changes = review.changes.get(raw_revision.number, ())
        classification = None if raw_revision.number == 1 else (
            ChangeClass.NOT_ALLOWED if any(c.classification is ChangeClass.NOT_ALLOWED for c in changes)
            else ChangeClass.ALLOWED)
        ids = tuple(r.id for r in reports if r.coverage is not None and r.coverage.revision == raw_revision.number)
        revisions.append(Revision(number=raw_revision.number, end=raw_revision.end, signatures=ids, changes=changes,
                                  classification=classification))
    return tuple(revisions)


def _match(report: SignatureReport, raws: Sequence[RawSignature], taken: set[int]) -> int | None:
    byte_range = tuple(report.coverage.byte_range) if report.coverage is not None else ()
    for index, raw in enumerate(raws):
        if index not in taken and byte_range and raw.byte_range is not None and tuple(raw.byte_range) == byte_range:
            return index
    if not byte_range:
        for index, raw in enumerate(raws):
            if index not in taken and raw.field_name is not None and raw.field_name == report.field_name:
                return index
    return None


def _failed_entry(findings: list[Finding], *, field_name: str | None, kind: SignatureKind,
                  coverage: Coverage | None, sub_filter: str | None) -> SignatureReport:
    """A signature only the structure analysis shows (merge rule 2): TOTAL-FAILED."""
    sub_indication = next((f.sub_indication for f in findings
                           if f.sub_indication is not None and f.sub_indication.indication is Indication.TOTAL_FAILED),
                          SubIndication.FORMAT_FAILURE)
    if not any(f.sub_indication is not None for f in findings):
        findings.append(Finding("not_a_signature_to_pyhanko", "pyHanko does not read this signature dictionary as "
                                "a signature (ISO 32000-2 section 12.8.1: /Filter, /SubFilter, /ByteRange, "
                                "/Contents)", SubIndication.FORMAT_FAILURE))
    return SignatureReport(
        id="", field_name=field_name, kind=kind, indication=Indication.TOTAL_FAILED, sub_indication=sub_indication,
        findings=tuple(findings), signer=None, claimed_signing_time=None, best_signature_time=None, timestamps=(),
        level=None, qualification=None, coverage=coverage, sub_filter=sub_filter, digest_algorithm=None,
        signature_algorithm=None, docmdp_permission=None, modification_level=None)


def _raw_only(raw: RawSignature, review: RevisionReview) -> SignatureReport:
    findings = list(raw.findings)
    if raw.byte_range:
        findings.extend(review.by_signature.get(tuple(raw.byte_range), ()))
    coverage = (Coverage(raw.revision, tuple(raw.byte_range), False, False) if raw.byte_range
                else Coverage(raw.revision, (), False, False) if raw.revision is not None else None)
    return _failed_entry(findings, field_name=raw.field_name,
                         kind=(SignatureKind.DOCUMENT_TIMESTAMP if raw.type_name == "DocTimeStamp"
                               else SignatureKind.APPROVAL),
                         coverage=coverage, sub_filter=raw.sub_filter)


def _review_only(byte_range: tuple[int, ...], findings: Sequence[Finding], revision: int | None) -> SignatureReport:
    return _failed_entry(list(findings), field_name=None, kind=SignatureKind.APPROVAL,
                         coverage=Coverage(revision, byte_range, False, False), sub_filter=None)
