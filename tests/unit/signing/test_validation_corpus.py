"""The validation corpus is what it claims (issue 14 "Tested"), checked by tools independent of Açar's validator:
pyHanko's own validators (the classic API, and the AdES processes of ETSI EN 319 102-1 sections 5.5 and 5.6.3),
poppler's pdfsig (an NSS database trusting the corpus root, OCSP answered on loopback), qpdf --check, and the
documents' and certificates' own bytes (ISO 32000-2 section 12.8, RFC 5280, RFC 6960).

The verdicts Açar's `Validator` must give on the same corpus are in test_validation_corpus_engine.py.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import AsyncIterator
from io import BytesIO

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESIndeterminate, AdESPassed
from pyhanko.sign.validation import KeyUsageConstraints, async_validate_pdf_signature
from pyhanko.sign.validation.ades import ades_lta_validation, ades_with_time_validation
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.policy_decl import (
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpFetcherBackend
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
from pyhanko_certvalidator.registry import SimpleTrustManager

from signing.core.report import SubIndication
from tests.validation_corpus import (
    CASE_NAMES,
    PKCS7,
    PRIVATE_CRITICAL_OID,
    Case,
    Corpus,
    build_corpus,
)

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

NON_REPUDIATION = KeyUsageConstraints(key_usage=frozenset({"non_repudiation"}))
"""ETSI EN 319 412-2 section 4.3.2: a certificate for electronic signatures asserts nonRepudiation."""
DOCUMENT_SIGNING = KeyUsageConstraints(extd_key_usage=frozenset({"document_signing", "email_protection",
                                                                 "adobe_authentic_documents_trust"}))
"""The extended key usages a document signer may carry (RFC 9336 id-kp-documentSigning, emailProtection, Adobe's)."""
NOW_CASES = tuple(name for name in CASE_NAMES if not name.startswith("expired-"))
"""The cases validated at the time of the test (the expired ones are validated "as of" `Case.at`)."""


@pytest.fixture(scope="module")
async def corpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corpus]:
    async with build_corpus(tmp_path_factory.mktemp("corpus")) as corpus:
        yield corpus


@pytest.fixture(scope="module")
async def fetching() -> AsyncIterator[AIOHttpFetcherBackend]:
    backend = AIOHttpFetcherBackend()
    yield backend
    await backend.close()


def reader_of(case: Case) -> PdfFileReader:
    """pyHanko's reader; non-strict for poppler's output, whose incremental update gives an object a generation 1
    without freeing generation 0 (ISO 32000-2 section 7.5.4 expects the free entry; readers tolerate it)."""
    return PdfFileReader(BytesIO(case.pdf), strict=case.producer != "pdfsig")


def signature_of(case: Case) -> EmbeddedPdfSignature:
    signatures = reader_of(case).embedded_regular_signatures
    assert len(signatures) == 1, case.name
    return signatures[0]


def context(corpus: Corpus, fetching: AIOHttpFetcherBackend, *, at: dt.datetime | None = None) -> ValidationContext:
    """Online at the current time (fetching from the loopback responder, revocation data required), or "as of"
    `at` offline (revocation "soft-fail": these checks are about the expiry)."""
    if at is None:
        return ValidationContext(trust_roots=[corpus.root], allow_fetching=True, revocation_mode="hard-fail",
                                 fetcher_backend=fetching)
    return ValidationContext(trust_roots=[corpus.root], allow_fetching=False, revocation_mode="soft-fail",
                             moment=at, crls=[], ocsps=[])


def ades_spec(corpus: Corpus, fetching: AIOHttpFetcherBackend, *, online: bool) -> PdfSignatureValidationSpec:
    policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(trust_roots=[corpus.root]),
        revinfo_policy=CertRevTrustPolicy(RevocationCheckingPolicy(
            ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
            intermediate_ca_cert_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED)))
    rule = RevinfoOnlineFetchingRule.ALWAYS_FETCH if online else RevinfoOnlineFetchingRule.LOCAL_ONLY
    return PdfSignatureValidationSpec(SignatureValidationSpec(
        cert_validation_policy=policy, key_usage_settings=NON_REPUDIATION,
        revinfo_gathering_policy=RevocationInfoGatheringSpec(online_fetching_rule=rule,
                                                             fetcher_backend=fetching if online else None)))


