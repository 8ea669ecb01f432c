"""The attacks on signed PDFs that a library's verdict misses (issue 14): every attack file of tests.pdf_attacks,
made from a document pyHanko signed validly, gives its finding in signing.core.structure (raw bytes) or
signing.core.attacks (revision review); the controls (a second approval signature, form filling, a comment, an
Açar B-LTA with its DSS and document time-stamp revisions) give none. A bounded fuzz: truncated and mutated
signed files raise nothing but PdfRefused. Then the same files end to end through `Validator`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random

import pytest
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.fields import MDPPerm

from api.settings import Settings
from signing.core.attacks import RevisionReview, review_revisions
from signing.core.errors import PdfRefused, TooLarge
from signing.core.inspect import InputPolicy, open_signed_pdf
from signing.core.levels import PadesLevel
from signing.core.report import ChangeClass, Indication, SignatureKind, SubIndication, ValidationReport
from signing.core.structure import PdfStructure, analyse_structure
from signing.core.trust import TrustPolicy
from signing.core.validation import Validator
from tests import pdf_attacks as attacks
from tests.pades_world import World, world_settings
from tests.pdf_tools import make_pdf

POLICY = InputPolicy(refuse_active_content=False)


@pytest.fixture
def settings(settings: Settings, pki_port: int) -> Settings:
    return world_settings(settings, pki_port)


@pytest.fixture(scope="module")
def signed() -> bytes:
    return attacks.sign(attacks.base_pdf())


@pytest.fixture(scope="module")
def certified() -> dict[MDPPerm, bytes]:
    return {p: attacks.sign(attacks.base_pdf(), certify=True, docmdp=p) for p in MDPPerm}


def analyse(pdf: bytes) -> tuple[PdfStructure, RevisionReview]:
    structure = analyse_structure(io.BytesIO(pdf), POLICY)
    return structure, review_revisions(structure, open_signed_pdf(io.BytesIO(pdf), POLICY).reader)


def structure_codes(structure: PdfStructure) -> set[str]:
    return {f.code for s in structure.signatures for f in s.findings} | {f.code for f in structure.findings}


def signature_codes(review: RevisionReview) -> set[str]:
    return {f.code for findings in review.by_signature.values() for f in findings}


def assert_clean(pdf: bytes) -> tuple[PdfStructure, RevisionReview]:
    structure, review = analyse(pdf)
    assert structure_codes(structure) == set()
    assert signature_codes(review) == set()
    assert review.by_revision == {}
    for changes in review.changes.values():
        assert all(c.classification is ChangeClass.ALLOWED for c in changes), changes
    return structure, review


# --- controls ------------------------------------------------------------------------------------------------------


def test_a_signed_document_is_clean(signed: bytes) -> None:
    structure, review = assert_clean(signed)
    assert [r.number for r in structure.revisions] == [1, 2]
    [signature] = structure.signatures
    assert signature.sub_filter == "adbe.pkcs7.detached"
    assert signature.type_name == "Sig"
    assert signature.field_name == "Signature1"
    assert signature.revision == 2
    assert signature.byte_range is not None
    assert signature.contents_span == (signature.byte_range[1], signature.byte_range[2])
    assert set(review.by_signature) == {signature.byte_range}


def test_a_second_approval_signature_in_a_new_field_is_allowed(signed: bytes) -> None:
    structure, review = assert_clean(attacks.sign(signed, field_name="Signature2"))
    assert [s.field_name for s in structure.signatures] == ["Signature1", "Signature2"]
    assert "signature" in {c.kind for c in review.changes[3]}


def test_form_filling_after_an_approval_signature_is_allowed(signed: bytes) -> None:
    _, review = assert_clean(attacks.fill_form(signed))
    assert [c.kind for c in review.changes[3]] == ["form-filling"]


def test_a_comment_after_an_approval_signature_is_allowed(signed: bytes) -> None:
    _, review = assert_clean(attacks.add_comment(signed))
    assert [c.kind for c in review.changes[3]] == ["annotation"]


@pytest.mark.parametrize("permission", [MDPPerm.FILL_FORMS, MDPPerm.ANNOTATE])
def test_form_filling_after_a_certification_that_allows_it(certified: dict[MDPPerm, bytes],
                                                            permission: MDPPerm) -> None:
    assert_clean(attacks.fill_form(certified[permission]))


def test_a_comment_after_a_certification_with_p3(certified: dict[MDPPerm, bytes]) -> None:
    assert_clean(attacks.add_comment(certified[MDPPerm.ANNOTATE]))


async def test_an_acar_b_lta_document_is_clean(world: World) -> None:
    pdf = await world.sign(make_pdf(), PadesLevel.B_LTA)
    structure, review = assert_clean(pdf)
    kinds = {c.kind for changes in review.changes.values() for c in changes}
    assert kinds >= {"dss", "document-timestamp"}
    assert {s.type_name for s in structure.signatures} == {"Sig", "DocTimeStamp"}
    assert kinds <= {"signature", "dss", "document-timestamp", "metadata"}


# --- raw structure: /SubFilter, USF, /ByteRange, SWA, ISA ------------------------------------------------------------


def findings_of(pdf: bytes) -> dict[str, SubIndication | None]:
    structure = analyse_structure(io.BytesIO(pdf), POLICY)
    return {f.code: f.sub_indication for s in structure.signatures for f in s.findings} | {
        f.code: f.sub_indication for f in structure.findings}


def test_a_signature_without_subfilter_is_reported(signed: bytes) -> None:
    attacked = attacks.no_subfilter(signed)
    structure = analyse_structure(io.BytesIO(attacked), POLICY)
    [signature] = structure.signatures
    assert signature.sub_filter is None
    assert [f.code for f in signature.findings] == ["no_subfilter"]
    assert signature.findings[0].sub_indication is SubIndication.FORMAT_FAILURE


@pytest.mark.parametrize("how", ["missing", "empty", "null"])
def test_usf_contents(signed: bytes, how: str) -> None:
    codes = findings_of(attacks.usf_contents(signed, how))
    assert codes["usf_contents"] is SubIndication.FORMAT_FAILURE


@pytest.mark.parametrize("how", ["missing", "null", "empty"])
def test_usf_byte_range(signed: bytes, how: str) -> None:
    codes = findings_of(attacks.usf_byte_range(signed, how))
    assert codes["usf_byte_range"] is SubIndication.FORMAT_FAILURE
    assert "byte_range_gap" not in codes


def test_usf_cert(signed: bytes) -> None:
    codes = findings_of(attacks.usf_cert(signed))
    assert codes["usf_cert"] is SubIndication.FORMAT_FAILURE


def test_a_signature_dictionary_reachable_only_from_its_field_is_listed(signed: bytes) -> None:
    """A USF dictionary with no /Type, /ByteRange, /Contents or /SubFilter is still a signature: the field's /V."""
    new = attacks.next_object(signed)
    reader_field = attacks.re.search(rb"/T \(Signature1\)", signed)
    assert reader_field is not None
    pdf = attacks.append_update(signed, {new: b"<< /Filter /Adobe.PPKLite >>"})
    # point the signature field's /V at the empty dictionary
    field_number = int(attacks.re.findall(rb"(\d+) 0 obj\s*<<\s*/FT /Sig", signed)[-1])
    start = signed.index(b"%d 0 obj" % field_number)
    body = signed[start:signed.index(b"endobj", start)].split(b"obj", 1)[1].strip()
    pdf = attacks.append_update(pdf, {field_number: attacks.re.sub(rb"/V \d+ 0 R", b"/V %d 0 R" % new, body)})
    structure = analyse_structure(io.BytesIO(pdf), POLICY)
    empty = [s for s in structure.signatures if s.object_number == new]
    assert len(empty) == 1
    assert {f.code for f in empty[0].findings} == {"no_subfilter", "usf_contents", "usf_byte_range"}
    assert empty[0].field_name == "Signature1"


