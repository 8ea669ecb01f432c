"""The signer's approval page of a sign-mode request (issue 13, "Signer approval"): /sign/<id>, the URL an agency
hands its signer.

- GET /sign/{id}: the signer must be signed in to Açar at the approval level (ACAR_SIGNING_APPROVAL_LEVEL, default
  high); without such a session the browser goes through the ordinary login (AuthorizationService.sign_in_for_page:
  a login of the agency's that returns here and issues nothing), and the signed-in person's FIN must be the
  request's signer FIN. A request on behalf of a legal entity (issue 16) is shown only while the signer holds a
  valid mandate with the power "sign_declarations" for it ("on behalf of <entity> (VÖEN)"); otherwise a translated
  page names the reason (sign.mandate.<reason>), and the approval itself checks again. The page shows the agency,
  reason, each file's name, page count, SHA-256 and a preview of
  every page, with Approve and Reject. A request that is unknown, decided or expired gets a translated page.
- GET /sign/{id}/documents/{n}/pages/{p}.png: one page's preview (signing.core.preview: rendered in a bounded
  renderer process, cached in memory by document digest and page), for the signer only.
- POST /sign/{id}/options and /sign/{id}/approve (JSON, api/static/webauthn.js data-passkey="approve"): a WebAuthn
  assertion whose challenge is derived from the request id and the documents' digests (signing.core.approval),
  over the signer's own credentials, verified as a passkey login is (idp.core.webauthn.verify_bound_assertion:
  signature, counter, origin, RP ID, user verification and level), then the challenge checked again against the
  request as it is now, and the request approved with its jobs (ApprovalService.approve), in one unit of work.
- POST /sign/{id}/reject (form): the request is rejected.

CSRF: the JSON endpoints carry X-CSRF-Token and the reject form a csrf_token field, both
csrf_for_session(session cookie, "sign"), compared in constant time; an Origin header must be one of the WebAuthn
origins. signing/ never imports idp/: the assertion's verification is composed here.
"""

from __future__ import annotations

import base64
import binascii
import collections
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import LoginRequired
from api.json_endpoints import check_csrf, credential_member, read_json, text_member
from api.problems import coded_problem
from api.provider import Provider
from api.rendering import render
from api.units import RequestUnit
from api.web import NO_STORE, provider_of, read_page_form, services_of, session_cookie
from idp.core import loa
from idp.core.authorize import token_hash
from idp.core.interfaces import Level, LoginState, Subject
from idp.core.sessions import csrf_for_session, csrf_matches
from idp.core.webauthn import InvalidPasskeyRequest
from signing.core.approval import (
    ApprovalError,
    ApprovalExpired,
    ApprovalRequest,
    ApprovalRequestNotFound,
    ApprovalService,
    ApprovalStore,
    EntityUnavailable,
    MandateRefused,
    RequestNotPending,
    VerifiedAssertion,
    WrongSigner,
)
from signing.core.interfaces import MandateRefusal
from signing.core.preview import PreviewError, PreviewRenderer
from storage.direct import SessionTransaction, Transaction

router = APIRouter(tags=["pages"], include_in_schema=False)
"""The pages (translated error pages for refused text, api.text.PAGE_TAGS)."""
json_router = APIRouter(tags=["signing approval"])
"""The JSON calls of webauthn.js (documented: api.openapi.PASSKEY_OPERATIONS)."""
CSRF_PURPOSE = "sign"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STATES = ("approved", "signing", "completed", "rejected", "expired", "failed")
"""The states a decided request's page names (sign.state.<state>)."""
MANDATE_REASONS = frozenset(reason.value for reason in MandateRefusal)
"""The refusals of a request on behalf of a legal entity the page translates (sign.mandate.<reason>)."""


ApprovalStores = Callable[[Transaction], ApprovalStore]
"""The approval store on a unit of work's transaction (signing.sql)."""
SignerKeys = Callable[[AsyncSession, Subject], Awaitable[str]]
"""The id of the signing key of a person (made on first use) in the approval's ORM session (api.deps)."""


