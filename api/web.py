"""What the route modules share: the services of a request, form reading, the session, browser and enrollment
cookies, the last step of every login (complete_login), and the answers that send a browser on after an
authorization step.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from fastapi import Request, Response
from fastapi.responses import RedirectResponse

from api.body import read_limited
from api.errors import InvalidPageRequest
from api.provider import session_max_age
from api.rendering import error_page, render
from api.text import NOT_UTF8, describe, refusal, refused_param
from idp.core.authorize import AuthorizeResult, ErrorPage, Interaction, Redirect, token_hash
from idp.core.errors import InvalidRequest
from idp.core.interfaces import OidcStore
from idp.core.loa import LoginMethod
from idp.core.sessions import csrf_for_session, csrf_matches

if TYPE_CHECKING:
    from api.deps import Services
    from api.provider import Provider

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM = "application/x-www-form-urlencoded"
MAX_FORM = 64 * 1024
MAX_FIELDS = 100
ACCOUNT_CSRF_PURPOSE = "account"
"""csrf_for_session(session cookie, ACCOUNT_CSRF_PURPOSE): the token of the account forms and of the passkey
endpoints acting for the signed-in person."""
DIRECTOR_CSRF_PURPOSE = "account-director"
"""csrf_for_session(session cookie, DIRECTOR_CSRF_PURPOSE): the token of a director's forms on the account page
(api.routes.director), a purpose of its own so that no other form's token grants or revokes a mandate."""


def provider_of(request: Request) -> Provider:
    return request.app.state.services.oidc  # type: ignore[no-any-return]


def kick_backchannel(request: Request) -> None:
    """After a unit of work that may have queued back-channel logout tokens has committed: wake the delivery worker
    (idp.sql.backchannel) so they are sent now, not at its next tick. Harmless when nothing was queued."""
    delivery = getattr(request.app.state, "backchannel", None)
    if delivery is not None:
        delivery.kick()


