"""What the raw bytes of a signed PDF say, read without a PDF library (issue 14, "beyond a library's verdict").

A PDF reader answers what the *newest* cross-reference section describes; the attacks on signed PDFs live in the
bytes no reader looks at: a signature dictionary a reader does not list, a /ByteRange whose hole holds more than
the signature, objects appended after the last cross-reference section. `analyse_structure` reads the file as
bytes and reports, per signature dictionary and for the document, what is wrong with it (a `Finding` with its
ETSI TS 119 102-1 sub-indication, section 5.1.3 table 6: every finding here is TOTAL-FAILED / FORMAT_FAILURE).

Rules (ISO 32000-2 section 12.8.1 "Digital signatures", ETSI EN 319 142-1 section 5.1 "PAdES", and the attack
classes of Mladenov, Mainka, Meyer zu Selhausen, Grothe, Schwenk: "1 Trillion Dollar Refund - How To Spoof PDF
Signatures", ACM CCS 2019: universal signature forgery USF, incremental saving attack ISA, signature wrapping SWA):

- Revisions (ISO 32000-2 section 7.5.6): a revision ends just after a `%%EOF` line (and its end-of-line marker)
  that follows a `startxref` offset; `%%EOF` without `startxref` ends nothing. Revision 1 is the original.
- A *signature dictionary* is any dictionary, in any object of the file or direct in a field, with /Type /Sig or
  /Type /DocTimeStamp, or with a /ByteRange, or that is the /V of a field with /FT /Sig. Each one is a
  `RawSignature`, listed whether a reader reaches it or not.
- `no_subfilter`: a signature dictionary without /SubFilter (a reader that dispatches on /SubFilter silently
  sees "no signature"); `unsupported_subfilter`: a /SubFilter none of ISO 32000-2 section 12.8.3 /
  EN 319 142-1 names (adbe.pkcs7.detached, adbe.pkcs7.sha1, adbe.x509.rsa_sha1, ETSI.CAdES.detached,
  ETSI.RFC3161).
- USF: `usf_contents` for a /Contents missing, null, not a hexadecimal string, empty, all zero (padding only) or
  not DER (not a SEQUENCE, or, for adbe.x509.rsa_sha1, not an OCTET STRING); `usf_byte_range` for a /ByteRange
  missing, null, not an array, or holding anything but integers; `usf_cert` for adbe.x509.rsa_sha1 with a /Cert
  missing, null, empty or not DER certificates.
- `byte_range_invalid`: not exactly two (offset, length) pairs (EN 319 142-1 section 5.1: one hole), a negative
  number, overlapping or unordered ranges, a range past the end of the file.
- `byte_range_gap`: the first range does not start at 0, the second does not end at a revision's end, or the hole
  is not where this dictionary's /Contents string is (ISO 32000-2 section 12.8.1: the byte range covers the
  whole file, or revision, "excluding the signature value", i.e. exactly the `<...>` of /Contents).
- SWA, `signature_wrapping`: the hole holds this dictionary's /Contents *and more* (the signed bytes were moved
  and the hole hides the new content), the hole is another dictionary's /Contents (the signed bytes duplicated
  under a second dictionary), or the dictionary has duplicate /ByteRange or /Contents keys (readers disagree on
  which counts).
- ISA (document findings, `revision` set): `incremental_save_no_xref` for a revision after the first whose body
  has objects but whose `startxref` points outside its own bytes or whose bytes hold no cross-reference section
  (a new body without a new xref); `incremental_save_unsigned_objects` for object definitions after the last
  revision's end (appended without any xref or trailer: what a repairing reader would pick up);
  `trailing_bytes` (a remark, no sub-indication) for other non-whitespace bytes after the last revision.

Bounds (the input policy of signing.core.inspect): the size is compared with `InputPolicy.max_bytes` before a
byte is read; the file is scanned once in 1 MiB windows with regular expressions whose every repetition is
bounded or possessive (no catastrophic backtracking); object headers are counted against
`InputPolicy.max_objects`; only objects holding a signature marker are parsed, each from its header to its
`endobj` (at most `_MAX_SIG_OBJECT` bytes), with a total parse budget proportional to the file size, by a small
tokenizer with bounded nesting. Hostile input raises only `PdfRefused` subclasses.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import BinaryIO, Final

from signing.core.errors import DamagedPdf, NotPdf, TooLarge, TooManyObjects
from signing.core.inspect import InputPolicy
from signing.core.report import Finding, SubIndication

__all__ = ["PdfStructure", "RawRevision", "RawSignature", "analyse_structure"]

_WINDOW: Final = 1024 * 1024
_OVERLAP: Final = 512
"""Bytes each window shares with its neighbours: longer than the longest match of `_SCAN` and its lookbehinds."""
_HEADER_SEARCH: Final = 1024
_MAX_SIG_OBJECT: Final = 8 * 1024 * 1024
"""Most bytes of one object parsed as a possible signature dictionary (/Contents of a B-LTA signature with its
revocation data embedded is some hundreds of KiB)."""
_PARSE_BUDGET_FACTOR: Final = 4
_MAX_NESTING: Final = 64
_MAX_FINDINGS: Final = 100
_KNOWN_SUBFILTERS: Final = frozenset({"adbe.pkcs7.detached", "adbe.pkcs7.sha1", "adbe.x509.rsa_sha1",
                                      "ETSI.CAdES.detached", "ETSI.RFC3161"})
_FAIL: Final = SubIndication.FORMAT_FAILURE

_WS: Final = rb"[\x00\t\n\f\r ]"
_SCAN: Final = re.compile(
    rb"obj(?![A-Za-z0-9])|endobj|%%EOF|startxref|xref|/XRef(?![A-Za-z0-9])"
    rb"|/ByteRange|/Sig(?![A-Za-z0-9])|/DocTimeStamp|/[A-Za-z0-9]{0,32}\#[0-9A-Fa-f]{2}"
)
"""Every token the scan records, with bounded repetitions only. Each alternative starts with a literal byte and
no group is named, so that the regular expression engine skips every other byte without trying a match (binary
stream data is most of a file: a pattern with named groups or a leading lookbehind is 30 times slower); the
conditions around a token are checked apart: an `obj` keyword is an object header when `_HEADER_TAIL` ends just
before it, `xref` counts when no letter precedes it and whitespace follows, `startxref` with the number
`_STARTXREF_TAIL` reads after it (the header and the letter check see into `_OVERLAP`)."""
_STARTXREF_TAIL: Final = re.compile(_WS + rb"{1,64}([0-9]{1,12})")
_WS_BYTES: Final = b"\x00\t\n\f\r "
_HEADER_TAIL: Final = re.compile(
    rb"(?<![0-9])(?P<num>[0-9]{1,10})" + _WS + rb"{1,64}(?P<gen>[0-9]{1,5})" + _WS + rb"{1,64}\Z")
"""`num gen` before `obj` (ISO 32000-2 section 7.3.10), at most 143 bytes (`_HEADER_REACH`)."""
_HEADER_REACH: Final = 10 + 64 + 5 + 64


@dataclass(frozen=True, slots=True)
class RawRevision:
    """One revision (ISO 32000-2 section 7.5.6): `end` is the offset just after its %%EOF line (and end-of-line
    marker); `xref_offset` the value of its `startxref`."""

    number: int
    end: int
    xref_offset: int | None
    eol: int = 0
    """Bytes of the end-of-line marker after %%EOF included in `end` (0, 1 or 2)."""


@dataclass(frozen=True, slots=True)
class RawSignature:
    """A signature dictionary found in the raw bytes (module docstring), with what is wrong with it.

    `revision`: the revision whose end the /ByteRange's second range reaches (the revision it signs), or None.
    `contents_span`: the offsets [start, end) of the /Contents string, `<` and `>` included."""

    object_number: int | None
    field_name: str | None
    revision: int | None
    byte_range: tuple[int, ...] | None
    contents_span: tuple[int, int] | None
    sub_filter: str | None
    type_name: str | None
    findings: tuple[Finding, ...]
    offset: int = 0
    """Where the dictionary's object starts in the file (sorting, messages)."""


