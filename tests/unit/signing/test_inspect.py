"""The input policy refuses hostile PDFs with the precise reason, within bounds (signing.core.inspect).

Every file here is written by hand (tests/pdf_tools.py) so each hostile structure is exactly what the test says;
the real producers are in test_inspect_producers.py.
"""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
import zlib
from pathlib import Path

import pytest

from signing.core.errors import (
    ActiveContent,
    DamagedPdf,
    EncryptedPdf,
    InflationBomb,
    NotPdf,
    PdfRefused,
    ReferenceLoop,
    SigningError,
    TooLarge,
    TooManyObjects,
    TooManyPages,
)
from signing.core.inspect import InputPolicy, InspectedPdf, inspect_pdf, prepare_for_signing
from tests import pdf_tools

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

POLICY = InputPolicy()
CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"


def refused(data: bytes, error: type[PdfRefused], policy: InputPolicy = POLICY) -> PdfRefused:
    """Both entry points refuse `data` with `error`; prepare_for_signing leaves its output empty."""
    with pytest.raises(error) as inspected:
        inspect_pdf(io.BytesIO(data), policy)
    output = io.BytesIO(b"left over from an earlier attempt")
    with pytest.raises(error) as prepared:
        prepare_for_signing(io.BytesIO(data), output, policy)
    assert output.getvalue() == b""
    assert str(inspected.value) == str(prepared.value) == prepared.value.detail
    assert isinstance(prepared.value, SigningError) and prepared.value.code == error.code
    return prepared.value


def accepted(data: bytes, policy: InputPolicy = POLICY) -> tuple[InspectedPdf, bytes]:
    output = io.BytesIO()
    result = prepare_for_signing(io.BytesIO(data), output, policy)
    return result, output.getvalue()


def test_a_plain_pdf_is_passed_through_unchanged_and_described() -> None:
    data = pdf_tools.simple_pdf(3)
    result, output = accepted(data)
    assert output == data
    assert result == InspectedPdf(pages=3, version="1.7", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                                  findings=(), signatures=0, pdfa=None, repaired=False)
    assert inspect_pdf(io.BytesIO(data), POLICY) == result


def test_error_codes_and_statuses_are_the_contract() -> None:
    assert {cls.code: cls.status_code for cls in (NotPdf, EncryptedPdf, DamagedPdf, TooLarge, TooManyPages,
                                                  TooManyObjects, InflationBomb, ReferenceLoop, ActiveContent)} == {
        "not_pdf": 415, "encrypted_pdf": 422, "damaged_pdf": 422, "too_large": 413, "too_many_pages": 422,
        "too_many_objects": 422, "inflation_bomb": 422, "reference_loop": 422, "active_content": 422,
    }


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "the file is empty"),
    (b"PK\x03\x04" + bytes(100), "it is a ZIP archive"),
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "it is a PNG image"),
    (b"<html><body>not a pdf</body></html>", "no %PDF- header in its first 1024 bytes"),
    (b" " * 2000 + b"%PDF-1.7\n", "no %PDF- header in its first 1024 bytes"),
])
def test_not_a_pdf(data: bytes, reason: str) -> None:
    assert reason in refused(data, NotPdf).detail


def test_the_size_limit_is_checked_before_anything_is_parsed() -> None:
    # not even a PDF: the size alone decides, so nothing was read as PDF
    error = refused(b"PK\x03\x04" + bytes(5000), TooLarge, InputPolicy(max_bytes=4096))
    assert error.detail == "the file is 5004 bytes; the limit is 4096 bytes"
    data = pdf_tools.simple_pdf(1)
    assert accepted(data, InputPolicy(max_bytes=len(data)))[0].size == len(data)
    refused(data, TooLarge, InputPolicy(max_bytes=len(data) - 1))


