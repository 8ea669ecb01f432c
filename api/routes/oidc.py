"""OpenID Connect and OAuth 2.0 endpoints: discovery, authorize, token, userinfo, introspect, revoke, logout.

Thin adapters: parse the request, call idp/, render the plain result (STYLE habit 3).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.errors import BearerTokenMissing
from api.provider import Provider
from api.ratelimit import Scope
from api.rendering import error_page, render
from api.routing import PlainRoute
from api.text import describe, refusal, refused_basic, refused_param
from api.web import (
    NO_STORE,
    answer,
    clear_session_cookie,
    provider_of,
    read_form,
    read_page_form,
    read_page_params,
    redirect_to_client,
    services_of,
    session_cookie,
)
from idp.core.authorize import ErrorPage, Interaction, Redirect, token_hash
from idp.core.claims import OIDC_SCOPES, SUPPORTED_CLAIMS
from idp.core.client_auth import ASSERTION_SIGNING_ALGS, TOKEN_AUTH_METHODS, claimed_client_id
from idp.core.errors import InvalidClient, InvalidRequest
from idp.core.grants import single_values
from idp.core.interfaces import GRANT_TYPES, LoginState, OidcStore
from idp.core.logout import LogoutRequest, end_session, validate_logout
from idp.core.sessions import csrf_for_session, csrf_matches
from storage.base import utcnow

router = APIRouter(tags=["oidc"])
UI_LOCALES = ("az", "en", "ru")


def oauth_json(body: Mapping[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(dict(body), status_code=status, headers=NO_STORE)


# --- discovery -------------------------------------------------------------------------------------------

def discovery_document(provider: Provider) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 section 3 and RFC 8414 section 2: only what is implemented."""
    iss = provider.issuer
    algs = list(provider.settings.token_key_algorithms)
    return {
        "issuer": iss,
        "authorization_endpoint": iss + "/authorize",
        "token_endpoint": iss + "/token",
        "userinfo_endpoint": iss + "/userinfo",
        "jwks_uri": iss + "/jwks.json",
        "end_session_endpoint": iss + "/logout",
        "introspection_endpoint": iss + "/introspect",
        "revocation_endpoint": iss + "/revoke",
        "scopes_supported": list(OIDC_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": list(GRANT_TYPES),
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": algs,
        "userinfo_signing_alg_values_supported": [],
        "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_SIGNING_ALGS),
        "introspection_endpoint_auth_methods_supported": [m for m in TOKEN_AUTH_METHODS if m != "none"],
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_SIGNING_ALGS),
        "revocation_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_SIGNING_ALGS),
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": list(SUPPORTED_CLAIMS),
        "claim_types_supported": ["normal"],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "acr_values_supported": provider.acr.supported,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "ui_locales_supported": list(UI_LOCALES),
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
        "authorization_response_iss_parameter_supported": True,
    }


async def discovery(request: Request) -> JSONResponse:
    """OpenID Connect Discovery 1.0 section 4 and RFC 8414 section 3: the provider's metadata."""
    return JSONResponse(discovery_document(provider_of(request)), headers={"Cache-Control": "public, max-age=300"})


# --- authorization ---------------------------------------------------------------------------------------

async def authorize(request: Request) -> Response:
    """OIDC Core 3.1.2.1: GET and POST are both supported."""
    provider = provider_of(request)
    params = await read_page_params(request, check_text=False)
    refused = refused_param(params)
    if refused is not None:  # text storage cannot hold (api.text): refused before anything is looked up
        return await _refused_authorization(provider, params, refused)
    cookie = request.cookies.get(provider.browser_cookie_name)
    fresh = cookie is None or not 20 <= len(cookie) <= 100
    if fresh:
        cookie = secrets.token_urlsafe(32)
    assert cookie is not None  # noqa: S101 - set just above
    async with provider.unit_of_work() as unit:
        current = await provider.login_sessions.current(unit.oidc, session_cookie(request, provider))
        if current is None:  # anonymous: may store a pending request, so counted per IP (before anything is written)
            limits = services_of(request).ratelimits
            await limits.spend(limits.budgets.authorize, [("ip", limits.client_ip(request))], answer="page")
        result = await provider.authorization.authorize(params, store=unit.oidc, session=current,
                                                        browser=token_hash(cookie))
    response = answer(result)
    if fresh and isinstance(result, Interaction):
        # binds the login and consent interactions to this browser (see AuthorizationService.pending_for)
        response.set_cookie(provider.browser_cookie_name, cookie, path="/", httponly=True, samesite="lax",
                            secure=provider.secure_cookies)
    return response


