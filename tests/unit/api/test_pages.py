"""Every citizen-facing page through real HTTP (in process): its language, its security headers, its structure
(checked by parsing the HTML), and the CSRF check of every form."""

from __future__ import annotations

import html as html_module
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from api.deps import Services
from api.i18n import CATALOGS, LANGUAGES
from api.rendering import PASSKEY_ERRORS, error_message_keys, prefers_html, return_path, safe_return_path
from idp.core.claims import CLAIM_DESCRIPTIONS
from idp.sql.models import ActivationCode, Consent, Person, WebAuthnCredential
from storage.base import utcnow
from tests.oidc_tools import (
    FIN,
    Registered,
    asgi_browser,
    authorization_params,
    authorize,
    hidden,
    pkce_pair,
    register_client,
    register_person,
)
from tests.passkey_tools import issue_code
from tests.webauthn_authenticator import CSRF, SoftwareAuthenticator, passkey_login


def squash(text: str) -> str:
    """`text` with its runs of ASCII whitespace as one space, as a browser lays them out; no-break spaces (U+00A0,
    which str.split() would also take) are kept: api.i18n.typeset puts them there on purpose."""
    return re.sub(r"[ \t\n\r\f\v]+", " ", text).strip()


def t(lang: str, key: str, **params: str) -> str:
    """The catalog text as the page shows it (HTML-escaped quotes aside: the texts hold none)."""
    text = CATALOGS[lang][key]
    return text.format_map(params) if params else text


# --- fixtures -----------------------------------------------------------------------------------------------

@pytest.fixture
async def other_browser(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(dev_app) as c:
        yield c


@dataclass
class World:
    services: Services
    rp: Registered
    person_id: str


@pytest.fixture
async def world(initialized: Services) -> World:
    rp = await register_client(initialized, name="Vergi portalı",
                               post_logout_redirect_uris=("https://agency.example/bye",))
    return World(initialized, rp, await register_person(initialized))


# --- the HTML checks every page passes ------------------------------------------------------------------------

@dataclass
class Page:
    """What the checks need from a parsed page."""

    lang: str | None = None
    h1: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    label_for: list[str] = field(default_factory=list)
    controls: list[dict[str, str]] = field(default_factory=list)
    scripts: list[dict[str, str]] = field(default_factory=list)
    script_text: dict[str, str] = field(default_factory=dict)
    style_attributes: int = 0
    style_elements: int = 0
    event_handlers: list[str] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    landmarks: set[str] = field(default_factory=set)
    first_link: dict[str, str] | None = None
    text: str = ""


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._h1: list[str] | None = None
        self._script: str | None = None
        self._alert_depth = 0
        self._alert: list[str] = []
        self._stack: list[str] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        page = self.page
        if "id" in a:
            page.ids.append(a["id"])
        page.style_attributes += "style" in a
        page.event_handlers += [k for k in a if k.startswith("on")]
        self._element(tag, a)
        if tag in ("main", "header", "footer", "nav"):
            page.landmarks.add(tag)
        if a.get("role") in ("alert", "status") or self._alert_depth:
            self._alert_depth += 1
            self._stack.append(tag)
        # void elements never close
        if tag in ("input", "br", "meta", "link") and self._alert_depth and self._stack and self._stack[-1] == tag:
            self._stack.pop()
            self._alert_depth -= 1

    def _element(self, tag: str, a: dict[str, str]) -> None:
        page = self.page
        if tag == "html":
            page.lang = a.get("lang")
        elif tag == "h1":
            self._h1 = []
        elif tag == "label":
            page.label_for.append(a.get("for", ""))
        elif tag in ("input", "select", "textarea"):
            page.controls.append({"tag": tag, **a})
        elif tag == "script":
            page.scripts.append(a)
            self._script = a.get("id", "")
            page.script_text[self._script] = ""
        elif tag == "style":
            page.style_elements += 1
        elif tag == "a":
            page.links.append(a)
            if page.first_link is None:
                page.first_link = a

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1" and self._h1 is not None:
            self.page.h1.append("".join(self._h1).strip())
            self._h1 = None
        if tag == "script":
            self._script = None
        if self._alert_depth and self._stack and self._stack[-1] == tag:
            self._stack.pop()
            self._alert_depth -= 1
            if self._alert_depth == 0:
                text = squash("".join(self._alert))
                if text:  # an empty live region waits for the script's messages
                    self.page.alerts.append(text)
                self._alert = []

    def handle_data(self, data: str) -> None:
        if self._h1 is not None:
            self._h1.append(data)
        if self._script is not None:
            self.page.script_text[self._script] += data
        if self._alert_depth:
            self._alert.append(data)
        self._text.append(data)

    def close(self) -> None:
        super().close()
        self.page.text = squash("".join(self._text))


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page


def check_page(r: httpx.Response, lang: str) -> Page:
    """The rules every page keeps: its language, the security headers, no inline script or style, one h1,
    a skip link to main, landmarks, labelled controls, unique ids, and the language switcher."""
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    policy = r.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and "base-uri 'none'" in policy and "form-action 'self'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-language"] == lang
    page = parse(r.text)
    assert page.lang == lang
    assert page.style_attributes == 0 and page.style_elements == 0 and page.event_handlers == []
    for script in page.scripts:
        # scripts come from 'self'; a block without src must be data (application/json), which is never run
        assert script.get("src", "").startswith("/static/") or script.get("type") == "application/json", script
    for name, body in page.script_text.items():
        script = next(s for s in page.scripts if s.get("id", "") == name)
        if "src" in script:
            assert body.strip() == ""
        else:
            json.loads(body)
    assert len(page.h1) == 1 and page.h1[0], page.h1
    assert page.first_link is not None and page.first_link.get("href") == "#main"  # the skip link comes first
    assert "main" in page.ids and {"main", "header", "nav", "footer"} <= page.landmarks
    assert len(page.ids) == len(set(page.ids)), sorted(i for i in page.ids if page.ids.count(i) > 1)
    for target in page.label_for:
        assert target in page.ids, target
    for control in page.controls:
        if control.get("type") != "hidden":
            assert control.get("id") in page.label_for, control
    switcher = [a for a in page.links if a.get("hreflang")]
    assert [a["hreflang"] for a in switcher] == list(LANGUAGES)
    assert all(a["lang"] == a["hreflang"] and a["href"].startswith(f"/language/{a['lang']}?next=%2F")
               for a in switcher)
    assert [a["hreflang"] for a in switcher if a.get("aria-current") == "true"] == [lang]
    assert "<button" not in r.text or all(
        m.group(1) in ("submit", "button") for m in re.finditer(r'<button type="([^"]*)"', r.text))
    assert r.text.count("<button") == len(re.findall(r'<button type="', r.text))  # every button says its type
    return page