class PreviewCache:
    """Rendered pages kept in memory by (document SHA-256, page, size), least recently used first out, up to
    `max_bytes`: a signer paging back and forth renders each page once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pages: collections.OrderedDict[tuple[str, int, int], bytes] = collections.OrderedDict()
        self._size = 0

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        png = self._pages.get(key)
        if png is not None:
            self._pages.move_to_end(key)
        return png

    def put(self, key: tuple[str, int, int], png: bytes) -> None:
        if len(png) > self.max_bytes or key in self._pages:
            return
        self._pages[key] = png
        self._size += len(png)
        while self._size > self.max_bytes:
            _, dropped = self._pages.popitem(last=False)
            self._size -= len(dropped)


@dataclass
class Approval:
    """What the approval pages need (built in api.deps from the settings)."""

    service: ApprovalService
    stores: ApprovalStores
    previews: PreviewRenderer
    level: Level
    """The level of assurance the signer signs in and approves at (ACAR_SIGNING_APPROVAL_LEVEL)."""
    signer_keys: SignerKeys
    """The key an approved request is signed with: the signer's own, made on first use (signing.sql.signers)."""
    cache: PreviewCache = field(default_factory=lambda: PreviewCache(64 * 1024 * 1024))


class ApprovalUnavailable(ApprovalError):
    """This deployment has no approval store wired (api.deps.build_services): a deployment error, never a 500."""

    code = "approval_unavailable"
    status_code = 503
    title = "Signing approvals are not available"


def approval_of(request: Request) -> Approval:
    approval = services_of(request).approval
    if approval is None:
        raise ApprovalUnavailable("signing approvals are not available on this server")
    return approval


@dataclass(frozen=True, slots=True)
class _Signer:
    """The signed-in signer of the request, inside the request's unit of work."""

    state: LoginState
    fin: str
    cookie: str
    request: ApprovalRequest
    store: ApprovalStore
    work: RequestUnit


# --- pages -------------------------------------------------------------------------------------------------------

def _state_page(key: str, *, status: int, request_id: str | None = None) -> Response:
    """A request that cannot be approved here: unknown, decided, expired, or another person's."""
    return render("sign_state.html", {"message_key": key, "request_id": request_id}, status=status)


def _entity_refusal_page(exc: MandateRefused | EntityUnavailable, request_id: str) -> Response:
    """A request on behalf of a legal entity the signer may not sign for: the translated reason."""
    if isinstance(exc, EntityUnavailable):
        return _state_page("sign.error.entity_not_configured", status=409, request_id=request_id)
    reason = exc.reason if exc.reason in MANDATE_REASONS else "no_mandate"
    return _state_page(f"sign.mandate.{reason}", status=403, request_id=request_id)


def _refusal_page(exc: ApprovalError, request_id: str) -> Response:
    if isinstance(exc, ApprovalRequestNotFound):
        return _state_page("sign.error.not_found", status=404)
    if isinstance(exc, WrongSigner):
        return _state_page("sign.error.wrong_signer", status=403, request_id=request_id)
    if isinstance(exc, ApprovalExpired):
        return _state_page("sign.state.expired", status=410, request_id=request_id)
    if isinstance(exc, (MandateRefused, EntityUnavailable)):
        return _entity_refusal_page(exc, request_id)
    if isinstance(exc, RequestNotPending):
        state = exc.state if exc.state in STATES else "decided"
        return _state_page(f"sign.state.{state}", status=409, request_id=request_id)
    return _state_page("sign.error.generic", status=exc.status_code, request_id=request_id)


def _valid_id(request_id: str) -> bool:
    return bool(_REQUEST_ID.fullmatch(request_id))


async def _session(request: Request, provider: Provider, work: RequestUnit) -> tuple[LoginState, str] | None:
    cookie = session_cookie(request, provider)
    state = await provider.login_sessions.current(work.oidc, cookie)
    if state is None or cookie is None:
        return None
    return state, cookie