_UNREDIRECTABLE = ("client_id", "redirect_uri", "response_mode", "state")
"""The parameters an error redirect is built from: refused text in one of them is the error page."""


async def _refused_authorization(provider: Provider, params: Mapping[str, Sequence[str]],
                                 refused: tuple[str, str]) -> Response:
    """invalid_request for text refused at the edge: the error page when the redirect itself cannot be trusted or
    built from the refused text, else back to the client (RFC 6749 section 4.1.2.1)."""
    unredirectable = refused_param({name: values for name, values in params.items()
                                    if name in _UNREDIRECTABLE or refusal(name) is not None})
    if unredirectable is not None:
        return error_page("invalid_request", describe(unredirectable))
    return answer(await provider.authorization.refuse(params, describe(refused)))


def _client_authorization(request: Request) -> str | None:
    """The Authorization header of a client's request, once its Basic credentials are text storage can hold
    (api.text); else InvalidClient (RFC 6749 section 5.2), before the client is looked up."""
    authorization = request.headers.get("authorization")
    refused = refused_basic(authorization)
    if refused is not None:
        raise InvalidClient(refused)
    return authorization


# --- token, userinfo, introspection, revocation ----------------------------------------------------------

class _client_authentication:  # noqa: N801 - used as a function: `async with _client_authentication(...)`
    """Failed client authentications counted per client_id and per client IP (ACAR_RATE_LIMIT_CLIENT_AUTH_FAILURES):
    once either has spent its budget, 429 before any secret or assertion is checked (so guessing learns nothing
    more); a successful request only reads the counters, and nothing at all while the in-process limiter holds
    no block (the keys are worked out only when they are needed: token endpoint, RFC 6749 section 5.2)."""

    __slots__ = ("_form", "_keys", "_limits", "_request")

    def __init__(self, request: Request, form: Mapping[str, str]) -> None:
        self._request, self._form = request, form
        self._limits = services_of(request).ratelimits
        self._keys: list[tuple[Scope, str]] | None = None

    def _keys_of(self) -> list[tuple[Scope, str]]:
        if self._keys is None:
            limits = self._limits
            keys: list[tuple[Scope, str]] = [("ip", limits.client_ip(self._request))]
            claimed = claimed_client_id(self._form, self._request.headers.get("authorization"))
            if claimed is not None:
                keys.insert(0, ("client", claimed))
            self._keys = keys
        return self._keys

    async def __aenter__(self) -> None:
        limits = self._limits
        if limits.limiter.may_block:
            await limits.check_failures(limits.budgets.client_auth_failures, self._keys_of(), answer="oauth")

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, InvalidClient):
            await self._limits.count_failure(self._limits.budgets.client_auth_failures, self._keys_of())


async def token(request: Request) -> JSONResponse:
    provider = provider_of(request)
    form = single_values(await read_form(request))
    authorization = _client_authorization(request)
    async with _client_authentication(request, form), provider.unit_of_work() as unit:
        result = await provider.grants.token(form, authorization, unit.oidc)
    return oauth_json(result.body)


def _bearer(request: Request, form: Mapping[str, Sequence[str]] | None) -> str:
    """RFC 6750 section 2.1 (header) and 2.2 (form body); exactly one of them."""
    header = request.headers.get("authorization")
    from_form = (form or {}).get("access_token")
    if header and from_form:
        raise InvalidRequest("the access token is sent in more than one way")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise BearerTokenMissing("the Authorization header must be: Bearer <token>")
        return value.strip()
    if from_form and len(from_form) == 1:
        return from_form[0]
    raise BearerTokenMissing("an access token is required")


async def userinfo(request: Request) -> JSONResponse:
    provider = provider_of(request)
    form = await read_form(request) if request.method == "POST" and request.headers.get("content-type") else None
    token = _bearer(request, form)
    # a writing unit: the answer is recorded in the person's access record (issue 16), committed with it
    async with provider.unit_of_work() as unit:
        body = await provider.grants.userinfo(token, unit.oidc)
    return oauth_json(body)


async def introspect(request: Request) -> JSONResponse:
    provider, limits = provider_of(request), services_of(request).ratelimits
    form = single_values(await read_form(request))
    authorization = _client_authorization(request)
    keys: list[tuple[Scope, str]] = [("ip", limits.client_ip(request))]
    claimed = claimed_client_id(form, authorization)
    if claimed is not None:
        keys.append(("client", claimed))
    await limits.spend(limits.budgets.introspection, keys, answer="oauth")
    # a writing unit: introspecting a person's token is recorded in their access record (issue 16)
    async with _client_authentication(request, form), provider.unit_of_work() as unit:
        body = await provider.grants.introspect(form, authorization, unit.oidc)
    return oauth_json(body)