# --- walking the flows ----------------------------------------------------------------------------------------

async def login_page(http: httpx.AsyncClient, world: World, *, headers: dict[str, str] | None = None,
                     **extra: str | None) -> httpx.Response:
    _, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorization_params(world.rp, challenge, **extra))
    assert r.status_code == 303 and r.headers["location"].startswith("/interaction/"), r.text
    return await http.get(r.headers["location"], headers=headers or {})


async def signed_in(http: httpx.AsyncClient, world: World, scope: str = "openid profile fin") -> None:
    """A session (development login) and consent for the world's client."""
    _, challenge = pkce_pair()
    done = await authorize(http, authorization_params(world.rp, challenge, scope=scope))
    assert "code" in done.query


def data_attribute(html: str, name: str) -> str:
    found = re.search(rf'{name}="([^"]*)"', html)
    assert found, name
    return found.group(1)


async def add_credential(services: Services, person_id: str, credential_id: str, name: str, *,
                         flagged: bool = False) -> None:
    async with services.sessions() as session, session.begin():
        session.add(WebAuthnCredential(
            id=credential_id, person_id=person_id, public_key=b"\xa5", sign_count=0, transports=["internal"],
            aaguid="00000000-0000-0000-0000-000000000000", attestation_format="none", user_verified=True,
            name=name, max_level="high", created_at=utcnow(), flagged_at=utcnow() if flagged else None))


# --- language --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_login_page_in_each_language(world: World, http: httpx.AsyncClient, lang: str) -> None:
    r = await login_page(http, world, headers={"Accept-Language": f"{lang};q=0.9"}, acr_values="high")
    assert r.status_code == 200
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "login.title")]
    assert t(lang, "level.description.high") in page.text and "Vergi portalı" in page.text
    assert t(lang, "login.passkey.button") in page.text and t(lang, "login.dev.fin") in page.text
    # the passkey script: its data, the conditional-mediation field, the messages in this language
    assert 'autocomplete="username webauthn"' in r.text
    assert data_attribute(r.text, "data-csrf") == hidden(r.text, "csrf_token")
    assert data_attribute(r.text, "data-pending-id") in r.url.path
    messages = json.loads(page.script_text["passkey-messages"])
    assert set(messages["errors"]) == set(PASSKEY_ERRORS)
    assert messages["errors"]["code_invalid"] == t(lang, "passkey.error.code_invalid")
    assert [s.get("src") for s in page.scripts if "src" in s] == ["/static/json_endpoints.js", "/static/webauthn.js"]
    # the development form keeps its contract: csrf_token, fin, level
    assert f'action="{r.url.path}/dev-login"' in r.text and 'name="fin"' in r.text and 'name="level"' in r.text


async def test_ui_locales_then_cookie_then_accept_language(world: World, http: httpx.AsyncClient) -> None:
    assert check_page(await login_page(http, world), "az")  # nothing asked: Azerbaijani
    assert check_page(await login_page(http, world, headers={"Accept-Language": "ru-RU,ru"}), "ru")
    # ui_locales beats Accept-Language: its first supported language
    r = await login_page(http, world, headers={"Accept-Language": "ru"}, ui_locales="fr en ru")
    check_page(r, "en")
    # the switcher's choice beats both, and is remembered
    switch = next(a for a in parse(r.text).links if a.get("hreflang") == "az")["href"]
    assert parse_qs(urlsplit(switch).query)["next"] == [r.url.path]
    moved = await http.get(switch)
    assert moved.status_code == 303 and moved.headers["location"] == r.url.path
    cookie = moved.headers["set-cookie"]
    assert cookie.startswith("acar_lang=az;") and "samesite=lax" in cookie.lower() and "Path=/" in cookie
    assert "secure" not in cookie.lower()  # http issuer (development)
    check_page(await http.get(moved.headers["location"], headers={"Accept-Language": "ru"}), "az")
    check_page(await login_page(http, world, headers={"Accept-Language": "ru"}, ui_locales="en"), "az")