def services_of(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


# --- form bodies and query strings -------------------------------------------------------------------------

async def read_form(request: Request, *, check_text: bool = True) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body (RFC 6749 appendix B), at most 64 KiB, UTF-8, of text storage
    can hold (api.text, unless `check_text` is False: the caller checks it); else InvalidRequest (the OAuth error
    JSON of RFC 6749 section 5.2)."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM:
        raise InvalidRequest(f"the body must be {FORM}")
    body = await read_limited(request, MAX_FORM)
    if body is None:
        raise InvalidRequest("the request body is too large")
    try:
        text = body.decode("utf-8")
        form = parse_form(text)
    except TooManyFields:
        raise InvalidRequest(f"the body has more than {MAX_FIELDS} form fields") from None
    except NotUtf8 as exc:
        raise InvalidRequest(exc.description) from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body is not valid form encoding") from None
    if check_text and ("%" in text or refusal(text) is not None):
        # without a percent-escape every name and value is a piece of `text` ("+" read as a space): one search of
        # the whole body stands for all of them
        return _checked(form)
    return form


def _checked(params: dict[str, list[str]]) -> dict[str, list[str]]:
    """`params` when every name and value is text storage can hold (api.text); else InvalidRequest."""
    found = refused_param(params)
    if found is not None:
        raise InvalidRequest(describe(found))
    return params


class TooManyFields(ValueError):
    """A form body of more than MAX_FIELDS fields (each costs a dictionary entry, so their number is bounded)."""


class NotUtf8(ValueError):
    """A form field or query parameter whose percent-escapes decode to bytes that are not UTF-8: a lone or cut
    sequence, an overlong form, an encoded surrogate (RFC 3629 section 3). The URL Standard's
    application/x-www-form-urlencoded parser would make them U+FFFD; Açar refuses them as malformed text instead
    (api.text), so no replacement character is ever taken for what the client meant. `field`: the parameter's
    name, None when the name itself is not UTF-8."""

    def __init__(self, field: str | None) -> None:
        super().__init__(field)
        self.field = field

    @property
    def description(self) -> str:
        where = "a parameter name" if self.field is None else f"parameter {self.field[:64]}"
        return f"{where} {NOT_UTF8}"



def _unquote(field: str) -> tuple[str, str]:
    """The slow path of a field with a percent-escape that is not UTF-8: which of its parts is not (NotUtf8)."""
    name, _, value = field.partition("=")
    try:
        name = unquote_plus(name, errors="strict")
    except UnicodeDecodeError:
        raise NotUtf8(None) from None
    try:
        return name, unquote_plus(value, errors="strict")
    except UnicodeDecodeError:
        raise NotUtf8(name) from None


def parse_form(text: str, max_fields: int = MAX_FIELDS) -> dict[str, list[str]]:
    """application/x-www-form-urlencoded (the URL Standard's parser, as urllib's parse_qs with blank values
    kept): fields split on "&", names and values "+"- and percent-decoded; a percent-escape that is not UTF-8 is
    NotUtf8 and more than `max_fields` fields TooManyFields (both ValueErrors). A third of parse_qs's cost:
    undecoded fields are taken as they are, and a field is decoded once unless that gives a U+FFFD (a replacement
    or one sent as such: then the strict decoding tells them apart and says which part is not UTF-8)."""
    fields = text.split("&") if text else []
    if len(fields) > max_fields:
        raise TooManyFields("too many fields")
    out: dict[str, list[str]] = {}
    for field in fields:
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in field:
            name, value = unquote_plus(name), unquote_plus(value)
            if "\ufffd" in name or "\ufffd" in value:  # a replacement, or a U+FFFD sent as such: strict tells
                name, value = _unquote(field)
        elif "+" in field:
            name, value = name.replace("+", " "), value.replace("+", " ")
        out.setdefault(name, []).append(value)
    return out


async def read_params(request: Request, *, check_text: bool = True) -> dict[str, list[str]]:
    """Query parameters (GET) or the form body (POST), as lists so repeated parameters can be refused; text
    storage cannot hold (api.text) is InvalidRequest unless `check_text` is False (the caller checks it)."""
    if request.method == "POST":
        return await read_form(request, check_text=check_text)
    try:
        params = parse_form(request.url.query)
    except NotUtf8 as exc:
        raise InvalidRequest(exc.description) from None
    except ValueError:
        raise InvalidRequest("too many parameters") from None
    return _checked(params) if check_text else params


async def read_page_form(request: Request) -> dict[str, list[str]]:
    """`read_form` for a page: a body that cannot be read is the invalid_request error page (InvalidPageRequest)."""
    try:
        return await read_form(request)
    except InvalidRequest as exc:
        raise InvalidPageRequest(exc.description) from None


async def read_page_params(request: Request, *, check_text: bool = True) -> dict[str, list[str]]:
    """`read_params` for a page: parameters that cannot be read are the invalid_request error page."""
    try:
        return await read_params(request, check_text=check_text)
    except InvalidRequest as exc:
        raise InvalidPageRequest(exc.description) from None


# --- cookies ------------------------------------------------------------------------------------------------

def session_cookie(request: Request, provider: Provider) -> str | None:
    return request.cookies.get(provider.cookie_name)


def set_session_cookie(response: Response, provider: Provider, cookie: str, max_age: int) -> None:
    response.set_cookie(provider.cookie_name, cookie, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=provider.secure_cookies)


def clear_session_cookie(response: Response, provider: Provider) -> None:
    """Delete the session cookie with the attributes it was set with: a browser ignores a Set-Cookie for a
    __Host- cookie that lacks Secure (RFC 6265bis 4.1.3.2), and would keep the cookie."""
    response.delete_cookie(provider.cookie_name, path="/", httponly=True, samesite="lax",
                           secure=provider.secure_cookies)


def browser_binding(request: Request) -> str | None:
    """The hash the pending requests of this browser are bound to, or None without the cookie."""
    cookie = request.cookies.get(provider_of(request).browser_cookie_name)
    return token_hash(cookie) if cookie else None


def enrollment_cookie_name(provider: Provider) -> str:
    # __Host- binds the cookie to this exact origin over https, as for the session cookie
    return "__Host-acar_enroll" if provider.secure_cookies else "acar_enroll"


def set_enrollment_cookie(response: Response, provider: Provider, cookie: str, max_age: int) -> None:
    response.set_cookie(enrollment_cookie_name(provider), cookie, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=provider.secure_cookies)


def clear_enrollment_cookie(response: Response, provider: Provider) -> None:
    response.delete_cookie(enrollment_cookie_name(provider), path="/", httponly=True, samesite="strict",
                           secure=provider.secure_cookies)


# --- where an authorization step sends the browser -----------------------------------------------------------

def query_url(result: Redirect) -> str:
    """The redirect URI with the response parameters added to its query (response_mode=query)."""
    parts = urlsplit(result.redirect_uri)
    query = (parts.query + "&" if parts.query else "") + urlencode(result.params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def interaction_path(result: Interaction) -> str:
    return f"/interaction/{result.pending.id}" + {"consent": "/consent", "represent": "/represent"}.get(result.kind, "")


def redirect_to_client(result: Redirect) -> Response:
    if result.response_mode == "form_post":
        return render("form_post.html", {"title": "Returning to the service", "redirect_uri": result.redirect_uri,
                                         "params": result.params}, form_targets=[result.redirect_uri])
    return RedirectResponse(query_url(result), status_code=303, headers={"Cache-Control": "no-store"})


def answer(result: AuthorizeResult) -> Response:
    """The page answer of an authorization step: the error page, back to the client, or on to the interaction."""
    if isinstance(result, ErrorPage):
        return error_page(result.error, result.description)
    if isinstance(result, Redirect):
        return redirect_to_client(result)
    return RedirectResponse(interaction_path(result), status_code=303, headers={"Cache-Control": "no-store"})



AnswerT = TypeVar("AnswerT", bound=Response)


@dataclass(frozen=True)
class CompletedLogin:
    """A login that completed its pending authorization request (complete_login): where the browser goes next, and
    the session cookie to set on the answer (None when the browser's cookie stays)."""

    result: AuthorizeResult
    cookie: str | None
    expires_at: dt.datetime

    def with_cookie(self, response: AnswerT, provider: Provider) -> AnswerT:
        """`response` (the route's answer of `result`) with the new session cookie, if the login made one."""
        if self.cookie is not None:
            set_session_cookie(response, provider, self.cookie, session_max_age(self.expires_at))
        return response


async def complete_login(request: Request, provider: Provider, store: OidcStore, pending_id: str, *, person_id: str,
                         method: LoginMethod) -> CompletedLogin:
    """Every login method's last step, in the caller's unit of work: the browser's session (a new one, or the same
    person's refreshed: SessionService.login), then the pending request resumed with a fresh login (OIDC Core 3.1.2.3:
    the End-User was authenticated just now) in the browser that made it. The caller answers `result` in its own
    form (a page's api.web.answer, a JSON endpoint's api.json_endpoints.next_step) and sets the cookie on it
    (CompletedLogin.with_cookie) once the unit of work has committed."""
    current = await provider.login_sessions.current(store, session_cookie(request, provider))
    cookie, state = await provider.login_sessions.login(store, person_id=person_id, method=method, current=current)
    result = await provider.authorization.resume(pending_id, store=store, session=state, fresh_login=True,
                                                 browser=browser_binding(request))
    return CompletedLogin(result, cookie, state.expires_at)

class DoubleSubmitCsrf:
    """A public form's CSRF pair where no session exists yet (/enroll, /verify): the double-submit cookie pattern
    (OWASP CSRF Prevention Cheat Sheet) with the token bound to the cookie: an HttpOnly, SameSite=Strict cookie of
    256 random bits (`__Host-` over https, so no sibling domain can plant one) and, in the form, HMAC(cookie value,
    purpose) (idp.core.sessions.csrf_for_session). A sound cookie the browser sends is kept, so two tabs agree."""

    _COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")

    def __init__(self, name: str, purpose: str, max_age: int) -> None:
        self.name, self.purpose, self.max_age = name, purpose, max_age

    def cookie_name(self, secure: bool) -> str:
        return f"__Host-{self.name}" if secure else self.name

    def token(self, request: Request, secure: bool) -> tuple[str, str]:
        """The cookie value to set (the browser's when sound, else a fresh one) and the form's token for it."""
        cookie = request.cookies.get(self.cookie_name(secure), "")
        if not self._COOKIE_VALUE.fullmatch(cookie):
            cookie = secrets.token_urlsafe(32)
        return cookie, csrf_for_session(cookie, self.purpose)

    def set_cookie(self, response: Response, cookie: str, secure: bool) -> None:
        response.set_cookie(self.cookie_name(secure), cookie, max_age=self.max_age, path="/", httponly=True,
                            samesite="strict", secure=secure)

    def accepts(self, request: Request, secure: bool, tokens: Sequence[str]) -> bool:
        """The form's token matches the browser's cookie (constant time, idp.core.sessions.csrf_matches)."""
        cookie = request.cookies.get(self.cookie_name(secure), "")
        return bool(self._COOKIE_VALUE.fullmatch(cookie)) and csrf_matches(cookie, self.purpose, list(tokens))
