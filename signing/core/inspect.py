"""The input policy: what a PDF must be before Açar signs it (issue 13 "Input policy").

`inspect_pdf` answers what a document is (pages, version, signatures, PDF/A conformance, findings) or refuses it
with a `signing.core.errors.PdfRefused` subclass whose message names the precise reason; `prepare_for_signing`
does the same and writes the document to sign into `output`: the input unchanged, or, where pyHanko's strict
parser refuses a legitimate unsigned file, the file rewritten by qpdf.

Security decisions, in the order they run (every step has a bound; nothing is parsed before the size is known):

1. Size: the stream's length is compared with `InputPolicy.max_bytes` before a byte is parsed.
2. Raw scan, with no PDF library, of the source in 1 MiB windows: the `%PDF-` header (ISO 32000-2 section
   7.5.2), the SHA-256 of the bytes, the object headers and the object counts declared by object streams (/N)
   and cross-reference sections (/Size) against `max_objects`, and every Flate stream (ISO 32000-2 section
   7.4.4) inflated *incrementally* (`zlib.decompressobj` with `max_length`, output counted and dropped, nested
   zlib layers followed) until `InputPolicy.max_inflated_bytes` in total: a decompression bomb is refused having
   cost one output chunk of memory. The scan trusts no /Length (a lying one could hide a stream inside another's
   data: every byte is scanned), skips the stray whitespace a lenient reader skips after `stream`, and inflates
   headerless deflate data declared FlateDecode (some readers do). Cross-reference and object streams (which
   every parser inflates before anything else) must use FlateDecode alone. Only then does a parser see the file,
   so neither pyHanko nor qpdf ever inflates a bomb; pyHanko's own decoders are bounded by the policy too.
   Other filters (LZW, RunLength, image codecs) are not inflated here: the preview renderer bounds its own.
3. Parse with pyHanko's own reader, `PdfFileReader(strict=True)`, with `DecodeLimits` derived from the policy.
   Why pyHanko and not qpdf for inspection: pyHanko is the parser that signs the file, so the document the
   policy inspects is exactly the document that gets signed (no parser differential, the root of "shadow"
   attacks on signed PDFs), and a file strict pyHanko opens is a file `IncrementalPdfFileWriter` can extend.
4. Walk, iteratively with explicit bounds, never through pyHanko's recursive dereferencing: reference chains
   (`1 0 obj 2 0 R`) are followed with a seen-set (a loop is `reference_loop`); the page tree (ISO 32000-2
   section 7.7.3), the form-field tree (12.7.4) and the outline (12.3.3) are walked as trees (a cycle is
   `reference_loop`, naming the object); pages stop at `max_pages`, reachable objects at `max_objects`, direct
   nesting at `_MAX_NESTING`. Every reachable dictionary is checked for active content: JavaScript (/JS, /S
   /JavaScript, the /JavaScript name tree), launch actions (/S /Launch), embedded files (/EmbeddedFiles, /EF,
   /Type /EmbeddedFile, file-attachment annotations), XFA forms and RichMedia/3D annotations (both can run
   scripts), and the catalog's /OpenAction and /AA. Each is a finding; with `refuse_active_content` each of them
   is `active_content`, except an /OpenAction that only opens a destination and the actions that only send or
   open data (SubmitForm, ImportData, GoToR, GoToE), which are reported.
5. Encryption (a trailer /Encrypt, ISO 32000-2 section 7.6) is refused: Açar cannot sign what it cannot read.
6. Repair, only in the one case issue 13 allows: pyHanko's strict parser refuses the file (broken xref offsets,
   MuPDF's free-list head of generation 65536, XMP it cannot parse, object streams it dislikes) or pyHanko will
   not sign it (hybrid-reference files as Word writes them, ISO 32000-2 section 7.5.8.4: readers of 1.4 and of
   1.5+ see different objects), the file ends with %%EOF (it is not truncated), and it carries no signature (a
   lenient pyHanko walk counts signature fields, and the raw bytes hold no /ByteRange). qpdf (through pikepdf)
   rewrites it with streams copied as they are (no stream is decoded), one classic cross-reference table, the
   same PDF version and the same XMP metadata, so a PDF/A input stays PDF/A. XMP pyHanko cannot parse (it
   updates the XMP when it signs) is mended: unquoted attribute values (Ghostscript 10.00's PDF 2.0 output) are
   quoted; XMP still unreadable is dropped when it claims no PDF/A, and refused when it does. The rewrite is then
   inspected again from step 1, with no second repair. A file that has signatures is never rewritten (that would
   break them): pyHanko must read it as it is, or it is `damaged_pdf`.

Why pikepdf (qpdf) for the repair: qpdf's xref reconstruction is the most exercised PDF repair there is, it
writes exactly what it read (streams untouched with `StreamDecodeLevel.none`), and it keeps the catalog's
/Metadata and /Version. It only ever sees a file that already passed steps 1 and 2.

Memory: the source is read in windows (scan, hash, copy), never held as a second copy; pyHanko reads objects
lazily, and the walk drops each object from pyHanko's cache once it is read, so beyond the windows it holds one
object at a time (a stream with its raw data: pyHanko reads a stream object whole) and the decoded object streams.
One object's syntax is bounded (`_MAX_OBJECT_TEXT`, inside object streams too), since pyHanko builds a Python
object per element: a 50 MB array of numbers would otherwise cost a gigabyte. The output is
written through. `InspectedPdf.sha256` and `size` describe the file to sign: the output of
`prepare_for_signing` (repaired or not), the input for `inspect_pdf` (whose `repaired` then says that
`prepare_for_signing` will rewrite it).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Final, cast

import pikepdf
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.decode_limits import DecodeLimits, DocumentDecodeBudget, StreamDecodeLimits
from pyhanko.pdf_utils.metadata import xmp_xml
from pyhanko.pdf_utils.misc import PdfDecodeLimitError, PdfStrictReadError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.xref import TrailerDictionary

from signing.core import fastpaths
from signing.core.errors import (
    ActiveContent,
    DamagedPdf,
    EncryptedPdf,
    InflationBomb,
    NotPdf,
    PdfRefused,
    ReferenceLoop,
    TooLarge,
    TooManyObjects,
    TooManyPages,
)

fastpaths.install()  # pyHanko's hex strings read in blocks (the signatures' /Contents): signing.core.fastpaths

__all__ = ["InputPolicy", "InspectedPdf", "OpenedPdf", "inspect_pdf", "open_signed_pdf", "prepare_for_signing"]

MiB: Final = 1024 * 1024

_WINDOW: Final = 1 * MiB
"""Bytes read from the source at a time (raw scan, hash, copy)."""
_OUT_CHUNK: Final = 256 * 1024
"""Most bytes one inflate call may produce (`zlib.decompressobj().decompress(data, max_length)`)."""
_HEADER_SEARCH: Final = 1024
"""ISO 32000-2 section 7.5.2 puts %PDF- first; readers (and qpdf) accept it within the first 1 KiB."""
_EOF_SEARCH: Final = 1024
"""%%EOF must be in the last 1 KiB (what pyHanko and Acrobat look for, ISO 32000-2 section 7.5.5)."""
_DICT_LOOKBACK: Final = 64 * 1024
"""Most bytes of a stream dictionary the raw scan keeps to read its /Type, /Filter, /N and /Length."""
_MAX_NESTING: Final = 256
"""Deepest nesting of direct arrays and dictionaries, and of a page, field or outline tree."""
_MAX_OBJECT_TEXT: Final = 4 * MiB
"""Most bytes of PDF syntax in one object (a dictionary or array, not a stream's data): pyHanko builds a Python
object per token, some 20 times the text, so a 50 MB array of numbers would cost a gigabyte."""
_MAX_XMP: Final = 4 * MiB
"""Most bytes of XMP metadata read for the PDF/A identification."""
_MAX_FINDINGS: Final = 50
_NESTED_ZLIB_LAYERS: Final = 3
"""Flate layers followed inside one stream (a `[/FlateDecode /FlateDecode]` bomb inflates in its second layer)."""


@dataclass(frozen=True, slots=True)
class InputPolicy:
    """The bounds a document must keep (issue 13 "Input policy"); api/deps.py builds it from the settings."""

    max_bytes: int = 50 * MiB
    max_pages: int = 500
    max_objects: int = 250_000
    """Objects declared in the file (object headers, object streams' /N, cross-reference /Size) or reached."""
    max_inflated_bytes: int = 512 * MiB
    """Total bytes all the file's Flate streams may inflate to (counted incrementally, never held)."""
    refuse_active_content: bool = True
    """Refuse JavaScript, launch actions and embedded files (always reported as findings)."""


@dataclass(frozen=True, slots=True)
class InspectedPdf:
    """What the input policy found in an accepted document (see the module docstring for sha256/size)."""

    pages: int
    version: str
    sha256: str
    size: int
    findings: tuple[str, ...]
    signatures: int
    pdfa: str | None
    repaired: bool


def inspect_pdf(source: BinaryIO, policy: InputPolicy) -> InspectedPdf:
    """Inspect `source` (a seekable binary stream) against `policy`; raise a `PdfRefused` subclass to refuse it.

    A file only a rewrite makes readable is rewritten into a scratch file to prove the repair works
    (`repaired=True`); the sha256 and size are those of `source`.
    """
    raw = _raw_scan(source, policy)
    try:
        return _inspect_parsed(source, raw, policy)
    except _StrictRefusal as refusal:
        with tempfile.SpooledTemporaryFile(max_size=8 * MiB) as scratch:
            repaired = _repair(source, cast("BinaryIO", scratch), raw, refusal.reason, policy)
            return _replace_digest(repaired, raw)


def prepare_for_signing(source: BinaryIO, output: BinaryIO, policy: InputPolicy) -> InspectedPdf:
    """Inspect `source` and write the document to sign into `output` (readable, writable, seekable).

    `output` receives `source` unchanged, or the qpdf rewrite of an unsigned file pyHanko's strict parser refuses.
    On a refusal `output` is left empty.
    """
    try:
        output.seek(0)
        output.truncate()
        raw = _raw_scan(source, policy)
        try:
            inspected = _inspect_parsed(source, raw, policy)
        except _StrictRefusal as refusal:
            return _repair(source, output, raw, refusal.reason, policy)
        source.seek(0)
        shutil.copyfileobj(source, output, _WINDOW)
        output.flush()
        output.seek(0)
    except BaseException:
        output.seek(0)
        output.truncate()
        raise
    return inspected


@dataclass(frozen=True, slots=True)
class OpenedPdf:
    """A signed PDF opened for validation by `open_signed_pdf`: what the input policy found, and the one pyHanko
    reader every later step reads (issue 14: one parse)."""

    inspected: InspectedPdf
    reader: PdfFileReader
    lenient: str | None
    """Why the reader is not strict (pyHanko's refusal of the cross-reference history), or None: strict."""


def open_signed_pdf(source: BinaryIO, policy: InputPolicy) -> OpenedPdf:
    """Open `source` for validation (issue 14) under the same bounds as `inspect_pdf` (steps 1, 2, 4 and 5), and
    return the reader it walked, with the signature dictionaries still in its cache; raise a `PdfRefused`
    subclass for input the policy refuses or pyHanko cannot read.

    Differences from signing's inspection, each because a validator must read a signed file as it is and may
    never rewrite it (a rewrite breaks the signatures):

    - Strictness: pyHanko's strict reader first. When its constructor refuses the file with `PdfStrictReadError`,
      which pyHanko raises only for cross-reference data that breaks ISO 32000-2's bookkeeping rules while
      remaining unambiguous to read (section 7.5.4: an object re-used with generation 1 without the free entry
      that should precede it, as poppler's pdfsig writes every object it adds; sections of decreasing /Size;
      an unknown xref marker), the file is read again with `strict=False`, under the same `DecodeLimits`, walk
      and bounds, and `OpenedPdf.lenient` says why. Every other parse failure is `DamagedPdf`, as before. This
      opens no path for an attack a strict read would have stopped: the attacks on signed PDFs (ISA, shadow,
      SWA) are judged from the raw bytes and every revision by `signing.core.structure` and
      `signing.core.attacks`, not by this reader's view of the newest revision.
    - No repair (step 6) and no refusal of hybrid-reference files (pyHanko reports those per signature).
    - Active content is a finding whatever `refuse_active_content` says, and XMP pyHanko cannot parse too.
    """
    raw = _raw_scan(source, policy)
    try:
        reader, lenient = _open_for_validation(source, policy)
        walk = _Walk(reader, policy, validating=True)
        walk.run()
    except PdfDecodeLimitError as exc:
        raise InflationBomb(f"a stream inflates beyond the input policy's bound: {exc}") from exc
    except Exception as exc:
        if not _unreadable(exc):
            raise
        raise DamagedPdf(f"pyHanko cannot read the file: {_describe(exc)}") from exc
    if walk.pages == 0:
        raise DamagedPdf("the page tree has no pages")
    inspected = InspectedPdf(
        pages=walk.pages, version="{}.{}".format(*reader.input_version), sha256=raw.sha256, size=raw.size,
        findings=(*walk.active, *walk.findings), signatures=walk.signatures, pdfa=walk.pdfa, repaired=False)
    return OpenedPdf(inspected=inspected, reader=reader, lenient=lenient)


def _open_for_validation(source: BinaryIO, policy: InputPolicy) -> tuple[PdfFileReader, str | None]:
    """pyHanko's strict reader, or its lenient one after a strict refusal of the cross-reference history
    (`open_signed_pdf`); an encrypted file is refused."""
    lenient: str | None = None
    source.seek(0)
    try:
        reader = PdfFileReader(source, strict=True, decode_limits=_decode_limits(policy))
    except PdfStrictReadError as exc:
        lenient = _describe(exc)
        source.seek(0)
        reader = PdfFileReader(source, strict=False, decode_limits=_decode_limits(policy))
    if reader.encrypted:
        raise EncryptedPdf("the PDF is encrypted (its trailer has an /Encrypt dictionary)")
    return reader, lenient


# --- step 2: the raw scan ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _RawFacts:
    size: int
    sha256: str = ""
    objects: int = 0
    declared_objects: int = 0
    inflated: int = 0
    fed: int = 0
    has_byterange: bool = False
    ends_with_eof: bool = False


_KEYWORD = re.compile(rb"obj|stream|trailer|/ByteRange")
"""The scan looks for these literals first (fast on binary data), then reads each one's context."""
_OBJ_HEADER = re.compile(rb"(?<![0-9])\d{1,10}[ \t\r\n\f\0]+\d{1,5}[ \t\r\n\f\0]+$")
_STREAM_EOL = re.compile(rb"[ \t]*(?:\r\n|\n|\r)")
_LETTER = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_SIZE = re.compile(rb"/Size[ \t\r\n\f\0]+(\d{1,12})")
_N = re.compile(rb"/N[ \t\r\n\f\0]+(\d{1,12})")
_LENGTH = re.compile(rb"/Length[ \t\r\n\f\0]+(\d{1,12})(?![ \t\r\n\f\0]+\d+[ \t\r\n\f\0]+R)")
_FIRST = re.compile(rb"/First[ \t\r\n\f\0]+(\d{1,12})")
_TYPE = re.compile(rb"/Type[ \t\r\n\f\0]*/(ObjStm|XRef)(?![A-Za-z])")
_FILTER = re.compile(rb"/Filter[ \t\r\n\f\0]*(/[A-Za-z0-9]+|\[[^\]]{0,200}\])")
_FLATE_ONLY = (b"/FlateDecode", b"/Fl", b"[/FlateDecode]", b"[/Fl]")
_NOT_PDF_HINTS: Final = (
    (b"PK\x03\x04", "a ZIP archive (perhaps a Word or OpenDocument file)"),
    (b"\xd0\xcf\x11\xe0", "an OLE compound file (perhaps an old Word document)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%!PS", "a PostScript file"),
    (b"{\\rtf", "an RTF document"),
)


class _Window:
    """A view of the source: `buf` holds the bytes from absolute offset `base`, read in windows as needed."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self._source = source
        self._size = size
        self.buf = b""
        self.base = 0

    @property
    def eof(self) -> bool:
        """`buf` reaches the end of the source."""
        return self.base + len(self.buf) >= self._size

    def fill(self, at_least: int) -> None:
        """Read until `buf` holds `at_least` bytes or reaches the end of the source."""
        if len(self.buf) >= at_least or self.eof:
            return
        self._source.seek(self.base + len(self.buf))
        want = min(at_least, self._size - self.base) - len(self.buf)
        parts = [self.buf]
        while want > 0:
            chunk = self._source.read(max(want, _WINDOW))
            if not chunk:
                self._size = self.base + sum(map(len, parts))  # the source is shorter than it said
                break
            parts.append(chunk)
            want -= len(chunk)
        self.buf = b"".join(parts)

    def move_to(self, offset: int) -> None:
        """Make `base` the absolute `offset`: forget the bytes before it, keep those after it that are held."""
        if self.base <= offset <= self.base + len(self.buf):
            self.buf = self.buf[offset - self.base :]
        else:
            self.buf = b""
        self.base = offset


class _Inflation:
    """Counts what every Flate stream of the file inflates to, never holding more than one output chunk."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.capture = 0
        self.head = bytearray()  # the first `capture` bytes a stream inflates to (an object stream's header)
        self.stream_out = 0  # what the current stream's first layer inflated to

    def begin(self, *, capture: int) -> None:
        self.capture, self.head, self.stream_out = capture, bytearray(), 0

    def count(self, produced: int, where: int) -> None:
        self.total += produced
        if self.total > self.limit:
            raise InflationBomb(
                f"compressed streams inflate beyond {self.limit} bytes (the stream at byte offset {where} alone "
                f"passes the limit): the file is refused as a decompression bomb without being expanded"
            )

    def layer(self, data: bytes, decompressor: zlib._Decompress, depth: int, nested: list[zlib._Decompress | None],
              where: int) -> bool:
        """Feed `data` to `decompressor` (layer `depth`), counting its output and feeding it to the next layer;
        False when the data is not (or no longer) valid zlib data."""
        while True:
            try:
                out = decompressor.decompress(data, _OUT_CHUNK)
            except zlib.error:
                return False
            self.count(len(out), where)
            if depth == 0:
                self.stream_out += len(out)
                if len(self.head) < self.capture:
                    self.head += out[: self.capture - len(self.head)]
            if out and depth + 1 < _NESTED_ZLIB_LAYERS:
                if depth + 1 >= len(nested):
                    nested.append(zlib.decompressobj() if _looks_like_zlib(out) else None)
                inner = nested[depth + 1]
                if inner is not None and not inner.eof:
                    self.layer(out, inner, depth + 1, nested, where)
            data = decompressor.unconsumed_tail
            if decompressor.eof or (not data and len(out) < _OUT_CHUNK):
                return True


def _check_object_stream(head: bytes | bytearray, first: int, inflated: int, where: int) -> None:
    """ISO 32000-2 section 7.5.7: an object stream begins with /N pairs "number offset" (offsets from /First);
    each object's span is bounded like that of an object outside (`_MAX_OBJECT_TEXT`)."""
    numbers = [int(n) for n in re.findall(rb"\d{1,12}", bytes(head[:first]))]
    pairs = sorted(zip(numbers[1::2], numbers[0::2], strict=False))  # (offset, object number)
    if not pairs:
        return  # no header to read: pyHanko refuses the stream itself
    ends = [offset for offset, _ in pairs[1:]] + [inflated - first]
    for (offset, number), end in zip(pairs, ends, strict=True):
        if end - offset > _MAX_OBJECT_TEXT:
            raise TooManyObjects(
                f"object {number} 0 R in the object stream at byte offset {where} spans {end - offset} bytes of "
                f"PDF syntax; a parser builds one object per element, and the bound is {_MAX_OBJECT_TEXT} bytes"
            )


def _looks_like_zlib(head: bytes) -> bool:
    """RFC 1950 section 2.2: CM 8 (deflate), CINFO <= 7, FCHECK making CMF*256+FLG a multiple of 31, no FDICT."""
    if len(head) < 2:
        return False
    cmf, flg = head[0], head[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf * 256 + flg) % 31 == 0 and not flg & 0x20


def _raw_scan(source: IO[bytes], policy: InputPolicy) -> _RawFacts:
    """Steps 1 and 2 of the module docstring: size, header, hash, object counts and the inflation bound."""
    source.seek(0, 2)
    size = source.tell()
    if size > policy.max_bytes:
        raise TooLarge(f"the file is {size} bytes; the limit is {policy.max_bytes} bytes")
    source.seek(0)
    head = source.read(_HEADER_SEARCH)
    if b"%PDF-" not in head:
        if not size:
            raise NotPdf("the file is empty")
        kind = next((name for magic, name in _NOT_PDF_HINTS if head.startswith(magic)), None)
        raise NotPdf("the file has no %PDF- header in its first 1024 bytes" + (f": it is {kind}" if kind else ""))
    source.seek(max(0, size - _EOF_SEARCH))
    facts = _RawFacts(size=size, ends_with_eof=b"%%EOF" in source.read(_EOF_SEARCH))
    source.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(_WINDOW), b""):
        digest.update(chunk)
    facts.sha256 = digest.hexdigest()
    _RawScanner(_Window(source, size), facts, policy).run()
    return facts


class _RawScanner:
    """One forward pass over the bytes: tokens counted, every Flate stream inflated and counted (step 2)."""

    def __init__(self, window: _Window, facts: _RawFacts, policy: InputPolicy) -> None:
        self.window = window
        self.facts = facts
        self.policy = policy
        self.inflation = _Inflation(policy.max_inflated_bytes)
        self.last_obj = -1  # absolute offset of the last object header (where a stream's dictionary starts)
        self.open_obj: tuple[int, bytes] | None = None  # where the object being read began, and its number

    def close_object(self, at: int) -> None:
        """The object opened last ends (endobj) or its stream data begins at `at`: its syntax is bounded."""
        if self.open_obj is not None and at - self.open_obj[0] > _MAX_OBJECT_TEXT:
            raise TooManyObjects(
                f"object {self.open_obj[1].decode()} R spans {at - self.open_obj[0]} bytes of PDF syntax; a parser "
                f"builds one object per element, and the bound is {_MAX_OBJECT_TEXT} bytes"
            )
        self.open_obj = None

    def run(self) -> None:
        window, facts = self.window, self.facts
        pos = 0  # absolute offset the scan goes on from
        while True:
            window.fill(pos - window.base + 2 * _WINDOW)
            match = _KEYWORD.search(window.buf, pos - window.base)
            if match is None:
                if window.eof:
                    break
                pos = max(pos, window.base + len(window.buf) - 64)  # a token may straddle the window's end
            elif not window.eof and match.end() + 8192 > len(window.buf):
                window.fill(len(window.buf) + _WINDOW)  # read on: the token's dictionary must be in view
                continue
            else:
                pos = self.token(match)
            if max(facts.objects, facts.declared_objects) > self.policy.max_objects:
                raise TooManyObjects(
                    f"the file declares more than {self.policy.max_objects} objects (the input policy's limit)"
                )
            if pos - window.base > _WINDOW:  # forget what lies behind, keeping a pending stream dictionary
                last = self.last_obj
                keep = last if last >= 0 and pos - last <= _DICT_LOOKBACK else pos
                window.move_to(max(keep, window.base))
        facts.inflated = self.inflation.total

    def token(self, match: re.Match[bytes]) -> int:
        """Account for one keyword in its context; return the offset the scan goes on from."""
        window, facts, buf = self.window, self.facts, self.window.buf
        start, end = match.start(), match.end()
        keyword = match.group()
        before = buf[start - 1] if start else 0x20
        after = buf[end] if end < len(buf) else 0x20
        if keyword == b"obj":
            header = _OBJ_HEADER.search(buf, max(0, start - 40), start) if after not in _LETTER else None
            if header is not None:
                facts.objects += 1
                self.last_obj = window.base + max(0, start - 40)
                self.open_obj = (window.base + header.start(), b" ".join(header.group().split()[:2]))
            elif buf[max(0, start - 3) : start] == b"end":
                self.close_object(window.base + start)
        elif keyword == b"trailer":
            if before not in _LETTER and after not in _LETTER:
                size_claim = _SIZE.search(buf, end, end + 4096)
                if size_claim is not None:
                    facts.declared_objects = max(facts.declared_objects, int(size_claim.group(1)))
        elif keyword == b"/ByteRange":
            facts.has_byterange = True
        elif before not in _LETTER and (eol := _STREAM_EOL.match(buf, end)) is not None:  # not "endstream"
            data_start = window.base + eol.end()
            self.close_object(window.base + start)
            dictionary = b""
            if window.base <= self.last_obj and data_start - self.last_obj <= _DICT_LOOKBACK:
                dictionary = buf[self.last_obj - window.base : start]
            self.last_obj = -1
            return self.stream(data_start, dictionary)
        return window.base + end

    def stream(self, data_start: int, dictionary: bytes) -> int:
        """Inflate the stream whose data begins at `data_start` if it is Flate data; return the offset the scan goes
        on from: the stream's first byte, so that bytes a lying /Length would hide from the scan are read too."""
        window, facts = self.window, self.facts
        declared, first = self.stream_dictionary(data_start, dictionary)
        window.fill(data_start - window.base + 64)
        data = window.buf[data_start - window.base : data_start - window.base + 64]
        start = data_start + len(data) - len(data.lstrip(b" \t\r\n\f\0"))  # whitespace a lenient reader skips
        head = window.buf[start - window.base : start - window.base + 2]
        if _looks_like_zlib(head):
            decompressor = zlib.decompressobj()
        elif declared:
            decompressor = zlib.decompressobj(-15)  # Flate data without its zlib header, which some readers inflate
        else:
            length = _LENGTH.search(dictionary)
            if first is not None and length is not None and first <= MiB:  # an uncompressed object stream
                window.fill(data_start - window.base + first)
                raw = window.buf[data_start - window.base : data_start - window.base + first]
                _check_object_stream(raw, first, int(length.group(1)), data_start)
            return data_start
        nested: list[zlib._Decompress | None] = [decompressor]
        self.inflation.begin(capture=first if first is not None and first <= MiB else 0)
        fed = start  # the first byte not yet given to the decompressor
        while not decompressor.eof:
            window.fill(fed - window.base + _WINDOW)
            data = window.buf[fed - window.base : fed - window.base + _WINDOW]
            if not data:
                break
            intact = self.inflation.layer(data, decompressor, 0, nested, data_start)
            consumed = len(data) - len(decompressor.unused_data) if decompressor.eof else len(data)
            facts.fed += consumed
            if facts.fed > 3 * facts.size:
                raise DamagedPdf("the file's compressed streams overlap one another (bytes inflated 3 times over)")
            if not intact:
                break
            fed += consumed
            if fed - window.base > _WINDOW:
                window.move_to(fed)
        window.move_to(min(window.base, data_start))
        if first is not None:
            _check_object_stream(self.inflation.head, first, self.inflation.stream_out, data_start)
        return data_start

    def stream_dictionary(self, data_start: int, dictionary: bytes) -> tuple[bool, int | None]:
        """Cross-reference and object streams: FlateDecode alone, and their object counts. Whether the dictionary
        declares FlateDecode, and an object stream's /First."""
        filters = _FILTER.search(dictionary)
        filter_text = re.sub(rb"[ \t\r\n\f\0]+", b"", filters.group(1)) if filters else b""
        flate = b"/FlateDecode" in filter_text or re.search(rb"/Fl(?![A-Za-z])", filter_text) is not None
        kind = _TYPE.search(dictionary)
        if kind is None:
            return flate, None
        if filter_text and filter_text not in _FLATE_ONLY:
            raise DamagedPdf(
                f"the {kind.group(1).decode()} stream at byte offset {data_start} uses the filter "
                f"{filter_text.decode(errors='replace')}; cross-reference and object streams must use FlateDecode "
                "alone (as every producer writes them)"
            )
        claim = (_N if kind.group(1) == b"ObjStm" else _SIZE).search(dictionary)
        if claim is not None and kind.group(1) == b"ObjStm":
            self.facts.objects += int(claim.group(1))
        elif claim is not None:
            self.facts.declared_objects = max(self.facts.declared_objects, int(claim.group(1)))
        first = _FIRST.search(dictionary) if kind.group(1) == b"ObjStm" else None
        return flate, int(first.group(1)) if first is not None else None


# --- steps 3 to 5: pyHanko's strict parse and the bounded walk ------------------------------------------------------


class _StrictRefusal(Exception):
    """pyHanko's strict parser refused the file; `reason` says why (the repair decides what follows)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _unreadable(exc: Exception) -> bool:
    """pyHanko (and qpdf, and lxml under pyHanko) raise many exception types on malformed input, not one class:
    anything but the input policy's own refusals and a MemoryError is an input the parser could not read."""
    return not isinstance(exc, (PdfRefused, _StrictRefusal, MemoryError))


def _decode_limits(policy: InputPolicy) -> DecodeLimits:
    """pyHanko's own decoders bounded by the policy (they hold what they decode: object and xref streams)."""
    return DecodeLimits(
        per_stream=StreamDecodeLimits(max_ratio=1100, ratio_floor=MiB,
                                      max_output_size=min(256 * MiB, policy.max_inflated_bytes)),
        document_budget=DocumentDecodeBudget(base_allowance=policy.max_inflated_bytes, max_ratio=0),
    )


def _open_and_walk(source: IO[bytes], policy: InputPolicy) -> tuple[_Walk, str]:
    reader = PdfFileReader(source, strict=True, decode_limits=_decode_limits(policy))
    if reader.encrypted:
        raise EncryptedPdf("the PDF is encrypted (its trailer has an /Encrypt dictionary)")
    if reader.xrefs.hybrid_xrefs_present:
        # ISO 32000-2 section 7.5.8.4: readers of PDF 1.4 and of 1.5+ see different objects; pyHanko will not sign
        # such a file, and a rewrite with one cross-reference table leaves a single reading.
        raise _StrictRefusal("hybrid-reference file: a cross-reference table with an /XRefStm stream, as Word "
                             "writes, which pyHanko does not sign")
    walk = _Walk(reader, policy)
    walk.run()
    return walk, "{}.{}".format(*reader.input_version)


def _inspect_parsed(source: IO[bytes], raw: _RawFacts, policy: InputPolicy, *,
                    repaired: tuple[str, ...] = ()) -> InspectedPdf:
    """Open `source` with strict pyHanko and walk it; `_StrictRefusal` when pyHanko cannot read it."""
    try:
        walk, version = _open_and_walk(source, policy)
    except PdfDecodeLimitError as exc:
        raise InflationBomb(f"a stream inflates beyond the input policy's bound: {exc}") from exc
    except Exception as exc:
        if not _unreadable(exc):
            raise
        raise _StrictRefusal(_describe(exc)) from exc
    if walk.pages == 0:
        raise DamagedPdf("the page tree has no pages")
    findings = [*repaired, *walk.active, *walk.findings]
    if policy.refuse_active_content and walk.active:
        raise ActiveContent("; ".join(walk.active[:10]))
    return InspectedPdf(
        pages=walk.pages, version=version, sha256=raw.sha256, size=raw.size, findings=tuple(findings),
        signatures=walk.signatures, pdfa=walk.pdfa, repaired=bool(repaired),
    )


def _describe(exc: BaseException) -> str:
    text = _STREAM_REPR.sub("", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


_STREAM_REPR = re.compile(r"^stream <[^>]*>: |<_io\.\w+ object at 0x[0-9a-f]+>:? ?")
"""qpdf names the Python stream it read (`stream <_io.BytesIO object at 0x...>: `): noise in a user's message."""


def _ref_text(ref: generic.Reference | None) -> str:
    return f"object {ref.idnum} {ref.generation} R" if ref is not None else "a direct object"


@dataclass(slots=True)
class _Walk:
    """The bounded walk of step 4 (iterative; pyHanko's dereferencing recursion is never trusted)."""

    reader: PdfFileReader
    policy: InputPolicy
    validating: bool = False
    """`open_signed_pdf`: signature dictionaries stay in the reader's cache (the validator reads them next), and
    XMP pyHanko cannot parse is a finding, not a refusal (a validator does not rewrite what it checks)."""
    pages: int = 0
    signatures: int = 0
    pdfa: str | None = None
    findings: list[str] = field(default_factory=list)  # informational (reported, never refused)
    active: list[str] = field(default_factory=list)  # refused when the policy refuses active content
    reached: set[tuple[int, int]] = field(default_factory=set)

    def run(self) -> None:
        root_ref = self.reader.trailer.raw_get("/Root")
        root, _ = self.resolve(root_ref)
        if not isinstance(root, generic.DictionaryObject):
            raise DamagedPdf("the trailer's /Root is not a dictionary")
        self.walk_page_tree(root)
        self.check_signing_surface(root)
        self.walk_fields(root)
        self.walk_outline(root)
        self.check_catalog(root)
        self.walk_everything(root_ref)
        self.read_pdfa(root)

    # resolution ---------------------------------------------------------------------------------------------
    def resolve(self, obj: generic.PdfObject) -> tuple[generic.PdfObject, generic.Reference | None]:
        """Follow a chain of indirect references; a chain that comes back to itself is a reference loop."""
        ref: generic.Reference | None = None
        chain: list[generic.Reference] = []
        while isinstance(obj, generic.IndirectObject):
            ref = obj.reference
            if ref in chain:
                path = " -> ".join(f"{r.idnum} {r.generation} R" for r in [*chain, ref])
                raise ReferenceLoop(f"reference loop: {path} never resolves to an object")
            chain.append(ref)
            if len(chain) > _MAX_NESTING:
                raise DamagedPdf(f"a chain of more than {_MAX_NESTING} references starts at {_ref_text(chain[0])}")
            obj = self._read(ref)
        return obj, ref

    def _read(self, ref: generic.Reference) -> generic.PdfObject:
        """One step of resolution: the object `ref` names, as stored (possibly another reference)."""
        read: Callable[[generic.Reference], generic.PdfObject] = self.reader.get_object  # untyped in pyHanko
        return read(ref)

    def get(self, dictionary: _Container, key: str) -> generic.PdfObject | None:
        if key not in dictionary:
            return None
        value, _ = self.resolve(dictionary.raw_get(key))
        return None if isinstance(value, generic.NullObject) else value

    # trees ----------------------------------------------------------------------------------------------------
    def walk_page_tree(self, root: generic.DictionaryObject) -> None:
        """ISO 32000-2 section 7.7.3: /Type /Pages nodes with /Kids and a /Count of the leaves below them, down to
        /Type /Page leaves; a node seen twice breaks the tree. pyHanko finds a page by these entries."""
        if "/Pages" not in root:
            raise DamagedPdf("the catalog has no /Pages entry")
        seen: set[generic.Reference] = set()
        declared: dict[generic.Reference, int] = {}
        held: dict[generic.Reference, int] = {}
        stack: list[tuple[generic.PdfObject, int, tuple[generic.Reference, ...]]] = [(root.raw_get("/Pages"), 0, ())]
        while stack:
            raw_node, depth, path = stack.pop()
            node, ref = self.resolve(raw_node)
            if ref is not None and ref in path:
                raise ReferenceLoop(f"page tree has a cycle at object {ref.idnum} {ref.generation} R")
            if ref is not None and ref in seen:
                raise DamagedPdf(f"the page tree reaches object {ref.idnum} {ref.generation} R twice")
            if ref is not None:
                seen.add(ref)
            if depth > _MAX_NESTING:
                raise DamagedPdf(f"the page tree is deeper than {_MAX_NESTING} levels")
            kids = self.page_tree_node(node, ref)
            if kids is None:
                for ancestor in path:
                    held[ancestor] += 1
                continue
            if ref is not None:
                declared[ref], held[ref] = kids[1], 0
                path = (*path, ref)
            stack.extend((kid, depth + 1, path) for kid in reversed(list(kids[0].iterate())))
            if len(stack) > self.policy.max_objects:
                raise TooManyObjects(f"the page tree lists more than {self.policy.max_objects} nodes")
        for node_ref, count in declared.items():
            if held[node_ref] != count:
                raise DamagedPdf(f"page tree node {_ref_text(node_ref)} declares /Count {count} but holds "
                                 f"{held[node_ref]} pages")

    def page_tree_node(self, node: generic.PdfObject,
                       ref: generic.Reference | None) -> tuple[generic.ArrayObject, int] | None:
        """A /Pages node's /Kids and /Count; None for a /Page leaf (counted)."""
        if not isinstance(node, generic.DictionaryObject):
            raise DamagedPdf(f"page tree node {_ref_text(ref)} is not a dictionary")
        node_type = self.get(node, "/Type")
        if isinstance(node_type, generic.NameObject) and node_type == "/Page":
            self.count_page(node, ref)
            return None
        kids, count = self.get(node, "/Kids"), self.get(node, "/Count")
        if not (isinstance(node_type, generic.NameObject) and node_type == "/Pages"
                and isinstance(kids, generic.ArrayObject)):
            raise DamagedPdf(f"page tree node {_ref_text(ref)} is neither a /Type /Page leaf nor a /Type /Pages "
                             "node with /Kids")
        if not isinstance(count, generic.NumberObject):
            raise DamagedPdf(f"page tree node {_ref_text(ref)} has no /Count")
        return kids, int(count)

    def count_page(self, page: generic.DictionaryObject, ref: generic.Reference | None) -> None:
        """A leaf of the page tree: counted against `max_pages`; its /Annots (where pyHanko adds a signature's
        widget, ISO 32000-2 section 12.5.2) must be an array."""
        self.pages += 1
        if self.pages > self.policy.max_pages:
            raise TooManyPages(f"the document has more than {self.policy.max_pages} pages (the limit)")
        if "/Annots" in page and not isinstance(self.get(page, "/Annots"), (generic.ArrayObject, type(None))):
            raise DamagedPdf(f"page {self.pages} ({_ref_text(ref)}) has /Annots that is not an array")

    def check_signing_surface(self, root: generic.DictionaryObject) -> None:
        """The entries pyHanko's writer updates when it signs have the types ISO 32000-2 gives them (section 7.5.5
        trailer, 7.7.2 catalog, 12.7.3 interactive form, 7.8 annotations), so signing cannot fail half-way."""
        expected: tuple[tuple[_Container, str, str, tuple[type, ...]], ...] = (
            (self.reader.trailer, "/Info", "the trailer's /Info", (generic.DictionaryObject,)),
            (self.reader.trailer, "/ID", "the trailer's /ID", (generic.ArrayObject,)),
            (root, "/AcroForm", "the catalog's /AcroForm", (generic.DictionaryObject,)),
            (root, "/Metadata", "the catalog's /Metadata", (generic.StreamObject,)),
            (root, "/Extensions", "the catalog's /Extensions", (generic.DictionaryObject,)),
            (root, "/DSS", "the catalog's /DSS", (generic.DictionaryObject,)),
            (root, "/Perms", "the catalog's /Perms", (generic.DictionaryObject,)),
            (root, "/Names", "the catalog's /Names", (generic.DictionaryObject,)),
            (root, "/Version", "the catalog's /Version", (generic.NameObject,)),
        )
        for container, key, name, types in expected:
            value = self.get(container, key)
            if value is not None and not isinstance(value, types):
                raise DamagedPdf(f"{name} is not a {_TYPE_NAMES[types[0]]}")
        document_id = self.get(self.reader.trailer, "/ID")
        if isinstance(document_id, generic.ArrayObject) and (
            len(document_id) != 2 or not all(isinstance(self.resolve(part)[0], (generic.ByteStringObject,
                                                                                generic.TextStringObject))
                                             for part in document_id.iterate())):
            raise DamagedPdf("the trailer's /ID is not an array of two strings")
        self.check_extensions(root)
        self.check_dss(root)
        form = self.get(root, "/AcroForm")
        if isinstance(form, generic.DictionaryObject):
            fields = self.get(form, "/Fields")
            if fields is not None and not isinstance(fields, generic.ArrayObject):
                raise DamagedPdf("the interactive form's /Fields is not an array")

    def check_extensions(self, root: generic.DictionaryObject) -> None:
        """ISO 32000-2 section 7.12: each developer extension is a dictionary (or an array of direct dictionaries)
        with an integer /ExtensionLevel; pyHanko reads them when it registers the extensions a signature needs."""
        extensions = self.get(root, "/Extensions")
        if not isinstance(extensions, generic.DictionaryObject):
            return
        for prefix in list(extensions):
            value = self.get(extensions, prefix)
            entries = list(value.iterate()) if isinstance(value, generic.ArrayObject) else [value]
            for entry in entries:
                level = entry.raw_get("/ExtensionLevel") if isinstance(entry, generic.DictionaryObject) and (
                    "/ExtensionLevel" in entry) else None
                if not isinstance(level, generic.NumberObject):
                    raise DamagedPdf(f"the developer extension {prefix} of the catalog has no integer /ExtensionLevel")

    def check_dss(self, root: generic.DictionaryObject) -> None:
        """ETSI EN 319 142-1 section 5.4.2 (ISO 32000-2 section 12.8.4.3): the document security store an earlier
        B-LT signature left holds DER certificates, OCSP responses and CRLs in streams; pyHanko reads every one of
        them when it adds validation data, so each must decode (within bounds) and parse."""
        dss = self.get(root, "/DSS")
        if not isinstance(dss, generic.DictionaryObject):
            return
        vri = self.get(dss, "/VRI")
        if vri is not None and not isinstance(vri, generic.DictionaryObject):
            raise DamagedPdf("the document security store's /VRI is not a dictionary")
        for key, limit, parse in _DSS_ENTRIES:
            entries = self.get(dss, key)
            if entries is None:
                continue
            if not isinstance(entries, generic.ArrayObject):
                raise DamagedPdf(f"the document security store's {key} is not an array")
            for index, item in enumerate(entries.iterate()):
                stream, _ = self.resolve(item)
                data = _bounded_stream_data(stream, limit) if isinstance(stream, generic.StreamObject) else None
                try:
                    if data is None:
                        raise ValueError(key)  # noqa: TRY301 (one refusal below for every way an entry is unreadable)
                    parse(data)
                except Exception as exc:
                    if not _unreadable(exc):
                        raise
                    raise DamagedPdf(f"entry {index} of the document security store's {key} is not readable "
                                     "DER data") from exc

    def walk_fields(self, root: generic.DictionaryObject) -> None:
        """ISO 32000-2 section 12.7.4: the form-field tree; signed signature fields (/FT /Sig with /V) counted."""
        form = self.get(root, "/AcroForm")
        if not isinstance(form, generic.DictionaryObject):
            return
        fields = self.get(form, "/Fields")
        if not isinstance(fields, generic.ArrayObject):
            return
        seen: set[generic.Reference] = set()
        stack: list[tuple[generic.PdfObject, int, tuple[generic.Reference, ...], object]] = [
            (f, 0, (), None) for f in _field_references(fields, "the interactive form's /Fields")
        ]
        while stack:
            raw_node, depth, path, inherited_type = stack.pop()
            node, ref = self.resolve(raw_node)
            if ref is not None:
                if ref in path:
                    raise ReferenceLoop(f"form field tree has a cycle at object {ref.idnum} {ref.generation} R")
                if ref in seen:
                    continue
                seen.add(ref)
                path = (*path, ref)
            if depth > _MAX_NESTING or len(seen) > self.policy.max_objects:
                raise DamagedPdf(f"the form field tree is deeper than {_MAX_NESTING} levels or too large")
            if not isinstance(node, generic.DictionaryObject):
                continue
            field_type = node.get("/FT", inherited_type)  # /FT is inheritable (ISO 32000-2 table 226)
            if field_type == "/Sig" and isinstance(self.get(node, "/V"), generic.DictionaryObject):
                self.signatures += 1
            kids = self.get(node, "/Kids")
            if isinstance(kids, generic.ArrayObject):
                stack.extend((kid, depth + 1, path, field_type)
                             for kid in _field_references(kids, f"the /Kids of form field {_ref_text(ref)}"))

    def walk_outline(self, root: generic.DictionaryObject) -> None:
        """ISO 32000-2 section 12.3.3: outline items chained by /First and /Next; a cycle never ends a reader."""
        outlines = self.get(root, "/Outlines")
        if not isinstance(outlines, generic.DictionaryObject) or "/First" not in outlines:
            return
        seen: set[generic.Reference] = set()
        stack: list[generic.PdfObject] = [outlines.raw_get("/First")]
        while stack:
            item, ref = self.resolve(stack.pop())
            if ref is not None:
                if ref in seen:
                    raise ReferenceLoop(f"the outline has a cycle at object {ref.idnum} {ref.generation} R")
                seen.add(ref)
            if len(seen) > self.policy.max_objects:
                raise TooManyObjects(f"the outline has more than {self.policy.max_objects} items")
            if isinstance(item, generic.DictionaryObject):
                stack.extend(item.raw_get(key) for key in ("/Next", "/First") if key in item)

    # active content -------------------------------------------------------------------------------------------
    def note(self, text: str, *, active: bool) -> None:
        """Record a finding; active ones are kept apart, so that a flood of harmless findings cannot push an
        active one out of the bounded lists."""
        kept = self.active if active else self.findings
        if text not in kept and len(kept) < _MAX_FINDINGS:
            kept.append(text)

    def check_catalog(self, root: generic.DictionaryObject) -> None:
        """ISO 32000-2 section 12.6.2: the catalog's /OpenAction runs when the document opens."""
        action = self.get(root, "/OpenAction")
        if isinstance(action, generic.DictionaryObject):
            kind = action.get("/S")
            self.note(f"OpenAction: the document runs a {str(kind).lstrip('/')} action when it is opened",
                      active=kind in ("/JavaScript", "/Launch") or "/JS" in action)
        elif isinstance(action, generic.ArrayObject):
            self.note("OpenAction: the document opens at a destination (no script)", active=False)
        if "/AA" in root:
            self.note("catalog /AA: the document has additional actions (on close, save or print)", active=False)

    def inspect_dictionary(self, node: generic.DictionaryObject, ref: generic.Reference | None) -> None:
        """Active content in one dictionary (ISO 32000-2 section 12.6.4: action types; 7.11.4: embedded files)."""
        where = _ref_text(ref)
        kind = node.get("/S")
        if kind == "/JavaScript" or "/JS" in node:
            self.note(f"JavaScript: a JavaScript action in {where}", active=True)
        elif kind == "/Launch":
            self.note(f"Launch: an action that launches an application or file in {where}", active=True)
        elif kind in _REPORTED_ACTIONS:
            self.note(f"{str(kind).lstrip('/')}: {_REPORTED_ACTIONS[kind]} in {where}", active=False)
        if "/Names" in node and isinstance(node.raw_get("/Names"), (generic.DictionaryObject, generic.IndirectObject)):
            names = self.get(node, "/Names")
            if isinstance(names, generic.DictionaryObject):
                if "/JavaScript" in names:
                    self.note("JavaScript: document-level scripts (/Names /JavaScript)", active=True)
                if "/EmbeddedFiles" in names:
                    self.note("embedded file: the document carries attached files (/Names /EmbeddedFiles)",
                              active=True)
        if node.get("/Type") == "/EmbeddedFile" or "/EF" in node:
            self.note(f"embedded file: {where} holds an embedded file", active=True)
        subtype = node.get("/Subtype")
        if subtype == "/FileAttachment":
            self.note(f"embedded file: a file attachment annotation in {where}", active=True)
        elif subtype in ("/RichMedia", "/3D"):
            self.note(f"rich media: a {str(subtype).lstrip('/')} annotation (it can run scripts) in {where}",
                      active=True)
        if "/XFA" in node:
            self.note(f"XFA: an XML Forms Architecture form (it can carry scripts) in {where}", active=True)

    def walk_everything(self, start: generic.PdfObject) -> None:
        """Every object reachable from the catalog, each once; direct nesting bounded; dictionaries inspected."""
        pending: list[generic.PdfObject] = [start]
        if "/Info" in self.reader.trailer:
            pending.append(self.reader.trailer.raw_get("/Info"))
        while pending:
            top, ref = self.resolve(pending.pop())
            if ref is not None:
                key = (ref.idnum, ref.generation)
                if key in self.reached:
                    continue
                self.reached.add(key)
                if len(self.reached) > self.policy.max_objects:
                    raise TooManyObjects(f"the document reaches more than {self.policy.max_objects} objects")
            if ref is not None and not (self.validating and _is_signature_value(top)):
                # not kept in pyHanko's cache once read: the walk holds one object at a time (with its data, for a
                # stream, which may be most of the file), never the whole document as Python objects; a
                # validation keeps the signature dictionaries (each no larger than `_MAX_OBJECT_TEXT`)
                self.reader.resolved_objects.pop((ref.generation, ref.idnum), None)
            stack: list[tuple[generic.PdfObject, int]] = [(top, 0)]
            while stack:
                node, depth = stack.pop()
                if depth > _MAX_NESTING:
                    raise DamagedPdf(f"{_ref_text(ref)} nests arrays or dictionaries deeper than {_MAX_NESTING}")
                if isinstance(node, generic.IndirectObject):
                    if (node.reference.idnum, node.reference.generation) not in self.reached:
                        pending.append(node)
                elif isinstance(node, generic.DictionaryObject):
                    self.inspect_dictionary(node, ref)
                    stack.extend((node.raw_get(key), depth + 1) for key in node)
                elif isinstance(node, generic.ArrayObject):
                    stack.extend((item, depth + 1) for item in node.iterate())

    # PDF/A ----------------------------------------------------------------------------------------------------
    def read_pdfa(self, root: generic.DictionaryObject) -> None:
        """ISO 19005-2 section 6.6.4: the PDF/A identification schema (pdfaid:part, pdfaid:conformance) in XMP."""
        metadata = self.get(root, "/Metadata")
        if not isinstance(metadata, generic.StreamObject):
            return
        xmp = _bounded_stream_data(metadata, _MAX_XMP)
        if xmp is None:
            self.note("metadata: the XMP metadata could not be read (unsupported filter or over 4 MiB)",
                      active=False)
            return
        self.pdfa = _pdfa_identification(xmp)
        problem = _xmp_problem(xmp)
        if problem is not None and self.validating:
            self.note(f"metadata: {problem}", active=False)
        elif problem is not None:
            raise _StrictRefusal(problem)


def _is_signature_value(obj: generic.PdfObject) -> bool:
    """A signature dictionary (ISO 32000-2 section 12.8.1: /Type /Sig or /DocTimeStamp, or a /ByteRange)."""
    return isinstance(obj, generic.DictionaryObject) and (
        obj.get("/Type") in ("/Sig", "/DocTimeStamp") or "/ByteRange" in obj)


def _pdfa_identification(xmp: bytes) -> str | None:
    """"PDF/A-2b" from the XMP's pdfaid:part and pdfaid:conformance (ISO 19005-2 section 6.6.4), else None."""
    part = _XMP_PART.search(xmp)
    if part is None:
        return None
    conformance = _XMP_CONFORMANCE.search(xmp)
    letter = (conformance.group(1) or conformance.group(2)).decode().lower() if conformance else ""
    return f"PDF/A-{(part.group(1) or part.group(2)).decode()}{letter}"


def _xmp_problem(xmp: bytes) -> str | None:
    """Why pyHanko cannot parse this XMP (it updates the XMP of a document that has one when it signs), or None."""
    try:
        xmp_xml.parse_xmp(io.BytesIO(xmp))
    except Exception as exc:
        if not _unreadable(exc):
            raise
        return f"the XMP metadata is not XMP pyHanko can update when signing ({_describe(exc.__cause__ or exc)})"
    return None


_UNQUOTED_ATTRIBUTE = re.compile(rb"(\s[A-Za-z_][\w.-]*:[A-Za-z_][\w.-]*=)([^\s\"'<>/=]+)(?=[\s/>])")


def _repair_xmp(pdf: pikepdf.Pdf, notes: list[str]) -> None:
    """Make the catalog's XMP parseable for pyHanko, keeping its content (step 6).

    Ghostscript 10.00 writes `pdf:Producer=UnknownProducer` (an unquoted attribute value) into PDF 2.0 files: such
    values are quoted. XMP that still does not parse is dropped when it claims no PDF/A conformance, and refused
    when it does (a PDF/A file must keep its identification).
    """
    metadata = pdf.Root.get("/Metadata")
    if not isinstance(metadata, pikepdf.Stream):
        return
    raw = metadata.read_raw_bytes()
    filters = metadata.get("/Filter")
    xmp: bytes | None = None
    if filters is None:
        xmp = raw if len(raw) <= _MAX_XMP else None
    elif filters in (pikepdf.Name.FlateDecode, pikepdf.Array([pikepdf.Name.FlateDecode])):
        xmp = _bounded_inflate(raw, _MAX_XMP)
    if xmp is None or _xmp_problem(xmp) is None:
        return
    fixed = _UNQUOTED_ATTRIBUTE.sub(rb'\1"\2"', xmp)
    if _xmp_problem(fixed) is None:
        metadata.write(fixed)
        notes.append("repaired: unquoted attribute values in the XMP metadata were quoted")
        return
    if _pdfa_identification(xmp) is not None:
        raise DamagedPdf("the XMP metadata of this PDF/A file is not well-formed XML and cannot be repaired")
    del pdf.Root.Metadata
    notes.append("repaired: XMP metadata that is not well-formed XML was removed (the document claims no PDF/A)")


_Container = generic.DictionaryObject | TrailerDictionary


def _parse_certificate(data: bytes) -> None:
    asn1_x509.Certificate.load(data, strict=True).issuer_serial  # noqa: B018 (parses what pyHanko will parse)


def _parse_ocsp(data: bytes) -> None:
    asn1_ocsp.OCSPResponse.load(data, strict=True)["response_status"].native  # noqa: B018 (as above)


def _parse_crl(data: bytes) -> None:
    asn1_crl.CertificateList.load(data, strict=True)["tbs_cert_list"]["issuer"].native  # noqa: B018 (as above)


_DSS_ENTRIES: Final = (
    ("/Certs", 1 * MiB, _parse_certificate),
    ("/OCSPs", 4 * MiB, _parse_ocsp),
    ("/CRLs", 64 * MiB, _parse_crl),
)
"""The DSS arrays, the bound on each entry (pyHanko's own DecodePurpose limits, 64 MiB for a CRL), the parse."""


def _field_references(array: generic.ArrayObject, name: str) -> list[generic.PdfObject]:
    """ISO 32000-2 tables 224 and 226: /Fields and a field's /Kids are arrays of indirect references (pyHanko's
    signer relies on it when it adds the signature field)."""
    items = list(array.iterate())
    if not all(isinstance(item, generic.IndirectObject) for item in items):
        raise DamagedPdf(f"{name} holds a direct object where only indirect references are allowed")
    return items

_TYPE_NAMES: Final[dict[type, str]] = {
    generic.DictionaryObject: "dictionary", generic.ArrayObject: "array", generic.StreamObject: "stream",
    generic.NameObject: "name",
}

_REPORTED_ACTIONS: Final = {
    "/SubmitForm": "an action that sends form data to a URL",
    "/ImportData": "an action that imports form data from a file",
    "/GoToR": "an action that opens another file",
    "/GoToE": "an action that opens an embedded file",
}
"""Actions reported but never refused by themselves (ISO 32000-2 section 12.6.4)."""

_XMP_PART = re.compile(rb"pdfaid:part\s*=\s*[\"'](\d)[\"']|<pdfaid:part>\s*(\d)\s*</pdfaid:part>")
_XMP_CONFORMANCE = re.compile(
    rb"pdfaid:conformance\s*=\s*[\"']([A-Za-z])[\"']|<pdfaid:conformance>\s*([A-Za-z])\s*</pdfaid:conformance>"
)


def _bounded_stream_data(stream: generic.StreamObject, limit: int) -> bytes | None:
    """A stream's data (no filter or FlateDecode alone), inflated incrementally up to `limit` bytes, else None."""
    filters = stream.get("/Filter") if "/Filter" in stream else None
    if isinstance(filters, generic.ArrayObject):
        filters = filters[0] if len(filters) == 1 else filters
    encoded = stream.encoded_data
    if filters is None:
        return bytes(encoded[:limit]) if len(encoded) <= limit else None
    if filters not in ("/FlateDecode", "/Fl"):
        return None
    return _bounded_inflate(encoded, limit)


def _bounded_inflate(encoded: bytes, limit: int) -> bytes | None:
    """Flate data inflated to at most `limit` bytes (`max_length`), or None when longer or not zlib data."""
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(encoded, limit + 1)
    except zlib.error:
        return None
    return out if len(out) <= limit else None


def _replace_digest(inspected: InspectedPdf, raw: _RawFacts) -> InspectedPdf:
    return InspectedPdf(
        pages=inspected.pages, version=inspected.version, sha256=raw.sha256, size=raw.size,
        findings=inspected.findings, signatures=inspected.signatures, pdfa=inspected.pdfa, repaired=True,
    )


# --- step 6: the repair ---------------------------------------------------------------------------------------------


def _lenient_signature_count(source: BinaryIO, policy: InputPolicy) -> int | None:
    """Signed signature fields as a lenient pyHanko reads them; None when even that cannot read the file."""
    try:
        reader = PdfFileReader(source, strict=False, decode_limits=_decode_limits(policy))
        walk = _Walk(reader, policy)
        root, _ = walk.resolve(reader.trailer.raw_get("/Root"))
        if not isinstance(root, generic.DictionaryObject):
            return None
        walk.walk_fields(root)
    except (PdfRefused, Exception) as exc:
        if isinstance(exc, MemoryError):
            raise
        return None  # unreadable, or a loop in its fields: the repair then relies on the other two checks
    return walk.signatures


def _qpdf_sees_signatures(pdf: pikepdf.Pdf, policy: InputPolicy) -> bool:
    """A form field whose value is a signature dictionary (/ByteRange), as qpdf reads the form-field tree."""
    form = pdf.Root.get("/AcroForm")
    fields = form.get("/Fields") if isinstance(form, pikepdf.Dictionary) else None
    stack = list(fields) if isinstance(fields, pikepdf.Array) else []
    seen: set[tuple[int, int]] = set()
    while stack and len(seen) <= policy.max_objects:
        node = stack.pop()
        if not isinstance(node, pikepdf.Dictionary):
            continue
        if node.is_indirect:
            if node.objgen in seen:
                continue
            seen.add(node.objgen)
        value = node.get("/V")
        if isinstance(value, pikepdf.Dictionary) and "/ByteRange" in value:
            return True
        kids = node.get("/Kids")
        if isinstance(kids, pikepdf.Array):
            stack.extend(kids)
    return False


def _rewrite(pdf: pikepdf.Pdf, output: BinaryIO, reason: str, policy: InputPolicy) -> list[str]:
    """qpdf's rewrite of an unsigned, unencrypted file into `output`; the notes say what was repaired."""
    if pdf.is_encrypted:
        raise EncryptedPdf("the PDF is encrypted (its trailer has an /Encrypt dictionary)")
    if _qpdf_sees_signatures(pdf, policy):
        raise DamagedPdf(f"pyHanko's strict parser refuses the file ({reason}), and the file carries "
                         "signatures: a signed file is never rewritten, since that would break them")
    notes = [f"repaired: qpdf rewrote the file before signing; pyHanko refused it as sent ({reason})"]
    _repair_xmp(pdf, notes)
    output.seek(0)
    output.truncate()
    pdf.save(
        output,
        object_stream_mode=pikepdf.ObjectStreamMode.disable,
        stream_decode_level=pikepdf.StreamDecodeLevel.none,
        compress_streams=False,
        min_version=pdf.pdf_version,
        fix_metadata_version=False,
        linearize=False,
        qdf=False,
    )
    return notes


def _repair(source: BinaryIO, output: BinaryIO, raw: _RawFacts, reason: str, policy: InputPolicy) -> InspectedPdf:
    """Rewrite an unsigned file pyHanko's strict parser refuses with qpdf, then inspect the rewrite (step 6)."""
    if not raw.ends_with_eof:
        raise DamagedPdf(f"pyHanko cannot read the file ({reason}) and it ends without %%EOF: it is truncated")
    signatures = _lenient_signature_count(source, policy)
    if raw.has_byterange or signatures:
        raise DamagedPdf(
            f"pyHanko's strict parser refuses the file ({reason}), and the file carries signatures "
            f"({signatures or 'a /ByteRange'}): a signed file is never rewritten, since that would break them"
        )
    source.seek(0)
    try:
        with pikepdf.open(source, attempt_recovery=True) as pdf, warnings.catch_warnings():
            # pikepdf warns (PageCopyWarning) about widgets the form does not list: the inspection judges the file
            warnings.simplefilter("ignore", pikepdf.PageCopyWarning)
            version = pdf.pdf_version
            notes = _rewrite(pdf, output, reason, policy)
    except pikepdf.PasswordError as exc:
        raise EncryptedPdf("the PDF is encrypted with a password") from exc
    except Exception as exc:
        if not _unreadable(exc):
            raise
        raise DamagedPdf(
            f"pyHanko cannot read the file ({reason}) and qpdf cannot repair it: {_describe(exc)}"
        ) from exc
    output.flush()
    output.seek(0)
    repaired_raw = _raw_scan(output, policy)
    try:
        result = _inspect_parsed(output, repaired_raw, policy, repaired=tuple(notes))
    except _StrictRefusal as again:
        raise DamagedPdf(
            f"pyHanko cannot read the file ({reason}), nor qpdf's rewrite of it ({again.reason})"
        ) from again
    if not _version_at_least(result.version, version):
        raise DamagedPdf(f"the repair changed the PDF version from {version} to {result.version}")
    output.seek(0)
    return result


def _version_at_least(actual: str, wanted: str) -> bool:
    try:
        return tuple(int(p) for p in actual.split(".")) >= tuple(int(p) for p in wanted.split("."))
    except ValueError:
        return False