async def test_the_language_cookie_is_secure_over_https(world: World, http: httpx.AsyncClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(world.services.oidc, "issuer", "https://acar.example")
    r = await http.get("/language/ru", params={"next": "/account"})
    assert "secure" in r.headers["set-cookie"].lower()
    r = await http.get("/enroll")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-acar_enroll_csrf=") and "secure" in cookie.lower() and "Path=/" in cookie


@pytest.mark.parametrize(("target", "expected"), [
    ("/interaction/abc?x=1", "/interaction/abc?x=1"),
    ("//evil.example/x", "/account"),
    ("/\\evil.example", "/account"),
    ("https://evil.example/", "/account"),
    ("javascript:alert(1)", "/account"),
    ("/a b", "/account"),
    ("", "/account"),
])
async def test_the_switcher_only_leads_back_to_this_site(http: httpx.AsyncClient, target: str, expected: str) -> None:
    assert safe_return_path(target) == expected
    r = await http.get("/language/en", params={"next": target})
    assert r.status_code == 303 and r.headers["location"] == expected


async def test_an_unknown_language_is_refused(http: httpx.AsyncClient) -> None:
    r = await http.get("/language/de", headers={"Accept-Language": "en"})
    assert r.status_code == 404 and "set-cookie" not in r.headers
    assert t("en", "error.language_unknown") in check_page(r, "en").text


def test_return_path_without_a_request() -> None:
    assert return_path(None) == "/account"


# --- consent, form_post, error, logout --------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_consent_page_names_each_attribute_in_plain_words(world: World, http: httpx.AsyncClient,
                                                                lang: str) -> None:
    _, challenge = pkce_pair()
    shown = await authorize(http, authorization_params(world.rp, challenge, scope="openid profile fin offline_access",
                                                       ui_locales=lang), decision=None)
    assert shown.pages == ["login", "consent"]
    r = await http.get(shown.response.headers["location"])
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "consent.title")]
    wanted = {"sub", "name", "given_name", "family_name", "fin"}
    for claim in CLAIM_DESCRIPTIONS:
        assert (t(lang, f"claim.{claim}") in page.text) == (claim in wanted), claim
    assert t(lang, "consent.offline") in page.text
    assert t(lang, "consent.allow") in page.text and t(lang, "consent.deny") in page.text
    assert "form-action 'self' https://agency.example;" in r.headers["content-security-policy"]


async def test_form_post_page(world: World, http: httpx.AsyncClient) -> None:
    _, challenge = pkce_pair()
    done = await authorize(http, authorization_params(world.rp, challenge, response_mode="form_post",
                                                      ui_locales="ru"))
    r = done.response
    assert r.status_code == 200
    page = check_page(r, "az")  # the request is over: no ui_locales any more, and nothing else asked
    assert page.h1 == [t("az", "form_post.title")]
    assert [s.get("src") for s in page.scripts] == ["/static/form_post.js"]
    assert 'action="https://agency.example/cb" id="form-post"' in r.text and hidden(r.text, "code")
    assert "form-action 'self' https://agency.example;" in r.headers["content-security-policy"]


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_error_page_in_each_language(world: World, http: httpx.AsyncClient, lang: str) -> None:
    _, challenge = pkce_pair()
    params = authorization_params(world.rp, challenge, redirect_uri="https://attacker.example/cb")
    r = await http.get("/authorize", params=params, headers={"Accept-Language": lang})
    assert r.status_code == 400
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "error.title")]
    assert page.alerts == [t(lang, "error.redirect_uri_unregistered")]
    assert "invalid_request" in page.text and "attacker.example" not in r.text
    # the switcher shows the same error again without carrying the failed request along
    switch = next(a for a in page.links if a.get("hreflang") == "ru")["href"]
    again = await http.get((await http.get(switch)).headers["location"])
    assert again.status_code == 400
    assert parse(again.text).alerts == [t("ru", "error.redirect_uri_unregistered")]
    check_page(again, "ru")


async def test_unexplained_errors_show_the_technical_detail(http: httpx.AsyncClient, world: World) -> None:
    _, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorization_params(world.rp, challenge, prompt="bogus"))
    assert r.status_code == 303  # a trusted client: the error goes back to it
    r = await http.get("/authorize", params=[("client_id", world.rp.client_id), ("client_id", "x")],
                       headers={"Accept-Language": "az"})
    page = check_page(r, "az")
    assert page.alerts == [t("az", "error.code.invalid_request")]
    assert '<p lang="en">client_id is repeated</p>' in r.text
    r = await http.get("/error", params={"error": "<x>", "message": "login.title"})
    assert parse(r.text).alerts == [t("az", "error.generic")] and "&lt;x&gt;" not in r.text


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_logout_pages_in_each_language(world: World, http: httpx.AsyncClient, lang: str) -> None:
    await signed_in(http, world)
    r = await http.get("/logout", params={"client_id": world.rp.client_id, "ui_locales": lang,
                                          "post_logout_redirect_uri": "https://agency.example/bye"})
    assert r.status_code == 200
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "logout.confirm.title")]
    assert t(lang, "logout.confirm.question_return", service="Vergi portalı") in page.text
    r = await http.post("/logout/confirm", data={
        "csrf_token": hidden(r.text, "csrf_token"), "client_id": world.rp.client_id,
        "post_logout_redirect_uri": "https://agency.example/bye"})
    assert r.status_code == 303 and r.headers["location"].startswith("https://agency.example/bye")
    r = await http.get("/logout", headers={"Accept-Language": lang})
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "logout.done.title")] and t(lang, "logout.done.message") in page.text


# --- enrollment -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_enrollment_with_a_passkey(world: World, http: httpx.AsyncClient, lang: str) -> None:
    http.cookies.set("acar_lang", lang)
    code = await issue_code(world.services, world.person_id)
    r = await http.get("/enroll")
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "enroll.title")] and t(lang, "enroll.code.hint") in page.text
    csrf_cookie = r.headers["set-cookie"]
    assert csrf_cookie.startswith("acar_enroll_csrf=") and "HttpOnly" in csrf_cookie
    assert "samesite=strict" in csrf_cookie.lower()
    r = await http.post("/enroll", data={"csrf_token": hidden(r.text, "csrf_token"), "code": code.lower()})
    assert r.status_code == 200, r.text
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "enroll.passkey.title")] and "Aysel Məmmədova" in page.text
    assert "acar_enroll=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    csrf = data_attribute(r.text, "data-csrf")
    assert data_attribute(r.text, 'data-passkey') == "register"
    # the same browser coming back finds its passkey step again
    assert data_attribute((await http.get("/enroll")).text, "data-csrf") == csrf
    # what webauthn.js does next, with the token the page gave it
    authenticator = SoftwareAuthenticator()
    options = await http.post("/webauthn/register/options", json={"name": "Telefon"}, headers={CSRF: csrf})
    assert options.status_code == 200, options.text
    verify = await http.post("/webauthn/register/verify", headers={CSRF: csrf}, json={
        "ceremony": options.json()["ceremony"], "credential": authenticator.create(options.json()["publicKey"]),
        "name": "Telefon"})
    assert verify.status_code == 201 and verify.json()["redirect"] == "/enroll/done"
    done = await http.get("/enroll/done")
    assert check_page(done, lang).h1 == [t(lang, "enroll.done.title")]
    # and the passkey signs in on the login page: the page's data is what the script sends
    r = await login_page(http, world)
    login = await passkey_login(http, data_attribute(r.text, "data-pending-id"), data_attribute(r.text, "data-csrf"),
                                authenticator)
    assert login.status_code == 200 and login.json()["redirect"].endswith("/consent"), login.text