@dataclass(frozen=True, slots=True)
class PdfStructure:
    """What the raw bytes say: the revisions, every signature dictionary, and document-level findings (ISA)."""

    size: int
    revisions: tuple[RawRevision, ...]
    signatures: tuple[RawSignature, ...]
    findings: tuple[Finding, ...]

    def revision_at(self, end: int) -> RawRevision | None:
        """The revision whose bytes end at `end` (with or without its end-of-line marker)."""
        return next((r for r in self.revisions if end in (r.end, r.end - r.eol)), None)


# --- the scan ------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Scan:
    size: int
    objects: list[tuple[int, int, int]]  # (offset, number, generation) in file order
    endobjs: list[int]
    eofs: list[tuple[int, int]]  # (offset of %%EOF, end with its EOL)
    startxrefs: list[tuple[int, int]]  # (offset, value)
    xref_tables: list[int]
    xref_streams: list[int]
    marks: list[int]


def analyse_structure(source: BinaryIO, policy: InputPolicy) -> PdfStructure:
    """Read `source` (seekable, binary) as bytes and report its revisions and signature dictionaries (module
    docstring); raise a `PdfRefused` subclass for a file that is too large, not a PDF, or has too many objects."""
    source.seek(0, 2)
    size = source.tell()
    if size > policy.max_bytes:
        raise TooLarge(f"the file has {size} bytes; the limit is {policy.max_bytes}")
    source.seek(0)
    if b"%PDF-" not in source.read(_HEADER_SEARCH):
        raise NotPdf("no %PDF- header in the first 1024 bytes (ISO 32000-2 section 7.5.2)")
    scan = _scan(source, size, policy)
    revisions = _revisions(scan)
    findings: list[Finding] = []
    findings += _isa_findings(scan, revisions)
    signatures = _SignatureReader(source, scan, revisions).read()
    return PdfStructure(size=size, revisions=tuple(revisions), signatures=tuple(signatures),
                        findings=tuple(findings[:_MAX_FINDINGS]))