def test_truncated_files_are_refused_not_repaired() -> None:
    data = pdf_tools.simple_pdf(2)
    error = refused(data[: len(data) // 2], DamagedPdf)
    assert "ends without %%EOF: it is truncated" in error.detail


def test_garbage_after_a_header_is_damaged_beyond_repair() -> None:
    error = refused(b"%PDF-1.7\n" + b"no objects here " * 50 + b"\n%%EOF\n", DamagedPdf)
    assert "qpdf cannot repair it" in error.detail and "_io." not in error.detail


def test_too_many_pages() -> None:
    data = pdf_tools.simple_pdf(5)
    assert refused(data, TooManyPages, InputPolicy(max_pages=4)).detail == (
        "the document has more than 4 pages (the limit)")
    assert accepted(data, InputPolicy(max_pages=5))[0].pages == 5


def test_too_many_objects_counted_in_the_raw_bytes() -> None:
    data = pdf_tools.simple_pdf(20)  # 3 + 2 * 20 + 1 objects, /Size 45 (object 0 counts)
    assert "more than 40 objects" in refused(data, TooManyObjects, InputPolicy(max_objects=40)).detail
    assert accepted(data, InputPolicy(max_objects=45))[0].pages == 20


def test_a_huge_declared_size_is_refused_before_the_cross_reference_is_read() -> None:
    data = pdf_tools.raw_pdf({1: CATALOG, 2: PAGES, 3: PAGE}, size=10**9)
    assert "more than 250000 objects" in refused(data, TooManyObjects).detail


def test_object_stream_counts_are_objects_too() -> None:
    inner = b"<< /A 1 >> " * 100
    header = " ".join(f"{10 + i} {11 * i}" for i in range(100)).encode() + b" "
    objstm = pdf_tools.stream_object(header + inner, f"/Type /ObjStm /N 100 /First {len(header)} ".encode())
    data = pdf_tools.raw_pdf({1: CATALOG, 2: PAGES, 3: PAGE, 4: objstm}, version="1.5")
    assert "more than 50 objects" in refused(data, TooManyObjects, InputPolicy(max_objects=50)).detail


def test_a_page_tree_cycle_is_named() -> None:
    data = pdf_tools.raw_pdf({
        1: CATALOG,
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Pages /Parent 2 0 R /Kids [4 0 R 2 0 R] /Count 1 >>",
        4: b"<< /Type /Page /Parent 3 0 R /MediaBox [0 0 595 842] >>",
    })
    assert refused(data, ReferenceLoop).detail == "page tree has a cycle at object 2 0 R"


def test_a_page_listed_twice_is_not_a_tree() -> None:
    data = pdf_tools.raw_pdf({1: CATALOG, 2: b"<< /Type /Pages /Kids [3 0 R 3 0 R] /Count 2 >>", 3: PAGE})
    assert refused(data, DamagedPdf).detail == "the page tree reaches object 3 0 R twice"


def test_a_reference_loop_is_named() -> None:
    data = pdf_tools.raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R /Lang 5 0 R >>", 2: PAGES, 3: PAGE, 5: b"6 0 R", 6: b"7 0 R", 7: b"5 0 R",
    })
    assert refused(data, ReferenceLoop).detail == (
        "reference loop: 5 0 R -> 6 0 R -> 7 0 R -> 5 0 R never resolves to an object")


def test_a_form_field_tree_cycle_and_an_outline_cycle_are_named() -> None:
    fields = pdf_tools.raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [5 0 R] >> >>", 2: PAGES, 3: PAGE,
        5: b"<< /T (a) /Kids [6 0 R] >>", 6: b"<< /T (b) /Parent 5 0 R /Kids [5 0 R] >>",
    })
    assert refused(fields, ReferenceLoop).detail == "form field tree has a cycle at object 5 0 R"
    outline = pdf_tools.raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R /Outlines 5 0 R >>", 2: PAGES, 3: PAGE,
        5: b"<< /Type /Outlines /First 6 0 R >>", 6: b"<< /Title (a) /Parent 5 0 R /Next 7 0 R >>",
        7: b"<< /Title (b) /Parent 5 0 R /Next 6 0 R >>",
    })
    assert refused(outline, ReferenceLoop).detail == "the outline has a cycle at object 6 0 R"