async def _fin_of(work: RequestUnit, person_id: str) -> str:
    subject = await work.oidc.subject(person_id)
    return subject.fin if subject is not None and subject.fin else ""


@router.get("/sign/{request_id}")
async def approval_page(request: Request, request_id: str) -> Response:
    """The approval page (see the module docstring). It reads in a reading unit; only the way through the login
    writes (its pending request), in a unit of its own."""
    services, provider = services_of(request), provider_of(request)
    if not _valid_id(request_id):
        return _state_page("sign.error.not_found", status=404)
    try:
        approval = approval_of(request)
        async with RequestUnit.on(services.direct, reading=True) as work:
            store = approval.stores(work.tx)
            found = await approval.service.waiting(store, request_id)
            signed_in = await _session(request, provider, work)
            if signed_in is not None and _reaches(signed_in[0].level, approval.level):
                state, cookie = signed_in
                fin = await _fin_of(work, state.person_id)
                found = await approval.service.pending(store, request_id, fin=fin)
                represented = await approval.service.representation(found, fin)  # MandateRefused: the page says why
                client = await provider.clients.get(found.client_id)
                return render("sign.html", {
                    "request": found, "client_name": client.name if client else found.client_id,
                    "csrf_token": csrf_for_session(cookie, CSRF_PURPOSE), "level": approval.level,
                    "represented": represented})
        async with RequestUnit.on(services.direct) as work:
            return await _through_login(request, work, found)
    except ApprovalError as exc:
        return _refusal_page(exc, request_id)


async def _through_login(request: Request, work: RequestUnit, found: ApprovalRequest) -> Response:
    """The ordinary login page, on behalf of the agency, at the approval level, returning to the approval page
    (AuthorizationService.sign_in_for_page); bound to this browser as /authorize binds its logins, and counted
    like /authorize per IP (it stores a pending request)."""
    services, provider, approval = services_of(request), provider_of(request), approval_of(request)
    limits = services.ratelimits
    await limits.spend(limits.budgets.authorize, [("ip", limits.client_ip(request))], answer="page")
    client = await provider.clients.get(found.client_id)
    if client is None or client.disabled:
        raise ApprovalRequestNotFound("the agency of this request is no longer registered")
    browser_cookie = request.cookies.get(provider.browser_cookie_name)
    fresh = browser_cookie is None or not 20 <= len(browser_cookie) <= 100
    cookie = secrets.token_urlsafe(32) if fresh or browser_cookie is None else browser_cookie
    login = await provider.authorization.sign_in_for_page(
        work.oidc, client=client, return_to=f"/sign/{found.id}", level=approval.level, browser=token_hash(cookie))
    response = RedirectResponse(f"/interaction/{login.pending.id}", status_code=303, headers=NO_STORE)
    if fresh:
        response.set_cookie(provider.browser_cookie_name, cookie, path="/", httponly=True, samesite="lax",
                            secure=provider.secure_cookies)
    return response


def _reaches(level: Level, required: Level) -> bool:
    return loa.at_least(level, required)


@router.get("/sign/{request_id}/documents/{n}/pages/{page}.png")
async def page_preview(request: Request, request_id: str, n: str, page: str) -> Response:
    """One page of one document, as PNG, for the signed-in signer of a pending request (401 without a session at
    the approval level, the refusal's status for another person or a decided request, 404 for no such page, a
    document or page number that is not one included: an image URL, so no problem document)."""
    if not _valid_id(request_id) or not _number(n) or not _number(page):
        return Response(status_code=404, headers=NO_STORE)
    number = int(page)
    found = await _page_source(request, request_id, int(n), number)
    if isinstance(found, int):
        return Response(status_code=found, headers=NO_STORE)
    key, pages, content = found
    approval = approval_of(request)
    png = approval.cache.get(key)
    if png is None:
        try:
            png = (await approval.previews.render_page(content, number, pages=pages)).png
        except PreviewError as exc:
            return coded_problem(request, exc.status_code, exc.code, exc.title, exc.detail, headers=NO_STORE)
        approval.cache.put(key, png)
    return Response(png, media_type="image/png", headers={
        "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'"})