def _scan(source: BinaryIO, size: int, policy: InputPolicy) -> _Scan:
    scan = _Scan(size, [], [], [], [], [], [], [])
    position = 0
    while position < size:
        start = max(0, position - _OVERLAP)
        source.seek(start)
        buf = source.read(position + _WINDOW + _OVERLAP - start)
        limit = position + _WINDOW
        previous_end = 0  # in `buf`: a header cannot reach back into the token before it
        for match in _SCAN.finditer(buf):
            at = start + match.start()
            if at >= position:
                if at >= limit:
                    break
                _record(scan, buf, match, start=start, previous_end=previous_end)
                if len(scan.objects) > policy.max_objects:
                    raise TooManyObjects(f"the file defines more than {policy.max_objects} objects")
            previous_end = match.end()
        position = limit
    return scan


def _record(scan: _Scan, buf: bytes, match: re.Match[bytes], *, start: int, previous_end: int) -> None:
    """One token of `_SCAN` (`buf` holds the file from offset `start`)."""
    token = match.group()
    begin, end = match.start(), match.end()
    at = start + begin
    if token == b"obj":
        header = _HEADER_TAIL.search(buf, max(previous_end, begin - _HEADER_REACH), begin)
        if header is not None:
            scan.objects.append((start + header.start(), int(header.group("num")), int(header.group("gen"))))
    elif token == b"endobj":
        scan.endobjs.append(at)
    elif token == b"%%EOF":
        tail = buf[end:end + 2]
        eol = 2 if tail.startswith(b"\r\n") else 1 if tail[:1] in (b"\r", b"\n") else 0
        scan.eofs.append((at, at + 5 + eol))
    elif token == b"startxref":
        number = _STARTXREF_TAIL.match(buf, end)
        if number is not None:
            scan.startxrefs.append((at, int(number.group(1))))
    elif token == b"xref":
        if not buf[begin - 1:begin].isalpha() and buf[end:end + 1] and buf[end] in _WS_BYTES:
            scan.xref_tables.append(at)
    elif token == b"/XRef":
        scan.xref_streams.append(at)
    else:
        scan.marks.append(at)


def _revisions(scan: _Scan) -> list[RawRevision]:
    revisions: list[RawRevision] = []
    previous_end = 0
    for eof, end in scan.eofs:
        startxref = [value for at, value in scan.startxrefs if previous_end <= at < eof]
        if not startxref:
            continue
        number = len(revisions) + 1
        revisions.append(RawRevision(number=number, end=end, xref_offset=startxref[-1], eol=end - eof - 5))
        previous_end = end
    return revisions