def test_deep_nesting_is_bounded() -> None:
    data = pdf_tools.simple_pdf(1, catalog_extra=b"/Deep " + b"[" * 300 + b"]" * 300 + b" ")
    assert "deeper than 256" in refused(data, DamagedPdf).detail
    # deeper than Python's recursion limit: pyHanko's parser gives up, and so does qpdf (its own depth limit)
    data = pdf_tools.simple_pdf(1, catalog_extra=b"/Deep " + b"[" * 100_000 + b"]" * 100_000 + b" ")
    refused(data, DamagedPdf)


# --- decompression bombs -------------------------------------------------------------------------------------------


def test_a_one_gigabyte_flate_bomb_is_refused_in_bounded_memory() -> None:
    bomb = pdf_tools.flate_bomb_pdf(1 << 30)
    assert len(bomb) < 2 << 20  # 1 GiB of zeros in about 1 MiB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(InflationBomb) as error:
            inspect_pdf(io.BytesIO(bomb), POLICY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"refusing the bomb allocated {peak} bytes at its peak"
    assert error.value.detail.startswith(f"compressed streams inflate beyond {POLICY.max_inflated_bytes} bytes")


def test_the_inflation_bound_is_the_policy_setting() -> None:
    data = pdf_tools.flate_bomb_pdf(8 << 20)
    assert accepted(data, InputPolicy(max_inflated_bytes=8 << 20))[0].pages == 1
    refused(data, InflationBomb, InputPolicy(max_inflated_bytes=(8 << 20) - 1))


def test_a_bomb_in_a_second_flate_layer_is_refused() -> None:
    outer = zlib.compress(pdf_tools.zeros_deflated(256 << 20))  # [/FlateDecode /FlateDecode]: 256 KiB -> 256 MiB
    data = pdf_tools.raw_pdf({
        1: CATALOG, 2: PAGES, 3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Contents 4 0 R >>",
        4: b"<< /Filter [/FlateDecode /FlateDecode] " + f"/Length {len(outer)} >>\nstream\n".encode() + outer
        + b"\nendstream",
    })
    assert len(data) < 64 << 10
    refused(data, InflationBomb, InputPolicy(max_inflated_bytes=32 << 20))


def test_a_bomb_in_an_object_stream_never_reaches_a_parser() -> None:
    bomb = pdf_tools.zeros_deflated(64 << 20)
    objstm = b"<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode " + f"/Length {len(bomb)} >>\nstream\n".encode()
    data = pdf_tools.raw_pdf({1: CATALOG, 2: PAGES, 3: PAGE, 4: objstm + bomb + b"\nendstream"}, version="1.5")
    refused(data, InflationBomb, InputPolicy(max_inflated_bytes=16 << 20))


def test_object_streams_must_use_flate_alone() -> None:
    body = b"5 0 << /A 1 >>"
    objstm = pdf_tools.stream_object(body, b"/Type /ObjStm /N 1 /First 4 /Filter /ASCIIHexDecode ", compress=False)
    data = pdf_tools.raw_pdf({1: CATALOG, 2: PAGES, 3: PAGE, 4: objstm}, version="1.5")
    assert "uses the filter /ASCIIHexDecode" in refused(data, DamagedPdf).detail


# --- active content ------------------------------------------------------------------------------------------------

JS_OPEN = b"/OpenAction << /S /JavaScript /JS (app.alert\\(1\\)) >> "
JS_NAMES = b"/Names << /JavaScript << /Names [(init) << /S /JavaScript /JS (this.print\\(\\)) >>] >> >> "
LAUNCH = b"/Annots [<< /Type /Annot /Subtype /Link /Rect [0 0 9 9] /A << /S /Launch /F (calc.exe) >> >>] "
OPEN_LAUNCH = b"/OpenAction << /S /Launch /F (cmd.exe) >> "


@pytest.mark.parametrize(("catalog", "page", "expected"), [
    (JS_OPEN, b"", "OpenAction: the document runs a JavaScript action when it is opened"),
    (JS_NAMES, b"", "JavaScript: document-level scripts (/Names /JavaScript)"),
    (b"", LAUNCH, "Launch: an action that launches an application or file in object 4 0 R"),
    (OPEN_LAUNCH, b"", "OpenAction: the document runs a Launch action when it is opened"),
    (b"", b"/AA << /O << /S /JavaScript /JS (1) >> >> ", "JavaScript: a JavaScript action in object 4 0 R"),
    (b"/AcroForm << /Fields [] /XFA (<xdp/>) >> ",  b"",
     "XFA: an XML Forms Architecture form (it can carry scripts) in object 1 0 R"),
    (b"", b"/Annots [<< /Type /Annot /Subtype /RichMedia /Rect [0 0 9 9] >>] ",
     "rich media: a RichMedia annotation (it can run scripts) in object 4 0 R"),
])
def test_scripts_and_launch_actions_are_findings_and_refused_by_default(catalog: bytes, page: bytes,
                                                                        expected: str) -> None:
    data = pdf_tools.simple_pdf(1, catalog_extra=catalog, page_extra=page)
    assert expected in refused(data, ActiveContent).detail
    result, output = accepted(data, InputPolicy(refuse_active_content=False))
    assert expected in result.findings and output == data


def test_embedded_files_are_findings_and_refused_by_default() -> None:
    embedded = pdf_tools.stream_object(b"hello", b"/Type /EmbeddedFile ")
    data = pdf_tools.raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(a.txt) 6 0 R] >> >> >>",
        2: PAGES, 3: PAGE, 5: embedded, 6: b"<< /Type /Filespec /F (a.txt) /UF (a.txt) /EF << /F 5 0 R >> >>",
    })
    error = refused(data, ActiveContent)
    assert "embedded file: the document carries attached files (/Names /EmbeddedFiles)" in error.detail
    result, _ = accepted(data, InputPolicy(refuse_active_content=False))
    assert "embedded file: object 5 0 R holds an embedded file" in result.findings
    assert "embedded file: object 6 0 R holds an embedded file" in result.findings


