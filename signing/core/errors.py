"""Errors of the signing core, each carrying its wire form (STYLE habit 6).

`code` is the machine-readable problem code (RFC 9457 problem+json member `code`, and the `failed` reason of a
signing request); `status_code` the HTTP status api/problems.py answers with; `sub_indication`, where one
applies, the ETSI TS 119 102-1 sub-indication. Nothing here knows HTTP beyond the number.
"""

from __future__ import annotations

from typing import ClassVar


class SigningError(Exception):
    """Base of every error of signing/."""

    code: ClassVar[str] = "signing_error"
    status_code: ClassVar[int] = 400
    title: ClassVar[str] = "The signing request cannot be processed"
    sub_indication: ClassVar[str | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- Input policy (signing.core.inspect): a document refused at submission, before anything is stored ---------


class PdfRefused(SigningError):
    """A submitted document breaks the input policy (issue 13 "Input policy"); `detail` names the precise reason.

    These are refusals of the input, not validation results: no ETSI sub-indication applies.
    """

    code: ClassVar[str] = "pdf_refused"
    status_code: ClassVar[int] = 422
    title: ClassVar[str] = "The document cannot be accepted for signing"


class NotPdf(PdfRefused):
    """The bytes are not a PDF file (no `%PDF-` header, ISO 32000-2 section 7.5.2)."""

    code: ClassVar[str] = "not_pdf"
    status_code: ClassVar[int] = 415
    title: ClassVar[str] = "The document is not a PDF file"


class EncryptedPdf(PdfRefused):
    """The PDF is encrypted (an /Encrypt entry in the trailer, ISO 32000-2 section 7.6): it cannot be signed as sent."""

    code: ClassVar[str] = "encrypted_pdf"
    title: ClassVar[str] = "The PDF is encrypted"


class DamagedPdf(PdfRefused):
    """The PDF cannot be read, and cannot be repaired safely (a signed file is never rewritten)."""

    code: ClassVar[str] = "damaged_pdf"
    title: ClassVar[str] = "The PDF is damaged beyond repair"


class TooLarge(PdfRefused):
    """The file is over the size limit of the input policy."""

    code: ClassVar[str] = "too_large"
    status_code: ClassVar[int] = 413
    title: ClassVar[str] = "The document is too large"


class TooManyPages(PdfRefused):
    """The page tree holds more pages than the input policy allows."""

    code: ClassVar[str] = "too_many_pages"
    title: ClassVar[str] = "The document has too many pages"


class TooManyObjects(PdfRefused):
    """The file declares or reaches more PDF objects than the input policy allows."""

    code: ClassVar[str] = "too_many_objects"
    title: ClassVar[str] = "The document has too many objects"


class InflationBomb(PdfRefused):
    """Compressed streams inflate beyond the bound of the input policy (a decompression bomb)."""

    code: ClassVar[str] = "inflation_bomb"
    title: ClassVar[str] = "The document's compressed streams inflate beyond the limit"


class ReferenceLoop(PdfRefused):
    """A reference that resolves to itself, or a cycle in a tree that must be a tree (page tree, form fields,
    outline; ISO 32000-2 sections 7.7.3, 12.7.4, 12.3.3)."""

    code: ClassVar[str] = "reference_loop"
    title: ClassVar[str] = "The document contains a reference loop"


class ActiveContent(PdfRefused):
    """JavaScript, a launch action or an embedded file, refused by the input policy (ISO 32000-2 sections 12.6.4.8,
    12.6.4.16, 7.11.4)."""

    code: ClassVar[str] = "active_content"
    title: ClassVar[str] = "The document contains active content"