def _isa_findings(scan: _Scan, revisions: list[RawRevision]) -> list[Finding]:
    """ISA (Mladenov et al. 2019 section 5.2): bodies without their own cross-reference section, and objects
    after the last revision."""
    findings: list[Finding] = []
    previous_end = 0
    for revision in revisions:
        begin, end = previous_end, revision.end
        previous_end = end
        if revision.number == 1:
            continue
        has_objects = any(begin <= at < end for at, _, _ in scan.objects)
        if not has_objects:
            continue
        own_xref = any(begin <= at < end for at in scan.xref_tables + scan.xref_streams)
        pointer_inside = revision.xref_offset is not None and begin <= revision.xref_offset < end
        if not (own_xref and pointer_inside):
            findings.append(Finding(
                "incremental_save_no_xref",
                f"revision {revision.number} (bytes {begin}..{end}) adds objects without a cross-reference section "
                "of its own: its startxref points "
                + ("into its own bytes where no xref is" if pointer_inside else "to an earlier revision's xref")
                + " (incremental saving attack, ISO 32000-2 section 7.5.6)",
                _FAIL, revision.number))
    last_end = revisions[-1].end if revisions else 0
    appended = [(at, number) for at, number, _ in scan.objects if at >= last_end]
    if appended:
        listed = ", ".join(f"{number} 0 obj at {at}" for at, number in appended[:5])
        findings.append(Finding(
            "incremental_save_unsigned_objects",
            f"{len(appended)} object definition(s) after the last revision's %%EOF ({listed}) with no "
            "cross-reference section or trailer: no signature covers them and a repairing reader may use them "
            "(incremental saving attack)", _FAIL, None))
    return findings


# --- the tokenizer -------------------------------------------------------------------------------------------------


class _Incomplete(Exception):
    """The text ended inside the object."""


class _Malformed(Exception):
    """Not PDF syntax."""


@dataclass(frozen=True, slots=True)
class _Name:
    value: str


@dataclass(frozen=True, slots=True)
class _Ref:
    number: int
    generation: int


@dataclass(frozen=True, slots=True)
class _String:
    hexadecimal: bool
    start: int
    end: int
    body: bytes
    """Hex digits (hexadecimal) or the raw literal bytes."""


class _Null:
    pass


_NULL: Final = _Null()


@dataclass(slots=True)
class _Dict:
    items: list[tuple[str, object]]
    start: int

    def get(self, key: str) -> object:
        for name, value in self.items:
            if name == key:
                return value
        return None

    def has(self, key: str) -> bool:
        return any(name == key for name, _ in self.items)

    def count(self, key: str) -> int:
        return sum(1 for name, _ in self.items if name == key)


_SKIP: Final = re.compile(rb"(?:[\x00\t\n\f\r ]++|%[^\r\n]*+)*+")
_NUMBER: Final = re.compile(rb"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)")
_REF_TAIL: Final = re.compile(rb"[\x00\t\n\f\r ]++([0-9]{1,5})[\x00\t\n\f\r ]++R(?![A-Za-z0-9])")
_NAME: Final = re.compile(rb"/[^\x00\t\n\f\r ()<>\[\]{}/%]{0,127}+")
_HEX: Final = re.compile(rb"<([0-9A-Fa-f\x00\t\n\f\r ]*+)(>?)")
_KEYWORD: Final = re.compile(rb"[A-Za-z]{1,16}+")
_HEX_ESCAPE: Final = re.compile(rb"#([0-9A-Fa-f]{2})")
_CONSTANTS: Final[dict[bytes, object]] = {b"null": _NULL, b"true": True, b"false": False}


