"""The agency signing API (issue 13, "Agency API"): create a signing request, follow it, download the results.

Agencies authenticate with an access token this IdP issued them by client_credentials, carrying the scope
`signing` (api.auth.require_client_scope; RFC 6750 Bearer challenges). A request is visible to the client that
created it only: any other client gets the same 404 as for an id that does not exist. Every refusal is an RFC
9457 problem with a machine `code` (signing.core.errors, answered by api.problems).

POST takes either multipart/form-data (one `document` file part per PDF, the other fields as form fields) or
application/json (documents as base64). Its body may be larger than the edge's ACAR_MAX_BODY_BYTES: the body limit
middleware gives this path ACAR_SIGNING_MAX_REQUEST_BYTES (api.app). Multipart files are spooled to disk by the
parser, not held in memory while the others arrive; each is read once for the input policy and stored. A JSON body
is read once, parsed, and dropped; each base64 text is dropped as soon as it is decoded.
"""

from __future__ import annotations

import binascii
import io
import re
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from api.auth import SIGNING_SCOPE, AgencyClient, require_client_scope
from api.deps import Services
from api.errors import ApiProblem
from api.schemas.callbacks import COMPLETION_CALLBACK
from api.schemas.signing import MULTIPART_FORM, SigningRequestCreate, SigningRequestOut
from api.text import NOT_JSON, UnreadableJson, parse_json
from api.web import NO_STORE
from signing.core.errors import InvalidDocument, InvalidPlacement, InvalidSigningRequest, TooManyDocuments
from signing.core.interfaces import Mode
from signing.core.requests import Submission, SubmittedDocument

router = APIRouter(prefix="/api/v1/signing-requests", tags=["signing"])
Agency = Annotated[AgencyClient, Depends(require_client_scope(SIGNING_SCOPE))]
RequestId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
FORM_FIELDS = frozenset({"mode", "signer_fin", "entity_voen", "reason", "location", "level", "placement",
                         "callback_url"})
MAX_FIELD_BYTES = 64 * 1024
"""A multipart field that is not a document (the parser refuses a longer one)."""


_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BASE64_SLICE: Final = 4 * 1024 * 1024
"""Characters decoded at a time (a multiple of 4: a quantum never straddles two slices)."""


def _b64decode(text: str) -> bytes:
    """base64.b64decode(text, validate=True), without its ASCII copy of the whole text beside the text and the
    decoded bytes: checked whole (RFC 4648 section 4 alphabet, padding only at the end), decoded in slices."""
    if not _BASE64.fullmatch(text):
        raise binascii.Error("not base64")
    decoded = io.BytesIO()
    for start in range(0, len(text), _BASE64_SLICE):
        decoded.write(binascii.a2b_base64(text[start:start + _BASE64_SLICE]))
    return decoded.getvalue()


async def _json_submission(request: Request) -> Submission:
    body = bytearray()  # not request.body(), which keeps its bytes for the rest of the request
    async for chunk in request.stream():
        body += chunk
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSigningRequest(f"the body {NOT_JSON}") from None
    del body  # json.loads(body) would hold the bytes, their decoded text and the parsed strings at once
    try:
        raw = parse_json(text)
    except UnreadableJson as exc:
        raise InvalidSigningRequest(f"the body {exc.reason}") from None
    del text  # the parsed text is all that is kept: a body is never held twice
    try:
        parsed = SigningRequestCreate.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()[:5])
        raise InvalidSigningRequest(f"the body does not match the schema: {fields}") from None
    del raw
    documents = []
    for n, document in enumerate(parsed.documents, start=1):
        try:
            content = _b64decode(document.content)
        except (binascii.Error, ValueError):
            raise InvalidDocument(f"document {n}: content is not base64 (RFC 4648 section 4)") from None
        document.content = ""  # the text form is not kept beside the bytes
        documents.append(SubmittedDocument(filename=document.filename, content=content))
    return Submission(mode=parsed.mode, documents=documents, signer_fin=parsed.signer_fin, reason=parsed.reason,
                      location=parsed.location, level=parsed.level,
                      placement=parsed.placement.model_dump() if parsed.placement is not None else None,
                      callback_url=parsed.callback_url, entity_voen=parsed.entity_voen)


