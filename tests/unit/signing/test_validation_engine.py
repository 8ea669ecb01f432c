"""The validation engine (signing.core.validation) on Açar's own signatures, signed by the PAdES engine with the
test PKI (CA, OCSP responder, TSA on loopback): levels, identities, qualified status, a modified byte, validation
as of a date from embedded data only, an untrusted root, revocation fetched online, and the certificate purpose
checks; then the merge of the structure analysis with hand-made analysis records."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
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
from signing.core.errors import NotPdf
from signing.core.inspect import InputPolicy
from signing.core.levels import PadesLevel
from signing.core.report import (
    Change,
    ChangeClass,
    Coverage,
    Finding,
    Indication,
    Revision,
    SignatureKind,
    SignatureReport,
    SubIndication,
    ValidationReport,
)
from signing.core.revocation import ValidationDataSource
from signing.core.trust import TrustPolicy
from signing.core.validation import Validator, merge_structure
from tests.pades_world import SEAL, World, world_settings
from tests.pdf_tools import make_pdf
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


# --- the merge with the structure analysis (hand-made analysis records) -------------------------------------------


@dataclass(frozen=True)
class RawRevision:
    number: int
    end: int


@dataclass(frozen=True)
class RawSignature:
    object_number: int | None
    field_name: str | None
    revision: int | None
    byte_range: tuple[int, ...] | None
    sub_filter: str | None
    type_name: str | None
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Structure:
    revisions: tuple[RawRevision, ...]
    signatures: tuple[RawSignature, ...]
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Review:
    by_revision: dict[int, tuple[Finding, ...]] = field(default_factory=dict)
    by_signature: dict[tuple[int, ...], tuple[Finding, ...]] = field(default_factory=dict)
    changes: dict[int, tuple[Change, ...]] = field(default_factory=dict)


def passed(sig_id: str, revision: int, byte_range: tuple[int, ...], name: str) -> SignatureReport:
    return SignatureReport(
        id=sig_id, field_name=name, kind=SignatureKind.APPROVAL, indication=Indication.TOTAL_PASSED,
        sub_indication=None, findings=(), signer=None, claimed_signing_time=None, best_signature_time=None,
        timestamps=(), level="B-B", qualification=None, coverage=Coverage(revision, byte_range, True, False),
        sub_filter="ETSI.CAdES.detached", digest_algorithm="sha256", signature_algorithm="ecdsa",
        docmdp_permission=None, modification_level="none")


REVISIONS = (Revision(1, 100, (), (), None), Revision(2, 200, ("sig-1",), (), ChangeClass.ALLOWED),
             Revision(3, 300, ("sig-2",), (), ChangeClass.ALLOWED), Revision(4, 400, (), (), ChangeClass.ALLOWED))
SIG1 = passed("sig-1", 2, (0, 150, 180, 20), "Signature1")
SIG2 = passed("sig-2", 3, (0, 250, 280, 20), "Signature2")


def test_merge_without_findings_changes_nothing() -> None:
    structure = Structure(revisions=(RawRevision(1, 100), RawRevision(2, 200), RawRevision(3, 300),
                                     RawRevision(4, 400)),
                          signatures=(RawSignature(5, "Signature1", 2, SIG1.coverage.byte_range, "/ETSI.CAdES.detached",
                                                   "/Sig"),))
    allowed = Change("dss", "adds a DSS", ChangeClass.ALLOWED)
    review = Review(changes={4: (allowed,)})
    signatures, revisions, findings = merge_structure((SIG1, SIG2), REVISIONS, structure, review)
    assert signatures == (SIG1, SIG2) and findings == ()
    assert revisions[3].changes == (allowed,) and revisions[3].classification is ChangeClass.ALLOWED


def test_merge_a_signature_finding_sets_its_verdict() -> None:
    wrapped = Finding("signature_wrapping", "the signed bytes moved", SubIndication.FORMAT_FAILURE)
    remark = Finding("remark", "informational")
    structure = Structure(revisions=(), signatures=(RawSignature(5, "Signature1", 2, SIG1.coverage.byte_range,
                                                                 "/ETSI.CAdES.detached", "/Sig", (remark,)),))
    review = Review(by_signature={SIG1.coverage.byte_range: (wrapped,)})
    signatures, _, _ = merge_structure((SIG1, SIG2), REVISIONS, structure, review)
    assert signatures[0].indication is Indication.TOTAL_FAILED
    assert signatures[0].sub_indication is SubIndication.FORMAT_FAILURE
    assert signatures[0].findings == (remark, wrapped)
    assert signatures[1] == SIG2


def test_merge_total_failed_beats_indeterminate_and_not_the_other_way() -> None:
    indeterminate = Finding("x", "x", SubIndication.NO_POE)
    failed = Finding("y", "y", SubIndication.HASH_FAILURE)
    pyhanko_failed = SignatureReport(**{**{f: getattr(SIG1, f) for f in SIG1.__slots__},  # type: ignore[arg-type]
                                        "indication": Indication.TOTAL_FAILED,
                                        "sub_indication": SubIndication.SIG_CRYPTO_FAILURE})
    review = Review(by_signature={SIG1.coverage.byte_range: (indeterminate,),
                                  SIG2.coverage.byte_range: (indeterminate, failed)})
    signatures, _, _ = merge_structure((pyhanko_failed, SIG2), REVISIONS, Structure((), ()), review)
    assert signatures[0].sub_indication is SubIndication.SIG_CRYPTO_FAILURE
    assert signatures[1].indication is Indication.TOTAL_FAILED
    assert signatures[1].sub_indication is SubIndication.HASH_FAILURE


def test_merge_a_revision_attack_fails_the_signatures_before_it() -> None:
    shadow = Finding("shadow_hide", "revision 3 hides content", SubIndication.FORMAT_FAILURE)
    review = Review(by_revision={3: (shadow,)},
                    changes={3: (Change("appearance", "a widget appearance over page text", ChangeClass.NOT_ALLOWED),)})
    signatures, revisions, _ = merge_structure((SIG1, SIG2), REVISIONS, Structure((), ()), review)
    assert signatures[0].indication is Indication.TOTAL_FAILED
    assert signatures[0].findings == (Finding("shadow_hide", "revision 3 hides content", SubIndication.FORMAT_FAILURE,
                                              3),)
    assert signatures[1] == SIG2, "a signature in or after the revision is not marked"
    assert revisions[2].classification is ChangeClass.NOT_ALLOWED


def test_merge_a_not_allowed_change_without_a_finding_gets_one() -> None:
    review = Review(changes={4: (Change("page-content", "replaces the page's content", ChangeClass.NOT_ALLOWED),)})
    signatures, revisions, _ = merge_structure((SIG1, SIG2), REVISIONS, Structure((), ()), review)
    for signature in signatures:
        assert signature.indication is Indication.TOTAL_FAILED
        assert signature.findings[-1].code == "not_allowed_change" and signature.findings[-1].revision == 4
    assert revisions[3].classification is ChangeClass.NOT_ALLOWED


def test_merge_reports_signatures_pyhanko_does_not_list() -> None:
    no_subfilter = Finding("no_subfilter", "the signature dictionary has no /SubFilter", SubIndication.FORMAT_FAILURE)
    raw = RawSignature(9, "Hidden", 3, (0, 260, 290, 10), None, "/Sig", (no_subfilter,))
    structure = Structure(revisions=(RawRevision(3, 310),), signatures=(raw,), findings=(Finding("tail", "bytes"),))
    signatures, revisions, findings = merge_structure((SIG1, SIG2), REVISIONS, structure, Review())
    assert [s.id for s in signatures] == ["sig-1", "sig-2", "sig-3"]
    hidden = signatures[2]
    assert hidden.field_name == "Hidden" and hidden.indication is Indication.TOTAL_FAILED
    assert hidden.sub_indication is SubIndication.FORMAT_FAILURE and hidden.findings == (no_subfilter,)
    assert revisions[2].end == 310 and revisions[2].signatures == ("sig-2", "sig-3")
    assert findings == (Finding("tail", "bytes"),)


def test_merge_orders_an_earlier_raw_signature_first_and_renumbers() -> None:
    raw = RawSignature(9, "Early", 1, None, None, "/Sig")
    signatures, revisions, _ = merge_structure((SIG1, SIG2), REVISIONS, Structure((), (raw,)), Review())
    assert [(s.id, s.field_name) for s in signatures] == [("sig-1", "Early"), ("sig-2", "Signature1"),
                                                          ("sig-3", "Signature2")]
    assert signatures[0].findings[0].code == "not_a_signature_to_pyhanko"
    assert [r.signatures for r in revisions] == [("sig-1",), ("sig-2",), ("sig-3",), ()]


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
