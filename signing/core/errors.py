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