class _Parser:
    """A bounded recursive-descent reader of one PDF object (ISO 32000-2 section 7.3), keeping offsets."""

    def __init__(self, text: bytes, base: int) -> None:
        self.text = text
        self.base = base
        self.pos = 0

    def skip(self) -> None:
        match = _SKIP.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos
        if self.pos >= len(self.text):
            raise _Incomplete

    def value(self, depth: int = 0) -> object:
        if depth > _MAX_NESTING:
            raise _Malformed("nesting too deep")
        self.skip()
        text, pos = self.text, self.pos
        char = text[pos:pos + 1]
        if text.startswith(b"<<", pos):
            return self._dict(depth)
        if char == b"[":
            return self._array(depth)
        if char == b"<":
            return self._hex()
        if char == b"(":
            return self._literal()
        if char == b"/":
            return self._name()
        return self._scalar()

    def _array(self, depth: int) -> list[object]:
        self.pos += 1
        items: list[object] = []
        while True:
            self.skip()
            if self.text[self.pos:self.pos + 1] == b"]":
                self.pos += 1
                return items
            items.append(self.value(depth + 1))

    def _hex(self) -> _String:
        pos = self.pos
        match = _HEX.match(self.text, pos)
        if match is None or not match.group(2):
            if match is not None and match.end() >= len(self.text):
                raise _Incomplete
            raise _Malformed("bad hexadecimal string")
        self.pos = match.end()
        return _String(True, self.base + pos, self.base + match.end(), match.group(1))

    def _name(self) -> _Name:
        match = _NAME.match(self.text, self.pos)
        if match is None:
            raise _Malformed("bad name")
        self.pos = match.end()
        name = _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), match.group()[1:])
        return _Name(name.decode("latin-1"))

    def _scalar(self) -> object:
        text, pos = self.text, self.pos
        match = _NUMBER.match(text, pos)
        if match is not None:
            self.pos = match.end()
            literal = match.group()
            if b"." in literal:
                return float(literal)
            number = int(literal)
            ref = _REF_TAIL.match(text, self.pos)
            if ref is not None and number >= 0:
                self.pos = ref.end()
                return _Ref(number, int(ref.group(1)))
            if self.pos >= len(text):
                raise _Incomplete
            return number
        keyword = _KEYWORD.match(text, pos)
        if keyword is None:
            raise _Malformed(f"unexpected byte {text[pos:pos + 1]!r}")
        self.pos = keyword.end()
        word = keyword.group()
        if word in _CONSTANTS:
            return _CONSTANTS[word]
        raise _Malformed(f"unexpected keyword {word!r}")

    def _dict(self, depth: int) -> _Dict:
        result = _Dict([], self.base + self.pos)
        self.pos += 2
        while True:
            self.skip()
            if self.text.startswith(b">>", self.pos):
                self.pos += 2
                return result
            key = self.value(depth + 1)
            if not isinstance(key, _Name):
                raise _Malformed("a dictionary key that is not a name")
            result.items.append(("/" + key.value, self.value(depth + 1)))

    def _literal(self) -> _String:
        start = self.pos
        text = self.text
        nesting = 0
        pos = start
        end = len(text)
        while pos < end:
            byte = text[pos]
            if byte == 0x5C:  # backslash: the next byte is escaped
                pos += 2
                continue
            if byte == 0x28:
                nesting += 1
            elif byte == 0x29:
                nesting -= 1
                if nesting == 0:
                    self.pos = pos + 1
                    return _String(False, self.base + start, self.base + pos + 1, text[start + 1:pos])
            pos += 1
        raise _Incomplete


# --- signature dictionaries ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    offset: int
    number: int
    value: _Dict
    field_name: str | None
    duplicate_keys: bool