def _number(value: str) -> bool:
    """A document or page number as the previews' URLs write it: 1 to 6 ASCII digits."""
    return 0 < len(value) <= 6 and value.isascii() and value.isdigit()


async def _page_source(request: Request, request_id: str, n: int,
                       page: int) -> int | tuple[tuple[str, int, int], int, bytes]:
    """The cache key, page count and bytes of the document a preview is asked of, or the status refusing it."""
    services, provider = services_of(request), provider_of(request)
    approval = services.approval
    if approval is None:
        return ApprovalUnavailable.status_code
    async with RequestUnit.on(services.direct, reading=True) as work:
        signed_in = await _session(request, provider, work)
        if signed_in is None or not _reaches(signed_in[0].level, approval.level):
            return 401
        store = approval.stores(work.tx)
        try:
            found = await approval.service.pending(store, request_id, fin=await _fin_of(work, signed_in[0].person_id))
        except ApprovalError as exc:
            return exc.status_code
        document = next((d for d in found.documents if d.n == n), None)
        if document is None or not 1 <= page <= document.pages:
            return 404
        content = await store.document_content(request_id, n)
    if content is None:
        return 404
    return (document.sha256, page, approval.previews.policy.max_side), document.pages, content


# --- the decision ------------------------------------------------------------------------------------------------

async def _signer(request: Request, work: RequestUnit, request_id: str) -> _Signer:
    """The signed-in signer of the still-pending request, or the refusal (LoginRequired, an ApprovalError)."""
    provider = provider_of(request)
    signed_in = await _session(request, provider, work)
    if signed_in is None:
        raise LoginRequired("sign in again to approve this request")
    approval = approval_of(request)
    if not _reaches(signed_in[0].level, approval.level):
        raise LoginRequired("sign in again to approve this request")
    state, cookie = signed_in
    fin = await _fin_of(work, state.person_id)
    store = approval.stores(work.tx)
    found = await approval.service.pending(store, request_id, fin=fin)
    return _Signer(state=state, fin=fin, cookie=cookie, request=found, store=store, work=work)


def _check_csrf(request: Request, cookie: str) -> None:
    check_csrf(request, services_of(request), csrf_for_session(cookie, CSRF_PURPOSE))


def _approval_problem(request: Request, exc: ApprovalError) -> JSONResponse:
    return coded_problem(request, exc.status_code, exc.code, exc.title, exc.detail, headers=NO_STORE)


def _binding(request_id: str) -> str:
    """The passkey ceremony's binding (idp.core.webauthn: never an authorization request's id, which has no ':')."""
    return f"sign:{request_id}"


@json_router.post("/sign/{request_id}/options")
async def approval_options(request: Request, request_id: str) -> Response:
    """-> {"ceremony", "publicKey"}: PublicKeyCredentialRequestOptions whose challenge is the approval challenge of
    the request (signing.core.approval), allowing the signer's own credentials. The body, if any, is not read (the
    X-CSRF-Token header, which no cross-site form or simple request can send, guards the call)."""
    services = services_of(request)
    if not _valid_id(request_id):
        return _approval_problem(request, ApprovalRequestNotFound("there is no signing request at this address"))
    limits = services.ratelimits  # each answer stores a challenge: counted per IP before anything is written
    await limits.spend(limits.budgets.passkey_options, [("ip", limits.client_ip(request))], answer="json")
    try:
        async with RequestUnit.on(services.direct) as work:
            signer = await _signer(request, work, request_id)
            _check_csrf(request, signer.cookie)
            approval = approval_of(request)
            ceremony = await services.passkeys.bound_assertion_options(
                work.passkeys, person_id=signer.state.person_id, binding=_binding(request_id),
                challenge=approval.service.challenge(signer.request).value, required_level=approval.level)
    except ApprovalError as exc:
        return _approval_problem(request, exc)
    return JSONResponse({"ceremony": ceremony.id, "publicKey": ceremony.options}, headers=NO_STORE)