def timing(at: dt.datetime | None) -> ValidationTimingInfo:
    moment = at or dt.datetime.now(dt.UTC)
    return ValidationTimingInfo(validation_time=moment, best_signature_time=moment,
                                point_in_time_validation=at is not None)


def pdfsig(corpus: Corpus, case: Case) -> dict[str, str]:
    """poppler's verdict on the case's signature: its NSS database trusts the corpus root; it asks the loopback
    OCSP responder named in the certificate."""
    path = corpus.directory / f"{case.name}.pdf"
    path.write_bytes(case.pdf)
    proc = subprocess.run(["pdfsig", "-nssdir", f"sql:{corpus.nss}", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    verdict: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("Signature #2"):  # a B-LTA's document time-stamp
            break
        if line.strip().startswith("- ") and ":" in line:
            key, _, value = line.strip()[2:].partition(":")
            verdict[key.strip()] = value.strip()
    assert verdict, proc.stdout + proc.stderr
    return verdict


def qpdf_check(corpus: Corpus, case: Case) -> None:
    path = corpus.directory / f"{case.name}-qpdf.pdf"
    path.write_bytes(case.pdf)
    proc = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert "No syntax or stream encoding errors found" in proc.stdout, proc.stdout + proc.stderr


def signature_level(case: Case) -> str | None:
    """The PAdES baseline level the document's bytes reach (ETSI EN 319 142-1 section 6), read here without any
    validator: ETSI.CAdES.detached with signing-certificate-v2 and no signing-time (B-B), a signature time-stamp
    (B-T), a DSS (B-LT), a document time-stamp after it (B-LTA)."""
    reader = reader_of(case)
    signature = reader.embedded_regular_signatures[0]
    if signature.sig_object["/SubFilter"] != "/ETSI.CAdES.detached":
        return None
    signed = {a["type"].native for a in signature.signer_info["signed_attrs"]}
    if "signing_certificate_v2" not in signed or "signing_time" in signed:
        return None
    unsigned = {a["type"].native for a in signature.signer_info["unsigned_attrs"] or ()}
    if "signature_time_stamp_token" not in unsigned:
        return "B-B"
    if "/DSS" not in reader.root:
        return "B-T"
    return "B-LTA" if reader.embedded_timestamp_signatures else "B-LT"


# --- the corpus as a whole ---------------------------------------------------------------------------------------


async def test_the_corpus_holds_every_case_of_the_issue(corpus: Corpus) -> None:
    assert tuple(corpus.cases) == CASE_NAMES
    producers = {(case.producer, case.key, case.level) for case in corpus.cases.values() if case.passes}
    for key in ("RSA-2048", "ECDSA-P256"):
        assert {("pyHanko", key, level) for level in ("B-B", "B-T", "B-LT", "B-LTA")} <= producers
    assert ("pdfsig", "RSA-2048", None) in producers
    expected = {case.name: case.expected for case in corpus.cases.values()}
    assert expected["untrusted-root-B-T"] == {SubIndication.NO_CERTIFICATE_CHAIN_FOUND}
    assert all(not corpus[name].passes for name in ("revoked-before-signing-B-T", "critical-extension-B-T",
                                                     "no-non-repudiation-B-T", "eku-server-auth-B-T", "expired-B-T"))
    assert corpus["revoked-after-timestamp-B-LT"].passes and corpus["expired-B-LTA"].passes


@pytest.mark.parametrize("name", CASE_NAMES)
async def test_each_document_is_sound_and_signed_as_described(corpus: Corpus, name: str) -> None:
    case = corpus[name]
    qpdf_check(corpus, case)
    signature = signature_of(case)
    assert signature.sig_object["/SubFilter"] == "/" + case.sub_filter
    assert signature_level(case) == case.level
    assert case.signer is not None
    assert signature.signer_cert.dump() == case.signer.public_bytes(Encoding.DER)
    public = case.signer.public_key()
    if case.key.startswith("RSA-"):
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == int(case.key.removeprefix("RSA-"))
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    # whatever the certificate, the signature itself is intact and cryptographically sound
    status = await async_validate_pdf_signature(signature, ValidationContext(trust_roots=[corpus.root],
                                                                             allow_fetching=False, crls=[], ocsps=[]))
    assert status.intact and status.valid, status.pretty_print_details()


async def test_the_certificates_are_what_the_scenarios_say(corpus: Corpus) -> None:
    def extension(name: str, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
        certificate = corpus[name].signer
        assert certificate is not None
        return certificate.extensions.get_extension_for_class(kind)

    usage = extension("no-non-repudiation-B-T", x509.KeyUsage).value
    assert isinstance(usage, x509.KeyUsage) and usage.digital_signature and not usage.content_commitment
    eku = extension("eku-server-auth-B-T", x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage) and list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    critical = [e for e in corpus["critical-extension-B-T"].signer.extensions if e.critical]  # type: ignore[union-attr]
    assert PRIVATE_CRITICAL_OID in {e.oid for e in critical}
    untrusted = corpus["untrusted-root-B-T"].signer
    assert untrusted is not None and untrusted.issuer == corpus.pki.other_issuing.certificate.subject
    for name in ("expired-B-B", "expired-B-T", "expired-B-LTA"):
        case = corpus[name]
        assert case.at is not None and case.signer is not None
        assert case.signer.not_valid_after_utc < case.at
        assert signature_of(case).self_reported_timestamp < case.signer.not_valid_after_utc


# --- pyHanko's own validators ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NOW_CASES if not n.startswith(("revoked-", "untrusted-", "critical-",
                                                                            "no-non-", "eku-"))])
