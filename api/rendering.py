"""Server-rendered pages: Jinja2 with autoescaping, every asset served by Açar, a strict Content-Security-Policy.

script-src 'self' and no inline script (data for scripts travels in data-* attributes and in
<script type="application/json"> blocks, which browsers do not execute); style-src 'self' and no style
attributes; form-action lists 'self' plus the client origins a form's answer may redirect to (browsers apply
form-action to the redirect that follows a submission).

Every page is translated (api.i18n). The language comes from the request being answered, which
PageContextMiddleware makes available to `render` without every route passing it along, and from a
`ui_locales` entry of the page context (the authorization request's). Templates own their titles and texts
and call `_("message.id")`, or `_n("message.id", count)` for a message with plural forms (api.i18n); `tr.date` and
`tr.datetime` write dates in the page's language.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError, select_autoescape
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.i18n import (
    CATALOGS,
    DEFAULT_LANGUAGE,
    LANGUAGE_COOKIE,
    LANGUAGE_NAMES,
    LANGUAGES,
    Translator,
    negotiate,
    translator,
)
from idp.core.claims import CLAIM_DESCRIPTIONS
from idp.core.errors import CardLoginError

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


class Pretranslated(Extension):
    """Writes each `_("message.id")` of a template, a literal id and nothing else in the call, as that message's text
    in the environment's language while the template is compiled. Jinja then escapes the constant once, at compile
    time, and joins it with the template's text around it: a page pays nothing per view for its fixed texts (30
    texts rendered as calls through the context: 167 us, written in: 14 us, in process on a busy core). A call
    with placeholders (`_("x", n=...)`), a key that is not a literal (`_(key)`) and `_n` stay calls to the page's
    translator, which `render` passes as before. An id the catalog lacks stops the template's compilation
    (TemplateSyntaxError naming it) where the call would have raised KeyError while rendering."""

    def filter_stream(self, stream: TokenStream) -> Iterable[Token]:
        environment = self.environment
        assert isinstance(environment, PageEnvironment)  # noqa: S101 - the only environment that loads it
        catalog = CATALOGS[environment.language]
        tokens = list(stream)
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if (token.type == "name" and token.value == "_" and (i == 0 or tokens[i - 1].type != "dot")
                    and [t.type for t in tokens[i + 1:i + 4]] == ["lparen", "string", "rparen"]):
                key = tokens[i + 2].value
                if key not in catalog:
                    raise TemplateSyntaxError(f"no message {key!r} in the {environment.language} catalog",
                                              token.lineno, stream.name, stream.filename)
                yield Token(token.lineno, "string", catalog[key])
                i += 4
            else:
                yield token
                i += 1


class PageEnvironment(Environment):
    """The pages' Jinja environment of one language: one per language, each compiling the templates it renders on
    first use, with that language's fixed texts written in (Pretranslated)."""

    def __init__(self, language: str) -> None:
        self.language = language
        super().__init__(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                         auto_reload=False, undefined=StrictUndefined, extensions=[Pretranslated])


_ENVIRONMENTS: Mapping[str, PageEnvironment] = {lang: PageEnvironment(lang) for lang in LANGUAGES}
_env = _ENVIRONMENTS[DEFAULT_LANGUAGE]
"""The environment whose policies (`tojson`) every language shares."""
_connection: contextvars.ContextVar[HTTPConnection | None] = contextvars.ContextVar("page_connection", default=None)
MAX_RETURN_PATH = 4000
"""A page address longer than this is not carried through the language switcher (its path alone is)."""


class PageContextMiddleware:
    """Remembers the HTTP request being answered, so `render` can negotiate the page language and point the
    language switcher back at the page. A plain ASGI middleware, like api.middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _connection.set(HTTPConnection(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            _connection.reset(token)


def origin(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def csp(form_targets: Iterable[str] = ()) -> str:
    targets = " ".join(sorted({origin(u) for u in form_targets}))
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            f"form-action 'self'{' ' + targets if targets else ''}; frame-ancestors 'none'; base-uri 'none'")


# --- language -----------------------------------------------------------------------------------------------

_POST_RETURNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(/interaction/[^/]+)/dev-login$"), r"\1"),
    (re.compile(r"^/logout/confirm$"), "/logout"),
    (re.compile(r"^/account/.+$"), "/account"),
)
"""Where the language switcher of a page answering a POST leads back to: the page that held the form."""


def return_path(connection: HTTPConnection | None) -> str:
    """The local address that shows this page again: path and query of a GET, the form's page for a POST."""
    if connection is None:
        return "/account"
    path = connection.url.path
    if connection.scope.get("method", "GET") not in ("GET", "HEAD"):
        for pattern, replacement in _POST_RETURNS:
            if pattern.match(path):
                return pattern.sub(replacement, path)
        return path
    query = connection.url.query
    full = path + ("?" + query if query else "")
    return full if len(full) <= MAX_RETURN_PATH else path