def _client_data(credential: dict[str, Any]) -> bytes:
    response = credential.get("response")
    value = response.get("clientDataJSON") if isinstance(response, dict) else None
    if not isinstance(value, str) or len(value) > 8192:
        raise InvalidPasskeyRequest("the credential has no clientDataJSON")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPasskeyRequest("clientDataJSON is not base64url") from None


@json_router.post("/sign/{request_id}/approve")
async def approve(request: Request, request_id: str) -> Response:
    """{"ceremony", "credential"} -> {"redirect": "/sign/<id>"}: the assertion verified (every check of a passkey
    login, the ceremony bound to this request, the credential the signer's), its challenge checked against the
    request's documents as they are now, and the request approved with one job per document."""
    services = services_of(request)
    body = await read_json(request)
    ceremony = text_member(body, "ceremony")
    credential = credential_member(body, "credential")
    assert ceremony is not None  # noqa: S101 - required
    if not _valid_id(request_id):
        return _approval_problem(request, ApprovalRequestNotFound("there is no signing request at this address"))
    limits = services.ratelimits  # every attempt, before the assertion is verified
    await limits.spend(limits.budgets.passkey_login, [("ip", limits.client_ip(request))], answer="json")
    try:
        # in an ORM session: the signer's key and certificate are made there on first use (signing.sql.signers)
        async with RequestUnit.with_orm(services.direct, services.sessions, services.enrollment_policy) as work:
            signer = await _signer(request, work, request_id)
            _check_csrf(request, signer.cookie)
            approval = approval_of(request)
            verified = await services.passkeys.verify_bound_assertion(
                work.passkeys, ceremony_id=ceremony, person_id=signer.state.person_id, binding=_binding(request_id),
                credential=credential, required_level=approval.level)

            async def signing_key() -> str:
                subject = await work.oidc.subject(signer.state.person_id)
                assert isinstance(work.tx, SessionTransaction)  # noqa: S101 - RequestUnit.with_orm
                assert subject is not None  # noqa: S101 - the session's person
                return await approval.signer_keys(work.tx.session, subject)

            await approval.service.approve(signer.store, request_id, VerifiedAssertion(
                person_id=signer.state.person_id, fin=signer.fin, credential_id=verified.credential_id,
                client_data_json=_client_data(credential), level=verified.method.level), signing_key=signing_key)
    except ApprovalError as exc:
        return _approval_problem(request, exc)
    return JSONResponse({"redirect": f"/sign/{request_id}"}, headers=NO_STORE)


@router.post("/sign/{request_id}/reject")
async def reject(request: Request, request_id: str) -> Response:
    """The signer rejects the request (a form: csrf_token); then the page says so."""
    services, provider = services_of(request), provider_of(request)
    form = await read_page_form(request)
    if not _valid_id(request_id):
        return _state_page("sign.error.not_found", status=404)
    cookie = session_cookie(request, provider)
    if cookie is None or not csrf_matches(cookie, CSRF_PURPOSE, form.get("csrf_token", [])):
        return _state_page("sign.error.form_expired", status=403, request_id=request_id)
    try:
        async with RequestUnit.on(services.direct) as work:
            signer = await _signer(request, work, request_id)
            await approval_of(request).service.reject(signer.store, request_id, person_id=signer.state.person_id,
                                          fin=signer.fin, level=signer.state.level)
    except ApprovalError as exc:
        return _refusal_page(exc, request_id)
    except LoginRequired:
        pass  # the page sends the browser through the login first
    return RedirectResponse(f"/sign/{request_id}", status_code=303, headers=NO_STORE)