def test_actions_that_send_or_open_data_are_reported_not_refused() -> None:
    data = pdf_tools.simple_pdf(1, page_extra=b"/Annots [<< /Type /Annot /Subtype /Link /Rect [0 0 9 9] "
                                b"/A << /S /SubmitForm /F (https://example.org/) >> >>] ")
    result, output = accepted(data)
    assert result.findings == ("SubmitForm: an action that sends form data to a URL in object 4 0 R",)
    assert output == data


def test_many_harmless_findings_cannot_hide_an_active_one() -> None:
    links = {11 + i: b"<< /Type /Annot /Subtype /Link /Rect [0 0 9 9] /A << /S /GoToR /F (f.pdf) >> >>"
             for i in range(80)}  # 80 distinct findings, more than the 50 kept, walked before object 10
    script = b"<< /Type /Annot /Subtype /Link /Rect [0 0 9 9] /A << /S /JavaScript /JS (app.alert\\(1\\)) >> >>"
    annots = " ".join(f"{n} 0 R" for n in (10, *links)).encode()
    data = pdf_tools.raw_pdf({
        1: CATALOG, 2: PAGES, 3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Annots [" + annots + b"] >>",
        10: script, **links,
    })
    assert refused(data, ActiveContent).detail == "JavaScript: a JavaScript action in object 10 0 R"
    result, _ = accepted(data, InputPolicy(refuse_active_content=False))
    assert result.findings[0] == "JavaScript: a JavaScript action in object 10 0 R"
    assert len(result.findings) == 51


