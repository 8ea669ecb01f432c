"""The validation report as a PDF (issue 14 "a PDF report download"), in the language of the page that asked.

Written with pyHanko's own PDF writer (pyhanko.pdf_utils.writer.PdfFileWriter) and its OpenType engine
(pyhanko.pdf_utils.font.opentype.GlyphAccumulator: HarfBuzz shaping, a subset of the font embedded as a CIDFontType2
with a ToUnicode CMap, ISO 32000-2 sections 9.7.4 and 9.10.3), so the text is selectable and extractable
(pdftotext) in Azerbaijani (Ə ə Ğ ğ I ı İ i Ö ö Ş ş Ç ç Ü ü) and Russian alike. The font is Debian's
fonts-noto-mono, the one visible signatures embed (signing.core.pades: 1000 units per em, which pyHanko 0.38's
width table needs).

The PDF holds what the page shows: the summary, each signature's status and reasons, signer, times, level,
qualification, coverage and certificates, and the revisions with their changes; A4 pages, numbered "page n of N".
It is made in memory from the report alone and never stored.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from api.i18n import Translator
from api.report_view import ReportText
from signing.core.report import SignatureReport, ValidationReport

FONT: Final = Path("/usr/share/fonts/truetype/noto/NotoSansMono-Regular.ttf")
BOLD_FONT: Final = Path("/usr/share/fonts/truetype/noto/NotoSansMono-Bold.ttf")
PAGE: Final = (595.0, 842.0)
"""A4 in points (ISO 216)."""
MARGIN: Final = 50.0
BODY: Final = 9.0
HEADING: Final = 11.0
TITLE: Final = 15.0
LEADING: Final = 1.35


@cache
def _font_bytes(path: Path) -> bytes:
    return path.read_bytes()


@dataclass
class _Pages:
    """Lines laid out top to bottom on as many pages as they need, each line wrapped at word boundaries."""

    regular: GlyphAccumulator
    bold: GlyphAccumulator
    pages: list[bytearray] = field(default_factory=lambda: [bytearray()])
    y: float = PAGE[1] - MARGIN

    def _width(self, font: GlyphAccumulator, text: str, size: float) -> float:
        return font.shape(text).x_advance * size

    def _wrap(self, font: GlyphAccumulator, text: str, size: float, width: float) -> Iterator[str]:
        line = ""
        for word in text.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and self._width(font, candidate, size) > width:
                yield line
                line = word
            else:
                line = candidate
            while self._width(font, line, size) > width and len(line) > 1:  # one word wider than the line
                cut = max(1, int(len(line) * width / self._width(font, line, size)))
                yield line[:cut]
                line = line[cut:]
        yield line

    def text(self, text: str, *, size: float = BODY, bold: bool = False, indent: float = 0.0) -> None:
        font, name = (self.bold, b"F2") if bold else (self.regular, b"F1")
        for line in self._wrap(font, text, size, PAGE[0] - 2 * MARGIN - indent):
            if self.y - size * LEADING < MARGIN:
                self.pages.append(bytearray())
                self.y = PAGE[1] - MARGIN
            self.y -= size * LEADING
            if line:
                self.pages[-1] += b"BT /%s %g Tf %g %g Td " % (name, size, MARGIN + indent, self.y)
                self.pages[-1] += font.shape(line).graphics_ops + b" ET\n"

    def gap(self, points: float = BODY * 0.6) -> None:
        self.y -= points

    def footer(self, n: int, lines: tuple[str, str]) -> None:
        for k, text in enumerate(lines):
            self.pages[n] += b"BT /F1 %g Tf %g %g Td " % (BODY - 1, MARGIN, MARGIN / 2 + (1 - k) * BODY * LEADING)
            self.pages[n] += self.regular.shape(text).graphics_ops + b" ET\n"


def render_report(report: ValidationReport, tr: Translator) -> bytes:
    """The PDF of `report` in the language of `tr`."""
    words = ReportText(tr)
    writer = PdfFileWriter(stream_xrefs=False)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    regular = GlyphAccumulator(writer, io.BytesIO(_font_bytes(FONT)), BODY)
    bold = GlyphAccumulator(writer, io.BytesIO(_font_bytes(BOLD_FONT)), BODY)
    out = _Pages(regular, bold)
    out.text(tr.gettext("report.pdf.title"), size=TITLE, bold=True)
    out.gap()
    out.text(words.summary(report), size=HEADING, bold=True)
    out.gap()
    _facts(out, [(tr.gettext("verify.document.sha256"), report.sha256),
                 (tr.gettext("verify.document.size"), str(report.size)),
                 (tr.gettext("verify.document.validation_time"), words.when(report.validation_time)
                  + (f" ({tr.gettext('verify.document.embedded_only')})" if report.embedded_only else "")),
                 (tr.gettext("verify.document.trust"), words.trust_sources(report))])
    if report.findings:
        out.gap()
        out.text(tr.gettext("verify.document.findings"), size=HEADING, bold=True)
        for finding in report.findings:
            out.text(f"• {words.finding(finding)}", indent=8)
    for n, signature in enumerate(report.signatures, start=1):
        _signature(out, words, tr, n, signature)
    if report.revisions:
        out.gap(BODY)
        out.text(tr.gettext("report.pdf.revisions"), size=HEADING, bold=True)
        for revision in report.revisions:
            signed = ", ".join(revision.signatures) or "—"
            out.text(f"{tr.gettext('verify.revisions.number')} {revision.number}: {signed}; "
                     f"{tr.gettext('verify.revisions.judgement')}: {words.change_class(revision.classification)}",
                     indent=8)
            for change in revision.changes:
                out.text(f"• {words.change(change)} ({words.change_class(change.classification)}): "
                         f"{change.description}", indent=16)
    generated = tr.gettext("report.pdf.generated", time=words.when(report.validation_time))
    total = len(out.pages)
    for n in range(total):
        out.footer(n, (generated, tr.gettext("report.pdf.page", page=n + 1, pages=total)))
    return _write(writer, out, tr)


def _signature(out: _Pages, words: ReportText, tr: Translator, n: int, signature: SignatureReport) -> None:
    out.gap(BODY)
    out.text(words.title(signature, n), size=HEADING, bold=True)
    code = signature.indication.value + (f" / {signature.sub_indication.value}" if signature.sub_indication else "")
    out.text(f"{words.status(signature)} ({code})", bold=True)
    for finding in signature.findings:
        out.text(f"• {words.finding(finding)}", indent=8)
    facts = [(tr.gettext("verify.signature.kind"), words.kind(signature.kind))]
    if signature.signer is not None:
        signer = signature.signer
        facts.append((tr.gettext("verify.signature.signer"),
                      signer.name + (f", {signer.organization}" if signer.organization else "")))
        if signer.identifier:
            facts.append((tr.gettext("verify.signature.identifier"), signer.identifier))
    best = signature.best_signature_time
    facts += [(tr.gettext("verify.signature.claimed_time"), words.when(signature.claimed_signing_time)),
              (tr.gettext("verify.signature.best_time"),
               f"{words.when(best.time)} ({words.time_source(best.source)})" if best else "—"),
              (tr.gettext("verify.signature.level"), words.level(signature.level)),
              (tr.gettext("verify.signature.qualified"), words.qualification(signature.qualification)),
              (tr.gettext("verify.signature.coverage"), words.coverage(signature) + (
                  f" [{' '.join(map(str, signature.coverage.byte_range))}]" if signature.coverage else ""))]
    if signature.field_name:
        facts.append((tr.gettext("verify.signature.field"), signature.field_name))
    _facts(out, facts)
    if signature.signer is not None and signature.signer.chain:
        out.text(tr.gettext("report.pdf.chain"), bold=True)
        for cert in signature.signer.chain:
            out.text(f"• {cert.subject}", indent=8)
            out.text(f"{tr.gettext('verify.chain.issuer')}: {cert.issuer}; {tr.gettext('verify.chain.serial')}: "
                     f"{cert.serial_number}; {tr.gettext('verify.chain.valid')}: {tr.date(cert.not_before)} – "
                     f"{tr.date(cert.not_after)}", indent=16)


def _facts(out: _Pages, facts: list[tuple[str, str]]) -> None:
    for label, value in facts:
        out.text(f"{label}: {value}", indent=8)


def _write(writer: PdfFileWriter, out: _Pages, tr: Translator) -> bytes:
    fonts = generic.DictionaryObject({generic.pdf_name("/F1"): out.regular.as_resource(),  # type: ignore[no-untyped-call]  # unannotated in pyHanko
                                      generic.pdf_name("/F2"): out.bold.as_resource()})
    for ops in out.pages:
        stream = generic.StreamObject(stream_data=bytes(ops))
        stream.compress()  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        resources = generic.DictionaryObject({generic.pdf_name("/Font"): fonts})  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        page = PageObject(contents=writer.add_object(stream), media_box=[0, 0, *PAGE], resources=resources)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
        writer.insert_page(page)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    out.regular.prepare_write()  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    out.bold.prepare_write()  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    writer.root[generic.pdf_name("/Lang")] = generic.TextStringObject(tr.lang)
    buffer = io.BytesIO()
    writer.write(buffer)  # type: ignore[no-untyped-call]  # unannotated in pyHanko
    return buffer.getvalue()
