"""The citizen's own pages: the landing page, the language switcher, enrollment with an activation code, and the
account page (passkeys, consents). Server-rendered (api.rendering), translated (api.i18n); the passkey ceremonies
themselves are api/static/webauthn.js calling api.routes.passkeys.

CSRF, one design per form:
- the activation-code form (/enroll) acts before anything identifies the browser, so it uses a double-submit
  cookie: a random value in an HttpOnly, SameSite=Strict cookie (`__Host-` prefixed over https, so no sibling
  domain can plant one), and in the form HMAC(cookie value, "enroll-code") (idp.core.sessions.csrf_for_session);
  a cross-site page can neither read nor set the cookie, so it cannot produce the token;
- the account forms carry csrf_for_session(session cookie, "account"), the token the passkey endpoints expect
  in X-CSRF-Token for the same session;
- the passkey step of an enrollment hands webauthn.js the enrollment's own csrf_token.
Every check compares in constant time; a missing or wrong token changes nothing and answers 403.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from api.i18n import DISPLAY_TIMEZONE, LANGUAGE_COOKIE, LANGUAGE_COOKIE_MAX_AGE, LANGUAGES
from api.provider import session_max_age
from api.registry_forms import MandateStateView
from api.rendering import (
    ERROR_CODE,
    FORM_EXPIRED,
    PASSKEY_ERRORS,
    error_message_keys,
    error_page,
    page_translator,
    render,
    safe_return_path,
)
from api.report_view import ReportText, status_class
from api.routes.passkeys import enrolled_value, live_interaction, orm_unit, rename_to
from api.routes.validation import REFUSAL_CODES
from api.units import RequestUnit
from api.validation import Caller
from api.web import (
    ACCOUNT_CSRF_PURPOSE,
    DIRECTOR_CSRF_PURPOSE,
    NO_STORE,
    DoubleSubmitCsrf,
    enrollment_cookie_name,
    provider_of,
    read_form,
    read_page_form,
    services_of,
    session_cookie,
    set_enrollment_cookie,
)
from idp.core.claims import CLAIM_DESCRIPTIONS
from idp.core.errors import InvalidRequest
from idp.core.interfaces import Level, LoginState
from idp.core.loa import at_least
from idp.core.logout import end_session
from idp.core.sessions import csrf_for_session, csrf_matches
from idp.core.webauthn import CredentialNotFound, InvalidPasskeyRequest, PasskeyError, PasskeyView
from idp.sql.account import AccessView, AccountRecords, SessionView
from idp.sql.enrollment import EnrollmentError, EnrollmentRecord, PersonNotActive
from idp.sql.registry import DirectorService, EntityRecord, MandateRecord
from signing.core.errors import SigningError
from signing.sql.history import SignatureEntry, SignatureHistory
from storage.base import utcnow
from storage.direct import SessionTransaction

router = APIRouter(tags=["pages"], include_in_schema=False)
ENROLL_CSRF = DoubleSubmitCsrf("acar_enroll_csrf", "enroll-code", max_age=3600)
MAX_CODE = 100
"""Longer input is no activation code (XXXX-XXXX-XXXX-XXXX-XXXX, spaces allowed): refused before any work."""
CODE_FIELD_LENGTH = 32
"""The field's maxlength (enroll.html): 20 symbols and their separators, with room for spaces. A refused code is
shown again in the field only when it fits."""
ACCOUNT_NOTICES = ("renamed", "removed", "withdrawn", "added", "session_ended")
DIRECTOR_NOTICES = {"director_granted": "account.director.done.granted",
                    "director_revoked": "account.director.done.revoked"}
DIRECTOR_LEVEL: Final[Level] = "substantial"
"""The least level of assurance of a session that grants or revokes a mandate as a director (as the officer
screens': a passkey or an ID card, docs/assurance.md)."""


# --- the landing page ----------------------------------------------------------------------------------------

@router.get("/")
async def home() -> Response:
    """What Açar is, and the way to the account page (sign-in, passkeys) and to enrollment."""
    return render("home.html", {})


# --- language switcher ---------------------------------------------------------------------------------------

@router.get("/language/{lang}")
async def choose_language(request: Request, lang: str,
                          back_to: Annotated[str | None, Query(alias="next", max_length=4000)] = None) -> Response:
    """Remember the citizen's language (cookie acar_lang, a year; it wins over ui_locales and Accept-Language)
    and go back to the page they were on: a local path only, never another site."""
    provider = provider_of(request)
    if lang not in LANGUAGES:
        return error_page("invalid_request", "this language is not offered", status=404)
    response = RedirectResponse(safe_return_path(back_to), status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(LANGUAGE_COOKIE, lang, max_age=LANGUAGE_COOKIE_MAX_AGE, path="/", samesite="lax",
                        secure=provider.secure_cookies, httponly=True)
    return response


@router.get("/error")
async def error_again(error: Annotated[str, Query(max_length=40)] = "invalid_request",
                      message: Annotated[str, Query(max_length=80)] = "error.generic") -> Response:
    """An error page shown again in the language just chosen: only a known message id and an error code travel
    here, never the failed request."""
    return render("error.html", {
        "error": error if ERROR_CODE.fullmatch(error) else "invalid_request",
        "message_key": message if message in error_message_keys() else "error.generic", "detail": None,
        "return_to": None}, status=400)


# --- enrollment ---------------------------------------------------------------------------------------------

def _enroll_path(interaction: str | None) -> str:
    """Where the language switcher of an enrollment page leads back to (the sign-in it returns to kept)."""
    return f"/enroll?interaction={interaction}" if interaction else "/enroll"


def _code_form(request: Request, *, error_key: str | None = None, status: int = 200, code: str = "",
               interaction: str | None = None) -> Response:
    """The activation-code form with its double-submit CSRF pair (the browser's cookie is kept when sound), what
    the citizen typed (kept in the field after a refusal so that a typo can be corrected) and the live sign-in the
    enrollment returns to (api.routes.passkeys)."""
    secure = provider_of(request).secure_cookies
    cookie, token = ENROLL_CSRF.token(request, secure)
    response = render("enroll.html", {"csrf_token": token,
                                      "error_key": error_key, "code_max_length": CODE_FIELD_LENGTH,
                                      "typed": code if len(code) <= CODE_FIELD_LENGTH else "",
                                      "interaction": interaction, "return_to": _enroll_path(interaction)},
                      status=status)
    ENROLL_CSRF.set_cookie(response, cookie, secure)
    return response


def _passkey_step(enrollment: EnrollmentRecord, display_name: str, interaction: str | None) -> Response:
    return render("enroll_passkey.html", {"csrf_token": enrollment.csrf_token, "display_name": display_name,
                                          "interaction": interaction, "return_to": _enroll_path(interaction)})


async def _returning_to(request: Request, value: str | None) -> str | None:
    """The live sign-in of this browser named by `value` (api.routes.passkeys.live_interaction), else None."""
    if not value:
        return None
    async with provider_of(request).unit_of_work(reading=True) as unit:
        return await live_interaction(request, unit.oidc, value)


@router.get("/enroll")
async def enroll_page(request: Request) -> Response:
    """The activation-code form; a browser with an open enrollment goes on to its passkey step (unless its person is
    no longer active: the form, with the person_inactive refusal). ?interaction=<id>
    (the sign-in page's link) makes the enrollment return to that sign-in when it is live in this browser."""
    services, provider = services_of(request), provider_of(request)
    interaction = await _returning_to(request, request.query_params.get("interaction"))
    async with orm_unit(services) as work:
        enrollment = await work.enrollment.current(request.cookies.get(enrollment_cookie_name(provider)))
        name = await work.passkeys.display_name(enrollment.person_id) if enrollment else None
    if enrollment is not None and not enrollment.person_active:  # suspended or deceased since the code was typed
        return _code_form(request, error_key="enroll.error.person_inactive", status=403, interaction=interaction)
    if enrollment is not None:
        return _passkey_step(enrollment, name or "", interaction)
    return _code_form(request, interaction=interaction)


@router.post("/enroll")
async def enroll_submit(request: Request) -> Response:
    """Check the typed activation code (idp.sql.enrollment.EnrollmentService.redeem); on success set the enrollment
    cookie and show the passkey step, else show the form again, with what was typed, and the one refusal every
    refused code gets (400, passkey.error.code_invalid: no oracle), or, for the right code of a person who is not
    active, 403 passkey.error.person_inactive (idp.sql.enrollment.PersonNotActive)."""
    services, provider = services_of(request), provider_of(request)
    try:
        form = await read_form(request)
    except InvalidRequest:
        return _code_form(request, error_key="error.form_expired", status=400)
    interaction = await _returning_to(request, (form.get("interaction") or [""])[0])
    code = (form.get("code") or [""])[0]
    if not ENROLL_CSRF.accepts(request, provider.secure_cookies, form.get("csrf_token", [])):
        return _code_form(request, error_key="error.form_expired", status=403, code=code, interaction=interaction)
    if not code.strip():
        return _code_form(request, error_key="enroll.error.empty", status=400, interaction=interaction)
    if len(code) > MAX_CODE:
        return _code_form(request, error_key="passkey.error.code_invalid", status=400, interaction=interaction)
    await services.ratelimits.spend_on_code(request, code, answer="page")
    try:
        async with orm_unit(services) as work:
            started = await work.enrollment.redeem(code)
    except EnrollmentError as exc:
        key = f"passkey.error.{exc.code}" if exc.code in PASSKEY_ERRORS else "passkey.error.code_invalid"
        if isinstance(exc, PersonNotActive):
            key = "enroll.error.person_inactive"
        return _code_form(request, error_key=key, status=exc.status_code, code=code, interaction=interaction)
    response = _passkey_step(started.enrollment, started.display_name, interaction)
    set_enrollment_cookie(response, provider, started.cookie, session_max_age(started.enrollment.expires_at))
    return response


@router.get("/enroll/done")
async def enroll_done(request: Request) -> Response:
    """The end of an enrollment, for the browser that just finished one (its enrolled cookie); any other visit
    goes to /enroll, which shows the code form or the passkey step of an open enrollment."""
    if enrolled_value(request, provider_of(request)) is None:
        return RedirectResponse("/enroll", status_code=303, headers=NO_STORE)
    return render("enroll_done.html", {})


# --- help ---------------------------------------------------------------------------------------------------

@router.get("/help")
async def help_page() -> Response:
    """Help with passkeys: what to do without a passkey on this device (#no-passkey), when the prompt fails."""
    return render("help.html", {})


# --- account ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ConsentView:
    client_id: str
    client_name: str
    claims: list[str]
    """The claims it receives that the page can name (idp.core.claims.CLAIM_DESCRIPTIONS)."""
    offline: bool
    granted_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DirectedView:
    """An active entity the person directs, with every mandate for it (valid or not)."""

    entity: EntityRecord
    mandates: list[MandateStateView]


@dataclass(frozen=True, slots=True)
class AccountView:
    display_name: str
    level: Level
    directed: list[DirectedView]
    passkeys: list[PasskeyView]
    consents: list[ConsentView]
    sessions: list[SessionView]
    signatures: list[SignatureView]
    access: list[AccessView]
    access_page: int
    access_pages: int


@dataclass(frozen=True, slots=True)
class SignatureView:
    """A signature history entry with the name of the agency that asked."""

    entry: SignatureEntry
    client_name: str


ACCESS_PAGE_SIZE = 20
"""Rows of the access record per page (the latest first; the export holds them all)."""
MAX_PAGE_DIGITS = 6
"""`?page=` of the access record: digits, at most this many; anything else shows the first page."""
SIGNATURE_HISTORY_LIMIT = 100
"""Entries of the signature history the page shows (and the export holds): the latest."""
MAX_DOCUMENT_NUMBER_DIGITS = 4
"""A document's number in its request: anything longer (or not digits) names no document (404)."""
EXPORT_ACCESS_LIMIT = 100_000
"""Access records in one export: far beyond what a person accumulates; the newest are kept."""


async def _client_name(request: Request, client_id: str) -> str:
    client = await provider_of(request).clients.get(client_id)
    return client.name if client else client_id


async def _load_account(request: Request, work: RequestUnit, state: LoginState, *,
                        access_page: int = 1) -> AccountView:
    services = services_of(request)
    consents = [ConsentView(
        client_id=c.client_id, client_name=await _client_name(request, c.client_id),
        claims=sorted(n for n in c.claims if n in CLAIM_DESCRIPTIONS), offline="offline_access" in c.scopes,
        granted_at=c.granted_at) for c in await work.oidc.list_consents(state.person_id)]
    records = AccountRecords(work.tx)
    subject = await work.oidc.subject(state.person_id)
    signatures = [SignatureView(e, await _client_name(request, e.client_id)) for e in
                  await SignatureHistory(work.tx).entries(subject.fin if subject else None,
                                                          limit=SIGNATURE_HISTORY_LIMIT)]
    count = await records.access_count(state.person_id)
    pages = max(1, -(-count // ACCESS_PAGE_SIZE))
    page = min(max(1, access_page), pages)
    directed = []
    if isinstance(work.tx, SessionTransaction):
        directors, now = DirectorService(work.tx.session), utcnow()
        directed = [DirectedView(e, [MandateStateView.at(m, now)
                                     for m in await directors.mandates(state.person_id, e.voen)])
                    for e in await directors.directed(state.person_id)]
    return AccountView(display_name=await work.passkeys.display_name(state.person_id) or "",
                       level=state.level, directed=directed,
                       passkeys=await services.passkeys.credentials(work.passkeys, state.person_id),
                       consents=consents,
                       sessions=await records.sessions(state.person_id, current_id=state.id, now=utcnow()),
                       signatures=signatures,
                       access=await records.access_records(state.person_id, limit=ACCESS_PAGE_SIZE,
                                                           offset=(page - 1) * ACCESS_PAGE_SIZE),
                       access_page=page, access_pages=pages)


def _account_page(view: AccountView, cookie: str, *, notice_key: str | None = None, error_key: str | None = None,
                  status: int = 200, director_form: dict[str, Any] | None = None) -> Response:
    """The account page; `director_form` (voen, errors, values) shows a director's refused form again."""
    form = director_form or {}
    return render("account.html", {
        "directed": view.directed, "level": view.level, "director_level_ok": at_least(view.level, DIRECTOR_LEVEL),
        "director_csrf": csrf_for_session(cookie, DIRECTOR_CSRF_PURPOSE), "director_voen": form.get("voen"),
        "director_errors": form.get("errors", {}), "director_values": form.get("values", {}),
        "director_today": utcnow().astimezone(DISPLAY_TIMEZONE).date().isoformat(),
        "display_name": view.display_name, "passkeys": view.passkeys, "consents": view.consents,
        "sessions": view.sessions, "signatures": view.signatures, "access": view.access,
        "access_page": view.access_page, "access_pages": view.access_pages,
        "csrf_token": csrf_for_session(cookie, ACCOUNT_CSRF_PURPOSE), "notice_key": notice_key,
        "error_key": error_key, "return_to": "/account"}, status=status)


def _signin_page() -> Response:
    return render("account_signin.html", {"title_key": "account.signin.title"}, status=401)


def _done(notice: str) -> Response:
    return RedirectResponse(f"/account?done={notice}", status_code=303, headers=NO_STORE)


def _passkey_error_key(exc: PasskeyError) -> str:
    if isinstance(exc, InvalidPasskeyRequest):
        return "account.error.name_invalid"
    if isinstance(exc, CredentialNotFound):
        return "account.error.passkey_not_found"
    return f"passkey.error.{exc.code}" if exc.code in PASSKEY_ERRORS else "passkey.error.unknown"


@router.get("/account")
async def account_page(request: Request, done: str | None = None, page: str | None = None) -> Response:
    """The signed-in person's sessions, passkeys, consents, signature history and access record (`page`: which
    page of the access record, the latest first); without a session, a page asking to sign in (401)."""
    services, provider = services_of(request), provider_of(request)
    cookie = session_cookie(request, provider)
    async with orm_unit(services) as work:
        state = await provider.login_sessions.current(work.oidc, cookie)
        if state is None or cookie is None:
            return _signin_page()
        wanted = int(page) if page and page.isascii() and page.isdigit() and len(page) <= MAX_PAGE_DIGITS else 1
        view = await _load_account(request, work, state, access_page=wanted)
    notice = f"account.done.{done}" if done in ACCOUNT_NOTICES else DIRECTOR_NOTICES.get(done or "")
    return _account_page(view, cookie, notice_key=notice)


@dataclass(frozen=True, slots=True)
class _AccountPost:
    """A posted account form, checked, inside its unit of work for the signed-in person."""

    request: Request
    form: dict[str, list[str]]
    cookie: str
    work: RequestUnit
    state: LoginState

    async def page(self, error_key: str, status: int) -> Response:
        """The account page again, with what went wrong."""
        return _account_page(await _load_account(self.request, self.work, self.state), self.cookie,
                             error_key=error_key, status=status)


async def _account_post(request: Request, act: Callable[[_AccountPost], Awaitable[Response]]) -> Response:
    """Run `act` on a posted account form: the form's CSRF token checked against the session cookie (else the
    403 page), in one unit of work for the person signed in with it (else the sign-in page); the answer leaves
    after the unit has committed."""
    services, provider = services_of(request), provider_of(request)
    form = await read_page_form(request)
    cookie = session_cookie(request, provider)
    if cookie is None or not csrf_matches(cookie, ACCOUNT_CSRF_PURPOSE, form.get("csrf_token", [])):
        return error_page("invalid_request", FORM_EXPIRED, status=403)
    async with orm_unit(services) as work:
        state = await provider.login_sessions.current(work.oidc, cookie)
        if state is None:
            return _signin_page()
        return await act(_AccountPost(request, form, cookie, work, state))


@router.post("/account/credentials/{credential_id}/rename")
async def rename_passkey(request: Request, credential_id: str) -> Response:
    services = services_of(request)
    passkeys = services.passkeys

    async def rename(post: _AccountPost) -> Response:
        name = await rename_to(services, post.work, post.state.person_id, credential_id,
                               (post.form.get("name") or [""])[0])
        try:
            await passkeys.rename(post.work.passkeys, post.state.person_id, credential_id, name)
        except PasskeyError as exc:
            return await post.page(_passkey_error_key(exc), 404 if isinstance(exc, CredentialNotFound) else 400)
        return _done("renamed")

    return await _account_post(request, rename)


@router.post("/account/credentials/{credential_id}/remove")
async def remove_passkey(request: Request, credential_id: str) -> Response:
    """Without confirm=yes: the confirmation page (nothing changes); with it: the passkey is removed for good."""
    passkeys = services_of(request).passkeys

    async def remove(post: _AccountPost) -> Response:
        if post.form.get("confirm") != ["yes"]:
            owned = await passkeys.credentials(post.work.passkeys, post.state.person_id)
            chosen = next((p for p in owned if p.id == credential_id), None)
            if chosen is None:
                return await post.page("account.error.passkey_not_found", 404)
            others = [p for p in owned if p.id != credential_id and not p.flagged]
            return render("account_remove.html", {
                "passkey": chosen, "last": not others,
                "csrf_token": csrf_for_session(post.cookie, ACCOUNT_CSRF_PURPOSE)})
        try:
            await passkeys.remove(post.work.passkeys, post.state.person_id, credential_id)
        except PasskeyError as exc:
            return await post.page(_passkey_error_key(exc), 404)
        return _done("removed")

    return await _account_post(request, remove)


@router.post("/account/consents/{client_id}/withdraw")
async def withdraw_consent(request: Request, client_id: str) -> Response:
    """The form twin of DELETE /account/consents/{client_id} (api.routes.account): the consent goes, and with it
    every grant (so every token) the client holds for the person."""
    client_id = client_id[:64]

    async def withdraw(post: _AccountPost) -> Response:
        if not await post.work.oidc.withdraw_consent(post.state.person_id, client_id):
            return await post.page("account.error.consent_not_found", 404)
        return _done("withdrawn")

    return await _account_post(request, withdraw)


@router.post("/account/sessions/{sid}/end")
async def end_other_session(request: Request, sid: str) -> Response:
    """End one of the person's other sessions (another browser or device) as a logout there would: its grants
    revoked (except offline_access ones), back-channel logout tokens queued (idp.core.logout.end_session). The
    current session is ended by signing out (/logout, which also clears this browser's cookie): its sid here leads
    there. Another person's session, or an unknown or ended one, is 404 and nothing changes."""
    provider = provider_of(request)
    sid = sid[:65]

    async def end(post: _AccountPost) -> Response:
        if sid == post.state.sid:
            return RedirectResponse("/logout", status_code=303, headers=NO_STORE)
        target = await AccountRecords(post.work.tx).session(post.state.person_id, sid)
        if target is None or target.ended_at is not None or target.expires_at <= utcnow():
            return await post.page("account.error.session_not_found", 404)
        await end_session(post.work.oidc, target, now=utcnow(),
                          retry_seconds=provider.settings.backchannel_logout_retry_seconds)
        return _done("session_ended")

    response = await _account_post(request, end)
    delivery = getattr(request.app.state, "backchannel", None)
    if delivery is not None and response.status_code == 303:
        delivery.kick()
    return response


@router.get("/account/signatures/{request_id}/{n}/report")
async def signature_report(request: Request, request_id: str, n: str) -> Response:
    """The validation report (ETSI TS 119 102-2, api.validation) of a signed document in the person's signature
    history, made now from the stored signed PDF while it is retained (ACAR_SIGNING_RETENTION_HOURS); after that
    the page says the document was deleted and only its digests remain. Another person's document is 404."""
    services, provider = services_of(request), provider_of(request)
    cookie = session_cookie(request, provider)
    async with orm_unit(services) as work:
        state = await provider.login_sessions.current(work.oidc, cookie)
        if state is None or cookie is None:
            return _signin_page()
        subject = await work.oidc.subject(state.person_id)
        number = int(n) if n.isascii() and n.isdigit() and len(n) <= MAX_DOCUMENT_NUMBER_DIGITS else None
        document = None if number is None else await SignatureHistory(work.tx).document(
            subject.fin if subject else None, request_id, number)
    if document is None:
        return error_page("not_found", "this document is not in your signature history", status=404)
    report, error_key, status = None, None, 200
    if document.signed is not None:
        caller = Caller(client_id=None, address=services.ratelimits.client_ip(request), name=state.person_id)
        try:
            report = await services.validation.validate(io.BytesIO(document.signed), at=None, caller=caller)
        except SigningError as exc:  # the validation service unavailable or timed out
            error_key = f"verify.error.{exc.code}" if exc.code in REFUSAL_CODES else "verify.error.pdf_refused"
            status = exc.status_code
    return render("account_report.html", {
        "filename": document.filename, "report": report, "error_key": error_key, "purged": document.signed is None,
        "purged_at": document.purged_at, "words": ReportText(page_translator()), "status_class": status_class,
        "return_to": f"/account/signatures/{request_id}/{n}/report"}, status=status)


@router.get("/account/export")
async def export_account(request: Request) -> Response:
    """Everything the account page shows about the signed-in person, as one JSON download (their person record,
    sessions, passkeys, consents, signature history, the whole access record, the entities they direct and the
    mandates they granted as a director, each naming its representative's FIN, which the director typed): only rows
    bound to this person, nothing else about anyone else. Without a session: 401 and the sign-in page."""
    services, provider = services_of(request), provider_of(request)
    cookie = session_cookie(request, provider)
    async with orm_unit(services) as work:
        state = await provider.login_sessions.current(work.oidc, cookie)
        if state is None or cookie is None:
            return _signin_page()
        view = await _load_account(request, work, state)
        subject = await work.oidc.subject(state.person_id)
        access = await AccountRecords(work.tx).access_records(state.person_id, limit=EXPORT_ACCESS_LIMIT)
        directed: list[EntityRecord] = []
        granted: list[MandateRecord] = []
        if isinstance(work.tx, SessionTransaction):
            directors = DirectorService(work.tx.session)
            directed = await directors.directed(state.person_id, active_only=False)
            granted = await directors.granted_by(state.person_id)
        await work.oidc.audit("account.exported", actor=state.person_id, subject=state.person_id,
                              detail={"access_records": len(access)})
    body = {
        "exported_at": utcnow().isoformat(),
        "person": {"fin": subject.fin if subject else None,
                   "given_name": subject.given_name if subject else None,
                   "family_name": subject.family_name if subject else None,
                   "birthdate": subject.birthdate.isoformat() if subject and subject.birthdate else None,
                   "display_name": view.display_name},
        "sessions": [{"sid": s.sid, "signed_in_at": s.auth_time.isoformat(), "started_at": s.created_at.isoformat(),
                      "expires_at": s.expires_at.isoformat(), "level": s.level, "amr": list(s.amr),
                      "current": s.current} for s in view.sessions],
        "passkeys": [{"name": p.name, "created_at": p.created_at.isoformat(),
                      "last_used_at": p.last_used_at.isoformat() if p.last_used_at else None, "level": p.level,
                      "synced": p.synced, "blocked": p.flagged} for p in view.passkeys],
        "consents": [{"client_id": c.client_id, "client_name": c.client_name, "claims": c.claims,
                      "offline_access": c.offline, "granted_at": c.granted_at.isoformat()} for c in view.consents],
        "signatures": [{**s.entry.as_json(), "client_name": s.client_name} for s in view.signatures],
        "access_record": [a.as_json() for a in access],
        "companies_directed": [{"voen": e.voen, "name": e.name, "legal_form": e.legal_form, "status": e.status}
                               for e in directed],
        "mandates_granted_as_director": [
            {"id": m.id, "voen": m.voen, "entity_name": m.entity_name, "fin": m.fin, "powers": sorted(m.powers),
             "valid_from": m.valid_from.isoformat(), "valid_to": m.valid_to.isoformat() if m.valid_to else None,
             "revoked_at": m.revoked_at.isoformat() if m.revoked_at else None}
            for m in granted],
    }
    return Response(json.dumps(body, ensure_ascii=False, indent=2), media_type="application/json", headers={
        **NO_STORE, "Content-Disposition": 'attachment; filename="acar-account.json"'})