def safe_return_path(value: str | None) -> str:
    """`value` when it is a local path of this site, else /account: the switcher never redirects elsewhere."""
    if (not value or len(value) > MAX_RETURN_PATH or not value.startswith("/") or value.startswith("//")
            or "\\" in value or any(ord(c) < 33 or ord(c) == 127 for c in value)):
        return "/account"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/account"


@dataclass(frozen=True, slots=True)
class LanguageLink:
    code: str
    name: str
    href: str
    current: bool


def language_links(current: str, back_to: str) -> list[LanguageLink]:
    target = quote(back_to, safe="")
    return [LanguageLink(code, LANGUAGE_NAMES[code], f"/language/{code}?next={target}", code == current)
            for code in LANGUAGES]


def page_translator(ui_locales: str | None = None) -> Translator:
    """The translator of the request being answered (see api.i18n.negotiate for the order)."""
    connection = _connection.get()
    return translator(negotiate(
        cookie=connection.cookies.get(LANGUAGE_COOKIE) if connection else None,
        ui_locales=ui_locales,
        accept_language=connection.headers.get("accept-language") if connection else None))


# --- rendering ----------------------------------------------------------------------------------------------

def render(template: str, context: Mapping[str, Any], *, status: int = 200, form_targets: Iterable[str] = (),
           headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """Render a page in the negotiated language. A `ui_locales` context entry (an authorization request's)
    takes part in the negotiation; a `return_to` entry is where the language switcher leads back to (else
    this very page); `title` entries are ignored (each template names its page)."""
    ui_locales = context.get("ui_locales")
    tr = page_translator(ui_locales if isinstance(ui_locales, str) else None)
    back_to = context.get("return_to")
    page = {**context, "lang": tr.lang, "_": tr.gettext, "_n": tr.ngettext, "tr": tr, "languages": language_links(
        tr.lang, back_to if isinstance(back_to, str) else return_path(_connection.get()))}
    html = _ENVIRONMENTS[tr.lang].get_template(template).render(page)
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = csp(form_targets)
    response.headers["Content-Language"] = tr.lang
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# --- error pages --------------------------------------------------------------------------------------------

NOT_FOUND = "there is nothing at this address"
METHOD_NOT_ALLOWED = "this address does not answer this method"
"""The descriptions of the 404 and 405 error pages a browser gets (api.problems)."""
_MAX_ACCEPT = 1000
"""A longer Accept header is read up to here: no browser sends one this long."""


def _weights(accept: str) -> list[tuple[str, str, float]]:
    """The media ranges of a lowercased Accept header with their weights (RFC 9110 section 12.5.1); a bad weight
    is 0."""
    ranges = []
    for item in accept.split(","):
        media, *params = item.split(";")
        kind, _, subtype = media.strip().partition("/")
        weight = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
                weight = min(max(weight, 0.0), 1.0) if math.isfinite(weight) else 0.0
        ranges.append((kind, subtype, weight))
    return ranges


def _weight(ranges: list[tuple[str, str, float]], kind: str, subtype: str) -> float:
    """The weight of kind/subtype: that of the most specific matching range (RFC 9110 section 12.5.1), else 0."""
    best, specificity = 0.0, -1
    for k, s, weight in ranges:
        rank = 2 if (k, s) == (kind, subtype) else 1 if (k, s) == (kind, "*") else 0 if (k, s) == ("*", "*") else -1
        if rank > specificity:
            best, specificity = weight, rank
    return best


def prefers_html(accept: str | None) -> bool:
    """Whether the client asks for text/html with a higher weight than for JSON: a browser navigating (Accept:
    text/html,...,*/*;q=0.8), not an API client (application/json, */* or no Accept header; RFC 9110 section
    12.5.1), which keeps its JSON answer."""
    if not accept:
        return False
    accept = accept[:_MAX_ACCEPT].lower()
    if "text/" not in accept:
        return False
    ranges = _weights(accept)
    json = max(_weight(ranges, "application", "json"), _weight(ranges, "application", "problem+json"))
    return _weight(ranges, "text", "html") > json


API_ADDRESS: Final = "this address is a programming interface for agency systems, not a page"
"""The error page's text for a browser that lands on an API address (api.problems: an RFC 9457 problem otherwise)."""
FORM_EXPIRED: Final = "the form has expired; please try again"
"""The error page's text for a form whose CSRF token is missing or wrong (error.form_expired)."""
ERROR_MESSAGES: Mapping[str, str] = {
    "this sign-in request has expired or was already completed; start again from the service you were using":
        "error.request_expired",
    "the service that sent you here is no longer registered": "error.client_gone",
    "the service that sent you here is not registered": "error.client_unknown",
    "the redirect URI is not registered for this service": "error.redirect_uri_unregistered",
    "development sign-in is disabled": "error.dev_login_disabled",
    FORM_EXPIRED: "error.form_expired",
    API_ADDRESS: "error.api_address",
    "the sign-out form has expired; please try again": "error.form_expired",
    "unknown level of assurance": "error.level_unknown",
    "no person is registered with this FIN": "error.person_unknown",
    "choose Allow or Deny": "error.decision_missing",
    "choose whom you act for": "error.representation_missing",
    "you hold no valid mandate to represent this organisation at sign-in; choose again": "error.mandate_not_valid",
    "id_token_hint is not a valid ID token of this provider": "error.logout_request_invalid",
    "client_id does not match the id_token_hint": "error.logout_request_invalid",
    "post_logout_redirect_uri needs id_token_hint or client_id": "error.logout_request_invalid",
    "post_logout_redirect_uri is not registered for this service": "error.logout_request_invalid",
    "this language is not offered": "error.language_unknown",
    NOT_FOUND: "error.not_found",
    METHOD_NOT_ALLOWED: "error.method_not_allowed",
    "too many requests; try again later": "error.rate_limited",
    "the service is temporarily unavailable; try again later": "error.unavailable",
    "ID-card sign-in is not available on this server": "card.error.card_login_unavailable",
    "this document is not in your signature history": "account.error.signature_not_found",
}
"""The plain-words message of each error description that idp/ and the page routes show a citizen (by its
English text, as gettext keys messages); a test keeps every literal description of those modules here."""
ERROR_PREFIXES: tuple[tuple[str, str], ...] = (
    ("FIN must be exactly 7 Latin letters or digits", "error.fin_format"),
)
"""Descriptions that end in a variable part."""
ERROR_CODES = ("invalid_request", "invalid_client", "unauthorized_client", "access_denied")
"""Error codes with a plain-words message of their own (error.code.<code>); others get error.generic."""


def error_message(error: str, description: str) -> tuple[str, bool]:
    """The message id for an error page, and whether it explains this very description (else the English
    description is offered as technical detail)."""
    key = ERROR_MESSAGES.get(description)
    if key is None:
        key = next((k for prefix, k in ERROR_PREFIXES if description.startswith(prefix)), None)
    if key is not None:
        return key, True
    return (f"error.code.{error}" if error in ERROR_CODES else "error.generic"), False


ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


def error_message_keys() -> frozenset[str]:
    """Every message an error page may show (the ID-card refusals of card_error_page among them)."""
    return frozenset({*ERROR_MESSAGES.values(), *(k for _, k in ERROR_PREFIXES),
                      *(f"error.code.{c}" for c in ERROR_CODES), "error.generic",
                      *(f"card.error.{c}" for c in CARD_REFUSALS)})


def error_page(error: str, description: str, *, status: int = 400) -> HTMLResponse:
    """The error page. Its language switcher leads to /error with the error code and the message id only: the
    failed request's own parameters (an untrusted redirect URI, say) are never echoed into the page."""
    key, explained = error_message(error, description)
    code = error if ERROR_CODE.fullmatch(error) else "invalid_request"
    return render("error.html", {"error": error, "message_key": key, "detail": None if explained else description,
                                 "return_to": "/error?" + urlencode({"error": code, "message": key})},
                  status=status)


# --- passkeys (api/static/webauthn.js) ------------------------------------------------------------------------

PASSKEY_ERRORS = (
    "challenge_expired", "challenge_used", "unknown_credential", "credential_removed", "credential_flagged",
    "counter_regression", "wrong_user", "verification_failed", "user_verification_required", "insufficient_level",
    "credential_exists", "credential_not_found", "request_expired", "invalid_request", "csrf",
    "code_invalid", "code_used", "enrollment_required",
    "login_required", "wrong_origin", "rate_limited",
    "approval_challenge_mismatch", "request_not_pending", "request_not_found", "signing_request_expired",
    "wrong_signer", "person_inactive", "mandate_invalid", "entity_not_configured",
    "not_supported", "cancelled", "no_passkey", "network", "unknown",
)
"""The error codes webauthn.js shows a message for: the passkey endpoints' problem codes (idp.core.webauthn,
idp.sql.enrollment, the CSRF and session checks, the signing approval's: signing.core.approval), then its own (no
WebAuthn, cancelled, no passkey used on the login page, request failed, anything else). The enrollment form shows
the code_* ones too."""
PASSKEY_STATUS = ("waiting", "verifying", "done")


def passkey_messages(tr: Translator) -> dict[str, dict[str, str]]:
    """The translated messages webauthn.js shows, for a <script type="application/json"> block."""
    return {"errors": {code: tr.gettext(f"passkey.error.{code}") for code in PASSKEY_ERRORS},
            "status": {name: tr.gettext(f"passkey.status.{name}") for name in PASSKEY_STATUS}}


def _tojson(value: object) -> Markup:
    """What the templates' `|tojson` filter writes (the environment's JSON policies)."""
    return htmlsafe_json_dumps(value, dumps=_env.policies["json.dumps_function"],
                               **_env.policies["json.dumps_kwargs"])


@functools.cache
def _messages_json(messages: Callable[[Translator], object], lang: str) -> Markup:
    """The JSON block `messages` (passkey_messages or card_messages) builds in one language: the catalogs are fixed
    at start, so it is built once per language, not on every login page (it held 34 gettext calls and a JSON dump)."""
    return _tojson(messages(translator(lang)))


def passkey_messages_json(tr: Translator) -> Markup:
    """passkey_messages as the `|tojson` filter writes it, for the pages' <script type="application/json">."""
    return _messages_json(passkey_messages, tr.lang)


# --- ID cards (api/static/webeid.js, api/static/idcard.js; the mTLS form post) ---------------------------------

CARD_REFUSALS = (
    "card_refused", "certificate_missing", "certificate_malformed", "certificate_expired",
    "certificate_not_yet_valid", "certificate_revoked", "revocation_unavailable", "certificate_untrusted",
    "certificate_self_signed", "certificate_wrong_usage", "certificate_policy_missing",
    "certificate_identifier_unsupported", "card_holder_unknown", "card_holder_inactive",
    "forwarded_certificate_refused",
    "webeid_token_malformed", "webeid_signature_invalid", "webeid_challenge_invalid",
)
"""The codes of idp.core.errors.CardLoginError and its subclasses (a test holds them equal): the refusals of the
ID-card endpoints, shown by card_error_page (mutual TLS) and by idcard.js (the Web eID token)."""
CARD_ERRORS = (
    *CARD_REFUSALS,
    "request_expired", "csrf", "rate_limited", "invalid_request", "wrong_origin", "card_login_unavailable",
    "no_extension", "no_app", "update_needed", "insecure_context", "busy", "no_card", "cancelled", "pin_blocked",
    "card_failed", "network", "unknown",
)
"""The error codes idcard.js shows a message for: the card refusals, the other problem codes of
/idcard/webeid/challenge and /idcard/webeid/login (api.routes.idcard: an expired sign-in, the CSRF check, the rate
limit, a malformed request, another Origin, no ID-card trust anchor configured), then its own: the Web eID
extension did not answer (no_extension), the extension has no Web eID application (no_app), versions that do not
fit (update_needed), a page not in a secure context, an ID-card request already running (busy), no card read in
time (no_card: no reader, no card, no PIN), the citizen closed the Web eID window (cancelled), the PIN is blocked,
the card or the application failed (card_failed), no answer from Açar (network), anything else."""
CARD_STATUS = ("starting", "waiting", "verifying", "done")


def card_messages(tr: Translator) -> dict[str, dict[str, str]]:
    """The translated messages idcard.js shows, for a <script type="application/json"> block."""
    return {"errors": {code: tr.gettext(f"card.error.{code}") for code in CARD_ERRORS},
            "status": {name: tr.gettext(f"login.card.status.{name}") for name in CARD_STATUS}}


def card_messages_json(tr: Translator) -> Markup:
    """card_messages as the `|tojson` filter writes it (built once per language, as passkey_messages_json)."""
    return _messages_json(card_messages, tr.lang)


def card_error_page(exc: CardLoginError) -> HTMLResponse:
    """The page of a refused ID-card login that came as a form post (the mutual-TLS listener,
    POST /idcard/tls/{pending_id}): the refusal in plain words (card.error.<code>), the English detail as technical
    details, the error's own HTTP status. Its language switcher leads to /error with the code and the message id
    only, as error_page's does."""
    code = exc.code if exc.code in CARD_REFUSALS else "card_refused"
    key = f"card.error.{code}"
    return render("error.html", {"error": code, "message_key": key, "detail": exc.detail,
                                 "return_to": "/error?" + urlencode({"error": code, "message": key})},
                  status=exc.status_code)


_PAGE_GLOBALS: Final[Mapping[str, object]] = {
    "passkey_messages_json": passkey_messages_json, "card_messages_json": card_messages_json,
    "claim_order": tuple(CLAIM_DESCRIPTIONS),  # the order the pages list a person's attributes in
}
for _language_environment in _ENVIRONMENTS.values():
    _language_environment.globals.update(_PAGE_GLOBALS)
