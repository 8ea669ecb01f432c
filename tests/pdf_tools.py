"""PDFs for tests, written with pyHanko's own PDF writer (no other PDF library), and small readers of what a
signed PDF holds: the header version, the catalog /Version, the XMP packet, a signature's ByteRange and /Contents.

PDF files for the tests, made here by real producers (nothing downloaded) and by hand where a producer cannot.

Each function is independent: it takes what it needs (a scratch directory, text, or a PDF to re-distil) and
returns the bytes of one PDF. The producers are the Debian packages the Makefile's system-deps installs:
Chromium (print-to-PDF), LibreOffice Writer, Ghostscript, qpdf, MuPDF (mutool). A missing tool is a failure that
names the package, never a skip. `sign_throwaway` signs with pyHanko and a throwaway key.
"""

from __future__ import annotations

import datetime as dt
import glob
import html
import io
import os
import re
import secrets
import shutil
import subprocess
import zlib
from io import BytesIO
from pathlib import Path

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

A4 = (0, 0, 595, 842)

PDFA_2B_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/"
    xmlns:dc="http://purl.org/dc/elements/1.1/">
   <pdfaid:part>2</pdfaid:part>
   <pdfaid:conformance>B</pdfaid:conformance>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Açar test document</rdf:li></rdf:Alt></dc:title>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def make_pdf(*, pages: int = 1, version: tuple[int, int] = (1, 7), image_bytes: int = 0, pdfa: bool = False) -> bytes:
    """A PDF of `pages` A4 pages with vector drawings (no fonts), written by pyHanko's PdfFileWriter.

    `image_bytes`: a random (incompressible) RGB image of about that many bytes drawn on page 1, to make a file of
    a given size. `pdfa`: the catalog gets an XMP packet claiming PDF/A-2b (pdfaid part 2, conformance B); the
    file is not checked against PDF/A (no ICC output intent), it carries the claim a signature must not change.
    """
    writer = PdfFileWriter(stream_xrefs=False)
    writer.output_version = version
    for number in range(1, pages + 1):
        resources = generic.DictionaryObject()
        drawing = f"q 0.1 0.3 0.6 rg 72 {700 - number % 10 * 20} 300 40 re f Q\n".encode()
        if number == 1 and image_bytes > 0:
            side = max(1, int((image_bytes / 3) ** 0.5))
            image = generic.StreamObject(
                {pdf_name("/Type"): pdf_name("/XObject"), pdf_name("/Subtype"): pdf_name("/Image"),
                 pdf_name("/Width"): generic.NumberObject(side), pdf_name("/Height"): generic.NumberObject(side),
                 pdf_name("/ColorSpace"): pdf_name("/DeviceRGB"),
                 pdf_name("/BitsPerComponent"): generic.NumberObject(8)},
                stream_data=secrets.token_bytes(side * side * 3))
            resources[pdf_name("/XObject")] = generic.DictionaryObject({pdf_name("/Im1"): writer.add_object(image)})
            drawing += b"q 300 0 0 300 72 300 cm /Im1 Do Q\n"
        content = writer.add_object(generic.StreamObject(stream_data=drawing))
        writer.insert_page(PageObject(contents=content, media_box=A4, resources=resources))
    if pdfa:
        metadata = generic.StreamObject(
            {pdf_name("/Type"): pdf_name("/Metadata"), pdf_name("/Subtype"): pdf_name("/XML")},
            stream_data=PDFA_2B_XMP.encode())
        writer.root[pdf_name("/Metadata")] = writer.add_object(metadata)
        writer.update_root()
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def header_version(pdf: bytes) -> str:
    """The version in the file header (%PDF-x.y)."""
    match = re.match(rb"%PDF-(\d\.\d)", pdf)
    assert match is not None, pdf[:16]
    return match.group(1).decode()


def catalog_version(pdf: bytes) -> str | None:
    """The catalog's /Version (ISO 32000-1 section 7.7.2) of the newest revision, or None."""
    root = PdfFileReader(BytesIO(pdf), strict=False).root
    version = root.get("/Version")
    return None if version is None else str(version).lstrip("/")