async def test_enrollment_form_errors(world: World, http: httpx.AsyncClient) -> None:
    code = await issue_code(world.services, world.person_id)
    form = await http.get("/enroll", headers={"Accept-Language": "en"})
    token = hidden(form.text, "csrf_token")

    async def submit(value: str, lang: str = "en") -> tuple[httpx.Response, Page]:
        r = await http.post("/enroll", data={"csrf_token": token, "code": value}, headers={"Accept-Language": lang})
        page = check_page(r, lang)
        assert 'aria-invalid="true"' in r.text and 'aria-describedby="activation-code-hint enroll-error"' in r.text
        return r, page

    r, page = await submit("   ")
    assert r.status_code == 400 and page.alerts == [t("en", "enroll.error.empty")]
    r, page = await submit("not a code", "ru")
    assert r.status_code == 400 and page.alerts == [t("ru", "passkey.error.code_invalid")]
    r, page = await submit("x" * 500)
    assert r.status_code == 400 and page.alerts == [t("en", "passkey.error.code_invalid")]
    wrong = code[:-4] + ("2222" if not code.endswith("2222") else "3333")
    for _ in range(6):  # wrong guesses lock nothing
        r, page = await submit(wrong, "az")
        assert r.status_code == 400 and page.alerts == [t("az", "passkey.error.code_invalid")]
    assert typed_code(r.text) == wrong  # what the citizen typed is kept, to correct it
    r = await http.post("/enroll", data={"csrf_token": token, "code": code})
    assert r.status_code == 200 and "acar_enroll=" in r.headers["set-cookie"]


def typed_code(html: str) -> str | None:
    """The value of the activation-code field, as the browser shows it."""
    [tag] = re.findall(r'<input id="activation-code"[^>]*>', html)
    value = re.search(r' value="([^"]*)"', tag)
    return html_module.unescape(value.group(1)) if value else None


async def test_every_refused_code_gets_the_same_page(world: World, http: httpx.AsyncClient) -> None:
    """Unknown, wrong, revoked, expired and used codes: one status and one page, byte for byte but for the code the
    citizen typed, which the field keeps."""
    pages = {}
    for kind in ("unknown", "wrong", "revoked", "expired", "used"):
        code = await issue_code(world.services, world.person_id)
        column = {"revoked": {"revoked_at": utcnow()}, "expired": {"expires_at": utcnow()},
                  "used": {"used_at": utcnow()}}.get(kind)
        if column is not None:
            async with world.services.sessions() as session, session.begin():
                await session.execute(update(ActivationCode).values(**column))
        typed = {"unknown": "2222-2222-2222-2222-2222", "wrong": code[:-1] + ("3" if code[-1] != "3" else "4")
                 }.get(kind, code)
        form = await http.get("/enroll")
        r = await http.post("/enroll", data={"csrf_token": hidden(form.text, "csrf_token"), "code": typed})
        assert check_page(r, "az").alerts == [t("az", "passkey.error.code_invalid")], kind
        assert typed_code(r.text) == typed
        pages[kind] = (r.status_code, r.text.replace(f'value="{typed}"', 'value=""'))
    assert {status for status, _ in pages.values()} == {400}
    assert len(set(pages.values())) == 1


async def test_enrollment_form_csrf(world: World, http: httpx.AsyncClient, other_browser: httpx.AsyncClient) -> None:
    code = await issue_code(world.services, world.person_id)
    form = await http.get("/enroll")
    token = hidden(form.text, "csrf_token")
    # no token, a wrong token, the token without its cookie (another browser), a planted cookie
    attempts = [
        (http, {"code": code}),
        (http, {"csrf_token": token[:-2] + "xx", "code": code}),
        (other_browser, {"csrf_token": token, "code": code}),
    ]
    for browser, data in attempts:
        r = await browser.post("/enroll", data=data)
        assert r.status_code == 403
        assert check_page(r, "az").alerts == [t("az", "error.form_expired")]
    other_browser.cookies.set("acar_enroll_csrf", "planted")
    r = await other_browser.post("/enroll", data={"csrf_token": token, "code": code})
    assert r.status_code == 403
    async with world.services.sessions() as session:
        row = (await session.execute(select(ActivationCode))).scalar_one()
    assert row.used_at is None and "acar_enroll=" not in r.headers.get("set-cookie", "")
    # a new token per browser, kept while its cookie lives
    assert hidden((await http.get("/enroll")).text, "csrf_token") == token
    assert hidden((await other_browser.get("/enroll")).text, "csrf_token") != token


