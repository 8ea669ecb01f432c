"""Passkey JSON endpoints called by the pages' JavaScript: login, registration, enrollment, credential management.

JSON in, JSON out. Errors are RFC 9457 problems (application/problem+json) with an extra member "code", the
machine code of idp.core.webauthn / idp.sql.enrollment (or "csrf") that the pages translate.

CSRF: every state-changing request carries the header X-CSRF-Token equal to the token of what it acts on (the
pending authorization request's csrf_token, the enrollment's csrf_token, or csrf_for_session(cookie, "account")
for a signed-in session), and an Origin header, when present, must be one of ACAR_WEBAUTHN_ORIGINS (by default
the issuer's origin; another answers 403 wrong_origin). The
exception is POST /webauthn/enrollment (typing an activation code), which acts on nothing yet: the Origin check
and the JSON content type (no cross-site form or simple request can send it) guard it.

The login answer leaves the browser where the authorization endpoint would have:
  {"redirect": "<url>"}                          go there (the client's redirect URI with the code, or consent)
  {"form_post": {"action": "<uri>", "params": {...}}}   response_mode=form_post: the page builds and submits
                                                         the form (its CSP already allows the client's origin)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import Services
from api.errors import LoginRequired
from api.json_endpoints import (
    check_csrf,
    check_origin,
    credential_member,
    next_step,
    pending_request,
    read_json,
    text_member,
)
from api.passkey_names import Device, default_passkey_name, device_of
from api.provider import Provider, session_max_age
from api.rendering import page_translator
from api.routing import PlainRoute
from api.units import RequestUnit
from api.web import (
    ACCOUNT_CSRF_PURPOSE,
    NO_STORE,
    browser_binding,
    clear_enrollment_cookie,
    complete_login,
    enrollment_cookie_name,
    provider_of,
    services_of,
    session_cookie,
    set_enrollment_cookie,
)
from idp.core.interfaces import LEVELS, Level, LoginState, PendingRequest
from idp.core.sessions import csrf_for_session
from idp.core.webauthn import audit_ref
from idp.sql.enrollment import EnrollmentRecord, EnrollmentRequired, require_active
from idp.sql.store import SqlOidcStore

router = APIRouter(tags=["passkeys"])
ENROLL_DONE = "/enroll/done"
ACCOUNT_PAGE = "/account"
MANAGE_REFUSAL = "sign in to manage your passkeys"
ENROLLED_MAX_AGE = 600
"""How long after an enrollment its browser may see /enroll/done (and the sign-in it returned to, its notice)."""
_INTERACTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""The shape of a pending authorization request's id (secrets.token_urlsafe)."""
_ENROLLED_MARK = re.compile(r"^[A-Za-z0-9_-]{43}$")


def orm_unit(services: Services) -> RequestUnit:
    """The unit of work of the endpoints that need the enrollment service (registration, enrollment, credential
    management): in an ORM session (api.units). Committed on success and on a PasskeyError (EnrollmentErrors
    included: `persist`), whose refusal wrote only what it must keep (consumed challenge, flagged credential,
    attempt count or lock, audit event; see idp.core.webauthn and idp.sql.enrollment); rolled back on anything else."""
    return RequestUnit.with_orm(services.direct, services.sessions, services.enrollment_policy)


def enrolled_cookie_name(provider: Provider) -> str:
    """The short-lived cookie an enrollment leaves behind (enrolled_mark). It grants nothing: it only lets
    /enroll/done, and the sign-in page the enrollment returned to, say that the passkey is ready."""
    return "__Host-acar_enrolled" if provider.secure_cookies else "acar_enrolled"


