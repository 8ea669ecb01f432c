"""PDFs for tests, written with pyHanko's own PDF writer (no other PDF library), and small readers of what a
signed PDF holds: the header version, the catalog /Version, the XMP packet, a signature's ByteRange and /Contents.
"""

from __future__ import annotations

import re
import secrets
from io import BytesIO

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