# --- account ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_account_needs_a_session(http: httpx.AsyncClient, lang: str) -> None:
    r = await http.get("/account", headers={"Accept-Language": lang})
    assert r.status_code == 401
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "account.signin.title")] and "csrf_token" not in r.text


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_account_page_lists_passkeys_and_consents(world: World, http: httpx.AsyncClient, lang: str) -> None:
    await signed_in(http, world, scope="openid profile fin offline_access")
    await add_credential(world.services, world.person_id, "cred-1", "Telefonum")
    await add_credential(world.services, world.person_id, "cred-2", "<b>Açar</b>", flagged=True)
    async with world.services.sessions() as session, session.begin():
        await session.execute(update(WebAuthnCredential).where(WebAuthnCredential.id == "cred-1").values(
            created_at=utcnow().replace(year=2025, month=3, day=4, hour=8),
            last_used_at=utcnow().replace(year=2025, month=3, day=4, hour=22, minute=5)))
        await session.execute(update(Consent).values(granted_at=utcnow().replace(year=2025, month=1, day=15, hour=8)))
    http.cookies.set("acar_lang", lang)
    r = await http.get("/account")
    assert r.status_code == 200
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "account.title")] and "Aysel Məmmədova" in page.text
    assert "Telefonum" in page.text and "&lt;b&gt;Açar&lt;/b&gt;" in r.text and "<b>Açar" not in r.text
    assert t(lang, "account.passkeys.flagged") in page.text and t(lang, "account.passkeys.never_used") in page.text
    dates = {"az": ("4 mart 2025", "5 mar 2025 02:05", "15 yanvar 2025"),
             "en": ("March 4, 2025", "Mar 5, 2025, 2:05\u202fAM", "January 15, 2025"),
             "ru": ("4 марта 2025\u202fг.", "5 мар. 2025\u202fг., 02:05", "15 января 2025\u202fг.")}[lang]
    dates = tuple(squash(d) for d in dates)  # the parsed text has its spaces normalised
    assert dates[0] in page.text and dates[1] in page.text
    assert t(lang, "account.consents.granted", date=dates[2]) in page.text
    assert "Vergi portalı" in page.text and t(lang, "claim.fin") in page.text
    assert t(lang, "account.consents.offline") in page.text
    assert data_attribute(r.text, "data-passkey") == "register"
    assert data_attribute(r.text, "data-csrf") == hidden(r.text, "csrf_token")
    assert [s.get("src") for s in page.scripts if "src" in s] == ["/static/json_endpoints.js", "/static/webauthn.js"]


