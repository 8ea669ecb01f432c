"""The ID-card parts of the pages: the login page's ID-card panel (Web eID button, the mutual-TLS form), the
translated refusal page of a card login (api.rendering.card_error_page) and the scripts served for them.

The pages are rendered by api.rendering through real HTTP (in process) on a small Starlette app with the same page
middleware as Açar's, so the language is negotiated from the request as on the real site; the login page's context
is the one api.routes.interaction.login_page gives, with the ID-card flags set here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api.i18n import CATALOGS, LANGUAGES, translator
from api.rendering import (
    CARD_ERRORS,
    CARD_REFUSALS,
    STATIC,
    PageContextMiddleware,
    card_error_page,
    card_messages,
    render,
)
from idp.core import errors
from idp.core.errors import CardLoginError
from tests.unit.api.test_pages import check_page, squash

pytestmark = pytest.mark.nodb

PENDING_ID = "pending-123"
CSRF_TOKEN = "csrf-abc"
TLS_URL = "https://localhost:8443"
REDIRECT_URI = "https://agency.example/cb"


def card_error_classes() -> dict[str, type[CardLoginError]]:
    found: dict[str, type[CardLoginError]] = {}
    pending: list[type[CardLoginError]] = [CardLoginError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return found


def login_context(**card: Any) -> dict[str, Any]:
    """What api.routes.interaction.login_page hands the template, plus the ID-card flags under test."""
    return {"title": "Sign in", "client_name": "Vergi portalı", "pending_id": PENDING_ID, "csrf_token": CSRF_TOKEN,
            "level": "high", "levels": ("low", "substantial", "high"), "login_hint": None, "ui_locales": None,
            "dev_login": False, "enrolled": False, **card}


async def login(request: Request) -> Response:
    mode = request.query_params.get("card", "")
    card: dict[str, Any] = {}
    if mode:
        tls_url = {"tls": TLS_URL, "tls-action": f"{TLS_URL}/idcard/tls/{PENDING_ID}"}.get(mode)
        card = {"card_login": True, "card_tls_url": tls_url}
    targets = [REDIRECT_URI, *([TLS_URL] if mode.startswith("tls") else [])]
    return render("login.html", login_context(**card), form_targets=targets)


async def refused(request: Request) -> Response:
    cls = card_error_classes()[request.path_params["code"]]
    return card_error_page(cls(f"the detail of {cls.code} <in English>"))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/interaction/{pending_id}", login), Route("/idcard/tls/{code}", refused,
                                                                              methods=["POST"]),
                            Mount("/static", StaticFiles(directory=STATIC))])
    transport = httpx.ASGITransport(app=PageContextMiddleware(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


def t(lang: str, key: str) -> str:
    """The catalog text as the parsed page's text holds it (runs of white space as single spaces; the no-break
    spaces api.i18n.typeset put there kept)."""
    return squash(CATALOGS[lang][key])


# --- the login page --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_the_login_page_offers_both_methods_side_by_side(http: httpx.AsyncClient, lang: str) -> None:
    r = await http.get(f"/interaction/{PENDING_ID}", params={"card": "tls"}, headers={"Accept-Language": lang})
    assert r.status_code == 200
    page = check_page(r, lang)
    assert t(lang, "login.passkey.button") in page.text and t(lang, "login.card.button") in page.text
    assert t(lang, "login.card.heading") in page.text and t(lang, "login.card.needs.reader") in page.text
    # both panels in the one grid of methods, passkey first
    methods = r.text.index('id="login-methods"')
    assert methods < r.text.index('id="passkey"') < r.text.index('id="idcard"')
    # the Web eID script's data and translated messages; the scripts in order, all from 'self'
    assert f'data-pending-id="{PENDING_ID}" data-csrf="{CSRF_TOKEN}" data-lang="{lang}"' in r.text
    messages = json.loads(page.script_text["idcard-messages"])
    assert messages == card_messages(translator(lang))
    assert set(messages["errors"]) == set(CARD_ERRORS)
    assert messages["errors"]["no_extension"] == CATALOGS[lang]["card.error.no_extension"]
    assert [s.get("src") for s in page.scripts if "src" in s] == [
        "/static/json_endpoints.js", "/static/webauthn.js", "/static/webeid.js", "/static/idcard.js"]
    # live regions for the script's status and errors; the button waits for the script (hidden without it)
    assert '<div id="idcard-error" class="notice notice-error" role="alert"></div>' in r.text
    assert '<p id="idcard-status" class="status" role="status"></p>' in r.text
    assert '<button type="button" id="idcard-button" aria-describedby="idcard-intro" hidden>' in r.text
    # the mutual-TLS form: to the listener's origin, with the pending sign-in's CSRF token; form-action allows it
    assert f'<form method="post" action="{TLS_URL}/idcard/tls/{PENDING_ID}" id="idcard-tls-form"' in r.text
    assert f'<input type="hidden" name="csrf_token" value="{CSRF_TOKEN}">' in r.text
    assert TLS_URL in r.headers["content-security-policy"].split("form-action", 1)[1].split(";", 1)[0]
    assert t(lang, "login.card.tls.button") in page.text


async def test_the_tls_form_takes_the_listener_or_the_whole_address(http: httpx.AsyncClient) -> None:
    """card_tls_url may be the listener's origin or already the form's address (api.routes.idcard.card_tls_url):
    the form posts to the same place."""
    actions = set()
    for mode in ("tls", "tls-action"):
        r = await http.get(f"/interaction/{PENDING_ID}", params={"card": mode}, headers={"Accept-Language": "en"})
        check_page(r, "en")
        actions.add(r.text.split('id="idcard-tls-form"')[0].rsplit('action="', 1)[1].split('"')[0])
    assert actions == {f"{TLS_URL}/idcard/tls/{PENDING_ID}"}


async def test_without_a_tls_listener_only_web_eid(http: httpx.AsyncClient) -> None:
    r = await http.get(f"/interaction/{PENDING_ID}", params={"card": "webeid"}, headers={"Accept-Language": "en"})
    page = check_page(r, "en")
    assert "idcard-button" in page.ids and "idcard-tls-form" not in page.ids
    assert "/idcard/tls/" not in r.text


async def test_without_card_login_the_page_is_the_passkey_page(http: httpx.AsyncClient) -> None:
    """card_login off (no ID-card trust anchors): no ID-card panel, no ID-card script."""
    r = await http.get(f"/interaction/{PENDING_ID}", headers={"Accept-Language": "az"})
    page = check_page(r, "az")
    assert "idcard" not in page.ids and "idcard-messages" not in page.script_text
    assert [s.get("src") for s in page.scripts if "src" in s] == ["/static/json_endpoints.js", "/static/webauthn.js"]
    assert t("az", "login.card.heading") not in page.text


# --- the refusal page of a card login (mutual TLS) -------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_every_card_refusal_gets_a_translated_page(http: httpx.AsyncClient, lang: str) -> None:
    classes = card_error_classes()
    assert set(classes) == set(CARD_REFUSALS)
    for code, cls in sorted(classes.items()):
        r = await http.post(f"/idcard/tls/{code}", headers={"Accept-Language": lang})
        assert r.status_code == cls.status_code, code
        page = check_page(r, lang)
        assert page.h1 == [t(lang, "error.title")]
        assert page.alerts == [t(lang, f"card.error.{code}")], code
        assert f"<code>{code}</code>" in r.text
        # the English detail as technical details, escaped
        assert f'<p lang="en">the detail of {code} &lt;in English&gt;</p>' in r.text
        # the language switcher shows the same message again, carrying only the code and the message id
        switch = next(a for a in page.links if a.get("hreflang") == "ru")["href"]
        assert switch == f"/language/ru?next=%2Ferror%3Ferror%3D{code}%26message%3Dcard.error.{code}"


def test_card_error_page_status_follows_the_error() -> None:
    assert card_error_page(errors.CertificateRevoked("revoked by OCSP")).status_code == 403
    assert card_error_page(errors.RevocationUnavailable("OCSP down")).status_code == 503
    assert card_error_page(errors.CertificateExpired("notAfter passed")).status_code == 400


# --- the scripts ---------------------------------------------------------------------------------------------------

async def test_the_web_eid_module_speaks_the_extension_protocol(http: httpx.AsyncClient) -> None:
    js = await http.get("/static/webeid.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for needle in ('"web-eid:authenticate"', "-(ack|success|failure)$", "challengeNonce", "libraryVersion",
                   "unverifiedCertificate", "appVersion", "EXTENSION_HANDSHAKE_TIMEOUT = 1000",
                   "NATIVE_APP_HANDSHAKE_TIMEOUT = 5000", "2 * 60 * 1000", "MAX_EXTENSION_LOAD_DELAY = 1000",
                   "event.source !== window", "isSecureContext", "@web-eid/web-eid-library"):
        assert needle in js.text, needle
    assert "eval(" not in js.text and "new Function" not in js.text
    login = await http.get("/static/idcard.js")
    assert login.status_code == 200
    for needle in ("/idcard/webeid/challenge", "/idcard/webeid/login", "window.AcarEndpoints", "pending_id",
                   "EXTENSION_UNAVAILABLE", "no_extension", "pin_blocked", "showError"):
        assert needle in login.text, needle
    shared = await http.get("/static/json_endpoints.js")  # its requests and its way on (json_endpoints.js)
    for needle in ("X-CSRF-Token", "form_post", "window.AcarEndpoints"):
        assert needle in shared.text, needle
