"""Errors of the signing core, each carrying its wire form (STYLE habit 6).

`code` is the machine-readable problem code (RFC 9457 problem+json member `code`, and the `failed` reason of a
signing request); `status_code` the HTTP status api/problems.py answers with; `sub_indication`, where one
applies, the ETSI TS 119 102-1 sub-indication. Nothing here knows HTTP beyond the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


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

# --- Trust for validation (signing.core.trust, signing.core.trustlist) -------------------------------------------


class TrustedListInvalid(SigningError):
    """The configured ETSI TS 119 612 trusted list cannot be used: it cannot be read or fetched, it is not a TS 119 612
    list, it is unsigned, its XAdES signature (TS 119 612 section 5.7.1) does not verify with any of the configured
    signer certificates, or it is out of date (NextUpdate passed, section 5.3.15). Nothing of such a list is used;
    `detail` says which check failed. A deployment fault, not the caller's."""

    code = "trusted_list_invalid"
    status_code = 503
    title = "The configured trusted list cannot be used"


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



# --- signing requests (signing.core.requests): the agency API's refusals -----------------------------------------

class InvalidSigningRequest(SigningError):
    """A field of a signing request is missing, malformed or out of its bounds (the detail names it)."""

    code = "invalid_request"
    status_code = 422
    title = "Invalid signing request"


class InvalidLevel(InvalidSigningRequest):
    """`level` is not one of the PAdES baseline levels of ETSI EN 319 142-1 section 6 (B-B, B-T, B-LT, B-LTA)."""

    code = "invalid_level"


class InvalidFin(InvalidSigningRequest):
    """`signer_fin` is not a FIN (7 letters and digits, keys.identifiers)."""

    code = "invalid_fin"


class SignerRequired(InvalidSigningRequest):
    """Sign mode names the person who signs (`signer_fin`); seal mode names nobody."""

    code = "signer_required"


class InvalidPlacement(InvalidSigningRequest):
    """The visible signature's placement: a page from 1 and a box x1 < x2, y1 < y2 in PDF user-space points."""

    code = "invalid_placement"


class InvalidCallbackUrl(InvalidSigningRequest):
    """The callback URL is not an absolute https URL (http only where the deployment allows it: development)."""

    code = "invalid_callback_url"


class InvalidDocument(InvalidSigningRequest):
    """A document part cannot be read as a file (no content, bad base64, a file name that cannot be stored)."""

    code = "invalid_document"


class TooManyDocuments(InvalidSigningRequest):
    """More documents than ACAR_SIGNING_MAX_DOCUMENTS, or none."""

    code = "too_many_documents"


class InvalidVoen(InvalidSigningRequest):
    """`entity_voen` is not a VÖEN (ten digits, the tenth 1 or 2: keys.identifiers.check_voen)."""

    code = "invalid_voen"


class EntityNotRegistered(SigningError):
    """`entity_voen` names no legal entity of the registry."""

    code = "entity_not_registered"
    status_code = 422
    title = "No such legal entity"


class EntityInactive(SigningError):
    """The legal entity is not active (suspended or liquidated): nobody signs for it."""

    code = "entity_inactive"
    status_code = 409
    title = "The legal entity is not active"


class EntityNotConfigured(SigningError):
    """The legal entity has no signing configuration (`acar entity-signing set`), or its seal form has no seal key:
    Açar does not know how its representatives' signatures are made."""

    code = "entity_not_configured"
    status_code = 409
    title = "The legal entity is not configured for signing"


class MandateInvalid(SigningError):
    """The signer holds no valid mandate with the power "sign_declarations" for the entity named by the request
    (none, not begun, expired, revoked, without that power, or the entity or person not active): refused at the
    approval and, when it lapsed after the approval, at signing time (the request fails with this code and
    nothing is signed)."""

    code = "mandate_invalid"
    status_code = 403
    title = "No valid mandate to sign for this legal entity"

    def __init__(self, detail: str, *, reason: str, audit: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.audit = dict(audit or {})
        """What the signing.request.failed event records of the refused representation (person, entity)."""


class IdempotencyKeyReused(SigningError):
    """The Idempotency-Key was used before by this client with another body (draft-ietf-httpapi-idempotency-key-
    header section 2.7: "If there is an attempt to reuse an idempotency key with a different request payload, the
    resource server MUST reply with a HTTP 422 status code" — Açar answers 409 Conflict as the issue asks, the key
    being bound to the first request)."""

    code = "idempotency_key_reused"
    status_code = 409
    title = "Idempotency-Key reused with another body"


class NoSeal(SigningError):
    """A seal request from an agency client that has no seal registered."""

    code = "no_seal"
    status_code = 409
    title = "No electronic seal registered for this client"


class RequestNotFound(SigningError):
    """No such request for this client (another client's request is not found either)."""

    code = "not_found"
    status_code = 404
    title = "Signing request not found"


class DocumentNotReady(SigningError):
    """The signed document is asked for before the request completed."""

    code = "not_completed"
    status_code = 409
    title = "The signing request has not completed"


class DocumentDeleted(SigningError):
    """The signed document was deleted when the retention ran out (ACAR_SIGNING_RETENTION_HOURS)."""

    code = "document_deleted"
    status_code = 410
    title = "The document was deleted after its retention"


class SealUnusable(SigningError):
    """The agency's seal key or certificate cannot sign now (revoked, expired, its key destroyed): RFC 5280
    section 6.1.3, a signature under it would not validate. ETSI TS 119 102-1 sub-indication of such a signature:
    REVOKED_NO_POE / EXPIRED."""

    code = "seal_unusable"
    status_code = 409
    title = "The agency's seal cannot sign"


# --- validation (signing.core.validation; the API's edges in api/validation.py) -------------------------------------


class ValidationUnavailable(SigningError):
    """The trust policy cannot be built: the trusted list does not verify against its configured signers, cannot be
    fetched, or the built-in CA does not exist yet. A deployment fault, answered 503 (fail closed)."""

    code = "validation_unavailable"
    status_code = 503
    title = "Validation is not available"


class InvalidValidationRequest(InvalidSigningRequest):
    """The request around the PDF cannot be read: no file part, an unknown or repeated field, an `at` that is not an
    RFC 3339 date-time in the past."""

    code = "invalid_request"
    status_code = 422
    title = "Invalid validation request"


class NoFile(InvalidValidationRequest):
    """The multipart body has no part "file" with a filename."""

    code = "no_file"


class ValidationTimedOut(SigningError):
    """A validation at the current time did not finish within its deadline (signing.core.validation
    VALIDATION_DEADLINE): the revocation sources the certificates name were too slow. Nothing was decided; the
    caller may try again (as ETSI TS 119 102-1 TRY_LATER says of missing revocation data)."""

    code = "validation_timeout"
    status_code = 503
    title = "The validation took too long"