async def test_rename_remove_and_withdraw(world: World, http: httpx.AsyncClient) -> None:
    await signed_in(http, world)
    await add_credential(world.services, world.person_id, "cred-1", "Telefonum")
    await add_credential(world.services, world.person_id, "cred-2", "Noutbuk")
    r = await http.get("/account", headers={"Accept-Language": "en"})
    token = hidden(r.text, "csrf_token")
    # rename
    r = await http.post("/account/credentials/cred-1/rename", data={"csrf_token": token, "name": "  Mənim  telefonum "})
    assert r.status_code == 303 and r.headers["location"] == "/account?done=renamed"
    r = await http.get(r.headers["location"], headers={"Accept-Language": "en"})
    page = check_page(r, "en")
    assert "Mənim telefonum" in page.text and t("en", "account.done.renamed") in page.text
    r = await http.post("/account/credentials/cred-1/rename", data={"csrf_token": token, "name": "x" * 101},
                        headers={"Accept-Language": "ru"})
    assert r.status_code == 400 and check_page(r, "ru").alerts == [t("ru", "account.error.name_invalid")]
    r = await http.post("/account/credentials/nope/rename", data={"csrf_token": token, "name": "y"})
    assert r.status_code == 404 and check_page(r, "az").alerts == [t("az", "account.error.passkey_not_found")]
    # a blank name becomes the numbered default in the page's language, never English "Passkey ..."
    for lang, name in (("az", "Giriş açarı 2"), ("ru", "Ключ доступа 2")):
        r = await http.post("/account/credentials/cred-1/rename", data={"csrf_token": token, "name": "  "},
                            headers={"Accept-Language": lang})
        assert r.status_code == 303 and r.headers["location"] == "/account?done=renamed"
        assert name in check_page(await http.get("/account", headers={"Accept-Language": lang}), lang).text
    # remove: a confirmation first (nothing changes), then for good
    r = await http.post("/account/credentials/cred-2/remove", data={"csrf_token": token},
                        headers={"Accept-Language": "en"})
    page = check_page(r, "en")
    assert r.status_code == 200 and page.h1 == [t("en", "account.remove.title")]
    assert t("en", "account.remove.question", name="Noutbuk") in page.text
    assert t("en", "account.remove.last") not in page.text
    assert len((await http.get("/account")).text.split('class="card"')) == 4  # 2 passkeys, 1 consent
    r = await http.post("/account/credentials/cred-2/remove", data={"csrf_token": hidden(r.text, "csrf_token"),
                                                                     "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/account?done=removed"
    r = await http.post("/account/credentials/cred-1/remove", data={"csrf_token": token})
    assert t("az", "account.remove.last") in check_page(r, "az").text  # the only passkey left
    r = await http.post("/account/credentials/cred-2/remove", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 404
    async with world.services.sessions() as session:
        removed = await session.get(WebAuthnCredential, "cred-2")
        assert removed is not None and removed.revoked_at is not None
    # withdraw the consent
    r = await http.post(f"/account/consents/{quote(world.rp.client_id)}/withdraw", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/account?done=withdrawn"
    page = check_page(await http.get(r.headers["location"]), "az")
    assert t("az", "account.done.withdrawn") in page.text and t("az", "account.consents.none") in page.text
    r = await http.post(f"/account/consents/{world.rp.client_id}/withdraw", data={"csrf_token": token})
    assert r.status_code == 404 and check_page(r, "az").alerts == [t("az", "account.error.consent_not_found")]


async def test_a_passkey_added_from_the_account_page(world: World, http: httpx.AsyncClient) -> None:
    await signed_in(http, world)
    r = await http.get("/account")
    csrf = data_attribute(r.text, "data-csrf")
    options = await http.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert options.status_code == 200, options.text
    verify = await http.post("/webauthn/register/verify", headers={CSRF: csrf}, json={
        "ceremony": options.json()["ceremony"], "credential": SoftwareAuthenticator().create(
            options.json()["publicKey"])})
    assert verify.status_code == 201, verify.text
    page = check_page(await http.get(verify.json()["redirect"], headers={"Accept-Language": "en"}), "en")
    assert t("en", "account.passkeys.never_used") in page.text and t("en", "level.name.substantial") in page.text


# --- CSRF on every form ------------------------------------------------------------------------------------------

async def test_every_form_refuses_a_missing_or_wrong_token(world: World, http: httpx.AsyncClient) -> None:
    """dev-login, consent, sign-out, and the account forms: 403, the same page in the citizen's language, and
    nothing changed."""
    r = await login_page(http, world)
    login = r.url.path
    for data in ({"fin": FIN, "level": "high"}, {"csrf_token": "x", "fin": FIN, "level": "high"}):
        r = await http.post(login + "/dev-login", data=data, headers={"Accept-Language": "ru"})
        assert r.status_code == 403 and check_page(r, "ru").alerts == [t("ru", "error.form_expired")]
    await signed_in(http, world, scope="openid")
    _, challenge = pkce_pair()
    shown = await authorize(http, authorization_params(world.rp, challenge, scope="openid profile"), decision=None)
    consent = shown.response.headers["location"]
    for data in ({"decision": "allow"}, {"csrf_token": "x", "decision": "allow"}):
        r = await http.post(consent, data=data, headers={"Accept-Language": "en"})
        assert r.status_code == 403 and check_page(r, "en").alerts == [t("en", "error.form_expired")]
    logout = await http.get("/logout", params={"client_id": world.rp.client_id})
    r = await http.post("/logout/confirm", data={"csrf_token": "x", "client_id": world.rp.client_id})
    assert r.status_code == 403 and check_page(r, "az").alerts == [t("az", "error.form_expired")]
    assert logout.status_code == 200
    await add_credential(world.services, world.person_id, "cred-1", "Telefonum")
    for path, data in (("/account/credentials/cred-1/rename", {"name": "z"}),
                       ("/account/credentials/cred-1/remove", {"confirm": "yes"}),
                       (f"/account/consents/{world.rp.client_id}/withdraw", {"go": "1"})):
        for token in (None, "x", hidden(logout.text, "csrf_token")):  # absent, wrong, another purpose's
            form = dict(data) if token is None else {**data, "csrf_token": token}
            r = await http.post(path, data=form)
            assert r.status_code == 403, (path, token)
            assert check_page(r, "az").alerts == [t("az", "error.form_expired")]
    page = check_page(await http.get("/account"), "az")
    assert "Telefonum" in page.text and "Vergi portalı" in page.text  # nothing changed


async def test_account_forms_of_a_signed_out_browser(world: World, http: httpx.AsyncClient) -> None:
    await signed_in(http, world)
    token = hidden((await http.get("/account")).text, "csrf_token")
    cookie = http.cookies["acar_session"]
    async with world.services.sessions() as session, session.begin():
        from idp.sql.models import LoginSession

        await session.execute(update(LoginSession).values(ended_at=utcnow()))
    http.cookies.set("acar_session", cookie)
    r = await http.post(f"/account/consents/{world.rp.client_id}/withdraw", data={"csrf_token": token})
    assert r.status_code == 401 and check_page(r, "az").h1 == [t("az", "account.signin.title")]


# --- assets ----------------------------------------------------------------------------------------------------

async def test_static_assets_are_served_from_self(http: httpx.AsyncClient) -> None:
    js = await http.get("/static/webauthn.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for needle in ("parseRequestOptionsFromJSON", "parseCreationOptionsFromJSON", "isConditionalMediationAvailable",
                   'mediation = "conditional"', "window.AcarEndpoints", "/webauthn/login/options",
                   "/webauthn/login/verify", "/webauthn/register/options", "/webauthn/register/verify",
                   "NotAllowedError"):
        assert needle in js.text, needle
    shared = await http.get("/static/json_endpoints.js")  # what webauthn.js and idcard.js share
    assert shared.status_code == 200 and "javascript" in shared.headers["content-type"]
    for needle in ("X-CSRF-Token", "application/problem+json", "form_post", "window.AcarEndpoints"):
        assert needle in shared.text, needle
    css = await http.get("/static/acar.css")
    assert css.status_code == 200 and ":focus-visible" in css.text and "@media (max-width" in css.text
    assert "url(" not in css.text and "@import" not in css.text  # no external fonts or images
    assert (await http.get("/static/form_post.js")).status_code == 200


async def test_names_are_escaped(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name='<script>alert("x")</script>')
    world = World(initialized, rp, await register_person(initialized))
    r = await login_page(http, world)
    assert "<script>alert" not in r.text and "&lt;script&gt;alert" in r.text
    check_page(r, "az")


async def test_person_names_on_the_enrollment_step(world: World, http: httpx.AsyncClient) -> None:
    async with world.services.sessions() as session, session.begin():
        await session.execute(update(Person).values(given_name='<img src=x onerror="1">'))
    code = await issue_code(world.services, world.person_id)
    form = await http.get("/enroll")
    r = await http.post("/enroll", data={"csrf_token": hidden(form.text, "csrf_token"), "code": code})
    assert r.status_code == 200 and "<img" not in r.text
    check_page(r, "az")


# --- the landing page and the routing errors a browser meets ---------------------------------------------------

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
"""What Chromium sends when it navigates to an address."""


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_the_landing_page_in_each_language(http: httpx.AsyncClient, lang: str) -> None:
    r = await http.get("/", headers={"Accept": BROWSER_ACCEPT, "Accept-Language": lang})
    assert r.status_code == 200
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "home.title")]
    hrefs = {a.get("href") for a in page.links}
    assert {"/account", "/enroll"} <= hrefs
    for key in ("home.intro", "home.account.link", "home.enroll.link"):
        assert squash(t(lang, key)) in page.text, key  # the page text is whitespace-normalized
    assert r.headers["cross-origin-opener-policy"] == "same-origin"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize(("path", "expected"), [
    ("/no/such/page", (404, "not_found", "error.not_found")),
    ("/token", (405, "method_not_allowed", "error.method_not_allowed")),  # a JSON-only endpoint
    ("/admin/clients/x/y", (404, "not_found", "error.not_found")),
])
async def test_a_browser_gets_routing_errors_as_a_page(http: httpx.AsyncClient, lang: str, path: str,
                                                       expected: tuple[int, str, str]) -> None:
    status, error, key = expected
    r = await http.get(path, headers={"Accept": BROWSER_ACCEPT, "Accept-Language": lang})
    assert r.status_code == status
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "error.title")] and page.alerts == [t(lang, key)]
    assert error in page.text
    if status == 405:
        assert r.headers["allow"] == "POST"


