"""The validation service's edges (issue 14): POST /api/v1/validations for programs, /verify for people.

POST /api/v1/validations takes a PDF as multipart/form-data (the file in the part "file", an optional field "at")
or as the raw application/pdf body (with an optional query parameter "at"); "at" (RFC 3339 date-time, in the past)
validates as of that time from the embedded validation data only. The answer is the report
(signing.core.report.ValidationReport.as_json, documented as api.schemas.validation.ValidationReportOut), also for
a document without any signature (all_passed false), or, with Accept: application/pdf, the same report as a PDF
(api.report_pdf) in the language of Accept-Language. Refused input is a problem with its code
(signing.core.errors.PdfRefused: 422, 415 not_pdf, 413 too_large); a body of another type is 415.

Callers: anyone. Without an Authorization header the caller is anonymous and spends ACAR_VALIDATION_ANONYMOUS_RATE_LIMIT
per client address (429 with Retry-After); an agency sends its own client_credentials access token (any scope:
api.auth.optional_client) and is named in the audit instead. A token that does not verify is a 401.

/verify is the citizen's page: GET the upload form, POST (multipart, the same "file" part, csrf_token and the
button's "format" html or pdf) the report as a page or as a PDF download. CSRF as /enroll: a double-submit cookie
(HttpOnly, SameSite=Strict, __Host- over https) and HMAC(cookie, "verify") in the form (api.routes.pages).

The upload: multipart files are spooled by Starlette's parser (memory up to 1 MiB, then a temporary file); a raw
body is streamed into a SpooledTemporaryFile the same way, refused past ACAR_SIGNING_MAX_DOCUMENT_BYTES; the edge
caps either body (api.deps.validation_max_body_bytes). The spool is closed, and so deleted, before the answer is
sent: nothing uploaded outlives the request (api.validation).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Annotated, BinaryIO, Final, cast

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from api.auth import AgencyClient, optional_client
from api.deps import Services
from api.errors import ApiProblem
from api.i18n import Translator
from api.ratelimit import Answer
from api.rendering import page_translator, render
from api.report_view import ReportText, status_class
from api.validation import Caller, parse_at
from api.web import NO_STORE, DoubleSubmitCsrf, provider_of, services_of
from signing.core.errors import InvalidValidationRequest, NoFile, SigningError, TooLarge
from signing.core.report import ValidationReport

router = APIRouter(prefix="/api/v1/validations", tags=["validation"])
page_router = APIRouter(tags=["pages"], include_in_schema=False)
OptionalAgency = Annotated[AgencyClient | None, Depends(optional_client)]
SPOOL_MEMORY: Final = 1024 * 1024
"""Bytes of an upload kept in memory before its spool moves to a temporary file (Starlette's own default)."""
MAX_FIELD_BYTES: Final = 4096
"""A multipart part that is not the file (at, csrf_token, format)."""
FIELDS: Final = frozenset({"at", "csrf_token", "format"})
VERIFY_CSRF: Final = DoubleSubmitCsrf("acar_verify_csrf", "verify", max_age=3600)
PDF: Final = "application/pdf"
REFUSAL_CODES: Final = ("not_pdf", "encrypted_pdf", "damaged_pdf", "too_large", "too_many_pages", "too_many_objects",
                        "inflation_bomb", "reference_loop", "validation_unavailable", "validation_timeout", "no_file",
                        "invalid_request")
"""The refusals the page names (verify.error.<code>); any other PdfRefused is verify.error.pdf_refused."""


# --- reading the request -------------------------------------------------------------------------------------------


@dataclass
class Upload:
    """The spooled document and the small fields that came with it."""

    document: BinaryIO
    fields: dict[str, str]


async def _spool_body(request: Request, spool: IO[bytes], limit: int) -> None:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the document is larger than {limit} bytes (ACAR_SIGNING_MAX_DOCUMENT_BYTES)")
        spool.write(chunk)


async def _raw_upload(request: Request, limit: int) -> Upload:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - closed by `upload`
    try:
        await _spool_body(request, spool, limit)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Upload(cast("BinaryIO", spool), {})


def _parts(form: FormData) -> Upload:
    document: BinaryIO | None = None
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name == "file" and isinstance(value, UploadFile) and document is None:
            document = value.file
        elif name in FIELDS and isinstance(value, str) and name not in fields:
            fields[name] = value
        else:
            raise InvalidValidationRequest(f"unknown or repeated part {name[:40]!r} (parts: file, at)")
    if document is None:
        raise NoFile('the multipart body has no file part "file"')
    return Upload(document, fields)


async def _multipart_upload(request: Request) -> tuple[Upload, FormData]:
    try:
        form = await request.form(max_files=1, max_fields=len(FIELDS) + 1, max_part_size=MAX_FIELD_BYTES)
    except MultiPartException as exc:
        raise InvalidValidationRequest(f"the multipart body cannot be read: {exc.message}") from None
    try:
        return _parts(form), form
    except BaseException:
        await form.close()
        raise


@asynccontextmanager
async def upload(request: Request, limit: int) -> AsyncIterator[Upload]:
    """The request's document, spooled, for the length of the block; the spool is deleted when it ends."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == PDF:
        raw = await _raw_upload(request, limit)
        try:
            yield raw
        finally:
            raw.document.close()
    elif kind == "multipart/form-data":
        parsed, form = await _multipart_upload(request)
        try:
            yield parsed
        finally:
            await form.close()
    else:
        raise ApiProblem(415, "unsupported_media_type", "Unsupported media type",
                         "send the PDF as application/pdf or as the part \"file\" of multipart/form-data")


def wants_pdf(accept: str | None) -> bool:
    """Whether the Accept header (RFC 9110 section 12.5.1) prefers application/pdf to application/json."""
    weights: dict[str, float] = {}
    for item in (accept or "")[:1000].lower().split(","):
        media, *params = item.split(";")
        weight = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[media.strip()] = max(weight, weights.get(media.strip(), 0.0))
    pdf = weights.get(PDF, 0.0)
    return pdf > 0 and pdf > max(weights.get("application/json", 0.0), weights.get("application/*", 0.0),
                                 weights.get("*/*", 0.0) if "application/json" not in weights else 0.0)


def pdf_answer(report: ValidationReport, tr: Translator) -> Response:
    from api.report_pdf import render_report

    name = f"validation-report-{report.sha256[:12]}.pdf"
    return Response(render_report(report, tr), media_type=PDF, headers={
        **NO_STORE, "Content-Disposition": f'attachment; filename="{name}"', "Content-Language": tr.lang})


async def _spend_anonymous(request: Request, services: Services, *, answer: Answer) -> None:
    limits = services.ratelimits
    await limits.spend(limits.budgets.validation_anonymous, [("ip", limits.client_ip(request))], answer=answer)


def _limit(services: Services) -> int:
    return services.settings.signing_max_document_bytes


# --- the API ---------------------------------------------------------------------------------------------------------


@router.post("", response_model=None, openapi_extra={
    "requestBody": {"required": True, "content": {
        PDF: {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "the PDF"},
            "at": {"type": "string", "format": "date-time",
                   "description": "validate as of this past time from the embedded data only"}}}}}},
    "parameters": [{"name": "at", "in": "query", "required": False,
                    "schema": {"type": "string", "format": "date-time"},
                    "description": "validate as of this past time (RFC 3339) from the embedded data only"}]})
async def create_validation(request: Request, agency: OptionalAgency) -> Response:
    """Validate the signatures of a PDF: 200 with the report (ETSI TS 119 102-2 shaped), as JSON or, with
    Accept: application/pdf, as a PDF. Nothing of the document is kept; the validation is audited (its digest)."""
    services: Services = request.app.state.services
    if agency is None:
        await _spend_anonymous(request, services, answer="json")
    caller = Caller(client_id=agency.client_id if agency else None,
                    address=services.ratelimits.client_ip(request))
    async with upload(request, _limit(services)) as sent:
        at = parse_at(sent.fields.get("at") or request.query_params.get("at"), dt.datetime.now(dt.UTC))
        report = await services.validation.validate(sent.document, at=at, caller=caller)
    if wants_pdf(request.headers.get("accept")):
        return pdf_answer(report, page_translator())
    return JSONResponse(report.as_json(), headers=NO_STORE)


# --- the page --------------------------------------------------------------------------------------------------------


def _page(request: Request, *, report: ValidationReport | None = None, error_key: str | None = None,
          status: int = 200) -> Response:
    """The page with a fresh or kept double-submit CSRF pair, and the report or refusal of a POST."""
    secure = provider_of(request).secure_cookies
    cookie, token = VERIFY_CSRF.token(request, secure)
    services = services_of(request)
    tr = page_translator()
    response = render("verify.html", {
        "csrf_token": token, "report": report, "error_key": error_key,
        "words": ReportText(tr), "status_class": status_class, "return_to": "/verify",
        "max_megabytes": _limit(services) // (1024 * 1024)}, status=status)
    VERIFY_CSRF.set_cookie(response, cookie, secure)
    return response


@page_router.get("/verify")
async def verify_page(request: Request) -> Response:
    """The upload form."""
    return _page(request)


def _error_key(exc: SigningError) -> str:
    return f"verify.error.{exc.code}" if exc.code in REFUSAL_CODES else "verify.error.pdf_refused"


@page_router.post("/verify")
async def verify_submit(request: Request) -> Response:
    """Check the uploaded PDF: the report on the page, or (format=pdf) the PDF report as a download."""
    services, provider = services_of(request), provider_of(request)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        return _page(request, error_key="verify.error.no_file", status=400)
    await _spend_anonymous(request, services, answer="page")
    caller = Caller(client_id=None, address=services.ratelimits.client_ip(request))
    try:
        async with upload(request, _limit(services)) as sent:
            token = sent.fields.get("csrf_token")
            if not VERIFY_CSRF.accepts(request, provider.secure_cookies, [token] if token is not None else []):
                return _page(request, error_key="error.form_expired", status=403)
            report = await services.validation.validate(sent.document, at=None, caller=caller)
    except SigningError as exc:  # PdfRefused, InvalidValidationRequest, ValidationUnavailable
        return _page(request, error_key=_error_key(exc), status=exc.status_code)
    if sent.fields.get("format") == "pdf":
        return pdf_answer(report, page_translator())
    return _page(request, report=report)

