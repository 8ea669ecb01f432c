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