def enrolled_mark(pending_id: str | None) -> str:
    """The enrolled cookie's value: a digest of the id of the sign-in the enrollment returned to (the id itself
    travels in URLs, so in access logs, which hold no cookie value), or a random value when it returns nowhere."""
    if pending_id is None:
        return secrets.token_urlsafe(32)
    digest = hashlib.sha256(b"acar-enrolled:" + pending_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def enrolled_value(request: Request, provider: Provider) -> str | None:
    """The enrolled cookie (enrolled_mark), if this browser has just finished an enrollment."""
    value = request.cookies.get(enrolled_cookie_name(provider), "")
    return value if _ENROLLED_MARK.fullmatch(value) else None


async def live_interaction(request: Request, store: SqlOidcStore, value: object) -> str | None:
    """`value` if it is the id of a pending authorization request that is live in this browser, else None.

    An enrollment started from a sign-in page carries that page's request id and goes back to /interaction/<id>
    when done. Only such an id is ever accepted, never an address: the way back is always a path of this site
    to a sign-in of this very browser (AuthorizationService.pending_for), so no one can turn the enrollment into
    an open redirector (RFC 9700 section 4.11) or send a citizen into someone else's sign-in (section 4.4.1.8)."""
    if not isinstance(value, str) or not _INTERACTION_ID.fullmatch(value):
        return None
    pending = await provider_of(request).authorization.pending_for(store, value, browser_binding(request))
    return pending.id if pending is not None else None


def _level(value: object) -> Level | None:
    return value if value in LEVELS else None


async def _signed_in(request: Request, provider: Provider, work: RequestUnit, refusal: str) -> tuple[LoginState, str]:
    """The browser's live login session and its account CSRF token, or LoginRequired(`refusal`)."""
    cookie = session_cookie(request, provider)
    state = await provider.login_sessions.current(work.oidc, cookie)
    if state is None or cookie is None:
        raise LoginRequired(refusal)
    return state, csrf_for_session(cookie, ACCOUNT_CSRF_PURPOSE)


# --- login -----------------------------------------------------------------------------------------------

async def login_options(request: Request) -> JSONResponse:
    """{"pending_id"} -> {"ceremony", "publicKey"}: PublicKeyCredentialRequestOptions for navigator.credentials.get
    (usernameless; the same options serve conditional mediation). CSRF: the pending request's token."""
    services = services_of(request)
    body = await read_json(request)
    pending_id = text_member(body, "pending_id")
    assert pending_id is not None  # noqa: S101 - required
    limits = services.ratelimits  # each answer stores a challenge: counted per IP before anything is written
    await limits.spend(limits.budgets.passkey_options, [("ip", limits.client_ip(request))], answer="json")
    async with RequestUnit.on(services.direct, reading=True) as look:  # read without a transaction
        pending = await pending_request(request, look.oidc, pending_id)
    check_csrf(request, services, pending.csrf_token)
    return JSONResponse(await login_ceremony(services, pending), headers=NO_STORE)


async def login_ceremony(services: Services, pending: PendingRequest) -> dict[str, Any]:
    """A new passkey login ceremony for `pending`: {"ceremony", "publicKey"} (PublicKeyCredentialRequestOptions,
    WebAuthn Level 2 section 5.5), its challenge saved by a unit of its own (only the deferred challenge: one
    atomic INSERT). What the options endpoint answers, and what the login page comes with (api.routes.interaction);
    the caller has spent the passkey_options budget."""
    async with RequestUnit.on(services.direct) as work:
        ceremony = await services.passkeys.authentication_options(
            work.passkeys, pending_id=pending.id, required_level=_level(pending.params.get("level")))
    return {"ceremony": ceremony.id, "publicKey": ceremony.options}


async def login_verify(request: Request) -> JSONResponse:
    """{"ceremony", "pending_id", "credential"} -> 200 {"redirect"} or {"form_post"} with the session cookie set.

    The login completes the pending authorization request exactly as the other login methods do: a session is
    created (or the same person's session refreshed), then the request resumes with a fresh login. A passkey
    that cannot reach the level the request asks for creates no session (user_verification_required or
    insufficient_level)."""
    services, provider = services_of(request), provider_of(request)
    body = await read_json(request)
    pending_id, ceremony = text_member(body, "pending_id"), text_member(body, "ceremony")
    credential = credential_member(body, "credential")
    assert pending_id is not None  # noqa: S101 - required
    assert ceremony is not None  # noqa: S101 - required
    limits = services.ratelimits  # every attempt, before the assertion is verified
    await limits.spend(limits.budgets.passkey_login, [("ip", limits.client_ip(request))], answer="json")
    async with RequestUnit.on(services.direct) as work:
        pending = await pending_request(request, work.oidc, pending_id)
        check_csrf(request, services, pending.csrf_token)
        login = await services.passkeys.verify_authentication(
            work.passkeys, ceremony_id=ceremony, pending_id=pending.id, credential=credential,
            required_level=_level(pending.params.get("level")))
        done = await complete_login(request, provider, work.oidc, pending.id, person_id=login.person_id,
                                    method=login.method)
    return done.with_cookie(next_step(request, done.result), provider)


plain_routes = [
    PlainRoute("/webauthn/login/options", login_options, methods=["POST"]),
    PlainRoute("/webauthn/login/verify", login_verify, methods=["POST"]),
]
"""The passkey login of every citizen: plain Starlette routes at the head of the route table (api.app)."""


# --- registration ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Registrant:
    person_id: str
    csrf_token: str
    max_level: Level
    enrollment: EnrollmentRecord | None
    actor: str
    by_certificate: bool = False
    """A session of an ID-card login at level high (amr "sc"): the card stands in for the activation code."""
    session_sid: str | None = None


CARD_AMR = "sc"
"""RFC 8176 "sc" (smart card): the amr of an ID-card login (idp.core.loa.CARD_LOGIN_METHODS)."""


async def _registrant(request: Request, provider: Provider, work: RequestUnit) -> _Registrant:
    """Who registers: the browser's live enrollment (cookie; level high: the code came from a registration office)
    or else the signed-in session (its own level caps the new credential). A session of an ID-card login reaches
    level high with no activation code: the card's certificate, verified to a national ID-card CA, proved the
    person as a registration office would (issue 15, "enrollment by certificate")."""
    enrollment = await work.enrollment.current(request.cookies.get(enrollment_cookie_name(provider)))
    if enrollment is not None:
        require_active(enrollment)  # a person suspended or deceased meanwhile: 403 person_inactive, nothing written
        return _Registrant(enrollment.person_id, enrollment.csrf_token, "high", enrollment, enrollment.person_id)
    state, csrf = await _signed_in(request, provider, work, "enter your activation code or sign in first")
    return _Registrant(state.person_id, csrf, state.level, None, state.person_id,
                       by_certificate=state.level == "high" and CARD_AMR in state.amr, session_sid=state.sid)


@router.post("/webauthn/register/options")
async def register_options(request: Request) -> JSONResponse:
    """{} or {"name"} -> {"ceremony", "publicKey"}: PublicKeyCredentialCreationOptions for
    navigator.credentials.create (the name, if sent, is only checked here; it is stored at verify)."""
    services, provider = services_of(request), provider_of(request)
    body = await read_json(request)
    text_member(body, "name", limit=500, required=False)
    async with orm_unit(services) as work:
        registrant = await _registrant(request, provider, work)
        check_csrf(request, services, registrant.csrf_token)
        ceremony = await services.passkeys.registration_options(
            work.passkeys, person_id=registrant.person_id,
            enrollment_id=registrant.enrollment.id if registrant.enrollment else None)
    return JSONResponse({"ceremony": ceremony.id, "publicKey": ceremony.options}, headers=NO_STORE)


async def _default_name(request: Request, services: Services, work: RequestUnit, person_id: str) -> str:
    """The name of a passkey registered without one: its browser and device in the page's language, told apart
    from the person's other passkeys (api.passkey_names)."""
    device = device_of(request.headers.get("user-agent"), request.headers.get("sec-ch-ua-platform"))
    taken = [view.name for view in await services.passkeys.credentials(work.passkeys, person_id)]
    return default_passkey_name(device, taken, page_translator().gettext)


async def rename_to(services: Services, work: RequestUnit, person_id: str, credential_id: str, name: str) -> str:
    """The name a rename stores: `name`, or when it is blank the numbered default in the page's language
    ("Giriş açarı 2", passkey.default.numbered) told apart from the person's other passkeys, never an English
    default (api.passkey_names)."""
    if name.strip():
        return name
    taken = [view.name for view in await services.passkeys.credentials(work.passkeys, person_id)
             if view.id != credential_id]
    return default_passkey_name(Device(None, None), taken, page_translator().gettext)


@router.post("/webauthn/register/verify")
async def register_verify(request: Request) -> JSONResponse:
    """{"ceremony", "credential", "name"?, "interaction"?} -> 201 {"credential_id", "name", "level", "redirect"}.

    Without a name the passkey is named after its browser and device (_default_name). From an enrollment: the
    enrollment completes, its activation code is used up, the enrollment cookie is cleared, the enrolled cookie
    set, and "redirect" is the sign-in the enrollment was started from ("interaction": that sign-in's id, if it
    is still live in this browser: live_interaction) or else /enroll/done. From a session: "redirect" is /account."""
    services, provider = services_of(request), provider_of(request)
    body = await read_json(request)
    ceremony = text_member(body, "ceremony")
    credential = credential_member(body, "credential")
    name = text_member(body, "name", limit=500, required=False)
    assert ceremony is not None  # noqa: S101 - required
    back: str | None = None
    async with orm_unit(services) as work:
        registrant = await _registrant(request, provider, work)
        check_csrf(request, services, registrant.csrf_token)
        enrollment = registrant.enrollment
        if name is None or not name.strip():
            name = await _default_name(request, services, work, registrant.person_id)
        verified = await services.passkeys.verify_registration(
            work.passkeys, ceremony_id=ceremony, person_id=registrant.person_id,
            enrollment_id=enrollment.id if enrollment else None, credential=credential, name=name)
        if enrollment is not None:
            await work.enrollment.complete(enrollment, credential=verified.credential_id[:200])
            back = await live_interaction(request, work.oidc, body.get("interaction"))
        view = await services.passkeys.save(work.passkeys, verified, max_level=registrant.max_level,
                                            actor=registrant.actor)
        if registrant.by_certificate:
            await work.passkeys.audit("enrollment.by_certificate", actor=registrant.person_id,
                                      subject=audit_ref(view.id), detail={"session": registrant.session_sid,
                                                                         "level": view.level,
                                                                         "max_level": registrant.max_level})
    redirect = ACCOUNT_PAGE if enrollment is None else f"/interaction/{back}" if back else ENROLL_DONE
    response = JSONResponse({"credential_id": view.id, "name": view.name, "level": view.level,
                             "redirect": redirect}, status_code=201, headers=NO_STORE)
    if enrollment is not None:
        clear_enrollment_cookie(response, provider)
        response.set_cookie(enrolled_cookie_name(provider), enrolled_mark(back),
                            max_age=ENROLLED_MAX_AGE, path="/", httponly=True, samesite="strict",
                            secure=provider.secure_cookies)
    return response


# --- enrollment (activation codes) -----------------------------------------------------------------------

@router.post("/webauthn/enrollment")
async def start_enrollment(request: Request) -> JSONResponse:
    """{"code"} -> 201 {"csrf_token", "expires_at", "display_name"} and the enrollment cookie: the browser may now
    register one passkey for the code's person. Every refused code (unknown, wrong, revoked, expired, used, open in
    another browser) gets the same 400 code_invalid problem, byte for byte (idp.sql.enrollment: no oracle)."""
    services, provider = services_of(request), provider_of(request)
    check_origin(request, services)
    body = await read_json(request)
    code = text_member(body, "code", limit=40)
    assert code is not None  # noqa: S101 - required
    # counted before the service looks the code up or hashes anything: per IP, and per code (code_key)
    await services.ratelimits.spend_on_code(request, code, answer="json")
    async with orm_unit(services) as work:
        started = await work.enrollment.redeem(code)
    record = started.enrollment
    response = JSONResponse({"csrf_token": record.csrf_token, "expires_at": record.expires_at.isoformat(),
                             "display_name": started.display_name}, status_code=201, headers=NO_STORE)
    set_enrollment_cookie(response, provider, started.cookie, session_max_age(record.expires_at))
    return response


@router.get("/webauthn/enrollment")
async def enrollment_state(request: Request) -> JSONResponse:
    """The browser's live enrollment: {"csrf_token", "expires_at", "display_name"}, or 401 enrollment_required."""
    services, provider = services_of(request), provider_of(request)
    async with orm_unit(services) as work:
        record = await work.enrollment.current(request.cookies.get(enrollment_cookie_name(provider)))
        if record is None:
            raise EnrollmentRequired("enter your activation code first")
        require_active(record)
        name = await work.passkeys.display_name(record.person_id)
    return JSONResponse({"csrf_token": record.csrf_token, "expires_at": record.expires_at.isoformat(),
                         "display_name": name or ""}, headers=NO_STORE)


# --- the signed-in person's passkeys ---------------------------------------------------------------------

@router.get("/webauthn/credentials")
async def list_credentials(request: Request) -> JSONResponse:
    """{"csrf_token", "credentials": [{"id", "name", "level", "synced", "flagged", "transports", "created_at",
    "last_used_at"}]}: the signed-in person's passkeys (removed ones are not listed)."""
    services, provider = services_of(request), provider_of(request)
    async with orm_unit(services) as work:
        state, csrf = await _signed_in(request, provider, work, MANAGE_REFUSAL)
        views = await services.passkeys.credentials(work.passkeys, state.person_id)
    return JSONResponse({"csrf_token": csrf, "credentials": [v.as_json() for v in views]}, headers=NO_STORE)


@router.patch("/webauthn/credentials/{credential_id}")
async def rename_credential(request: Request, credential_id: str) -> JSONResponse:
    """{"name"} -> 200 the renamed credential. CSRF: the account token."""
    services, provider = services_of(request), provider_of(request)
    body = await read_json(request)
    name = text_member(body, "name", limit=500)
    assert name is not None  # noqa: S101 - required
    async with orm_unit(services) as work:
        state, csrf = await _signed_in(request, provider, work, MANAGE_REFUSAL)
        check_csrf(request, services, csrf)
        name = await rename_to(services, work, state.person_id, credential_id, name)
        view = await services.passkeys.rename(work.passkeys, state.person_id, credential_id, name)
    return JSONResponse(view.as_json(), headers=NO_STORE)


@router.delete("/webauthn/credentials/{credential_id}")
async def remove_credential(request: Request, credential_id: str) -> Response:
    """Remove a passkey for good -> 204. CSRF: the account token."""
    services, provider = services_of(request), provider_of(request)
    async with orm_unit(services) as work:
        state, csrf = await _signed_in(request, provider, work, MANAGE_REFUSAL)
        check_csrf(request, services, csrf)
        await services.passkeys.remove(work.passkeys, state.person_id, credential_id)
    return Response(status_code=204, headers=NO_STORE)