class _SignatureReader:
    def __init__(self, source: BinaryIO, scan: _Scan, revisions: list[RawRevision]) -> None:
        self.source = source
        self.scan = scan
        self.revisions = revisions
        self.budget = _PARSE_BUDGET_FACTOR * scan.size + _MAX_SIG_OBJECT
        self.parsed: dict[int, object] = {}  # object offset -> its value (or None: unreadable)

    def read(self) -> list[RawSignature]:
        offsets = self._objects_with_marks()
        candidates: list[_Candidate] = []
        field_refs: list[tuple[int, str | None]] = []  # (object number of a /FT /Sig field's /V, field name)
        for offset, number in offsets:
            value = self._parse(offset)
            if value is not None:
                self._collect(value, (offset, number), candidates, field_refs)
        found = {candidate.number for candidate in candidates}
        latest = {number: offset for offset, number, _ in self.scan.objects}
        for number, field_name in field_refs:
            if number in found or number not in latest:
                continue
            value = self._parse(latest[number])
            if isinstance(value, _Dict):
                found.add(number)
                candidates.append(_Candidate(latest[number], number, value, field_name, False))
        names = dict(field_refs)
        signatures = [self._judge(candidate, names, candidates) for candidate in candidates]
        signatures.sort(key=lambda s: (s.offset, s.contents_span or (0, 0)))
        return signatures

    def _objects_with_marks(self) -> list[tuple[int, int]]:
        """The objects (offset, number) whose text holds a signature marker, by a merge of two sorted lists."""
        result: list[tuple[int, int]] = []
        objects = self.scan.objects
        index = -1
        for mark in self.scan.marks:
            while index + 1 < len(objects) and objects[index + 1][0] <= mark:
                index += 1
            if index >= 0 and (not result or result[-1][0] != objects[index][0]):
                result.append((objects[index][0], objects[index][1]))
        return result

    def _parse(self, offset: int) -> object:
        """The object whose header is at `offset` (None when it cannot be read as PDF syntax)."""
        if offset in self.parsed:
            return self.parsed[offset]
        end = next((at + 6 for at in self._endobjs_after(offset)), self.scan.size)
        value: object = None
        for wanted in (end - offset, _MAX_SIG_OBJECT):
            length = min(wanted, _MAX_SIG_OBJECT, self.scan.size - offset)
            self.budget -= length
            if self.budget < 0:
                raise DamagedPdf("the file holds too many signature-like dictionaries to analyse within the bounds")
            self.source.seek(offset)
            text = self.source.read(length)
            header = re.match(rb"[0-9]{1,10}" + _WS + rb"{1,64}[0-9]{1,5}" + _WS + rb"{1,64}obj", text)
            if header is None:
                break
            parser = _Parser(text, offset)
            parser.pos = header.end()
            try:
                value = parser.value()
                break
            except _Incomplete:
                if length >= min(_MAX_SIG_OBJECT, self.scan.size - offset):
                    break
                continue
            except (_Malformed, ValueError, RecursionError):
                break
        self.parsed[offset] = value
        return value

    def _endobjs_after(self, offset: int) -> list[int]:
        index = bisect.bisect_left(self.scan.endobjs, offset)
        return self.scan.endobjs[index:index + 1]

    @staticmethod
    def _collect(value: object, where: tuple[int, int], candidates: list[_Candidate],
                 field_refs: list[tuple[int, str | None]]) -> None:
        """Find the signature dictionaries in one object's value, and the /V references of signature fields."""
        offset, number = where
        stack: list[tuple[object, str | None, bool, bool]] = [(value, None, False, True)]
        while stack:
            item, name, sig_value, top = stack.pop()
            if isinstance(item, list):
                stack.extend((element, name, False, False) for element in item)
                continue
            if not isinstance(item, _Dict):
                continue
            type_name = _name(item.get("/Type"))
            is_sig_field = _name(item.get("/FT")) == "Sig"
            title = item.get("/T")
            own_name = _text(title) if isinstance(title, _String) else name
            if type_name in ("Sig", "DocTimeStamp") or item.has("/ByteRange") or sig_value:
                duplicates = item.count("/ByteRange") > 1 or item.count("/Contents") > 1
                candidates.append(_Candidate(offset, number if top else -1, item, name, duplicates))
                continue
            for key, child in item.items:
                if key == "/V" and is_sig_field:
                    if isinstance(child, _Ref):
                        field_refs.append((child.number, own_name))
                    elif isinstance(child, _Dict):
                        stack.append((child, own_name, True, False))
                    continue
                if key in ("/Parent", "/P"):
                    continue
                stack.append((child, own_name if key == "/Kids" else None, False, False))

    def _judge(self, candidate: _Candidate, names: dict[int, str | None],
               candidates: list[_Candidate]) -> RawSignature:
        sig = candidate.value
        findings: list[Finding] = []
        where = f"the signature dictionary in object {candidate.number} at byte {candidate.offset}"
        sub_filter = _name(sig.get("/SubFilter"))
        type_name = _name(sig.get("/Type"))
        if sub_filter is None:
            findings.append(Finding("no_subfilter", f"{where} has no /SubFilter (ISO 32000-2 section 12.8.1): a "
                                    "reader that dispatches on it sees no signature", _FAIL))
        elif sub_filter not in _KNOWN_SUBFILTERS:
            findings.append(Finding("unsupported_subfilter", f"{where} has /SubFilter /{sub_filter}, which no "
                                    "standard names (ISO 32000-2 section 12.8.3, ETSI EN 319 142-1)", _FAIL))
        if candidate.duplicate_keys:
            findings.append(Finding("signature_wrapping", f"{where} has more than one /ByteRange or /Contents key: "
                                    "readers disagree on which one is signed (signature wrapping)", _FAIL))
        contents = sig.get("/Contents")
        contents_span: tuple[int, int] | None = None
        if isinstance(contents, _String) and contents.hexadecimal:
            contents_span = (contents.start, contents.end)
        findings += _check_contents(where, contents, sub_filter)
        if sub_filter == "adbe.x509.rsa_sha1":
            findings += _check_cert(where, sig.get("/Cert"))
        byte_range, range_findings = _check_byte_range(where, sig.get("/ByteRange"), self.scan.size)
        findings += range_findings
        revision: int | None = None
        if byte_range is not None and not range_findings:
            revision, coverage = self._check_coverage(where, byte_range, contents_span, candidates, candidate)
            findings += coverage
        field_name = candidate.field_name
        if field_name is None and candidate.number >= 0:
            field_name = names.get(candidate.number)
        return RawSignature(
            object_number=candidate.number if candidate.number >= 0 else None, field_name=field_name,
            revision=revision, byte_range=byte_range, contents_span=contents_span, sub_filter=sub_filter,
            type_name=type_name, findings=tuple(findings), offset=candidate.offset)

    def _check_coverage(self, where: str, byte_range: tuple[int, ...], contents_span: tuple[int, int] | None,
                        candidates: list[_Candidate], me: _Candidate) -> tuple[int | None, list[Finding]]:
        findings: list[Finding] = []
        first_start, first_length, second_start, second_length = byte_range
        hole = (first_start + first_length, second_start)
        end = second_start + second_length
        revision = next((r.number for r in self.revisions if end in (r.end, r.end - r.eol)), None)
        if first_start != 0:
            findings.append(Finding("byte_range_gap", f"{where}: the /ByteRange starts at byte {first_start}, not "
                                    "0: the bytes before it are not signed (ISO 32000-2 section 12.8.1)", _FAIL))
        if revision is None:
            findings.append(Finding("byte_range_gap", f"{where}: the /ByteRange ends at byte {end}, which is not "
                                    "the end of a revision (%%EOF): the rest of that revision is not signed",
                                    _FAIL))
        if contents_span is None:
            findings.append(Finding("byte_range_gap", f"{where}: the /ByteRange hole {hole[0]}..{hole[1]} is not a "
                                    "hexadecimal /Contents string of this dictionary", _FAIL))
        elif hole != contents_span:
            others = [c for c in candidates if c is not me]
            other_spans = {(v.start, v.end) for c in others
                           if isinstance(v := c.value.get("/Contents"), _String)}
            if hole[0] <= contents_span[0] and contents_span[1] <= hole[1]:
                findings.append(Finding(
                    "signature_wrapping", f"{where}: the /ByteRange hole {hole[0]}..{hole[1]} holds more than the "
                    f"/Contents string {contents_span[0]}..{contents_span[1]}: unsigned bytes hide in it and the "
                    "signed bytes were moved (signature wrapping)", _FAIL))
            elif hole in other_spans:
                findings.append(Finding(
                    "signature_wrapping", f"{where}: the /ByteRange hole is another signature dictionary's "
                    "/Contents: the signed bytes are duplicated (signature wrapping)", _FAIL))
            elif hole[0] <= contents_span[1] and contents_span[0] <= hole[1]:
                findings.append(Finding(
                    "byte_range_gap", f"{where}: the /ByteRange hole {hole[0]}..{hole[1]} does not match the "
                    f"/Contents string {contents_span[0]}..{contents_span[1]} exactly", _FAIL))
            else:
                findings.append(Finding(
                    "signature_wrapping", f"{where}: the /ByteRange hole {hole[0]}..{hole[1]} is elsewhere than its "
                    f"/Contents string {contents_span[0]}..{contents_span[1]}: the /ByteRange points at other "
                    "bytes (signature wrapping)", _FAIL))
        return revision, findings