@pytest.mark.parametrize(("accept", "html"), [
    (BROWSER_ACCEPT, True), ("text/html", True), ("TEXT/HTML", True), ("text/*, application/json;q=0.9", True),
    ("text/html, application/json", False), ("application/json, text/html", False), ("*/*", False), (None, False),
    ("", False), ("text/html;q=0, */*", False), ("text/html;q=nan, */*;q=0.1", False), ("text/html;q=inf", False),
    ("application/*;q=0.5, text/html;q=0.6", True), ("text/html;q=0.6, application/problem+json", False),
])
def test_prefers_html(accept: str | None, html: bool) -> None:
    """RFC 9110 section 12.5.1 weights, the most specific range deciding; an equal weight keeps JSON."""
    assert prefers_html(accept) is html


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, text/html;q=0.5",
                                    "text/html;q=0.5, application/json", "text/html;q=0.5, */*",
                                    "text/html;q=nonsense, */*;q=0.1"])
async def test_api_clients_keep_their_problem_json(http: httpx.AsyncClient, accept: str | None) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    if accept is None:
        http.headers.pop("accept", None)
    for path, status in (("/no/such/page", 404), ("/token", 405)):
        r = await http.get(path, headers=headers)
        assert r.status_code == status
        assert r.headers["content-type"] == "application/problem+json", (accept, path)
        assert r.json()["type"] == f"urn:acar:problem:http_{status}"
    # the OAuth endpoints' own errors stay RFC 6749 JSON, even for a browser's Accept header
    r = await http.post("/token", data={"grant_type": "nonsense"}, headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code in (400, 401) and r.headers["content-type"] == "application/json"
    assert r.json()["error"]


# --- issue 12: the citizen pages' first-run gaps ---------------------------------------------------------------

CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
                  "Mobile Safari/537.36")


async def enrollment_step(http: httpx.AsyncClient, world: World, enroll_path: str = "/enroll",
                          **extra: str) -> httpx.Response:
    """A fresh activation code typed on the form at `enroll_path`: the passkey step."""
    code = await issue_code(world.services, world.person_id)
    form = await http.get(enroll_path)
    r = await http.post("/enroll", data={"csrf_token": hidden(form.text, "csrf_token"), "code": code, **extra})
    assert r.status_code == 200 and 'id="enroll-accepted"' in r.text, r.text
    return r


async def register(http: httpx.AsyncClient, csrf: str, user_agent: str, **extra: str) -> httpx.Response:
    """What webauthn.js sends when the name field is left empty (plus `extra` body members)."""
    headers = {CSRF: csrf, "User-Agent": user_agent}
    options = await http.post("/webauthn/register/options", json={}, headers=headers)
    assert options.status_code == 200, options.text
    return await http.post("/webauthn/register/verify", headers=headers, json={
        "ceremony": options.json()["ceremony"], "credential": SoftwareAuthenticator().create(
            options.json()["publicKey"]), **extra})


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_a_passkey_without_a_name_is_named_after_its_browser_and_device(world: World, http: httpx.AsyncClient,
                                                                             lang: str) -> None:
    http.cookies.set("acar_lang", lang)
    step = await enrollment_step(http, world)
    assert t(lang, "passkey.name.hint") in step.text
    android = t(lang, "passkey.default.browser_on_platform", browser="Chrome", platform="Android")
    r = await register(http, data_attribute(step.text, "data-csrf"), CHROME_ANDROID)
    assert r.status_code == 201 and r.json()["name"] == android, r.text
    # later, signed in: a second passkey from the same kind of phone, then one from a client that names nothing
    await signed_in(http, world)
    csrf = data_attribute((await http.get("/account")).text, "data-csrf")
    r = await register(http, csrf, CHROME_ANDROID)
    assert r.status_code == 201 and r.json()["name"] == f"{android} 2"
    r = await register(http, csrf, "curl/8.5.0")
    assert r.status_code == 201 and r.json()["name"] == t(lang, "passkey.default.numbered", number="3")
    account = await http.get("/account")
    check_page(account, lang)
    names = re.findall(r'<h3 id="credential-\d+-name">([^<]*)</h3>', account.text)
    assert sorted(names) == sorted([android, f"{android} 2", t(lang, "passkey.default.numbered", number="3")])


