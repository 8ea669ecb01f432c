"""Real PDFs from ordinary producers pass the input policy and pyHanko signs what prepare_for_signing outputs.

Every file is made here by the producer itself (tests/pdf_tools.py): Chromium, LibreOffice Writer, Ghostscript
(PDF 1.7, 2.0, PDF/A-2b), qpdf (object streams, linearized), MuPDF, a Word-style hybrid-reference file, an
incremental update and a 40 MB file, with Azerbaijani, Russian and English text. For each: inspected and prepared,
then signed for real (pyHanko's IncrementalPdfFileWriter in strict mode and a throwaway key), the signature counted
back, `qpdf --check` on the signed file, and the text read back by MuPDF.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from signing.core.inspect import InputPolicy, inspect_pdf, prepare_for_signing
from tests import pdf_tools

pytestmark = pytest.mark.nodb  # no database: run once, in the SQLite pass (Makefile)

POLICY = InputPolicy()


@dataclass(frozen=True)
class Produced:
    data: bytes
    version: str
    pdfa: str | None
    repaired: bool
    text: tuple[str, ...] = ("Azərbaycan Respublikası", "ə ğ ı ö ş ç ü", "налоговая декларация", "tax return")
    """What MuPDF must read back from the signed file."""


# Ghostscript 10.00 re-distilling Chromium's subset fonts keeps the glyphs but loses part of their ToUnicode map
# (MuPDF reads "Respublikas2"): only the text it maps is asserted for those files.
GS_TEXT = ("Azərbaycan", "bəyannaməsi", "Ə", "tax return")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("producers")


@pytest.fixture(scope="module")
def chromium(workdir: Path) -> bytes:
    return pdf_tools.chromium_pdf(_dir(workdir, "chromium"))


def _dir(base: Path, name: str) -> Path:
    path = base / name
    path.mkdir(exist_ok=True)
    return path


UNQUOTED_PRODUCER = re.compile(rb"pdf:Producer=[^'\"]")


def _ghostscript_20(data: bytes) -> Produced:
    """Ghostscript 10.00 writes PDF 2.0 XMP with an unquoted attribute value (pdf:Producer=UnknownProducer),
    which pyHanko cannot parse and must update when it signs: repaired (quoted) where the bug is present."""
    return Produced(data, "2.0", None, repaired=UNQUOTED_PRODUCER.search(data) is not None, text=GS_TEXT)


def _mupdf(data: bytes) -> Produced:
    """MuPDF 1.21 writes the head of the xref free list with generation 65536, which pyHanko's strict parser
    refuses: repaired where that is so."""
    return Produced(data, "1.4", None, repaired=b" 65536 f" in data)


PRODUCERS: dict[str, Callable[[Path, bytes], Produced]] = {
    "chromium": lambda d, c: Produced(c, "1.4", None, repaired=False),
    "libreoffice": lambda d, c: Produced(pdf_tools.libreoffice_pdf(_dir(d, "lo")), "1.6", None, repaired=False),
    "libreoffice-pdfa2b": lambda d, c: Produced(pdf_tools.libreoffice_pdf(_dir(d, "loa"), pdfa=True), "1.6",
                                                "PDF/A-2b", repaired=False),
    "ghostscript-1.7": lambda d, c: Produced(pdf_tools.ghostscript_pdf(_dir(d, "gs17"), c), "1.7", None,
                                             repaired=False, text=GS_TEXT),
    "ghostscript-2.0": lambda d, c: _ghostscript_20(pdf_tools.ghostscript_pdf(_dir(d, "gs20"), c, version="2.0")),
    "ghostscript-pdfa2b": lambda d, c: Produced(pdf_tools.ghostscript_pdf(_dir(d, "gsa"), c, pdfa=2), "1.7",
                                                "PDF/A-2b", repaired=False, text=GS_TEXT),
    "qpdf-object-streams": lambda d, c: Produced(pdf_tools.qpdf_pdf(_dir(d, "q"), c), "1.5", None, repaired=False),
    "qpdf-linearized": lambda d, c: Produced(pdf_tools.qpdf_pdf(_dir(d, "ql"), c, linearize=True), "1.5", None,
                                             repaired=False),
    "mupdf": lambda d, c: _mupdf(pdf_tools.mutool_pdf(_dir(d, "mu"), c)),
    # pyHanko does not sign hybrid-reference files: qpdf leaves one cross-reference table
    "word-hybrid-reference": lambda d, c: Produced(pdf_tools.hybrid_reference_pdf(), "1.7", None, repaired=True,
                                                   text=("Republic of Azerbaijan",)),
    "incremental-update": lambda d, c: Produced(
        pdf_tools.incremental_update(pdf_tools.qpdf_pdf(_dir(d, "inc"), c, object_streams=False)), "1.4", None,
        repaired=False),
}


@pytest.fixture(scope="module")
def produced(workdir: Path, chromium: bytes) -> dict[str, Produced]:
    return {name: make(workdir, chromium) for name, make in PRODUCERS.items()}


def mupdf_text(path: Path) -> str:
    proc = subprocess.run(["mutool", "draw", "-q", "-F", "txt", "-o", "-", str(path)], capture_output=True,
                          timeout=60, check=True)
    return re.sub(r"\s+", " ", proc.stdout.decode())


def qpdf_check(path: Path) -> None:
    proc = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def sign_and_check(prepared: bytes, tmp_path: Path) -> bytes:
    """A real signature over `prepared`; the signed file reads back with one intact, valid signature."""
    signed = pdf_tools.sign_throwaway(prepared)
    assert signed.startswith(prepared)  # an incremental update: the prepared bytes are kept as they are
    assert inspect_pdf(io.BytesIO(signed), POLICY).signatures == 1
    reader = PdfFileReader(io.BytesIO(signed), strict=True)
    embedded = reader.embedded_signatures[0]
    # trusting the throwaway certificate itself: this proves the signature intact and valid, not the PKI
    status = validate_pdf_signature(embedded, ValidationContext(trust_roots=[embedded.signer_cert]))
    assert status.intact and status.valid
    path = tmp_path / "signed.pdf"
    path.write_bytes(signed)
    qpdf_check(path)
    return signed


@pytest.mark.parametrize("producer", list(PRODUCERS))
def test_producer_output_is_accepted_and_signed(producer: str, produced: dict[str, Produced], tmp_path: Path) -> None:
    made = produced[producer]
    output = io.BytesIO()
    result = prepare_for_signing(io.BytesIO(made.data), output, POLICY)
    prepared = output.getvalue()
    assert (result.version, result.pdfa, result.repaired, result.pages) == (made.version, made.pdfa, made.repaired, 1)
    assert result.sha256 == hashlib.sha256(prepared).hexdigest() and result.size == len(prepared)
    assert not [f for f in result.findings if not f.startswith(("repaired:", "OpenAction: the document opens at"))]
    if not made.repaired:
        assert prepared == made.data  # passed through, byte for byte
    described = inspect_pdf(io.BytesIO(made.data), POLICY)
    assert (described.repaired, described.sha256) == (made.repaired, hashlib.sha256(made.data).hexdigest())
    signed = sign_and_check(prepared, tmp_path)
    path = tmp_path / "signed-text.pdf"
    path.write_bytes(signed)
    text = mupdf_text(path)
    for sample in made.text:
        assert sample in text, f"{sample!r} not in the text of {producer}'s PDF: {text[:300]!r}"


def xmp_of(data: bytes) -> bytes:
    import pikepdf

    with pikepdf.open(io.BytesIO(data)) as pdf:
        return bytes(pdf.Root.Metadata.read_bytes())


def test_a_damaged_pdfa_file_stays_pdfa_after_the_repair(produced: dict[str, Produced], tmp_path: Path) -> None:
    original = pdf_tools.qpdf_pdf(_dir(tmp_path, "q"), produced["ghostscript-pdfa2b"].data, object_streams=False)
    newline = original.index(b"\n") + 1
    damaged = original[:newline] + b"% a line inserted after the header: every xref offset is now wrong\n" + (
        original[newline:])
    output = io.BytesIO()
    result = prepare_for_signing(io.BytesIO(damaged), output, POLICY)
    assert result.repaired and result.pdfa == "PDF/A-2b" and result.version == "1.7"
    repaired = output.getvalue()
    assert repaired.startswith(b"%PDF-1.7")
    assert xmp_of(repaired) == xmp_of(original)  # the XMP (with its PDF/A identification) is kept byte for byte
    sign_and_check(repaired, tmp_path)


GS_XMP = (
    b"<?xpacket begin='\xef\xbb\xbf' id='W5M0MpCehiHzreSzNTczkc9d'?>\n"
    b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>\n"
    b"<rdf:Description rdf:about=\"\" xmlns:pdf='http://ns.adobe.com/pdf/1.3/' pdf:Producer=UnknownProducer/>\n"
    b"<rdf:Description rdf:about=\"\" xmlns:dc='http://purl.org/dc/elements/1.1/' dc:format='application/pdf'/>\n"
    b"</rdf:RDF></x:xmpmeta>\n<?xpacket end='w'?>"
)
"""The XMP packet Ghostscript 10.00 writes into PDF 2.0 files, with its unquoted pdf:Producer value."""


def test_unparseable_xmp_is_mended_keeping_its_content(produced: dict[str, Produced], tmp_path: Path) -> None:
    data = pdf_tools.raw_pdf({
        1: b"<< /Type /Catalog /Pages 2 0 R /Metadata 4 0 R >>", 2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>",
        4: pdf_tools.stream_object(GS_XMP, b"/Type /Metadata /Subtype /XML ", compress=False),
    }, version="2.0")
    output = io.BytesIO()
    result = prepare_for_signing(io.BytesIO(data), output, POLICY)
    assert result.repaired and result.version == "2.0"
    assert "repaired: unquoted attribute values in the XMP metadata were quoted" in result.findings
    quoted = GS_XMP.replace(b"pdf:Producer=UnknownProducer", b'pdf:Producer="UnknownProducer"')
    assert xmp_of(output.getvalue()) == quoted
    sign_and_check(output.getvalue(), tmp_path)
    made = produced["ghostscript-2.0"]
    if made.repaired:  # this Ghostscript has the bug: its own file is mended the same way
        mended = io.BytesIO()
        prepare_for_signing(io.BytesIO(made.data), mended, POLICY)
        before = xmp_of(made.data)
        assert xmp_of(mended.getvalue()) == re.sub(rb"(pdf:Producer=)([^\s/>]+)", rb'\1"\2"', before)


def test_a_40_megabyte_file_is_accepted_and_signed(tmp_path: Path) -> None:
    big = pdf_tools.large_pdf(40 * 1024 * 1024)
    assert len(big) > 40_000_000
    output = io.BytesIO()
    result = prepare_for_signing(io.BytesIO(big), output, POLICY)
    assert (result.pages, result.repaired, result.size) == (1, False, len(big))
    assert output.getbuffer() == big
    del big
    sign_and_check(output.getvalue(), tmp_path)