def _name(value: object) -> str | None:
    return value.value if isinstance(value, _Name) else None


def _text(value: _String) -> str:
    raw = bytes.fromhex(value.body.decode("latin-1").translate(_NO_WS)) if value.hexadecimal else value.body
    if raw.startswith(b"\xfe\xff"):
        return raw[2:].decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


_NO_WS: Final = str.maketrans("", "", "\x00\t\n\f\r ")


def _hex_bytes(value: _String) -> bytes | None:
    digits = value.body.decode("latin-1").translate(_NO_WS)
    if len(digits) % 2:
        digits += "0"  # ISO 32000-2 section 7.3.4.3: a final odd digit is followed by an implied 0
    try:
        return bytes.fromhex(digits)
    except ValueError:
        return None


def _check_contents(where: str, contents: object, sub_filter: str | None) -> list[Finding]:
    problem = _contents_problem(contents, sub_filter)
    if problem is None:
        return []
    return [Finding("usf_contents", f"{where}: /Contents {problem} (universal signature forgery)", _FAIL)]


def _contents_problem(contents: object, sub_filter: str | None) -> str | None:  # noqa: PLR0911 - one per USF case
    if contents is None:
        return "is missing"
    if contents is _NULL:
        return "is null"
    if not isinstance(contents, _String):
        return "is not a string"
    if not contents.hexadecimal:
        return "is a literal string, not the hexadecimal string ISO 32000-2 section 12.8.1 requires"
    data = _hex_bytes(contents)
    if data is None:
        return "is not hexadecimal"
    if not data.strip(b"\x00"):
        return "is empty" if not data else "holds only zero padding"
    expected = 0x04 if sub_filter == "adbe.x509.rsa_sha1" else 0x30
    if data[0] != expected or not _der_length_fits(data):
        return "is not a DER " + ("OCTET STRING" if expected == 0x04 else "CMS SignedData SEQUENCE")
    return None


