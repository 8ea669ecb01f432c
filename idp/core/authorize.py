"""The authorization endpoint: code flow only, PKCE S256 required, nonce optional (OIDC Core 3.1.2, RFC 6749 4.1,
RFC 7636, RFC 9700 section 2.1).

nonce is OPTIONAL in the authorization code flow (OIDC Core 3.1.2.1: "nonce OPTIONAL"; it is REQUIRED only for the
implicit and hybrid flows of 3.2.2.1 and 3.3.2.11, which Açar does not offer): a request without one is served, and
its ID token carries no nonce claim. PKCE binds the code to the client's request in its place (RFC 9700 2.1.1).

`AuthorizationService.authorize` validates a request and answers one of three plain results: an error page
(before the redirect URI is trusted: OIDC Core 3.1.2.6 and RFC 6749 4.1.2.1 forbid redirecting then), a
redirect to the client (the code, or an error), or an interaction (login, the representation choice of a
`represents` request, or consent) that resumes with `resume` (the choice with `choose_representation`). api/
renders them; nothing here knows HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from idp.core import loa, pkce, roles
from idp.core.claims import EMPTY_CLAIMS, REPRESENTS, ClaimsRequest, parse_claims_parameter, releasable
from idp.core.errors import InvalidRequest
from idp.core.interfaces import (
    Client,
    ClientDirectory,
    CodeRecord,
    GrantRecord,
    Level,
    LoginState,
    OidcStore,
    PendingRequest,
    Representation,
)
from idp.core.subjects import SubjectIdentifiers

RESPONSE_MODES = ("query", "form_post")
PROMPTS = ("none", "login", "consent", "select_account")
MAX_PARAM = 2000
_SINGLE = ("client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
           "code_challenge", "code_challenge_method", "prompt", "max_age", "claims", "acr_values", "ui_locales",
           "login_hint", "id_token_hint", "display")


def token_hash(value: str) -> str:
    """How codes, refresh tokens and session cookies are stored: SHA-256, hex (they are 256-bit random)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ErrorPage:
    """Shown to the user, never redirected: the client or redirect URI could not be trusted."""

    error: str
    description: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Back to the client: `params` in the query (response_mode=query) or an auto-submitted form."""

    redirect_uri: str
    params: Mapping[str, str]
    response_mode: str


@dataclass(frozen=True, slots=True)
class Interaction:
    """The citizen must act first: log in (at `level` or above), choose whom they act for (`choices`: their valid
    mandates to represent at login) or consent; `pending.id` resumes."""

    kind: Literal["login", "represent", "consent"]
    pending: PendingRequest
    client: Client
    level: Level | None = None
    claims: frozenset[str] = frozenset()
    choices: tuple[Representation, ...] = ()
    scopes: tuple[str, ...] = ()
    """consent: the scopes asked for, without the role scopes the person does not hold (idp.core.roles)."""


AuthorizeResult = ErrorPage | Redirect | Interaction


class AuthorizationError(Exception):
    """An error returned to the client by redirect (RFC 6749 4.1.2.1, OIDC Core 3.1.2.6)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(slots=True)
class _Request:
    client: Client
    redirect_uri: str
    response_mode: str
    state: str | None
    scopes: list[str] = field(default_factory=list)
    nonce: str = ""
    code_challenge: str = ""
    prompt: set[str] = field(default_factory=set)
    max_age: int | None = None
    claims: ClaimsRequest = EMPTY_CLAIMS
    level: Level | None = None
    ui_locales: str | None = None
    login_hint: str | None = None
    hint_sub: str | None = None
    browser: str | None = None
    represents: Mapping[str, Any] | None = None
    """Whom the person chose to act for in this request: None before a choice, else {"person_id": who chose,
    "mandate": None (themselves) or Representation.as_json()}."""

    def to_params(self) -> dict[str, Any]:
        return {
            "client_id": self.client.client_id, "redirect_uri": self.redirect_uri,
            "response_mode": self.response_mode, "state": self.state, "scopes": self.scopes, "nonce": self.nonce,
            "code_challenge": self.code_challenge, "prompt": sorted(self.prompt), "max_age": self.max_age,
            "claims": self.claims.as_json(), "level": self.level, "ui_locales": self.ui_locales,
            "login_hint": self.login_hint, "hint_sub": self.hint_sub, "browser": self.browser,
            "represents": dict(self.represents) if self.represents is not None else None,
        }

    @classmethod
    def from_params(cls, client: Client, p: Mapping[str, Any]) -> _Request:
        return cls(client=client, redirect_uri=p["redirect_uri"], response_mode=p["response_mode"],
                   state=p["state"], scopes=list(p["scopes"]), nonce=p["nonce"], code_challenge=p["code_challenge"],
                   prompt=set(p["prompt"]), max_age=p["max_age"], claims=ClaimsRequest.from_json(p["claims"]),
                   level=p["level"], ui_locales=p["ui_locales"], login_hint=p["login_hint"], hint_sub=p["hint_sub"],
                   browser=p.get("browser"), represents=p.get("represents"))