@pytest.mark.parametrize(("edit", "code"), [
    (lambda r: [5, r[1] - 5, r[2], r[3]], "byte_range_gap"),  # does not start at 0
    (lambda r: [0, r[1], r[2], r[3] - 10], "byte_range_gap"),  # stops before the revision's end
    (lambda r: [0, r[1] - 4, r[2], r[3]], "signature_wrapping"),  # the hole holds more than /Contents
    (lambda r: [0, r[1], r[2] - 10, r[3] + 10], "byte_range_gap"),  # covers part of /Contents
    (lambda r: [0, r[1], r[2], r[3] + 10], "byte_range_invalid"),  # past the end of the file
    (lambda r: [0, r[2] + 1, r[2], r[3]], "byte_range_invalid"),  # overlapping
    (lambda r: [0, -5, r[2], r[3]], "byte_range_invalid"),  # negative
    (lambda r: [0, 1, 2, 3, 4, 5], "byte_range_invalid"),  # two holes
])
def test_byte_range_not_covering_the_revision(signed: bytes, edit: object, code: str) -> None:
    numbers, _ = attacks.byte_range(signed)
    attacked = attacks.set_byte_range(signed, edit(numbers))  # type: ignore[operator]
    codes = findings_of(attacked)
    assert codes.get(code) is SubIndication.FORMAT_FAILURE, codes