def _der_length_fits(data: bytes) -> bool:
    """The DER header's length (X.690 section 8.1.3) fits in `data` (the rest is zero padding)."""
    if len(data) < 2:
        return False
    first = data[1]
    if first == 0x80:
        # X.690 section 8.1.3.6 indefinite length (BER): NSS, and so poppler's pdfsig, encode the CMS SignedData
        # so (RFC 5652 section 1 allows BER); the content must hold more than the end-of-contents octets
        return bool(data[2:].strip(b"\x00"))
    if first < 0x80:
        length, header = first, 2
    elif first > 0x84:
        return False
    else:
        count = first & 0x7F
        if len(data) < 2 + count:
            return False
        length, header = int.from_bytes(data[2:2 + count], "big"), 2 + count
    return length > 0 and header + length <= len(data) and not data[header + length:].strip(b"\x00")


def _check_cert(where: str, cert: object) -> list[Finding]:
    items = cert if isinstance(cert, list) else [cert]
    if cert is None or cert is _NULL or not items:
        problem = "missing" if cert is None else "null or empty"
    else:
        problem = ""
        for item in items:
            data = _hex_bytes(item) if isinstance(item, _String) and item.hexadecimal else (
                item.body if isinstance(item, _String) else None)
            if data is None or not data.strip(b"\x00") or data[0] != 0x30 or not _der_length_fits(data):
                problem = "not a DER certificate"
                break
    if not problem:
        return []
    return [Finding("usf_cert", f"{where}: /Cert (adbe.x509.rsa_sha1, ISO 32000-2 section 12.8.3.2) is {problem} "
                    "(universal signature forgery)", _FAIL)]


def _check_byte_range(where: str, value: object, size: int) -> tuple[tuple[int, ...] | None, list[Finding]]:
    def usf(why: str) -> tuple[None, list[Finding]]:
        return None, [Finding("usf_byte_range", f"{where}: /ByteRange {why} (universal signature forgery)", _FAIL)]

    if value is None:
        return usf("is missing")
    if value is _NULL:
        return usf("is null")
    if not isinstance(value, list):
        return usf("is not an array")
    if not value or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return usf("is empty or holds something other than integers")
    numbers = tuple(int(n) for n in value if isinstance(n, int))
    invalid: str | None = None
    if len(numbers) != 4:
        invalid = f"has {len(numbers)} numbers, not the two (offset, length) pairs of one hole (EN 319 142-1 5.1)"
    elif any(n < 0 for n in numbers):
        invalid = "holds a negative number"
    elif numbers[0] + numbers[1] > numbers[2]:
        invalid = "has overlapping or unordered ranges"
    elif numbers[2] + numbers[3] > size:
        invalid = f"reaches byte {numbers[2] + numbers[3]}, past the end of the {size}-byte file"
    if invalid is not None:
        return numbers, [Finding("byte_range_invalid", f"{where}: /ByteRange {list(numbers)} {invalid}", _FAIL)]
    return numbers, []