def xmp_packet(pdf: bytes) -> bytes | None:
    """The catalog's XMP metadata stream (decoded) of the newest revision, or None."""
    root = PdfFileReader(BytesIO(pdf), strict=False).root
    metadata = root.get("/Metadata")
    return None if metadata is None else bytes(metadata.get_object().data)


def signature_parts(pdf: bytes, index: int = 0) -> tuple[bytes, bytes]:
    """The `index`th signature's signed bytes (its ByteRange, concatenated) and its DER /Contents (padding
    stripped), read by the reader in order of appearance."""
    reader = PdfFileReader(BytesIO(pdf), strict=False)
    signature = reader.embedded_signatures[index]
    byte_range = [int(x) for x in signature.sig_object["/ByteRange"]]
    signed = b"".join(pdf[start:start + length] for start, length in zip(byte_range[::2], byte_range[1::2],
                                                                         strict=True))
    return signed, signature.pkcs7_content


# Azerbaijani (every letter beyond ASCII), Russian and English: what the producers must carry into the PDF.
TEXT_AZ = "Azərbaycan Respublikası: ə ğ ı ö ş ç ü Ə Ğ İ Ö Ş Ç Ü — vergi bəyannaməsi"
TEXT_RU = "Российская Федерация: налоговая декларация, подпись"
TEXT_EN = "Republic of Azerbaijan: tax return, signature"
TEXTS = (TEXT_AZ, TEXT_RU, TEXT_EN)

_PACKAGES = {"chromium": "chromium", "soffice": "libreoffice-writer-nogui", "gs": "ghostscript",
             "qpdf": "qpdf", "mutool": "mupdf-tools"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: install the Debian package {_PACKAGES.get(name, name)} "
                             "(make system-deps)")
    return path


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([_tool(args[0]), *args[1:]], capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc


def _html(paragraphs: tuple[str, ...]) -> str:
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return f'<!doctype html><html lang="az"><meta charset="utf-8"><title>Açar</title><body>{body}</body></html>'


def chromium_pdf(tmp: Path, paragraphs: tuple[str, ...] = TEXTS) -> bytes:
    """Chromium's print-to-PDF (Skia's PDF backend: PDF 1.4, object streams none, fonts subset)."""
    page = tmp / "chromium.html"
    page.write_text(_html(paragraphs), encoding="utf-8")
    target = tmp / "chromium.pdf"
    _run("chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
         f"--user-data-dir={tmp / 'chromium-profile'}", f"--print-to-pdf={target}", page.as_uri())
    return target.read_bytes()


def libreoffice_pdf(tmp: Path, paragraphs: tuple[str, ...] = TEXTS, *, pdfa: bool = False) -> bytes:
    """LibreOffice Writer's PDF export of a flat OpenDocument text (optionally its PDF/A-2b export)."""
    body = "".join(f"<text:p>{html.escape(p)}</text:p>" for p in paragraphs)
    document = tmp / "writer.fodt"
    document.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.3" '
        f'office:mimetype="application/vnd.oasis.opendocument.text"><office:body><office:text>{body}'
        "</office:text></office:body></office:document>",
        encoding="utf-8",
    )
    export = 'pdf:writer_pdf_Export:{"SelectPdfVersion":{"type":"long","value":"2"}}' if pdfa else "pdf"
    _run("soffice", f"-env:UserInstallation={(tmp / 'lo-profile').as_uri()}", "--headless", "--convert-to", export,
         "--outdir", str(tmp), str(document), timeout=180)
    return (tmp / "writer.pdf").read_bytes()