def test_signature_wrapping(signed: bytes) -> None:
    attacked = attacks.signature_wrapping(signed)
    structure = analyse_structure(io.BytesIO(attacked), POLICY)
    codes = {f.code for s in structure.signatures for f in s.findings}
    assert "signature_wrapping" in codes
    # the signed bytes are unchanged: a digest check alone passes
    numbers, _ = attacks.byte_range(attacked, 0)
    assert (attacked[:numbers[1]] + attacked[numbers[2]:numbers[2] + numbers[3]]
            == signed[:numbers[1]] + signed[attacks.byte_range(signed)[0][2]:])


def test_isa_objects_after_the_last_eof(signed: bytes) -> None:
    attacked = attacks.isa_unsigned_objects(signed)
    structure, review = analyse(attacked)
    assert {f.code for f in structure.findings} == {"incremental_save_unsigned_objects"}
    assert signature_codes(review) == {"incremental_save_unsigned_objects"}


def test_isa_new_body_without_xref(signed: bytes) -> None:
    attacked = attacks.isa_no_xref(signed)
    structure, review = analyse(attacked)
    [finding] = structure.findings
    assert finding.code == "incremental_save_no_xref"
    assert finding.revision == 3
    assert "incremental_save_no_xref" in signature_codes(review)


# --- revisions: shadow attacks, DocMDP, FieldMDP ---------------------------------------------------------------------


@pytest.mark.parametrize(("attack", "code"), [
    (attacks.shadow_hide, "shadow_hide"),
    (attacks.shadow_hide_by_removal, "shadow_hide"),
    (attacks.shadow_replace_overlay, "shadow_replace"),
    (attacks.shadow_replace_reveal, "shadow_replace"),
    (attacks.shadow_replace_font, "shadow_replace"),
    (attacks.shadow_replace_appearance, "shadow_replace"),
    (attacks.shadow_hide_and_replace_content, "shadow_hide_and_replace"),
    (attacks.shadow_hide_and_replace_catalog, "shadow_hide_and_replace"),
])
def test_shadow_attacks(signed: bytes, attack: object, code: str) -> None:
    attacked = attack(signed)  # type: ignore[operator]
    structure, review = analyse(attacked)
    assert structure_codes(structure) == set()
    assert code in {f.code for f in review.by_revision[3]}, review.by_revision
    [findings] = review.by_signature.values()
    assert code in {f.code for f in findings}
    assert all(f.sub_indication is SubIndication.FORMAT_FAILURE for f in findings)
    assert any(c.classification is ChangeClass.NOT_ALLOWED for c in review.changes[3])


@pytest.mark.parametrize(("permission", "attack"), [
    (MDPPerm.NO_CHANGES, attacks.fill_form),
    (MDPPerm.NO_CHANGES, attacks.add_comment),
    (MDPPerm.FILL_FORMS, attacks.add_comment),
])
def test_docmdp_violations(certified: dict[MDPPerm, bytes], permission: MDPPerm, attack: object) -> None:
    _, review = analyse(attack(certified[permission]))  # type: ignore[operator]
    assert signature_codes(review) == {"docmdp_violation"}
    assert [f.code for f in review.by_revision[3]] == ["docmdp_violation"]


def test_fieldmdp_lock(signed: bytes) -> None:
    locked = attacks.sign(attacks.base_pdf(), field_name="Locking", lock_fields=(attacks.FIELD_NAME,))
    _, review = analyse(attacks.fill_form(locked))
    assert signature_codes(review) == {"fieldmdp_violation"}


# --- bounds --------------------------------------------------------------------------------------------------------