async def _multipart_submission(request: Request, max_documents: int) -> Submission:
    try:
        form = await request.form(max_files=max_documents + 1, max_fields=len(FORM_FIELDS) + 1,
                                  max_part_size=MAX_FIELD_BYTES)
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise TooManyDocuments(f"a request carries at most {max_documents} documents "
                                   "(ACAR_SIGNING_MAX_DOCUMENTS)") from None
        raise InvalidSigningRequest(f"the multipart body cannot be read: {exc.message}") from None
    try:
        fields: dict[str, str] = {}
        documents: list[SubmittedDocument] = []
        for name, value in form.multi_items():
            if name == "document":
                if not isinstance(value, UploadFile):
                    raise InvalidDocument("a document part must be a file (with a filename)")
                documents.append(SubmittedDocument(filename=value.filename, content=await value.read()))
                await value.close()
                continue
            if name not in FORM_FIELDS or not isinstance(value, str):
                raise InvalidSigningRequest(f"unknown or repeated field {name[:40]!r} (fields: document, "
                                            f"{', '.join(sorted(FORM_FIELDS))})")
            if name in fields:
                raise InvalidSigningRequest(f"the field {name} is repeated")
            fields[name] = value
    finally:
        await form.close()  # the spooled files go now, not when the request ends
    placement: Any = None
    if fields.get("placement"):
        try:
            placement = parse_json(fields["placement"])
        except UnreadableJson as exc:
            raise InvalidPlacement(f'placement {exc.reason}: {{"page": 1, "box": [x1, y1, x2, y2]}}') from None
        if not isinstance(placement, dict):
            raise InvalidPlacement('placement must be a JSON object: {"page": 1, "box": [x1, y1, x2, y2]}')
    return Submission(mode=fields.get("mode"), documents=documents, signer_fin=fields.get("signer_fin") or None,
                      reason=fields.get("reason"), location=fields.get("location"), level=fields.get("level"),
                      placement=placement, callback_url=fields.get("callback_url"),
                      entity_voen=fields.get("entity_voen") or None)


def _idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header (draft-ietf-httpapi-idempotency-key-header section 2: an sf-string; a bare token
    is taken as it is)."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or any(not " " <= ch <= "~" for ch in value):
        raise InvalidSigningRequest("the Idempotency-Key must be printable ASCII")
    return value


@router.post("", status_code=201, response_model=SigningRequestOut, openapi_extra={
    "callbacks": COMPLETION_CALLBACK,  # api.schemas.callbacks
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SigningRequestCreate"}},
        "multipart/form-data": {"schema": MULTIPART_FORM}}},
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                    "description": "the same key with the same body answers the same request (200); with another "
                                   "body 409 idempotency_key_reused"}]})
async def create_signing_request(request: Request, response: Response, agency: Agency) -> SigningRequestOut:
    """Create a signing request: 201 with its id, documents and (sign mode) the signer's approval URL. Seal mode
    is signed at once with the agency's seal; poll GET /api/v1/signing-requests/{id}."""
    services: Services = request.app.state.services
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    key = _idempotency_key(request)
    if kind == "application/json":
        submission = await _json_submission(request)
    elif kind == "multipart/form-data":
        submission = await _multipart_submission(request, services.settings.signing_max_documents)
    else:
        raise ApiProblem(415, "unsupported_media_type", "Unsupported media type",
                         "send multipart/form-data (document parts) or application/json (base64 documents)")
    view, created = await services.signing.requests.create(agency.client_id, submission, idempotency_key=key)
    if created and view.mode is Mode.SEAL and services.settings.signing_inprocess_worker:
        services.signing.worker.kick()
    response.status_code = 201 if created else 200
    response.headers.update(NO_STORE)
    response.headers["Location"] = f"/api/v1/signing-requests/{view.id}"
    return SigningRequestOut.of(view, issuer=services.settings.issuer)


@router.get("/{request_id}", response_model=SigningRequestOut)
async def get_signing_request(request_id: RequestId, request: Request, response: Response,
                              agency: Agency) -> SigningRequestOut:
    """The request's state (pending, approved, signing, completed, rejected, expired, failed with a reason) and
    its documents."""
    services: Services = request.app.state.services
    view = await services.signing.requests.get(request_id, agency.client_id)
    response.headers.update(NO_STORE)
    return SigningRequestOut.of(view, issuer=services.settings.issuer)


@router.get("/{request_id}/documents/{n}", response_class=Response, responses={
    200: {"description": "the signed PDF", "content": {"application/pdf": {"schema": {"type": "string",
                                                                                       "format": "binary"}}}},
    409: {"description": "the request has not completed (not_completed)"},
    410: {"description": "deleted after the retention (document_deleted)"}})
async def get_signed_document(request_id: RequestId, n: Annotated[int, Path(ge=1, le=1000)], request: Request,
                              agency: Agency) -> Response:
    """The signed PDF of document n (from 1) of a completed request."""
    services: Services = request.app.state.services
    view, signed = await services.signing.requests.signed_document(request_id, agency.client_id, n)
    filename = next(d.filename for d in view.documents if d.n == n)
    ascii_name = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename)
    return Response(signed, media_type="application/pdf", headers={
        **NO_STORE, "Content-Disposition": f'attachment; filename="{ascii_name}"'})