def ghostscript_pdf(tmp: Path, source: bytes, *, version: str = "1.7", pdfa: int | None = None) -> bytes:
    """`gs -sDEVICE=pdfwrite` re-distilling `source`: PDF `version` (1.7 or 2.0), or PDF/A-`pdfa`b with an sRGB
    output intent (Ghostscript's PDFA_def.ps recipe)."""
    (tmp / "gs-in.pdf").write_bytes(source)
    target = tmp / "gs-out.pdf"
    args = ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", f"-dCompatibilityLevel={version}"]
    extra: list[str] = []
    if pdfa is not None:
        icc = sorted(glob.glob("/usr/share/ghostscript/*/iccprofiles/default_rgb.icc"))
        assert icc, "Ghostscript's default_rgb.icc is missing (Debian package ghostscript)"
        definition = tmp / "pdfa_def.ps"
        definition.write_text(
            f"%!\n/ICCProfile ({icc[-1]}) def\n"
            "[/_objdef {icc_PDFA} /type /stream /OBJ pdfmark\n"
            "[{icc_PDFA} << /N 3 >> /PUT pdfmark\n"
            "[{icc_PDFA} ICCProfile (r) file /PUT pdfmark\n"
            "[/_objdef {OutputIntent_PDFA} /type /dict /OBJ pdfmark\n"
            "[{OutputIntent_PDFA} << /Type /OutputIntent /S /GTS_PDFA1 /DestOutputProfile {icc_PDFA} "
            "/OutputConditionIdentifier (sRGB) >> /PUT pdfmark\n"
            "[{Catalog} << /OutputIntents [ {OutputIntent_PDFA} ] >> /PUT pdfmark\n",
            encoding="ascii",
        )
        args += [f"-dPDFA={pdfa}", "-dPDFACompatibilityPolicy=1", "-sColorConversionStrategy=RGB",
                 f"--permit-file-read={icc[-1]}"]
        extra = [str(definition)]
    _run(*args, f"-sOutputFile={target}", *extra, str(tmp / "gs-in.pdf"))
    return target.read_bytes()


def qpdf_pdf(tmp: Path, source: bytes, *, object_streams: bool = True, linearize: bool = False) -> bytes:
    """qpdf rewriting `source`: object streams generated (cross-reference stream) and/or linearized."""
    (tmp / "qpdf-in.pdf").write_bytes(source)
    target = tmp / "qpdf-out.pdf"
    args = ["qpdf", f"--object-streams={'generate' if object_streams else 'disable'}"]
    if linearize:
        args.append("--linearize")
    _run(*args, str(tmp / "qpdf-in.pdf"), str(target))
    return target.read_bytes()


def encrypted_pdf(tmp: Path, source: bytes, *, user_password: str = "") -> bytes:
    """`qpdf --encrypt` (AES-256) of `source`; an empty user password still encrypts every string and stream."""
    (tmp / "enc-in.pdf").write_bytes(source)
    target = tmp / "enc-out.pdf"
    _run("qpdf", "--encrypt", user_password, "owner-secret", "256", "--", str(tmp / "enc-in.pdf"), str(target))
    return target.read_bytes()


def mutool_pdf(tmp: Path, source: bytes) -> bytes:
    """MuPDF's writer (`mutool clean -gg -z`: garbage-collected, compressed) rewriting `source`."""
    (tmp / "mu-in.pdf").write_bytes(source)
    target = tmp / "mu-out.pdf"
    _run("mutool", "clean", "-gg", "-z", str(tmp / "mu-in.pdf"), str(target))
    return target.read_bytes()


# --- by hand ---------------------------------------------------------------------------------------------------


def _utf16(text: str) -> bytes:
    return b"<" + ("\ufeff" + text).encode("utf-16-be").hex().upper().encode() + b">"