def test_an_open_action_to_a_destination_is_reported_not_refused() -> None:
    data = pdf_tools.simple_pdf(1, catalog_extra=b"/OpenAction [4 0 R /Fit] ")
    result, _ = accepted(data)
    assert result.findings == ("OpenAction: the document opens at a destination (no script)",)


# --- encryption, signatures, repair --------------------------------------------------------------------------------


def test_encrypted_files_are_refused(tmp_path: Path) -> None:
    plain = pdf_tools.simple_pdf(1)
    for password in ("", "secret"):
        encrypted = pdf_tools.encrypted_pdf(tmp_path, plain, user_password=password)
        assert refused(encrypted, EncryptedPdf).detail == (
            "the PDF is encrypted (its trailer has an /Encrypt dictionary)")


def shifted(data: bytes) -> bytes:
    """Every cross-reference offset made wrong by a comment line after the header (as a mail gateway might)."""
    newline = data.index(b"\n") + 1
    return data[:newline] + b"% inserted line shifting every object\n" + data[newline:]


def test_broken_offsets_of_an_unsigned_file_are_repaired_before_signing() -> None:
    data = shifted(pdf_tools.simple_pdf(2))
    output = io.BytesIO()
    result = prepare_for_signing(io.BytesIO(data), output, POLICY)
    repaired = output.getvalue()
    assert result.repaired and result.pages == 2 and result.version == "1.7"
    assert result.sha256 == hashlib.sha256(repaired).hexdigest() and result.size == len(repaired)
    assert result.findings[0].startswith("repaired: qpdf rewrote the file before signing; pyHanko refused it")
    # the repair is idempotent: the rewrite passes as it is
    again = io.BytesIO()
    assert not prepare_for_signing(io.BytesIO(repaired), again, POLICY).repaired and again.getvalue() == repaired
    # inspect_pdf proves the repair but describes the input
    described = inspect_pdf(io.BytesIO(data), POLICY)
    assert described.repaired and described.sha256 == hashlib.sha256(data).hexdigest() and described.pages == 2


def test_a_signed_file_is_never_rewritten() -> None:
    signed = pdf_tools.sign_throwaway(pdf_tools.simple_pdf(1))
    result, output = accepted(signed)
    assert result.signatures == 1 and not result.repaired and output == signed
    error = refused(shifted(signed), DamagedPdf)
    assert "a signed file is never rewritten" in error.detail


def test_signature_fields_are_counted() -> None:
    twice = pdf_tools.sign_throwaway(pdf_tools.sign_throwaway(pdf_tools.simple_pdf(1)), field_name="Signature2")
    assert accepted(twice)[0].signatures == 2


def test_refusals_are_signing_errors_with_their_wire_form() -> None:
    error = refused(b"hello", NotPdf)
    assert (error.code, error.status_code, error.title) == ("not_pdf", 415, "The document is not a PDF file")
    assert error.sub_indication is None


def bomb_page(contents: bytes, *, extra: dict[int, bytes] | None = None) -> bytes:
    return pdf_tools.raw_pdf({
        1: CATALOG, 2: PAGES, 3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Contents 5 0 R >>",
        5: contents, **(extra or {}),
    })


BOMB = pdf_tools.zeros_deflated(64 << 20)
SMALL = InputPolicy(max_inflated_bytes=16 << 20)


def test_a_bomb_behind_a_lying_length_is_still_inflated_and_counted() -> None:
    # object 4 claims a /Length that covers object 5, the bomb: a scan trusting /Length would skip it
    lying = b"<< /Length 300 >>\nstream\nplain text data"
    data = bomb_page(b"<< /Filter /FlateDecode " + f"/Length {len(BOMB)} >>\nstream\n".encode() + BOMB
                     + b"\nendstream", extra={4: lying})
    refused(data, InflationBomb, SMALL)