async def revoke(request: Request) -> Response:
    provider = provider_of(request)
    form = single_values(await read_form(request))
    authorization = _client_authorization(request)
    async with _client_authentication(request, form), provider.unit_of_work() as unit:
        await provider.grants.revoke(form, authorization, unit.oidc)
    return Response(status_code=200, headers=NO_STORE)


plain_routes = [
    PlainRoute("/authorize", authorize, methods=["GET", "POST"]),
    PlainRoute("/token", token, methods=["POST"]),
    PlainRoute("/userinfo", userinfo, methods=["GET", "POST"]),
    PlainRoute("/introspect", introspect, methods=["POST"]),
    PlainRoute("/revoke", revoke, methods=["POST"]),
    PlainRoute("/.well-known/openid-configuration", discovery, methods=["GET"]),
    PlainRoute("/.well-known/oauth-authorization-server", discovery, methods=["GET"],
               name="authorization_server_metadata"),
]
"""The endpoints of every login and every token, and the metadata every relying party reads: plain Starlette routes,
which api.app puts at the head of the route table (no FastAPI request handling; the same exception handlers and 405
answers as every route)."""


# --- logout (RP-Initiated Logout 1.0) ---------------------------------------------------------------------

_LOGOUT_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales")


def _logged_out(redirect: str | None, state: str | None) -> Response:
    if redirect:
        params = {"state": state} if state is not None else {}
        return redirect_to_client(Redirect(redirect, params, "query"))
    return render("logout.html", {"title": "Signed out", "confirm": False})


async def _end_session(provider: Provider, store: OidcStore, current: LoginState | None) -> None:
    """End the current login session, if there is one: its grants revoked, back-channel logouts queued."""
    if current is not None:
        await end_session(store, current, now=utcnow(),
                          retry_seconds=provider.settings.backchannel_logout_retry_seconds)


def _signed_out(request: Request, provider: Provider, validated: LogoutRequest) -> Response:
    """The answer once the ended session is committed: the cookie cleared, and the back-channel logout tokens
    it queued sent now rather than at the delivery worker's next tick."""
    response = _logged_out(validated.post_logout_redirect_uri, validated.state)
    clear_session_cookie(response, provider)
    delivery = getattr(request.app.state, "backchannel", None)
    if delivery is not None:
        delivery.kick()
    return response


@router.get("/logout")
@router.post("/logout")  # one route per method: one OpenAPI operation id each
async def logout(request: Request) -> Response:
    provider = provider_of(request)
    params = await read_page_params(request)
    validated = await validate_logout(params, clients=provider.clients, verify_hint=provider.verify_id_token_hint)
    if isinstance(validated, ErrorPage):
        return error_page(validated.error, validated.description)
    cookie = session_cookie(request, provider)
    async with provider.unit_of_work() as unit:
        current = await provider.login_sessions.current(unit.oidc, cookie)
        # a hint naming this very session proves which one the relying party means: no confirmation needed
        # (RP-Initiated Logout 2)
        proven = current is not None and validated.hint_sid == current.sid
        if proven:
            await _end_session(provider, unit.oidc, current)
    if proven:
        return _signed_out(request, provider, validated)
    if current is None:
        return _logged_out(validated.post_logout_redirect_uri, validated.state)
    assert cookie is not None  # noqa: S101 - a current session has a cookie
    carry = {k: v[0] for k, v in params.items() if k in _LOGOUT_PARAMS and v}
    client = validated.client
    return render("logout.html", {"title": "Sign out", "confirm": True, "params": carry,
                                  "ui_locales": validated.ui_locales, "csrf_token": csrf_for_session(cookie, "logout"),
                                  "client_name": client.name if client else None},
                  form_targets=[validated.post_logout_redirect_uri] if validated.post_logout_redirect_uri else [])


@router.post("/logout/confirm")
async def logout_confirm(request: Request) -> Response:
    provider = provider_of(request)
    params = await read_page_form(request)
    cookie = session_cookie(request, provider)
    if not csrf_matches(cookie, "logout", params.pop("csrf_token", [])):
        return error_page("invalid_request", "the sign-out form has expired; please try again", status=403)
    validated = await validate_logout(params, clients=provider.clients, verify_hint=provider.verify_id_token_hint)
    if isinstance(validated, ErrorPage):
        return error_page(validated.error, validated.description)
    async with provider.unit_of_work() as unit:
        await _end_session(provider, unit.oidc, await provider.login_sessions.current(unit.oidc, cookie))
    return _signed_out(request, provider, validated)
