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


# --- the PAdES engine (signing.core.pades, .timestamps, .revocation) ---------------------------------------------


class InvalidSignatureOptions(SigningError):
    """The signature options do not fit the document: a visible signature on a page it does not have or with an
    empty box, a field name that exists and is signed already or is not a signature field (ISO 32000-1 section
    12.7.4.5)."""

    code = "invalid_signature_options"
    status_code = 400
    title = "The signature options do not fit the document"


class DocumentNotSignable(SigningError):
    """pyHanko cannot add an incremental update to this document, or the document forbids it: a certification
    signature whose DocMDP permissions allow no further signature (ISO 32000-1 section 12.8.2.2), hybrid-reference
    files pyHanko refuses to sign, an unreadable structure. signing.core.inspect repairs such files before their
    first signature where it safely can."""

    code = "document_not_signable"
    status_code = 422
    title = "The document cannot be signed"


class SignerCredentialsUnusable(SigningError):
    """The signer's key and certificate cannot make a PAdES signature: the certificate does not certify the key,
    the key type has no PAdES mechanism here, or the certificate is not valid now (ETSI TS 119 102-1
    sub-indication OUT_OF_BOUNDS_NO_POE / CHAIN_CONSTRAINTS_FAILURE when checked against the trust roots)."""

    code = "signer_credentials_unusable"
    status_code = 500
    title = "The signer's key or certificate cannot be used"
    sub_indication = "CHAIN_CONSTRAINTS_FAILURE"


class SignerCertificateRevoked(SigningError):
    """The revocation data fetched for B-LT says the signer's certificate (or a CA above it) is revoked: the
    signature would not validate (ETSI TS 119 102-1 sub-indication REVOKED_NO_POE). No output is written."""

    code = "signer_certificate_revoked"
    status_code = 409
    title = "The signer's certificate is revoked"
    sub_indication = "REVOKED_NO_POE"


class TimestampUnavailable(SigningError):
    """No time-stamp could be obtained (RFC 3161): the TSA refused the request, answered something that is not a
    valid TimeStampResp for it, or could not be reached. B-T and above cannot be made; no output is written
    (ETSI TS 119 102-1 sub-indication TRY_LATER: the request can be repeated)."""

    code = "timestamp_unavailable"
    status_code = 503
    title = "The time-stamp authority did not grant a time-stamp"
    sub_indication = "TRY_LATER"


class ValidationDataUnavailable(SigningError):
    """The validation data B-LT needs (certificate chains, OCSP responses or CRLs, ETSI EN 319 142-1 section 5.4)
    could not be fetched or does not validate the signer's or the TSA's certificate; no output is written
    (ETSI TS 119 102-1 sub-indication TRY_LATER)."""

    code = "validation_data_unavailable"
    status_code = 503
    title = "The validation data for a long-term signature is unavailable"
    sub_indication = "TRY_LATER"


class AppearanceUnavailable(SigningError):
    """A visible signature was asked for and its appearance cannot be drawn: the font the appearance embeds
    (ISO 19005-2 section 6.2.11.4: a PDF/A file embeds every font it uses) is not installed. A deployment fault,
    not the caller's."""

    code = "appearance_unavailable"
    status_code = 503
    title = "Visible signatures are not available"