def test_the_size_limit_comes_from_the_input_policy(signed: bytes) -> None:
    with pytest.raises(TooLarge):
        analyse_structure(io.BytesIO(signed), InputPolicy(max_bytes=len(signed) - 1))


def test_truncated_and_mutated_files_raise_only_pdf_refused(signed: bytes) -> None:
    rng = random.Random(14)  # noqa: S311 - a reproducible fuzz, not a secret
    base = attacks.fill_form(signed)
    samples = [base[:rng.randrange(len(base))] for _ in range(40)]
    for _ in range(80):
        mutated = bytearray(base)
        for _ in range(rng.randrange(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    for sample in samples:
        with contextlib.suppress(PdfRefused):
            analyse(sample)


def test_a_hostile_scan_stays_linear() -> None:
    """Long runs of the scan's tokens (digits and whitespace, names with escapes, '<' without '>')."""
    hostile = (b"%PDF-1.7\n" + b"1 " * 200_000 + b"/A#41 " * 20_000 + b"<<" * 5_000 + b"(" * 10_000
               + b"\n9 0 obj << /Type /Sig /Contents <" + b"0" * 100_000 + b"\nstartxref\n9\n%%EOF\n")
    structure = analyse_structure(io.BytesIO(hostile), POLICY)
    assert len(structure.revisions) == 1


# --- end to end: the Validator's report ------------------------------------------------------------------------------
#
# The same attack files through `Validator` (which always runs the structure analysis and the revision review):
# the affected signature is not TOTAL-PASSED and carries the finding; the controls stay TOTAL-PASSED. The
# throwaway signer's self-signed certificate is the validator's only trust anchor (the Açar B-LTA control trusts
# the test PKI's root).


def validator(*anchors: asn1_x509.Certificate) -> Validator:
    trust = TrustPolicy(anchors=anchors or (attacks.signer_certificate(),), sources=("attack test signer",))
    return Validator(trust=trust, input_policy=InputPolicy(), fetching=None)


async def report_of(pdf: bytes, *anchors: asn1_x509.Certificate) -> ValidationReport:
    return await validator(*anchors).validate(io.BytesIO(pdf))


async def assert_marked(pdf: bytes, code: str) -> ValidationReport:
    report = await report_of(pdf)
    marked = [s for s in report.signatures if code in {f.code for f in s.findings}]
    assert marked, report.as_json()
    assert all(s.indication is not Indication.TOTAL_PASSED for s in marked), report.as_json()
    assert not report.all_passed
    return report


async def assert_passed(pdf: bytes, *anchors: asn1_x509.Certificate) -> ValidationReport:
    report = await report_of(pdf, *anchors)
    assert report.all_passed, report.as_json()
    assert all(s.findings == () for s in report.signatures), report.as_json()
    for revision in report.revisions[1:]:
        assert revision.classification is ChangeClass.ALLOWED, revision
    return report


async def test_validator_passes_a_signed_document(signed: bytes) -> None:
    report = await assert_passed(signed)
    [signature] = report.signatures
    assert signature.coverage is not None and signature.coverage.revision == 2
    assert [r.signatures for r in report.revisions] == [(), ("sig-1",)]


async def test_validator_passes_a_second_approval_signature(signed: bytes) -> None:
    # pyHanko's synchronous signer runs its own event loop: off this one
    report = await assert_passed(await asyncio.to_thread(attacks.sign, signed, field_name="Signature2"))
    assert [s.field_name for s in report.signatures] == ["Signature1", "Signature2"]


@pytest.mark.parametrize("control", [attacks.fill_form, attacks.add_comment])
async def test_validator_passes_form_filling_and_a_comment(signed: bytes, control: object) -> None:
    await assert_passed(control(signed))  # type: ignore[operator]


@pytest.mark.parametrize(("permission", "control"), [
    (MDPPerm.FILL_FORMS, attacks.fill_form), (MDPPerm.ANNOTATE, attacks.fill_form),
    (MDPPerm.ANNOTATE, attacks.add_comment),
])
async def test_validator_passes_what_a_certification_permits(certified: dict[MDPPerm, bytes], permission: MDPPerm,
                                                             control: object) -> None:
    report = await assert_passed(control(certified[permission]))  # type: ignore[operator]
    assert report.signatures[0].docmdp_permission == permission.value


async def test_validator_passes_an_acar_b_lta_document(world: World) -> None:
    pdf = await world.sign(make_pdf(), PadesLevel.B_LTA)
    report = await assert_passed(pdf, world.root)
    assert {s.kind for s in report.signatures} == {SignatureKind.APPROVAL, SignatureKind.DOCUMENT_TIMESTAMP}


async def test_validator_reports_a_signature_without_subfilter(signed: bytes) -> None:
    report = await assert_marked(attacks.no_subfilter(signed), "no_subfilter")
    assert report.signatures[0].indication is Indication.TOTAL_FAILED
    assert report.signatures[0].sub_indication is SubIndication.FORMAT_FAILURE


@pytest.mark.parametrize(("attack", "code"), [
    *((lambda s, how=how: attacks.usf_contents(s, how), "usf_contents") for how in ("missing", "empty", "null")),
    *((lambda s, how=how: attacks.usf_byte_range(s, how), "usf_byte_range") for how in ("missing", "null", "empty")),
    (attacks.usf_cert, "usf_cert"),
    (attacks.signature_wrapping, "signature_wrapping"),
    (attacks.isa_unsigned_objects, "incremental_save_unsigned_objects"),
    (attacks.isa_no_xref, "incremental_save_no_xref"),
    (attacks.shadow_hide, "shadow_hide"),
    (attacks.shadow_hide_by_removal, "shadow_hide"),
    (attacks.shadow_replace_overlay, "shadow_replace"),
    (attacks.shadow_replace_reveal, "shadow_replace"),
    (attacks.shadow_replace_font, "shadow_replace"),
    (attacks.shadow_replace_appearance, "shadow_replace"),
    (attacks.shadow_hide_and_replace_content, "shadow_hide_and_replace"),
    (attacks.shadow_hide_and_replace_catalog, "shadow_hide_and_replace"),
])
async def test_validator_reports_each_attack(signed: bytes, attack: object, code: str) -> None:
    report = await assert_marked(attack(signed), code)  # type: ignore[operator]
    marked = [s for s in report.signatures if code in {f.code for f in s.findings}]
    assert all(s.indication is Indication.TOTAL_FAILED for s in marked), report.as_json()


@pytest.mark.parametrize(("edit", "code"), [
    (lambda r: [5, r[1] - 5, r[2], r[3]], "byte_range_gap"),
    (lambda r: [0, r[1], r[2], r[3] - 10], "byte_range_gap"),
    (lambda r: [0, r[1] - 4, r[2], r[3]], "signature_wrapping"),
    (lambda r: [0, r[1], r[2] - 10, r[3] + 10], "byte_range_gap"),
    (lambda r: [0, r[1], r[2], r[3] + 10], "byte_range_invalid"),
    (lambda r: [0, r[2] + 1, r[2], r[3]], "byte_range_invalid"),
    (lambda r: [0, -5, r[2], r[3]], "byte_range_invalid"),
    (lambda r: [0, 1, 2, 3, 4, 5], "byte_range_invalid"),
])
async def test_validator_reports_a_byte_range_not_covering_the_revision(signed: bytes, edit: object,
                                                                       code: str) -> None:
    numbers, _ = attacks.byte_range(signed)
    await assert_marked(attacks.set_byte_range(signed, edit(numbers)), code)  # type: ignore[operator]


@pytest.mark.parametrize(("permission", "attack"), [
    (MDPPerm.NO_CHANGES, attacks.fill_form),
    (MDPPerm.NO_CHANGES, attacks.add_comment),
    (MDPPerm.FILL_FORMS, attacks.add_comment),
])
async def test_validator_reports_docmdp_violations(certified: dict[MDPPerm, bytes], permission: MDPPerm,
                                                   attack: object) -> None:
    report = await assert_marked(attack(certified[permission]), "docmdp_violation")  # type: ignore[operator]
    assert report.signatures[0].kind is SignatureKind.CERTIFICATION


async def test_validator_reports_a_fieldmdp_violation() -> None:
    locked = await asyncio.to_thread(attacks.sign, attacks.base_pdf(), field_name="Locking",
                                     lock_fields=(attacks.FIELD_NAME,))
    await assert_passed(locked)
    await assert_marked(attacks.fill_form(locked), "fieldmdp_violation")