async def test_pyhanko_finds_the_valid_documents_valid(corpus: Corpus, fetching: AIOHttpFetcherBackend,
                                                       name: str) -> None:
    case = corpus[name]
    signature = signature_of(case)
    validation = context(corpus, fetching)
    status = await async_validate_pdf_signature(signature, validation, ts_validation_context=validation,
                                                key_usage_settings=NON_REPUDIATION)
    assert status.bottom_line, status.pretty_print_details()
    if case.level not in (None, "B-B"):
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted


@pytest.mark.parametrize("name", ["pyhanko-rsa-2048-B-LTA", "pyhanko-ecdsa-p256-B-LTA", "expired-B-LTA"])
async def test_pyhanko_archival_validation_passes_the_b_lta_documents_from_their_embedded_data(
        corpus: Corpus, fetching: AIOHttpFetcherBackend, name: str) -> None:
    """ETSI EN 319 102-1 section 5.6.3 on the DSS and document time-stamp alone (no fetching), at the time of the
    test or, for the expired signer, "as of" two days later: the document time-stamp is the proof of existence
    that keeps it valid after its certificate expired."""
    case = corpus[name]
    result = await ades_lta_validation(signature_of(case), ades_spec(corpus, fetching, online=False),
                                       timing_info=timing(case.at))
    assert result.ades_subindic is AdESPassed.OK, (result.failure_msg, result.api_status)


@pytest.mark.parametrize("name", ["revoked-after-timestamp-B-T", "revoked-after-timestamp-B-LT",
                                  "pyhanko-ecdsa-p256-B-T", "pyhanko-rsa-3072-B-T"])
async def test_pyhanko_validation_with_time_passes_signatures_time_stamped_before_any_revocation(
        corpus: Corpus, fetching: AIOHttpFetcherBackend, name: str) -> None:
    """ETSI EN 319 102-1 section 5.5: the signature time-stamp is the best signature time; a revocation after it
    (the responder says so now) leaves the signature valid."""
    signature = signature_of(corpus[name])
    signature.compute_integrity_info()
    result = await ades_with_time_validation(
        signature.signed_data, ades_spec(corpus, fetching, online=True).signature_validation_spec,
        timing_info=timing(None), raw_digest=signature.compute_digest(), status_cls=PdfSignatureStatus,
        extra_status_kwargs=signature.summarise_integrity_info())
    assert result.ades_subindic is AdESPassed.OK, (result.failure_msg, result.api_status)
    assert result.best_signature_time is not None
    if name.startswith("revoked-"):
        revoked = corpus.pki.issuing.revoked[corpus[name].signer.serial_number]  # type: ignore[union-attr]
        assert result.best_signature_time < revoked


