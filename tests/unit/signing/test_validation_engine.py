"""The validation engine (signing.core.validation) on Açar's own signatures, signed by the PAdES engine with the
test PKI (CA, OCSP responder, TSA on loopback): levels, identities, qualified status, a modified byte, validation
as of a date from embedded data only, an untrusted root, revocation fetched online, and the certificate purpose
checks; then the merge of the structure analysis, with hand-made structure and review records."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from io import BytesIO

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import signers
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko_certvalidator.registry import SimpleCertificateStore

from api.settings import Settings
from keys.profiles import Profile
from signing.core.attacks import RevisionReview
from signing.core.errors import NotPdf
from signing.core.inspect import InputPolicy
from signing.core.levels import PadesLevel
from signing.core.report import (
    Change,
    ChangeClass,
    Coverage,
    Finding,
    Indication,
    SignatureKind,
    SignatureReport,
    SubIndication,
    ValidationReport,
)
from signing.core.revocation import ValidationDataSource
from signing.core.structure import PdfStructure, RawRevision, RawSignature
from signing.core.trust import TrustPolicy
from signing.core.validation import Validator, merge_structure
from tests.pades_world import SEAL, World, world_settings
from tests.pdf_tools import make_pdf, sign_throwaway
from tests.pki_tools import PERSON


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    return world_settings(settings, pki_port)


def validator(world: World, *, fetching: ValidationDataSource | None = None,
              anchors: tuple[x509.Certificate, ...] | None = None) -> Validator:
    trust = TrustPolicy(anchors=anchors or (world.root,), sources=("built-in CA",))
    return Validator(trust=trust, input_policy=InputPolicy(), fetching=fetching)


def http_only(world: World) -> ValidationDataSource:
    """A validation data source without the in-process PKI: every OCSP/CRL request goes over HTTP to loopback,
    where `world.hits` records it."""
    return ValidationDataSource(trust_roots=[world.root])


def ocsp_hits(world: World) -> int:
    return len([hit for hit in world.hits if "/pki/" in hit])


async def validate(world: World, pdf: bytes, **kwargs: object) -> ValidationReport:
    at = kwargs.pop("at", None)
    return await validator(world, **kwargs).validate(BytesIO(pdf), at=at)  # type: ignore[arg-type]


# --- Açar's own signatures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", list(PadesLevel))
async def test_every_level_is_total_passed_at_its_level(world: World, level: PadesLevel) -> None:
    signed = await world.sign(make_pdf(pages=2), level)
    report = await validate(world, signed, fetching=world.validation)
    regular = [s for s in report.signatures if s.kind is not SignatureKind.DOCUMENT_TIMESTAMP]
    assert len(regular) == 1
    signature = regular[0]
    assert signature.indication is Indication.TOTAL_PASSED, (signature.sub_indication, signature.findings)
    assert signature.sub_indication is None and signature.findings == ()
    assert signature.level == level.value
    assert signature.id == "sig-1" and signature.sub_filter == "ETSI.CAdES.detached"
    assert signature.signer is not None
    assert signature.signer.identifier == f"PNOAZ-{PERSON.fin}" and signature.signer.identifier_type == "PNO"
    assert signature.signer.country == "AZ"
    assert signature.signer.chain[0].sha256 == world.signer.certificate.sha256.hex()
    assert signature.signer.chain[-1].sha256 == world.root.sha256.hex()
    assert signature.qualification is not None and signature.qualification.qualified
    assert signature.qualification.source == "qcStatements" and signature.qualification.qc_type == "esign"
    assert signature.coverage is not None and signature.coverage.revision == 2
    assert signature.coverage.whole_revision
    assert signature.claimed_signing_time is not None
    assert signature.best_signature_time is not None
    assert signature.best_signature_time.source == ("signature-timestamp" if level.timestamped
                                                     else "validation-time")
    assert signature.digest_algorithm == "sha256"
    assert report.all_passed, report.as_json()
    assert [r.number for r in report.revisions] == list(range(1, len(report.revisions) + 1))
    assert report.revisions[-1].end == len(signed)
    assert "sig-1" in report.revisions[1].signatures
    if level.archival:
        timestamps = [s for s in report.signatures if s.kind is SignatureKind.DOCUMENT_TIMESTAMP]
        assert len(timestamps) == 1 and timestamps[0].indication is Indication.TOTAL_PASSED
        assert any(t.source == "document-timestamp" for t in signature.timestamps)


async def test_a_seal_names_the_organisation_by_its_ntr_identifier(world: World) -> None:
    seal = await world.credentials(Profile.LEGAL_PERSON_SEAL, SEAL, days=30)
    signed = await world.sign(make_pdf(), PadesLevel.B_LT, credentials=seal)
    report = await validate(world, signed)
    (signature,) = report.signatures
    assert signature.indication is Indication.TOTAL_PASSED, signature.as_json()
    assert signature.signer is not None
    assert signature.signer.identifier == f"NTRAZ-{SEAL.voen}" and signature.signer.identifier_type == "NTR"
    assert signature.signer.organization == SEAL.organization
    assert signature.qualification is not None and signature.qualification.qc_type == "eseal"


async def test_a_modified_byte_fails_the_signature(world: World) -> None:
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    at = signed.index(b"0.6 rg")
    tampered = signed[:at] + b"0.7 rg" + signed[at + 6:]
    report = await validate(world, tampered)
    (signature,) = report.signatures
    assert signature.indication is Indication.TOTAL_FAILED, signature.as_json()
    assert signature.sub_indication in (SubIndication.HASH_FAILURE, SubIndication.SIG_CRYPTO_FAILURE)
    assert not report.all_passed


async def test_validation_as_of_a_date_uses_embedded_data_only(world: World) -> None:
    signed = await world.sign(make_pdf(), PadesLevel.B_LTA)
    before = ocsp_hits(world)
    source = http_only(world)
    try:
        report = await validate(world, signed, fetching=source, at=dt.datetime.now(dt.UTC))
    finally:
        await source.close()
    assert ocsp_hits(world) == before, "nothing was fetched"
    assert report.embedded_only
    assert report.all_passed, report.as_json()
    assert report.signatures[0].level == "B-LTA"


async def test_an_untrusted_root_gives_no_certificate_chain_found(world: World) -> None:
    signed = await world.sign(make_pdf(), PadesLevel.B_LT)
    report = await validate(world, signed, anchors=(foreign_root(),))
    (signature,) = report.signatures
    assert signature.indication is Indication.INDETERMINATE, signature.as_json()
    assert signature.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND


async def test_a_self_signed_signer_gives_no_certificate_chain_found(world: World) -> None:
    """EN 319 102-1 5.2.6: a self-signed signer that is no trust anchor has no chain (pyHanko says a constraint
    failure)."""
    signed = await asyncio.to_thread(sign_throwaway, make_pdf())  # pyHanko's sync API runs its own loop
    report = await validate(world, signed)
    (signature,) = report.signatures
    assert signature.indication is Indication.INDETERMINATE, signature.as_json()
    assert signature.sub_indication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    assert "self_signed_untrusted" in {f.code for f in signature.findings}


async def test_revocation_is_fetched_online_when_the_document_lacks_it(world: World) -> None:
    signed = await world.sign(make_pdf(), PadesLevel.B_T)
    offline = await validate(world, signed)
    assert offline.signatures[0].indication is Indication.INDETERMINATE, "B-T carries no revocation data"
    before = ocsp_hits(world)
    source = http_only(world)
    try:
        report = await validate(world, signed, fetching=source)
    finally:
        await source.close()
    assert ocsp_hits(world) > before, "the OCSP responder (or CRL) on loopback was asked"
    assert any("/pki/ocsp" in hit for hit in world.hits[before:])
    assert not report.embedded_only
    assert report.all_passed, report.as_json()


@pytest.mark.parametrize("level", [PadesLevel.B_LT, PadesLevel.B_LTA])
async def test_embedded_revocation_data_is_used_before_any_fetch(world: World, level: PadesLevel) -> None:
    """Revocation is fetched only when the embedded data is missing (issue 14): a B-LT/B-LTA document validated
    with fetching allowed asks no responder (pyhanko-certvalidator, given fetchers, would ignore the embedded OCSP
    responses and fetch: so a responder down would make a valid long-term signature INDETERMINATE)."""
    signed = await world.sign(make_pdf(), level)
    before = len(world.hits)
    source = http_only(world)
    try:
        report = await validate(world, signed, fetching=source)
    finally:
        await source.close()
    assert report.all_passed, report.as_json()
    assert world.hits[before:] == [], world.hits[before:]


async def test_a_certificate_without_non_repudiation_is_not_valid_for_signing(world: World) -> None:
    """Açar's engine refuses to sign with such a certificate, so pyHanko signs with one of a small foreign CA
    (keyUsage digitalSignature, extendedKeyUsage clientAuth only) that the validation trusts."""
    root_key, root = foreign_ca()
    signed = await sign_with_authentication_certificate(make_pdf(), root_key, root)
    report = await validate(world, signed, anchors=(x509.Certificate.load(root.public_bytes(Encoding.DER)),))
    (signature,) = report.signatures
    codes = {f.code for f in signature.findings}
    assert {"key_usage", "extended_key_usage"} <= codes, signature.as_json()
    assert signature.indication is not Indication.TOTAL_PASSED


async def test_a_pdf_without_signatures_gives_an_empty_report(world: World) -> None:
    pdf = make_pdf()
    report = await validate(world, pdf)
    assert report.signatures == () and not report.all_passed
    assert len(report.revisions) == 1 and report.size == len(pdf)


async def test_input_that_is_not_a_pdf_is_refused(world: World) -> None:
    with pytest.raises(NotPdf):
        await validate(world, b"PK\x03\x04 not a pdf" * 10)


async def test_a_200_kb_b_lta_document_validates_from_embedded_data(world: World) -> None:
    signed = await world.sign(make_pdf(pages=3, image_bytes=180_000), PadesLevel.B_LTA)
    assert 180_000 < len(signed) < 260_000
    engine = validator(world)
    at = dt.datetime.now(dt.UTC)
    runs = 10
    started = time.perf_counter()
    for _ in range(runs):
        report = await engine.validate(BytesIO(signed), at=at)
    elapsed = (time.perf_counter() - started) / runs
    assert report.all_passed, report.as_json()
    print(f"\n200 KB B-LTA ({len(signed)} bytes): {elapsed * 1000:.1f} ms per validation")


# --- the merge with the structure analysis (signing.core.structure / signing.core.attacks records) -----------------


RAW_REVISIONS = (RawRevision(1, 100, 80), RawRevision(2, 200, 180), RawRevision(3, 300, 280),
                 RawRevision(4, 400, 380))


def passed(revision: int, byte_range: tuple[int, ...], name: str) -> SignatureReport:
    """A report as the engine builds it before the merge (pyHanko's verdict: passed; no id yet)."""
    return SignatureReport(
        id="", field_name=name, kind=SignatureKind.APPROVAL, indication=Indication.TOTAL_PASSED,
        sub_indication=None, findings=(), signer=None, claimed_signing_time=None, best_signature_time=None,
        timestamps=(), level="B-B", qualification=None, coverage=Coverage(revision, byte_range, True, False),
        sub_filter="ETSI.CAdES.detached", digest_algorithm="sha256", signature_algorithm="ecdsa",
        docmdp_permission=None, modification_level=None)


SIG1 = passed(2, (0, 150, 180, 20), "Signature1")
SIG2 = passed(3, (0, 250, 280, 20), "Signature2")


def raw(number: int, name: str | None, revision: int | None, byte_range: tuple[int, ...] | None, offset: int,
        *findings: Finding, sub_filter: str | None = "ETSI.CAdES.detached") -> RawSignature:
    span = (byte_range[1], byte_range[2]) if byte_range and len(byte_range) == 4 else None
    return RawSignature(object_number=number, field_name=name, revision=revision, byte_range=byte_range,
                        contents_span=span, sub_filter=sub_filter, type_name="Sig", findings=findings,
                        offset=offset)


RAW1 = raw(5, "Signature1", 2, SIG1.coverage.byte_range, 120)  # type: ignore[union-attr]
RAW2 = raw(6, "Signature2", 3, SIG2.coverage.byte_range, 220)  # type: ignore[union-attr]


def structure(*signatures: RawSignature, findings: tuple[Finding, ...] = ()) -> PdfStructure:
    return PdfStructure(size=400, revisions=RAW_REVISIONS, signatures=signatures or (RAW1, RAW2), findings=findings)


def review(by_revision: dict[int, tuple[Finding, ...]] | None = None,
           by_signature: dict[tuple[int, ...], tuple[Finding, ...]] | None = None,
           changes: dict[int, tuple[Change, ...]] | None = None) -> RevisionReview:
    return RevisionReview(by_revision=by_revision or {}, by_signature=by_signature or {}, changes=changes or {})


def with_id(report: SignatureReport, sig_id: str) -> SignatureReport:
    return SignatureReport(**{**{f: getattr(report, f) for f in report.__slots__}, "id": sig_id})  # type: ignore[arg-type]


def test_merge_without_findings_changes_nothing() -> None:
    allowed = Change("dss", "adds a DSS", ChangeClass.ALLOWED)
    signatures, revisions, findings = merge_structure((SIG1, SIG2), structure(), review(changes={4: (allowed,)}))
    assert signatures == (with_id(SIG1, "sig-1"), with_id(SIG2, "sig-2")) and findings == ()
    assert [(r.number, r.end, r.signatures) for r in revisions] == [
        (1, 100, ()), (2, 200, ("sig-1",)), (3, 300, ("sig-2",)), (4, 400, ())]
    assert revisions[0].classification is None
    assert revisions[3].changes == (allowed,) and revisions[3].classification is ChangeClass.ALLOWED


def test_merge_a_signature_finding_sets_its_verdict() -> None:
    wrapped = Finding("signature_wrapping", "the signed bytes moved", SubIndication.FORMAT_FAILURE)
    remark = Finding("remark", "informational")
    raw1 = raw(5, "Signature1", 2, SIG1.coverage.byte_range, 120, remark)  # type: ignore[union-attr]
    signatures, _, _ = merge_structure((SIG1, SIG2), structure(raw1, RAW2),
                                       review(by_signature={SIG1.coverage.byte_range: (wrapped,)}))  # type: ignore[union-attr]
    assert signatures[0].indication is Indication.TOTAL_FAILED
    assert signatures[0].sub_indication is SubIndication.FORMAT_FAILURE
    assert signatures[0].findings == (remark, wrapped)
    assert signatures[1] == with_id(SIG2, "sig-2")


def test_merge_a_later_revision_fails_a_signature_whatever_the_finding_says() -> None:
    """A finding the review holds for a signature comes from a later revision: TOTAL-FAILED even when its
    sub-indication alone would be INDETERMINATE; a raw finding keeps its own indication."""
    indeterminate = Finding("x", "x", SubIndication.NO_POE)
    failed = Finding("y", "y", SubIndication.HASH_FAILURE)
    pyhanko_failed = SignatureReport(**{**{f: getattr(SIG1, f) for f in SIG1.__slots__},  # type: ignore[arg-type]
                                        "indication": Indication.TOTAL_FAILED,
                                        "sub_indication": SubIndication.SIG_CRYPTO_FAILURE})
    raw2 = raw(6, "Signature2", 3, SIG2.coverage.byte_range, 220, indeterminate)  # type: ignore[union-attr]
    signatures, _, _ = merge_structure(
        (pyhanko_failed, SIG2), structure(RAW1, raw2),
        review(by_signature={SIG1.coverage.byte_range: (indeterminate,)}))  # type: ignore[union-attr]
    assert signatures[0].sub_indication is SubIndication.SIG_CRYPTO_FAILURE, "pyHanko's failure stays"
    assert signatures[1].indication is Indication.INDETERMINATE
    assert signatures[1].sub_indication is SubIndication.NO_POE
    signatures, _, _ = merge_structure((SIG1, SIG2), structure(), review(by_signature={
        SIG2.coverage.byte_range: (indeterminate, failed)}))  # type: ignore[union-attr]
    assert signatures[1].indication is Indication.TOTAL_FAILED
    assert signatures[1].sub_indication is SubIndication.NO_POE


def test_merge_takes_the_reviews_findings_per_signature_and_does_not_propagate_revisions() -> None:
    """`by_signature` already holds a revision's findings for the signatures before it (signing.core.attacks):
    the merge adds nothing from `by_revision` to a signature, and classifies the revision from its changes."""
    shadow = Finding("shadow_hide", "revision 3 hides content", SubIndication.FORMAT_FAILURE, 3)
    hide = Change("annotation", "an annotation made hidden", ChangeClass.NOT_ALLOWED)
    signatures, revisions, findings = merge_structure((SIG1, SIG2), structure(), review(
        by_revision={3: (shadow,)}, by_signature={SIG1.coverage.byte_range: (shadow,)},  # type: ignore[union-attr]
        changes={3: (hide,)}))
    assert signatures[0].indication is Indication.TOTAL_FAILED and signatures[0].findings == (shadow,)
    assert signatures[1] == with_id(SIG2, "sig-2"), "a signature in or after the revision is not marked"
    assert revisions[2].classification is ChangeClass.NOT_ALLOWED and revisions[2].changes == (hide,)
    assert findings == (), "a revision after a signature: its findings are the signatures'"


def test_merge_a_revision_finding_before_any_signature_is_the_documents() -> None:
    early = Finding("modification_not_allowed", "revision 2 changed the catalog", SubIndication.FORMAT_FAILURE)
    _, _, findings = merge_structure((SIG2,), structure(RAW2), review(by_revision={2: (early,)}))
    assert findings == (Finding("modification_not_allowed", "revision 2 changed the catalog",
                                SubIndication.FORMAT_FAILURE, 2),)


def test_merge_reports_signatures_pyhanko_does_not_list() -> None:
    no_subfilter = Finding("no_subfilter", "the signature dictionary has no /SubFilter", SubIndication.FORMAT_FAILURE)
    hidden = raw(9, "Hidden", 3, (0, 260, 290, 10), 260, no_subfilter, sub_filter=None)
    tail = Finding("trailing_bytes", "bytes")
    signatures, revisions, findings = merge_structure((SIG1, SIG2), structure(RAW1, RAW2, hidden, findings=(tail,)),
                                                      review())
    assert [s.id for s in signatures] == ["sig-1", "sig-2", "sig-3"]
    third = signatures[2]
    assert third.field_name == "Hidden" and third.indication is Indication.TOTAL_FAILED
    assert third.sub_indication is SubIndication.FORMAT_FAILURE and third.findings == (no_subfilter,)
    assert revisions[2].signatures == ("sig-2", "sig-3")
    assert findings == (tail,)


def test_merge_reports_a_byte_range_only_the_review_judged() -> None:
    """A /ByteRange in `by_signature` that neither pyHanko nor the raw scan lists still gets a TOTAL-FAILED entry."""
    isa = Finding("incremental_save_no_xref", "revision 4 has no xref", SubIndication.FORMAT_FAILURE, 4)
    ghost = (0, 90, 95, 105)
    signatures, revisions, _ = merge_structure((SIG1, SIG2), structure(), review(by_signature={ghost: (isa,)}))
    entry = next(s for s in signatures if s.coverage is not None and s.coverage.byte_range == ghost)
    assert entry.indication is Indication.TOTAL_FAILED and entry.findings == (isa,)
    assert entry.coverage is not None and entry.coverage.revision == 2
    assert revisions[1].signatures == ("sig-1", "sig-2") and signatures[1] is entry


def test_merge_orders_an_earlier_raw_signature_first_and_renumbers() -> None:
    early = raw(9, "Early", 1, None, 50)
    signatures, revisions, _ = merge_structure((SIG1, SIG2), structure(early, RAW1, RAW2), review())
    assert [(s.id, s.field_name) for s in signatures] == [("sig-1", "Early"), ("sig-2", "Signature1"),
                                                          ("sig-3", "Signature2")]
    assert signatures[0].findings[0].code == "not_a_signature_to_pyhanko"
    assert [r.signatures for r in revisions] == [("sig-1",), ("sig-2",), ("sig-3",), ()]


def test_merge_takes_the_raw_revision_of_a_signature() -> None:
    """pyHanko numbers revisions by its cross-reference index; the report uses the raw revisions the structure
    analysis found (an incremental update without a cross-reference section is a revision there)."""
    shifted = passed(3, SIG1.coverage.byte_range, "Signature1")  # type: ignore[union-attr]
    signatures, revisions, _ = merge_structure((shifted,), structure(RAW1), review())
    assert signatures[0].coverage is not None and signatures[0].coverage.revision == 2
    assert revisions[1].signatures == ("sig-1",)


# --- helpers -----------------------------------------------------------------------------------------------------


def foreign_ca() -> tuple[ec.EllipticCurvePrivateKey, cx509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = cx509.Name([cx509.NameAttribute(cx509.NameOID.COMMON_NAME, "Foreign Root")])
    now = dt.datetime.now(dt.UTC)
    cert = (cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(cx509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(cx509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(cx509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def foreign_root() -> x509.Certificate:
    return x509.Certificate.load(foreign_ca()[1].public_bytes(Encoding.DER))


async def sign_with_authentication_certificate(pdf: bytes, root_key: ec.EllipticCurvePrivateKey,
                                         root: cx509.Certificate) -> bytes:
    """A PAdES B-B signature by pyHanko with a certificate fit for TLS client authentication only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = cx509.Name([cx509.NameAttribute(cx509.NameOID.COMMON_NAME, "Client Only")])
    cert = (cx509.CertificateBuilder().subject_name(name).issuer_name(root.subject).public_key(key.public_key())
            .serial_number(cx509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(cx509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(cx509.ExtendedKeyUsage([cx509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(root_key, hashes.SHA256()))
    signing_cert = x509.Certificate.load(cert.public_bytes(Encoding.DER))
    signer = signers.SimpleSigner(
        signing_cert=signing_cert,
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(Encoding.DER, PrivateFormat.PKCS8,
                                                                    NoEncryption())),
        cert_registry=SimpleCertificateStore.from_certs([signing_cert]))
    output = BytesIO()
    await signers.async_sign_pdf(IncrementalPdfFileWriter(BytesIO(pdf), strict=True),
                     signers.PdfSignatureMetadata(field_name="Signature1", subfilter=SigSeedSubFilter.PADES),
                     signer=signer, output=output)
    return output.getvalue()
