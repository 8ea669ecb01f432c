"""Açar's `Validator` on the corpus of other producers and certificate scenarios (issue 14 "Tested", first bullet):
each case gets the indication and sub-indication ETSI TS 119 102-1 expects (section 5.1.3, tables 5 and 6), the
PAdES level it reaches (ETSI EN 319 142-1 section 6) and, for a certificate constraint, the finding that says why.

The validator trusts the corpus root only (`TrustPolicy`), fetches OCSP responses and CRLs from the loopback
responder through a `ValidationDataSource` (online checking at the current time), and validates the expiry cases
"as of" two days after signing from their embedded data only (`at`). tests/validation_corpus.py documents the
cases; test_validation_corpus.py checks with pyHanko and pdfsig that the documents are what they claim.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from io import BytesIO

import pytest

from signing.core.inspect import InputPolicy
from signing.core.report import Indication, SignatureKind, SignatureReport, SubIndication, ValidationReport
from signing.core.revocation import ValidationDataSource
from signing.core.trust import TrustPolicy
from signing.core.validation import Validator
from tests.validation_corpus import CASE_NAMES, Case, Corpus, asn1, build_corpus

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

CONSTRAINTS = frozenset({SubIndication.SIG_CONSTRAINTS_FAILURE, SubIndication.CHAIN_CONSTRAINTS_FAILURE,
                         SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE})
"""report.py: a constraint failure is INDETERMINATE unless a finding makes it TOTAL-FAILED; either is right."""


@pytest.fixture(scope="module")
async def corpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corpus]:
    async with build_corpus(tmp_path_factory.mktemp("corpus")) as corpus:
        yield corpus


@pytest.fixture(scope="module")
async def validator(corpus: Corpus) -> AsyncIterator[Validator]:
    fetching = ValidationDataSource(trust_roots=[corpus.root])
    yield Validator(trust=TrustPolicy(anchors=(corpus.root,), sources=("corpus root",)),
                    input_policy=InputPolicy(refuse_active_content=False), fetching=fetching)
    await fetching.close()


class Reports:
    """Each case validated once, when a test first asks (at the current time, or "as of" `Case.at`): a case the
    validator fails on fails its own tests only."""

    def __init__(self, corpus: Corpus, validator: Validator) -> None:
        self._corpus = corpus
        self._validator = validator
        self._reports: Reports = {}

    async def __call__(self, name: str) -> ValidationReport:
        if name not in self._reports:
            case = self._corpus[name]
            self._reports[name] = await self._validator.validate(BytesIO(case.pdf), at=case.at)
        return self._reports[name]


@pytest.fixture(scope="module")
def reports(corpus: Corpus, validator: Validator) -> Reports:
    return Reports(corpus, validator)


def the_signature(report: ValidationReport) -> SignatureReport:
    """The case's one signature (a B-LTA document also has its document time-stamp in the report)."""
    signatures = [s for s in report.signatures if s.kind is not SignatureKind.DOCUMENT_TIMESTAMP]
    assert len(signatures) == 1, report.as_json()
    return signatures[0]


def expected_indication(case: Case, sub: SubIndication | None) -> set[Indication]:
    if sub is None:
        return {Indication.TOTAL_PASSED}
    if sub in CONSTRAINTS:
        return {Indication.INDETERMINATE, Indication.TOTAL_FAILED}
    return {sub.indication}


@pytest.mark.parametrize("name", CASE_NAMES)
async def test_each_case_gets_the_etsi_verdict(corpus: Corpus, reports: Reports,
                                               name: str) -> None:
    case = corpus[name]
    report = await reports(name)
    signature = the_signature(report)
    timestamps = [s for s in report.signatures if s.kind is SignatureKind.DOCUMENT_TIMESTAMP]
    assert len(timestamps) == (1 if case.level == "B-LTA" else 0), report.as_json()
    assert all(t.indication is Indication.TOTAL_PASSED for t in timestamps), report.as_json()
    assert signature.sub_indication in case.expected, (case.description, signature.as_json())
    assert signature.indication in expected_indication(case, signature.sub_indication), signature.as_json()
    assert report.all_passed is case.passes
    assert signature.level == case.level, signature.as_json()
    assert signature.sub_filter == case.sub_filter
    if case.finding is not None:
        assert case.finding in {f.code for f in signature.findings}, signature.as_json()
    assert report.embedded_only is (case.at is not None)
    if case.at is not None:
        assert report.validation_time == case.at


@pytest.mark.parametrize("name", [n for n in CASE_NAMES if n.startswith("pyhanko-")] + ["pdfsig-pkcs7"])
async def test_the_producers_signers_are_identified(corpus: Corpus, reports: Reports,
                                                    name: str) -> None:
    case = corpus[name]
    signer = the_signature(await reports(name)).signer
    assert signer is not None and case.signer is not None
    assert signer.certificate.sha256 == asn1(case.signer).sha256.hex()
    assert signer.chain[-1].sha256 == corpus.root.sha256.hex()
    if name.startswith(("pyhanko-rsa-2048", "pyhanko-ecdsa")):
        assert (signer.identifier, signer.identifier_type, signer.country) == ("PNOAZ-1AB2C3D", "PNO", "AZ")


@pytest.mark.parametrize("name", ["revoked-after-timestamp-B-T", "revoked-after-timestamp-B-LT"])
async def test_a_revocation_after_the_signature_time_stamp_leaves_it_valid(
        corpus: Corpus, reports: Reports, name: str) -> None:
    """ETSI TS 119 102-1 section 5.5.4: the signer is revoked now (the responder says so), but the signature
    time-stamp proves the signature existed before: TOTAL-PASSED, the time-stamp its best signature time."""
    signature = the_signature(await reports(name))
    revoked = corpus.pki.issuing.revoked[corpus[name].signer.serial_number]  # type: ignore[union-attr]
    assert signature.indication is Indication.TOTAL_PASSED
    assert signature.best_signature_time is not None
    assert signature.best_signature_time.source == "signature-timestamp"
    assert signature.best_signature_time.time < revoked


async def test_the_expired_signer_is_valid_only_with_a_proof_of_existence(
        corpus: Corpus, reports: Reports) -> None:
    """ETSI TS 119 102-1 section 5.6.2.1: "as of" a date after the signer's certificate expired, the B-LTA
    document's time-stamps and DSS prove the signature valid while the certificate was; B-B and B-T have no
    revocation data from that time."""
    lta = the_signature(await reports("expired-B-LTA"))
    assert lta.indication is Indication.TOTAL_PASSED
    assert lta.best_signature_time is not None
    assert lta.best_signature_time.time < corpus["expired-B-LTA"].signer.not_valid_after_utc  # type: ignore[union-attr]
    assert any(t.source == "document-timestamp" for t in lta.timestamps)
    for name in ("expired-B-B", "expired-B-T"):
        assert the_signature(await reports(name)).indication is not Indication.TOTAL_PASSED


async def test_validating_now_an_expired_signature_is_unaffected(corpus: Corpus, validator: Validator) -> None:
    """The expiring signer's certificate is still valid today: at the current time (online) its B-T passes."""
    report = await validator.validate(BytesIO(corpus["expired-B-T"].pdf))
    assert report.all_passed, report.as_json()
    assert report.validation_time <= dt.datetime.now(dt.UTC)