async def test_enrollment_started_from_a_sign_in_returns_to_it(world: World, http: httpx.AsyncClient) -> None:
    login = await login_page(http, world, headers={"Accept-Language": "en"})
    pending_id = data_attribute(login.text, "data-pending-id")
    link = next(a["href"] for a in parse(login.text).links if a.get("id") == "enroll-link")
    assert link == f"/enroll?interaction={pending_id}"
    form = await http.get(link)
    assert hidden(form.text, "interaction") == pending_id
    step = await enrollment_step(http, world, link, interaction=pending_id)
    assert data_attribute(step.text, "data-interaction") == pending_id
    check_page(step, "az")
    csrf = data_attribute(step.text, "data-csrf")
    authenticator = SoftwareAuthenticator()
    options = await http.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    verify = await http.post("/webauthn/register/verify", headers={CSRF: csrf}, json={
        "ceremony": options.json()["ceremony"], "credential": authenticator.create(options.json()["publicKey"]),
        "interaction": pending_id})
    assert verify.status_code == 201 and verify.json()["redirect"] == f"/interaction/{pending_id}", verify.text
    assert pending_id not in (http.cookies.get("acar_enrolled") or pending_id)  # ids travel in logged URLs
    # back on the same sign-in page, told to use the new passkey, which signs in
    back = await http.get(verify.json()["redirect"], headers={"Accept-Language": "en"})
    page = check_page(back, "en")
    assert t("en", "login.enrolled") in page.text
    assert data_attribute(back.text, "data-pending-id") == pending_id
    done = await passkey_login(http, pending_id, data_attribute(back.text, "data-csrf"), authenticator)
    assert done.status_code == 200 and done.json()["redirect"].endswith("/consent"), done.text
    # another sign-in page of the same browser does not claim the enrollment
    other = await login_page(http, world, headers={"Accept-Language": "en"})
    assert t("en", "login.enrolled") not in parse(other.text).text


async def test_the_enrollment_returns_only_to_a_live_sign_in_of_this_browser(
        world: World, http: httpx.AsyncClient, other_browser: httpx.AsyncClient) -> None:
    foreign = data_attribute((await login_page(other_browser, world)).text, "data-pending-id")
    for value in ("https://evil.example/x", "//evil.example", "/account", "../../logout", foreign, "x" * 5000):
        form = await http.get("/enroll", params={"interaction": value})
        assert form.status_code == 200 and 'name="interaction"' not in form.text, value
        assert "evil.example" not in form.text
    step = await enrollment_step(http, world, interaction=foreign)
    assert "data-interaction" not in step.text
    r = await register(http, data_attribute(step.text, "data-csrf"), CHROME_ANDROID, interaction=foreign)
    assert r.status_code == 201 and r.json()["redirect"] == "/enroll/done"


async def test_enroll_done_is_shown_only_after_an_enrollment(world: World, http: httpx.AsyncClient) -> None:
    r = await http.get("/enroll/done")
    assert r.status_code == 303 and r.headers["location"] == "/enroll"
    http.cookies.set("acar_enrolled", "forged value!")
    assert (await http.get("/enroll/done")).status_code == 303
    http.cookies.clear()
    step = await enrollment_step(http, world)
    r = await register(http, data_attribute(step.text, "data-csrf"), CHROME_ANDROID)
    assert r.json()["redirect"] == "/enroll/done"
    for lang in LANGUAGES:  # the language switcher shows it again
        done = await http.get("/enroll/done", headers={"Accept-Language": lang})
        assert done.status_code == 200 and check_page(done, lang).h1 == [t(lang, "enroll.done.title")]


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_a_failed_passkey_prompt_points_to_enrollment_and_help(world: World, http: httpx.AsyncClient,
                                                                   lang: str) -> None:
    r = await login_page(http, world, headers={"Accept-Language": lang})
    pending_id = data_attribute(r.text, "data-pending-id")
    page = check_page(r, lang)
    messages = json.loads(page.script_text["passkey-messages"])
    assert messages["errors"]["no_passkey"] == t(lang, "passkey.error.no_passkey")
    # the block webauthn.js reveals when navigator.credentials.get fails: hidden until then
    assert re.search(r'<div id="passkey-help" class="[^"]*" hidden>', r.text)
    links = {a.get("id"): a["href"] for a in page.links}
    assert links["passkey-help-enroll"] == f"/enroll?interaction={pending_id}"
    assert links["passkey-help-link"] == "/help#no-passkey"
    help_page = await http.get("/help", headers={"Accept-Language": lang})
    help_text = check_page(help_page, lang)
    assert help_text.h1 == [t(lang, "help.title")] and 'id="no-passkey"' in help_page.text
    assert t(lang, "help.no_passkey.heading") in help_page.text and t(lang, "help.no_passkey.code") in help_page.text
    assert {a.get("id"): a["href"] for a in help_text.links}["help-enroll-link"] == "/enroll"


async def test_a_wrong_activation_code_stays_in_the_form(world: World, http: httpx.AsyncClient) -> None:
    await issue_code(world.services, world.person_id)
    form = await http.get("/enroll")
    for typed in ("ABCD-EFGH-JKLM-NPQR", 'x"><script>'):
        r = await http.post("/enroll", data={"csrf_token": hidden(form.text, "csrf_token"), "code": typed})
        assert r.status_code == 400
        check_page(r, "az")
        value = re.search(r'<input id="activation-code"[^>]* value="([^"]*)"', r.text)
        assert value and value.group(1) == typed.replace('"', "&#34;").replace(">", "&gt;").replace("<", "&lt;")


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_an_expired_sign_in_page_says_each_sentence_once(http: httpx.AsyncClient, lang: str) -> None:
    r = await http.get("/interaction/gone", headers={"Accept-Language": lang})
    page = check_page(r, lang)
    assert page.alerts == [t(lang, "error.request_expired")]
    assert page.text.count(t(lang, "error.next_step")) == 1
    for key in error_message_keys():  # no error message repeats the next step the page adds
        assert t(lang, "error.next_step") not in t(lang, key), key


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_the_logout_confirmation_offers_to_stay_signed_in(world: World, http: httpx.AsyncClient,
                                                               lang: str) -> None:
    await signed_in(http, world)
    r = await http.get("/logout", params={"client_id": world.rp.client_id, "ui_locales": lang})
    page = check_page(r, lang)
    stay = next(a for a in page.links if a.get("id") == "logout-stay")
    assert stay["href"] == "/account" and t(lang, "logout.confirm.stay") in page.text
    account = await http.get(stay["href"])
    assert account.status_code == 200 and 'id="account-person"' in account.text  # still signed in