def raw_pdf(objects: dict[int, bytes], *, root: int = 1, version: str = "1.7", trailer_extra: bytes = b"",
            size: int | None = None) -> bytes:
    """A classic PDF (cross-reference table) of the given object bodies, written exactly as given: hostile
    structures (cycles, loops) included. `objects` maps object numbers (generation 0) to their bodies."""
    out = io.BytesIO()
    out.write(f"%PDF-{version}\n%\xe2\xe3\xcf\xd3\n".encode("latin-1"))
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n")
    xref = out.tell()
    count = max(objects) + 1
    out.write(f"xref\n0 {count}\n0000000000 65535 f \n".encode())
    for number in range(1, count):
        if number in offsets:
            out.write(f"{offsets[number]:010d} 00000 n \n".encode())
        else:
            out.write(b"0000000000 00000 f \n")
    out.write(f"trailer\n<< /Size {size or count} /Root {root} 0 R ".encode() + trailer_extra
              + f">>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def stream_object(data: bytes, entries: bytes = b"", *, compress: bool = True) -> bytes:
    body = zlib.compress(data) if compress else data
    filt = b"/Filter /FlateDecode " if compress else b""
    return b"<< " + entries + filt + f"/Length {len(body)} >>\nstream\n".encode() + body + b"\nendstream"


def simple_pdf(pages: int = 1, *, catalog_extra: bytes = b"", page_extra: bytes = b"", version: str = "1.7") -> bytes:
    """A small valid PDF by hand: `pages` pages of Helvetica text, the title in UTF-16 (Azerbaijani)."""
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(pages))
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R " + catalog_extra + b">>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for i in range(pages):
        objects[4 + 2 * i] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents {5 + 2 * i} 0 R "
                              "/Resources << /Font << /F1 3 0 R >> >> ").encode() + page_extra + b">>"
        objects[5 + 2 * i] = stream_object(f"BT /F1 12 Tf 72 770 Td (Page {i + 1}: {TEXT_EN}) Tj ET".encode())
    info = max(objects) + 1
    objects[info] = b"<< /Title " + _utf16(TEXT_AZ) + b" /Subject " + _utf16(TEXT_RU) + b" >>"
    return raw_pdf(objects, version=version, trailer_extra=f"/Info {info} 0 R ".encode())