def test_a_bomb_after_stray_whitespace_or_without_its_zlib_header_is_counted() -> None:
    spaced = b"<< /Filter /FlateDecode " + f"/Length {len(BOMB) + 2} >>\nstream \r\n\n\n".encode() + BOMB + (
        b"\nendstream")
    refused(bomb_page(spaced), InflationBomb, SMALL)
    raw_deflate = BOMB[2:-4]  # the deflate data alone, as a lenient reader would still inflate it
    headless = b"<< /Filter /Fl " + f"/Length {len(raw_deflate)} >>\nstream\n".encode() + raw_deflate + (
        b"\nendstream")
    refused(bomb_page(headless), InflationBomb, SMALL)


def test_a_large_file_is_inspected_without_holding_it_twice(tmp_path: Path) -> None:
    """prepare_for_signing streams: the scan and the copy read windows; the walk holds one stream at a time."""
    big = pdf_tools.large_pdf(24 * 1024 * 1024)
    with (tmp_path / "in.pdf").open("w+b") as source, (tmp_path / "out.pdf").open("w+b") as output:
        source.write(big)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            result = prepare_for_signing(source, output, POLICY)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        output.seek(0)
        assert hashlib.sha256(output.read()).hexdigest() == result.sha256 == hashlib.sha256(big).hexdigest()
    # the one image stream (its raw data, read once by pyHanko for its dictionary) plus windows of a few MiB
    assert peak < len(big) + (16 << 20), f"peak {peak} bytes for a {len(big)}-byte file"


def test_a_signature_pyhanko_cannot_read_and_the_scan_cannot_see_still_stops_the_rewrite() -> None:
    # /Byte#52ange is the name /ByteRange (ISO 32000-2 section 7.3.5): invisible to the raw scan; with broken
    # offsets neither strict nor lenient pyHanko reads the file: qpdf's reading of the form fields stops the rewrite
    data = pdf_tools.raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [5 0 R] /SigFlags 3 >> >>", 2: PAGES, 3: PAGE,
        5: b"<< /FT /Sig /T (s) /V << /Type /Sig /Byte#52ange [0 10 20 30] /Contents <00> >> >>",
    })
    assert accepted(data)[0].signatures == 1
    error = refused(shifted(data), DamagedPdf)
    assert error.detail.endswith("and the file carries signatures: a signed file is never rewritten, since that "
                                 "would break them")


def test_mutated_files_are_accepted_signable_or_refused_never_an_unexpected_error() -> None:
    """A differential-style sweep: 300 seeded mutations of real files (hand-made, hybrid, signed). Each one is
    refused with a PdfRefused or accepted, and whatever is accepted is signed for real by pyHanko."""
    rng = random.Random(13)  # noqa: S311 (a seeded, reproducible sweep; nothing secret)
    bases = [pdf_tools.simple_pdf(2), pdf_tools.hybrid_reference_pdf(),
             pdf_tools.sign_throwaway(pdf_tools.simple_pdf(1))]
    tokens = [b"R", b" 0 R", b"<<", b">>", b"[", b"]", b"/Kids [1 0 R]", b"stream\n", b"obj", b"9999999999", b"%%EOF"]
    outcomes: dict[str, int] = {}
    for _ in range(300):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            match rng.randrange(4):
                case 0:
                    data[at] = rng.randrange(256)
                case 1:
                    del data[at : at + rng.randint(1, 50)]
                case 2:
                    data[at:at] = rng.choice(tokens)
                case _:
                    data[at : at + 1] = bytes([rng.choice(b"0123456789 /()<>[]")])
        output = io.BytesIO()
        try:
            result = prepare_for_signing(io.BytesIO(bytes(data)), output, POLICY)
        except PdfRefused as error:
            outcomes[error.code] = outcomes.get(error.code, 0) + 1
            continue
        outcomes["accepted"] = outcomes.get("accepted", 0) + 1
        signed = pdf_tools.sign_throwaway(output.getvalue(), field_name="Sweep")
        assert inspect_pdf(io.BytesIO(signed), POLICY).signatures == result.signatures + 1
    assert outcomes.get("accepted", 0) > 50 and outcomes.get("damaged_pdf", 0) > 50, outcomes