IdTokenHintVerifier = Callable[[str], Awaitable[Mapping[str, Any]]]
"""Verifies an id_token_hint we issued (signature, issuer; expiry not required) or raises."""


class AuthorizationService:
    def __init__(self, clients: ClientDirectory, *, issuer: str, acr: loa.AcrPolicy, subjects: SubjectIdentifiers,
                 verify_id_token_hint: IdTokenHintVerifier, code_lifetime: int, grant_lifetime: int,
                 interaction_lifetime: int, clock: Callable[[], dt.datetime]) -> None:
        self._clients = clients
        self.issuer = issuer
        self.acr = acr
        self.subjects = subjects
        self._verify_hint = verify_id_token_hint
        self._code_lifetime = dt.timedelta(seconds=code_lifetime)
        self._grant_lifetime = dt.timedelta(seconds=grant_lifetime)
        self._interaction_lifetime = dt.timedelta(seconds=interaction_lifetime)
        self._clock = clock

    # --- entry points ------------------------------------------------------------------------------------

    async def authorize(self, params: Mapping[str, Sequence[str]], *, store: OidcStore,
                        session: LoginState | None, browser: str) -> AuthorizeResult:
        """Validate an authorization request (GET query or POST form, OIDC Core 3.1.2.1) and act on it."""
        trusted = await self._trusted_redirect(params)
        if isinstance(trusted, ErrorPage):
            return trusted
        client, redirect_uri = trusted
        mode = _one(params, "response_mode") or "query"
        state = _one(params, "state")
        if mode not in RESPONSE_MODES:
            return self._error(redirect_uri, "query", state, "invalid_request",
                               "response_mode must be query or form_post")
        try:
            request = await self._validate(params, client, redirect_uri, mode, state)
        except AuthorizationError as exc:
            return self._error(redirect_uri, mode, state, exc.error, exc.description)
        request.browser = browser
        return await self._decide(request, store=store, session=session, fresh_login=False, consented=False)

    async def refuse(self, params: Mapping[str, Sequence[str]], description: str) -> AuthorizeResult:
        """An authorization request refused as invalid_request before it is validated (its text, refused at the
        edge). RFC 6749 section 4.1.2.1: "If the request fails due to a missing, invalid, or mismatching
        redirection URI, or if the client identifier is missing or invalid, the authorization server SHOULD
        inform the resource owner of the error and MUST NOT automatically redirect"; otherwise the error goes
        back to the client's redirection URI. The caller has checked client_id, redirect_uri, response_mode and
        state themselves: only these are read here, and nothing is written."""
        trusted = await self._trusted_redirect(params)
        if isinstance(trusted, ErrorPage):
            return trusted
        mode = _one(params, "response_mode") or "query"
        return self._error(trusted[1], mode if mode in RESPONSE_MODES else "query", _one(params, "state"),
                           "invalid_request", description)

    async def pending_for(self, store: OidcStore, pending_id: str, browser: str | None) -> PendingRequest | None:
        """The pending request, only in the browser that made it: the login and consent interactions are bound
        to the browser binding cookie set by the authorization endpoint, so a page of another site cannot
        complete someone else's request in the victim's browser (login CSRF, RFC 9700 section 4.4.1.8)."""
        pending = await store.get_pending(pending_id)
        if pending is None or pending.expires_at <= self._clock():
            return None
        bound = pending.params.get("browser")
        if not browser or not isinstance(bound, str) or not hmac.compare_digest(bound, browser):
            return None
        return pending

    async def resume(self, pending_id: str, *, store: OidcStore, session: LoginState | None, browser: str | None,
                     fresh_login: bool = False, consent: bool | None = None) -> AuthorizeResult:
        """Continue a pending request after the login or consent interaction (in the browser that made it)."""
        pending = await self.pending_for(store, pending_id, browser)
        if pending is None:
            return ErrorPage("invalid_request", "this sign-in request has expired or was already completed; "
                             "start again from the service you were using")
        client = await self._clients.get(pending.client_id)
        if client is None or client.disabled:
            await store.delete_pending(pending_id)
            return ErrorPage("unauthorized_client", "the service that sent you here is no longer registered")
        if isinstance(pending.params.get("return_to"), str):  # a login for one of Açar's pages (sign_in_for_page)
            return await self._resume_page(pending, client, store=store, session=session)
        request = _Request.from_params(client, pending.params)
        started = pending.expires_at - self._interaction_lifetime - dt.timedelta(seconds=1)
        if session is not None and session.auth_time >= started:
            fresh_login = True  # logged in during this request: prompt=login and max_age are satisfied
        if consent is False:
            await store.delete_pending(pending_id)
            await store.audit("consent.denied", actor=session.person_id if session else "anonymous",
                        subject=client.client_id)
            return self._error(request.redirect_uri, request.response_mode, request.state, "access_denied",
                               "the user did not consent")
        if consent and session is not None:
            await self._held_roles_only(request, store, session.person_id)
            wanted = self._wanted_claims(request)
            await store.save_consent(session.person_id, client.client_id, frozenset(request.scopes),
                                     frozenset(wanted), self._clock())
            await store.audit("consent.granted", actor=session.person_id, subject=client.client_id,
                        detail={"scopes": request.scopes, "claims": sorted(wanted)})
        result = await self._decide(request, store=store, session=session, fresh_login=fresh_login,
                                    consented=bool(consent), pending_id=pending_id)
        if not isinstance(result, Interaction):
            await store.delete_pending(pending_id)
        return result

    async def choose_representation(self, pending_id: str, choice: str, *, store: OidcStore,
                                    session: LoginState | None, browser: str | None) -> AuthorizeResult:
        """Representation at login (docs/registry.md): the person of `session` acts in this authorization as
        themselves (`choice` "self") or for the entity of their mandate `choice`, which must be valid now with the
        power to represent at login; anything else (a forged form) is refused with an error page and changes
        nothing. The choice is kept with the pending request (then with the grant, `_issue_code`) and audited
        (login.representation_chosen), and the request resumes."""
        pending = await self.pending_for(store, pending_id, browser)
        if pending is None:
            return ErrorPage("invalid_request", "this sign-in request has expired or was already completed; "
                             "start again from the service you were using")
        usable = session is not None and session.ended_at is None and session.expires_at > self._clock()
        if session is None or not usable or REPRESENTS not in pending.params.get("scopes", ()):
            return await self.resume(pending_id, store=store, session=session, browser=browser)
        if choice == "self":
            chosen: Representation | None = None
        else:
            valid = {r.mandate_id: r for r in await store.representations(session.person_id, self._clock())}
            chosen = valid.get(choice)
            if chosen is None:
                return ErrorPage("access_denied", "you hold no valid mandate to represent this organisation at "
                                 "sign-in; choose again")
        params = {**pending.params, "represents": {
            "person_id": session.person_id, "mandate": chosen.as_json() if chosen is not None else None}}
        await store.update_pending(PendingRequest(id=pending.id, client_id=pending.client_id, params=params,
                                                  csrf_token=pending.csrf_token, expires_at=pending.expires_at))
        await store.audit("login.representation_chosen", actor=session.person_id, subject=pending.client_id,
                          detail={"as": "self"} if chosen is None else
                          {"as": "entity", "voen": chosen.voen, "mandate": chosen.mandate_id})
        return await self.resume(pending_id, store=store, session=session, browser=browser)

    async def sign_in_for_page(self, store: OidcStore, *, client: Client, return_to: str, level: Level | None,
                               browser: str, ui_locales: str | None = None) -> Interaction:
        """A login for one of Açar's own pages (the signing approval page, /sign/<id>), on behalf of `client` (the
        agency that asked for it, named on the login page): the login interaction of a pending request that
        issues no code and releases nothing, and on resume sends the browser back to `return_to` (a local path)
        once a session at `level` exists. Bound to the browser like any pending request (pending_for)."""
        if not return_to.startswith("/") or return_to.startswith("//") or len(return_to) > MAX_PARAM:
            raise ValueError("return_to must be a local path")
        request = _Request(client=client, redirect_uri=self.issuer + return_to, response_mode="query", state=None,
                           scopes=["openid"], level=level, ui_locales=ui_locales, browser=browser)
        pending = PendingRequest(id=secrets.token_urlsafe(24), client_id=client.client_id,
                                 params={**request.to_params(), "return_to": return_to},
                                 csrf_token=secrets.token_urlsafe(24),
                                 expires_at=self._clock() + self._interaction_lifetime)
        await store.save_pending(pending)
        return Interaction("login", pending, client, level=level)

    async def _resume_page(self, pending: PendingRequest, client: Client, *, store: OidcStore,
                           session: LoginState | None) -> AuthorizeResult:
        """sign_in_for_page's request resumed: back to the page once the session reaches the level, else the
        login again (step-up). Nothing is issued to the client and no consent is asked."""
        level = pending.params.get("level")
        usable = session is not None and session.ended_at is None and session.expires_at > self._clock()
        if session is None or not usable or not loa.at_least(session.level, level):
            return Interaction("login", pending, client, level=level)
        await store.delete_pending(pending.id)
        return Redirect(self.issuer + str(pending.params["return_to"]), {}, "query")

    # --- validation --------------------------------------------------------------------------------------

    async def _trusted_redirect(self, params: Mapping[str, Sequence[str]]) -> ErrorPage | tuple[Client, str]:
        for name in ("client_id", "redirect_uri"):
            values = params.get(name, [])
            if len(values) > 1:
                return ErrorPage("invalid_request", f"{name} is repeated")
            if not values or not values[0]:
                return ErrorPage("invalid_request", f"{name} is missing")
        client_id, redirect_uri = params["client_id"][0], params["redirect_uri"][0]
        client = await self._clients.get(client_id) if len(client_id) <= 64 else None
        if client is None or client.disabled:
            return ErrorPage("invalid_client", "the service that sent you here is not registered")
        # exact string comparison against the registered list (RFC 9700 section 4.1.3): no prefix, no pattern
        if redirect_uri not in client.redirect_uris:
            return ErrorPage("invalid_request", "the redirect URI is not registered for this service")
        return client, redirect_uri

    async def _validate(self, params: Mapping[str, Sequence[str]], client: Client, redirect_uri: str, mode: str,
                        state: str | None) -> _Request:
        for name in _SINGLE:
            if len(params.get(name, [])) > 1:
                raise AuthorizationError("invalid_request", f"{name} is repeated")
        for name in _SINGLE:
            value = _one(params, name)
            if value is not None and len(value) > MAX_PARAM and name != "id_token_hint":
                raise AuthorizationError("invalid_request", f"{name} is too long")
        if "request" in params:
            raise AuthorizationError("request_not_supported", "request objects are not supported")
        if "request_uri" in params:
            raise AuthorizationError("request_uri_not_supported", "request_uri is not supported")
        if "registration" in params:
            raise AuthorizationError("registration_not_supported", "registration parameter is not supported")
        if "authorization_code" not in client.grant_types:
            raise AuthorizationError("unauthorized_client", "this client may not use the authorization code flow")
        response_type = _one(params, "response_type")
        if not response_type:
            raise AuthorizationError("invalid_request", "response_type is missing")
        if response_type != "code":
            raise AuthorizationError("unsupported_response_type", "only response_type=code is supported")
        request = _Request(client=client, redirect_uri=redirect_uri, response_mode=mode, state=state)
        self._validate_scope_nonce_pkce(params, request)
        await self._validate_options(params, request)
        return request

    @staticmethod
    def _validate_scope_nonce_pkce(params: Mapping[str, Sequence[str]], request: _Request) -> None:
        client = request.client
        scopes = (_one(params, "scope") or "").split()
        if "openid" not in scopes:
            raise AuthorizationError("invalid_scope", "scope must include openid")
        unknown = [s for s in scopes if s not in client.scopes]
        if unknown:
            raise AuthorizationError("invalid_scope", f"scope not allowed for this client: {' '.join(unknown)}")
        request.scopes = list(dict.fromkeys(scopes))
        # OIDC Core 3.1.2.1: nonce is optional with response_type=code (the only response type served); "" is none
        request.nonce = _one(params, "nonce") or ""
        challenge = _one(params, "code_challenge")
        method = _one(params, "code_challenge_method")
        if not challenge:
            raise AuthorizationError("invalid_request", "code_challenge is required (PKCE, RFC 7636)")
        if method not in pkce.CODE_CHALLENGE_METHODS:
            raise AuthorizationError("invalid_request", "code_challenge_method must be S256")
        if not pkce.valid_challenge(challenge):
            raise AuthorizationError("invalid_request", "code_challenge is not a base64url SHA-256 value")
        request.code_challenge = challenge

    async def _validate_options(self, params: Mapping[str, Sequence[str]], request: _Request) -> None:
        client = request.client
        request.prompt = set((_one(params, "prompt") or "").split())
        if request.prompt - set(PROMPTS):
            raise AuthorizationError("invalid_request", "prompt must be none, login, consent or select_account")
        if "none" in request.prompt and len(request.prompt) > 1:
            raise AuthorizationError("invalid_request", "prompt=none cannot be combined with other values")
        max_age = _one(params, "max_age")
        if max_age is not None:
            if not max_age.isdigit() or len(max_age) > 9:
                raise AuthorizationError("invalid_request", "max_age must be a non-negative integer")
            request.max_age = int(max_age)
        try:
            request.claims = parse_claims_parameter(_one(params, "claims"))
        except InvalidRequest as exc:
            raise AuthorizationError("invalid_request", exc.description) from None
        request.level = self._required_level(_one(params, "acr_values"), request.claims)
        request.ui_locales = _one(params, "ui_locales")
        request.login_hint = _one(params, "login_hint")
        hint = _one(params, "id_token_hint")
        if hint:
            try:
                claims = await self._verify_hint(hint)
            except Exception:  # noqa: BLE001 - any verification failure is the same client error
                raise AuthorizationError("invalid_request", "id_token_hint is not a valid ID token of this "
                                         "provider") from None
            aud = claims.get("aud")
            if client.client_id not in (aud if isinstance(aud, list) else [aud]):
                raise AuthorizationError("invalid_request", "id_token_hint was not issued to this client")
            request.hint_sub = str(claims.get("sub"))

    def _required_level(self, acr_values: str | None, claims: ClaimsRequest) -> Level | None:
        wanted: list[Level] = []
        if acr_values:
            level = self.acr.required_level(acr_values.split())
            if level is not None:
                wanted.append(level)
        acr_claim = claims.id_token.get("acr")
        if acr_claim and acr_claim.get("essential"):
            values = acr_claim.get("values") or ([acr_claim["value"]] if "value" in acr_claim else [])
            level = self.acr.required_level(str(v) for v in values)
            if level is not None:
                wanted.append(level)
        return loa.highest(wanted)

    def _wanted_claims(self, request: _Request) -> set[str]:
        return releasable(request.scopes, request.claims, request.client.scopes)

    # --- decision ----------------------------------------------------------------------------------------

    async def _decide(self, request: _Request, *, store: OidcStore, session: LoginState | None, fresh_login: bool,
                      consented: bool, pending_id: str | None = None) -> AuthorizeResult:
        now = self._clock()
        client = request.client
        usable = session is not None and session.ended_at is None and session.expires_at > now
        need_login = not usable
        if usable and session is not None and not fresh_login:
            if request.prompt & {"login", "select_account"}:
                need_login = True  # select_account: the login page is where another person can sign in
            elif request.max_age is not None and (now - session.auth_time).total_seconds() > request.max_age:
                need_login = True  # OIDC Core 3.1.2.1: re-authenticate when the login is older than max_age
            elif request.hint_sub is not None and request.hint_sub != self.subjects.for_client(
                    client, session.person_id):
                need_login = True
        if usable and session is not None and not loa.at_least(session.level, request.level):
            need_login = True  # step-up: a method reaching the requested level is offered
        if need_login:
            if "none" in request.prompt:
                return self._error(request.redirect_uri, request.response_mode, request.state, "login_required",
                                   "the user must log in")
            pending = await self._pending(store, request, pending_id)
            return Interaction("login", pending, client, level=request.level)
        assert session is not None  # noqa: S101 - need_login covers the missing session
        await self._held_roles_only(request, store, session.person_id)
        if REPRESENTS in request.scopes and not self._chosen(request, session):
            step = await self._representation_step(request, store=store, session=session, pending_id=pending_id)
            if step is not None:
                return step
        wanted = self._wanted_claims(request)
        if not consented:
            existing = await store.get_consent(session.person_id, client.client_id)
            covered = existing is not None and set(request.scopes) <= existing.scopes and wanted <= existing.claims
            if not covered or "consent" in request.prompt:
                if "none" in request.prompt:
                    return self._error(request.redirect_uri, request.response_mode, request.state,
                                       "consent_required", "the user must consent")
                pending = await self._pending(store, request, pending_id)
                return Interaction("consent", pending, client, claims=frozenset(wanted), scopes=tuple(request.scopes))
        return await self._issue_code(request, store=store, session=session, wanted=wanted, now=now)

    async def _representation_step(self, request: _Request, *, store: OidcStore, session: LoginState,
                                   pending_id: str | None) -> AuthorizeResult | None:
        """The representation choice a `represents` request needs before its code (docs/registry.md): the page
        listing the person's valid mandates to represent at login, or None when they hold none (they act as
        themselves, nothing is asked). prompt=none cannot show it: interaction_required (OIDC Core 3.1.2.6)."""
        choices = await store.representations(session.person_id, self._clock())
        if not choices:
            return None
        if "none" in request.prompt:
            return self._error(request.redirect_uri, request.response_mode, request.state, "interaction_required",
                               "the user must choose whom they act for")
        pending = await self._pending(store, request, pending_id)
        return Interaction("represent", pending, request.client, choices=tuple(choices))

    @staticmethod
    def _chosen(request: _Request, session: LoginState) -> bool:
        """Whether the person of `session` has chosen whom they act for in this request (a choice made before
        another person logged in in the same request does not count)."""
        return request.represents is not None and request.represents.get("person_id") == session.person_id

    @staticmethod
    async def _held_roles_only(request: _Request, store: OidcStore, person_id: str) -> None:
        """Drop the role scopes of roles the person does not hold (idp.core.roles). RFC 6749 section 3.3: "The
        authorization server MAY fully or partially ignore the scope requested by the client, based on the
        authorization server policy": a narrower grant, not an error. The roles are read only when a role scope is
        asked for."""
        if roles.names_role(request.scopes):
            request.scopes = roles.held_scopes(request.scopes, await store.staff_roles(person_id))

    async def _pending(self, store: OidcStore, request: _Request, pending_id: str | None) -> PendingRequest:
        if pending_id is not None:
            existing = await store.get_pending(pending_id)
            if existing is not None:
                return existing
        pending = PendingRequest(id=secrets.token_urlsafe(24), client_id=request.client.client_id,
                                 params=request.to_params(), csrf_token=secrets.token_urlsafe(24),
                                 expires_at=self._clock() + self._interaction_lifetime)
        await store.save_pending(pending)
        return pending

    async def _issue_code(self, request: _Request, *, store: OidcStore, session: LoginState, wanted: set[str],
                          now: dt.datetime) -> Redirect:
        client = request.client
        sub = self.subjects.for_client(client, session.person_id)
        grant_id = secrets.token_urlsafe(16)
        claims_json = request.claims.as_json()
        claims_json["released"] = sorted(wanted)
        represents = None
        if REPRESENTS in request.scopes and self._chosen(request, session) and request.represents is not None:
            represents = request.represents.get("mandate")
        await store.create_grant(GrantRecord(
            id=grant_id, client_id=client.client_id, person_id=session.person_id, session_sid=session.sid, sub=sub,
            scope=" ".join(request.scopes), claims=claims_json, acr=self.acr.uri(session.level), amr=session.amr,
            auth_time=session.auth_time, expires_at=now + self._grant_lifetime, represents=represents,
        ))
        code = secrets.token_urlsafe(32)
        await store.create_code(CodeRecord(
            code_hash=token_hash(code), grant_id=grant_id, client_id=client.client_id,
            redirect_uri=request.redirect_uri, nonce=request.nonce, code_challenge=request.code_challenge,
            expires_at=now + self._code_lifetime, consumed_at=None,
        ))
        await store.add_session_client(session.id, client.client_id, sub)
        params = {"code": code, "iss": self.issuer}
        if request.state is not None:
            params["state"] = request.state
        return Redirect(request.redirect_uri, params, request.response_mode)

    def _error(self, redirect_uri: str, mode: str, state: str | None, error: str, description: str) -> Redirect:
        params = {"error": error, "error_description": description, "iss": self.issuer}
        if state is not None:
            params["state"] = state
        return Redirect(redirect_uri, params, mode)


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None