def hybrid_reference_pdf() -> bytes:
    """A hybrid-reference file as Microsoft Word writes it (ISO 32000-2 section 7.5.8.4): a classic cross-reference
    table whose trailer's /XRefStm points to a cross-reference stream listing the objects kept in an object
    stream (here the document information and the page's resources), which the table marks free."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\r\n%\xb5\xb5\xb5\xb5\r\n")
    offsets: dict[int, int] = {}

    def emit(number: int, body: bytes) -> None:
        offsets[number] = out.tell()
        out.write(f"{number} 0 obj\r\n".encode() + body + b"\r\nendobj\r\n")

    content = f"BT /F1 12 Tf 72 770 Td ({TEXT_EN}) Tj ET".encode()
    emit(1, b"<< /Type /Catalog /Pages 2 0 R /Lang (az-AZ) >>")
    emit(2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
    emit(3, b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595.32 841.92] /Resources 7 0 R /Contents 4 0 R >>")
    emit(4, stream_object(content))
    emit(5, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    # object stream 8 holds objects 6 (Info) and 7 (resources)
    inner6 = b"<< /Title " + _utf16(TEXT_AZ) + b" /Subject " + _utf16(TEXT_RU) + b" /Producer (Microsoft Word) >>"
    inner7 = b"<< /Font << /F1 5 0 R >> /ProcSet [/PDF /Text] >>"
    header = f"6 0 7 {len(inner6) + 1} ".encode()
    objstm = header + inner6 + b" " + inner7
    emit(8, stream_object(objstm, f"/Type /ObjStm /N 2 /First {len(header)} ".encode()))
    # cross-reference stream 9: type 2 entries for 6 and 7, type 1 for itself
    xrefstm_offset = out.tell()
    rows = b"".join([bytes([2]) + (8).to_bytes(4, "big") + bytes([i]) for i in (0, 1)])
    rows += bytes([1]) + xrefstm_offset.to_bytes(4, "big") + bytes([0])
    emit(9, stream_object(rows, b"/Type /XRef /Size 10 /W [1 4 1] /Index [6 2 9 1] "))
    xref = out.tell()
    out.write(b"xref\r\n0 10\r\n")
    for number in range(10):
        if number == 0:
            out.write(b"0000000006 65535 f\r\n")
        elif number in (6, 7):  # Word marks the compressed objects free, generation 65535 (never reused)
            out.write(f"{7 if number == 6 else 0:010d} 65535 f\r\n".encode())
        else:
            out.write(f"{offsets[number]:010d} 00000 n\r\n".encode())
    out.write(f"trailer\r\n<< /Size 10 /Root 1 0 R /Info 6 0 R /XRefStm {xrefstm_offset} "
              "/ID [<0123456789ABCDEF0123456789ABCDEF> <0123456789ABCDEF0123456789ABCDEF>] >>\r\n"
              f"startxref\r\n{xref}\r\n%%EOF\r\n".encode())
    return out.getvalue()


def incremental_update(source: bytes, *, title: str = TEXT_RU) -> bytes:
    """`source` (a file with a classic cross-reference table) with an incremental update appended by hand
    (ISO 32000-2 section 7.5.6): a new document information dictionary, an xref section and a trailer with /Prev."""
    tail = source[source.rindex(b"startxref"):]
    prev = int(tail.split()[1])
    trailer = source[source.rindex(b"trailer"):]
    size = int(trailer.split(b"/Size")[1].split()[0])
    root = trailer.split(b"/Root")[1].split(b"R")[0].strip().decode()
    body = bytearray(source if source.endswith(b"\n") else source + b"\n")
    offset = len(body)
    body += f"{size} 0 obj\n".encode() + b"<< /Title " + _utf16(title) + b" >>\nendobj\n"
    xref = len(body)
    body += f"xref\n{size} 1\n{offset:010d} 00000 n \n".encode()
    body += f"trailer\n<< /Size {size + 1} /Root {root} R /Info {size} 0 R /Prev {prev} >>\n".encode()
    body += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(body)


def large_pdf(target_bytes: int = 40 * 1024 * 1024) -> bytes:
    """A one-page PDF of about `target_bytes`: one uncompressed RGB image of random pixels (cheap to make, and
    no compression trick: every byte is real data)."""
    width = 4096
    height = max(1, target_bytes // (width * 3))
    pixels = os.urandom(width * height * 3)
    content = b"q 595 0 0 842 0 0 cm /Im1 Do Q"
    return raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
           b"/Resources << /XObject << /Im1 5 0 R >> >> >>",
        4: stream_object(content),
        5: stream_object(pixels, f"/Type /XObject /Subtype /Image /Width {width} /Height {height} "
                         "/ColorSpace /DeviceRGB /BitsPerComponent 8 ".encode(), compress=False),
    })


def zeros_deflated(inflated: int) -> bytes:
    """zlib data (RFC 1950) inflating to `inflated` zero bytes (a multiple of 1 MiB), built without inflating
    anything: one 1 MiB block sequence ended by a full flush (byte-aligned, no back-references across it)
    repeated, then the final block and the Adler-32 of n zeros ((n mod 65521) << 16 | 1)."""
    block = 1 << 20
    assert inflated % block == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.flush(zlib.Z_FINISH)
    adler = ((inflated % 65521) << 16) | 1
    return b"\x78\xda" + segment * (inflated // block) + final + adler.to_bytes(4, "big")


def flate_bomb_pdf(inflated: int = 1 << 30) -> bytes:
    """A page whose content stream is `inflated` zero bytes deflated (1 GiB -> about 1 MiB)."""
    data = zeros_deflated(inflated)
    return raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>",
        4: b"<< /Filter /FlateDecode " + f"/Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream",
    })


def sign_throwaway(pdf: bytes, *, field_name: str = "Signature1") -> bytes:
    """A real PAdES signature by pyHanko over `pdf` (incremental update), with a throwaway self-signed P-256 key."""
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Açar test signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    signer = signers.SimpleSigner(
        signing_cert=asn1_cert,
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        cert_registry=SimpleCertificateStore.from_certs([asn1_cert]),
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=True)
    output = io.BytesIO()
    signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name=field_name), signer=signer, output=output)
    return output.getvalue()