async def test_pyhanko_sees_the_late_revocation_at_the_current_time(corpus: Corpus,
                                                                  fetching: AIOHttpFetcherBackend) -> None:
    """Without the time-stamp's proof, the revoked-after-time-stamp signer is revoked now (the responder really
    says so): only past signature validation keeps it valid."""
    validation = context(corpus, fetching)
    status = await async_validate_pdf_signature(signature_of(corpus["revoked-after-timestamp-B-T"]), validation)
    assert status.revoked and not status.bottom_line


@pytest.mark.parametrize(("name", "constraints", "indication"), [
    ("revoked-before-signing-B-B", NON_REPUDIATION, AdESIndeterminate.REVOKED_NO_POE),
    ("revoked-before-signing-B-T", NON_REPUDIATION, AdESIndeterminate.REVOKED_NO_POE),
    ("untrusted-root-B-T", NON_REPUDIATION, AdESIndeterminate.NO_CERTIFICATE_CHAIN_FOUND),
    ("critical-extension-B-T", NON_REPUDIATION, AdESIndeterminate.CERTIFICATE_CHAIN_GENERAL_FAILURE),
    ("no-non-repudiation-B-T", NON_REPUDIATION, AdESIndeterminate.CHAIN_CONSTRAINTS_FAILURE),
    ("eku-server-auth-B-T", DOCUMENT_SIGNING, AdESIndeterminate.CHAIN_CONSTRAINTS_FAILURE),
    ("expired-B-B", NON_REPUDIATION, AdESIndeterminate.OUT_OF_BOUNDS_NO_POE),
    ("expired-B-T", NON_REPUDIATION, AdESIndeterminate.OUT_OF_BOUNDS_NO_POE),
])
async def test_pyhanko_rejects_the_certificate_scenarios(corpus: Corpus, fetching: AIOHttpFetcherBackend, name: str,
                                                         constraints: KeyUsageConstraints,
                                                         indication: AdESIndeterminate) -> None:
    """pyHanko's classic validator, intact signatures all: its trust problem is the scenario's (pyHanko names a
    key usage failure CHAIN_CONSTRAINTS_FAILURE; ETSI TS 119 102-1 5.2.8 makes it SIG_CONSTRAINTS_FAILURE)."""
    case = corpus[name]
    validation = context(corpus, fetching, at=case.at)
    status = await async_validate_pdf_signature(signature_of(case), validation,
                                                key_usage_settings=constraints)
    assert status.intact and status.valid and not status.bottom_line
    assert status.trust_problem_indic is indication, status.pretty_print_details()
    assert SubIndication(indication.name) in case.expected or name.startswith(("no-non-", "eku-"))


async def test_the_revoked_signer_was_revoked_before_it_signed(corpus: Corpus) -> None:
    case = corpus["revoked-before-signing-B-T"]
    revoked = corpus.pki.issuing.revoked[case.signer.serial_number]  # type: ignore[union-attr]
    signature = signature_of(case)
    assert revoked < signature.self_reported_timestamp
    token = next(a["values"][0] for a in signature.signer_info["unsigned_attrs"]
                 if a["type"].native == "signature_time_stamp_token")
    tst = token["content"]["encap_content_info"]["content"].parsed
    assert isinstance(token, cms.ContentInfo) and revoked < tst["gen_time"].native


# --- poppler ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOW_CASES)
def test_pdfsig_agrees(corpus: Corpus, name: str) -> None:
    """poppler (NSS) checks the signature and, online, the certificate: valid and trusted for the valid cases,
    revoked for both revoked signers (pdfsig validates at the current time only), untrusted for the others."""
    case = corpus[name]
    verdict = pdfsig(corpus, case)
    assert verdict["Signature Type"] == case.sub_filter
    assert verdict["Signature Validation"] == "Signature is Valid."
    certificate = verdict["Certificate Validation"]
    if name.startswith("revoked-"):
        assert certificate == "Certificate has been Revoked.", verdict
    elif case.passes:
        assert certificate == "Certificate is Trusted.", verdict
    else:
        assert certificate != "Certificate is Trusted." or name.startswith(("no-non-", "eku-")), verdict
    if case.sub_filter == PKCS7:
        assert "Signing Time" in verdict