@pytest.mark.parametrize(("objects", "reason"), [
    ({2: b"<< /Type /Pages /Kids [3 0 R] /Count 2 >>"},
     "page tree node object 2 0 R declares /Count 2 but holds 1 pages"),
    ({2: b"<< /Type /Pages /Kids [3 0 R] >>"}, "page tree node object 2 0 R has no /Count"),
    ({3: b"<< /Parent 2 0 R /MediaBox [0 0 9 9] >>"},
     "page tree node object 3 0 R is neither a /Type /Page leaf nor a /Type /Pages node with /Kids"),
    ({3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 9 9] /Annots 5 >>"},
     "page 1 (object 3 0 R) has /Annots that is not an array"),
    ({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm 7 >>"}, "the catalog's /AcroForm is not a dictionary"),
    ({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields 7 >> >>"},
     "the interactive form's /Fields is not an array"),
    ({1: b"<< /Type /Catalog /Pages 2 0 R /Extensions << /ISO_ [<< /BaseVersion /2.0 /ExtensionLevl 32002 >>] >> >>"},
     "the developer extension /ISO_ of the catalog has no integer /ExtensionLevel"),
    ({1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [9999999999] >> >>"},
     "the interactive form's /Fields holds a direct object where only indirect references are allowed"),
])
def test_what_pyhanko_updates_when_signing_must_have_its_shape(objects: dict[int, bytes], reason: str) -> None:
    """Found by the mutation sweep: pyHanko's signer fails half-way (KeyError, TypeError) on these."""
    data = pdf_tools.raw_pdf({1: CATALOG, 2: PAGES, 3: PAGE, **objects})
    assert refused(data, DamagedPdf).detail == reason


def test_a_trailer_info_that_is_not_a_dictionary_is_refused() -> None:
    data = pdf_tools.raw_pdf({1: CATALOG, 2: PAGES, 3: PAGE, 4: b"42"}, trailer_extra=b"/Info 4 0 R ")
    assert refused(data, DamagedPdf).detail == "the trailer's /Info is not a dictionary"


def self_signed_der() -> bytes:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DSS entry")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_the_document_security_store_of_an_earlier_signature_must_be_readable() -> None:
    def with_dss(certificate: bytes) -> bytes:
        return pdf_tools.raw_pdf({
            1: b"<< /Type /Catalog /Pages 2 0 R /DSS << /Certs [5 0 R] /VRI << >> >> >>", 2: PAGES, 3: PAGE,
            5: pdf_tools.stream_object(certificate),
        })

    assert accepted(with_dss(self_signed_der()))[0].pages == 1
    error = refused(with_dss(b"\x30\x03not a certificate"), DamagedPdf)
    assert error.detail == "entry 0 of the document security store's /Certs is not readable DER data"


def test_one_huge_object_is_refused_before_a_parser_builds_it() -> None:
    """pyHanko builds a Python object per element (some 20 times the text): 5 MiB of numbers in one array."""
    numbers = b"[" + b"0 " * (5 * 1024 * 1024 // 2) + b"]"
    plain = pdf_tools.raw_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /Huge 4 0 R >>", 2: PAGES, 3: PAGE, 4: numbers})
    error = refused(plain, TooManyObjects)
    assert error.detail.startswith("object 4 0 R spans 524") and error.detail.endswith("the bound is 4194304 bytes")
    header = b"4 0 "
    objstm = pdf_tools.stream_object(header + numbers, f"/Type /ObjStm /N 1 /First {len(header)} ".encode())
    hidden = pdf_tools.raw_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /Huge 4 0 R >>", 2: PAGES, 3: PAGE, 5: objstm},
                               version="1.5")
    error = refused(hidden, TooManyObjects)
    assert error.detail.startswith("object 4 0 R in the object stream at byte offset")
