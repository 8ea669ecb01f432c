"""The login and consent interactions of a pending authorization request (OIDC Core 3.1.2.3 and 3.1.2.4).

Login methods plug in here; this issue ships only the development shortcut (ACAR_DEV_LOGIN), whose route is
not even registered in production mode and whose setting production refuses.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import Services
from api.errors import RateLimited
from api.provider import Provider
from api.rendering import FORM_EXPIRED, error_page, render
from api.routes.idcard import card_tls_url
from api.routes.passkeys import enrolled_mark, enrolled_value, login_ceremony
from api.routing import PlainRoute
from api.text import refusal
from api.web import (
    answer,
    browser_binding,
    complete_login,
    provider_of,
    read_page_form,
    services_of,
    session_cookie,
)
from idp.core.authorize import Interaction
from idp.core.claims import CLAIM_DESCRIPTIONS
from idp.core.errors import InvalidIdentifier, PersonNotFound
from idp.core.interfaces import LEVELS, OidcStore, PendingRequest
from idp.core.loa import DEV_LOGIN_METHODS
from idp.core.roles import role_of_scope
from idp.sql.persons import PersonRecord, PersonService

router = APIRouter(tags=["interaction"])
dev_router = APIRouter(tags=["interaction"])
EXPIRED = "this sign-in request has expired or was already completed; start again from the service you were using"


async def _pending(request: Request, store: OidcStore, pending_id: str) -> PendingRequest | None:
    """The pending request, in the browser that made it (AuthorizationService.pending_for)."""
    return await provider_of(request).authorization.pending_for(store, pending_id, browser_binding(request))


async def _posted_pending(request: Request, store: OidcStore, pending_id: str,
                          form: dict[str, list[str]]) -> PendingRequest | Response:
    """The pending request a posted interaction form continues, or the page refusing the form (expired, or
    without the request's CSRF token)."""
    pending = await _pending(request, store, pending_id)
    if pending is None:
        return error_page("invalid_request", EXPIRED)
    sent = form.get("csrf_token", [])
    if len(sent) != 1 or not hmac.compare_digest(sent[0].encode(), pending.csrf_token.encode()):
        return error_page("invalid_request", FORM_EXPIRED, status=403)
    return pending


async def login_page(request: Request) -> Response:
    """The login page of a pending authorization request (its login methods). After an enrollment started here
    (api.routes.passkeys: the enrolled cookie marks this request) it says the new passkey is ready. ID-card login
    is offered when an ID-card trust anchor exists (`card_login`), the mutual-TLS form when a listener or proxy
    takes it (`card_tls_url`, which the page's CSP form-action then allows: api.routes.idcard)."""
    provider, pending_id = provider_of(request), request.path_params["pending_id"]
    refused = refusal(pending_id)
    if refused is not None:  # text storage cannot hold (api.text): the error page, nothing looked up
        return error_page("invalid_request", f"the sign-in request id {refused}")
    async with provider.unit_of_work(reading=True) as unit:
        pending = await _pending(request, unit.oidc, pending_id)
    if pending is None:
        return error_page("invalid_request", EXPIRED)
    services = services_of(request)
    client = await provider.clients.get(pending.client_id)
    card_login = await services.card.service() is not None  # an ID-card trust anchor exists
    tls_url = card_tls_url(provider.settings, pending.id) if card_login else None
    return render("login.html", {
        "title": "Sign in", "client_name": client.name if client else pending.client_id,
        "pending_id": pending.id, "csrf_token": pending.csrf_token, "level": pending.params.get("level"),
        "levels": LEVELS, "login_hint": pending.params.get("login_hint"),
        "ui_locales": pending.params.get("ui_locales"),
        "dev_login": provider.settings.dev_login and provider.settings.env != "production",
        "enrolled": enrolled_value(request, provider) == enrolled_mark(pending.id),
        "card_login": card_login, "card_tls_url": tls_url,
        "passkey_options": await _passkey_options(request, services, pending),
    }, form_targets=[str(pending.params["redirect_uri"]), *([tls_url] if tls_url else [])])


async def _passkey_options(request: Request, services: Services, pending: PendingRequest) -> dict[str, Any] | None:
    """The passkey ceremony the login page comes with, so that the browser can ask for a passkey (autofill, or the
    button's first press) without first asking /webauthn/login/options: one request fewer before the prompt. It
    spends the options endpoint's budget (each stores a challenge: tests/functional/test_anonymous_growth.py);
    with that spent, or the limiter unavailable, the page comes without one and its script asks the endpoint,
    which answers the refusal."""
    limits = services.ratelimits
    try:
        await limits.spend(limits.budgets.passkey_options, [("ip", limits.client_ip(request))], answer="json")
    except RateLimited:
        return None
    return await login_ceremony(services, pending)


plain_routes = [PlainRoute("/interaction/{pending_id}", login_page, methods=["GET"])]
"""The login page of every login: a plain Starlette route at the head of the route table (api.app)."""


async def _dev_person(provider: Provider, fin: str) -> PersonRecord | Response:
    """The development login's person by FIN, or the error page: malformed FIN, no such person, or a person who
    is suspended or deceased (idp.sql.persons.STATUSES: only an active person logs in)."""
    try:
        async with provider.sessions() as session:  # a read beside the unit of work (ORM service)
            person = await PersonService(session).get_by_fin(fin)
    except InvalidIdentifier as exc:
        return error_page("invalid_request", exc.detail)
    except PersonNotFound:
        return error_page("access_denied", "no person is registered with this FIN", status=400)
    if person.status != "active":
        return error_page("access_denied", f"this person is {person.status} in the registry and cannot sign in",
                          status=403)
    return person


@dev_router.post("/interaction/{pending_id}/dev-login")
async def dev_login(request: Request, pending_id: str) -> Response:
    """Development-only: log in as the registered person with this FIN at the chosen level."""
    provider = provider_of(request)
    if not provider.settings.dev_login or provider.settings.env == "production":
        return error_page("access_denied", "development sign-in is disabled", status=404)
    form = await read_page_form(request)
    async with provider.unit_of_work() as unit:
        pending = await _posted_pending(request, unit.oidc, pending_id, form)
        if isinstance(pending, Response):
            return pending
        level = (form.get("level") or ["low"])[0]
        method = DEV_LOGIN_METHODS.get(level)  # type: ignore[call-overload]
        if method is None:
            return error_page("invalid_request", "unknown level of assurance")
        person = await _dev_person(provider, (form.get("fin") or [""])[0])
        if isinstance(person, Response):
            return person
        done = await complete_login(request, provider, unit.oidc, pending.id, person_id=person.id, method=method)
    return done.with_cookie(answer(done.result), provider)


async def _interaction(request: Request, pending_id: str, kind: str) -> Interaction | Response:
    """The pending request resumed with the browser's session: the `kind` page it waits for (consent, represent),
    or the answer it needs instead (the login page, a redirect to the client, an error page)."""
    provider = provider_of(request)
    async with provider.unit_of_work() as unit:
        current = await provider.login_sessions.current(unit.oidc, session_cookie(request, provider))
        result = await provider.authorization.resume(pending_id, store=unit.oidc, session=current,
                                                     browser=browser_binding(request))
    if not isinstance(result, Interaction) or result.kind != kind:
        return answer(result)
    return result


@router.get("/interaction/{pending_id}/represent")
async def represent_page(request: Request, pending_id: str) -> Response:
    """Representation at login (docs/registry.md): after the login, a person holding valid mandates to represent
    at login chooses to act as themselves or for one of the entities, when the client requested the `represents`
    scope (idp.core.authorize.AuthorizationService.choose_representation)."""
    result = await _interaction(request, pending_id, "represent")
    if isinstance(result, Response):
        return result
    return render("represent.html", {
        "title": "Whom do you act for?", "client_name": result.client.name, "choices": result.choices,
        "pending_id": result.pending.id, "csrf_token": result.pending.csrf_token,
        "ui_locales": result.pending.params.get("ui_locales"),
    }, form_targets=[str(result.pending.params["redirect_uri"])])


@router.post("/interaction/{pending_id}/represent")
async def represent_decision(request: Request, pending_id: str) -> Response:
    """The choice of the representation page: "self" or a mandate's id (CSRF: the pending request's token). A
    choice of a mandate the person does not hold valid now is refused and changes nothing."""
    provider = provider_of(request)
    form = await read_page_form(request)
    async with provider.unit_of_work() as unit:
        pending = await _posted_pending(request, unit.oidc, pending_id, form)
        if isinstance(pending, Response):
            return pending
        choice = form.get("represents", [])
        if len(choice) != 1 or not choice[0] or len(choice[0]) > 64:
            return error_page("invalid_request", "choose whom you act for")
        current = await provider.login_sessions.current(unit.oidc, session_cookie(request, provider))
        result = await provider.authorization.choose_representation(pending.id, choice[0], store=unit.oidc,
                                                                    session=current, browser=browser_binding(request))
    return answer(result)


@router.get("/interaction/{pending_id}/consent")
async def consent_page(request: Request, pending_id: str) -> Response:
    result = await _interaction(request, pending_id, "consent")
    if isinstance(result, Response):
        return result
    attributes = [c for c in sorted(result.claims) if c in CLAIM_DESCRIPTIONS]  # claim names: the page words them
    roles = [r for s in result.scopes if (r := role_of_scope(s)) is not None]  # only roles the person holds
    return render("consent.html", {
        "title": "Share your data?", "client_name": result.client.name, "attributes": attributes,
        "pending_id": result.pending.id, "csrf_token": result.pending.csrf_token,
        "ui_locales": result.pending.params.get("ui_locales"), "scopes": list(result.scopes), "roles": roles,
    }, form_targets=[str(result.pending.params["redirect_uri"])])


@router.post("/interaction/{pending_id}/consent")
async def consent_decision(request: Request, pending_id: str) -> Response:
    provider = provider_of(request)
    form = await read_page_form(request)
    async with provider.unit_of_work() as unit:
        pending = await _posted_pending(request, unit.oidc, pending_id, form)
        if isinstance(pending, Response):
            return pending
        decision = form.get("decision", [""])
        if decision not in (["allow"], ["deny"]):
            return error_page("invalid_request", "choose Allow or Deny")
        current = await provider.login_sessions.current(unit.oidc, session_cookie(request, provider))
        # without a live session the decision waits: resume sends the citizen to log in first
        result = await provider.authorization.resume(pending.id, store=unit.oidc, session=current,
                                                     browser=browser_binding(request),
                                                     consent=decision == ["allow"] if current is not None else None)
    return answer(result)
