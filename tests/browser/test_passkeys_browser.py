"""Passkeys in a real browser: enrollment with an activation code, passkey login for an OIDC client, consent,
code, tokens and single sign-on; keyboard-only login; the refusals a citizen can meet; axe-core on every page
in Azerbaijani, English and Russian.

Chromium (Debian) runs headless with a CDP virtual authenticator; the relying party's redirect URI is caught
by request interception (page.route), and its token requests go over real HTTP to `acar serve`.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from playwright.async_api import BrowserContext, Page

from tests.browser.conftest import axe_violations, virtual_authenticator
from tests.functional.helpers import Server, acar_json
from tests.oidc_tools import pkce_pair

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

FIN = "7BRWSR1"
ACR_SUBSTANTIAL = "http://eidas.europa.eu/LoA/substantial"
"""What Chromium's virtual authenticator reaches: its attestation chains to no configured root, so not high."""
NO_CONDITIONAL_UI = ("window.PublicKeyCredential && (PublicKeyCredential.isConditionalMediationAvailable = "
                     "async () => false);")
"""Makes the page take the button path (the autofill path would log in on page load)."""


@dataclass
class Rp:
    client_id: str
    secret: str
    redirect_uri: str


def add_person(site: Server, fin: str = FIN) -> None:
    acar_json(site.env, "person", "add", "--fin", fin, "--given-name", "Aysel",  # type: ignore[attr-defined]
              "--family-name", "Məmmədova")


def add_client(site: Server, host: str, name: str) -> Rp:
    redirect = f"https://{host}/cb"
    out = acar_json(site.env, "client", "add", "--name", name, "--redirect-uri", redirect,  # type: ignore[attr-defined]
                    "--scope", "openid", "--scope", "profile")
    return Rp(out["client_id"], out["client_secret"], redirect)


def activation_code(site: Server, fin: str = FIN) -> str:
    return str(acar_json(site.env, "enroll-code", "--fin", fin)["code"])  # type: ignore[attr-defined]


async def catch_redirects(context: BrowserContext, rp: Rp, caught: list[str]) -> None:
    """Record the browser's requests to the client's redirect URI (the host does not exist: the navigation then
    fails, which does not matter; the URL carries the code and state)."""
    context.on("request", lambda request: caught.append(request.url)
               if request.url.startswith(rp.redirect_uri) else None)


async def arrival(caught: list[str], rp: Rp, before: int) -> str:
    """The first redirect to `rp` recorded after `before` requests had been recorded."""
    for _ in range(200):
        fresh = [u for u in caught[before:] if u.startswith(rp.redirect_uri)]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the browser was not sent to {rp.redirect_uri}")


def authorize_url(site: Server, rp: Rp, challenge: str, **extra: str) -> str:
    params = {"client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "response_type": "code",
              "scope": "openid profile", "nonce": "nonce-1", "state": "state-1", "code_challenge": challenge,
              "code_challenge_method": "S256", **extra}
    return f"{site.base}/authorize?{urlencode(params)}"


async def enroll(page: Page, site: Server, code: str, name: str = "Telefon") -> None:
    await page.goto(site.base + "/enroll")
    await page.fill("#activation-code", code)
    await page.click("#enroll-submit")
    await page.wait_for_selector("#enroll-accepted")
    await page.fill("#passkey-name", name)
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/enroll/done$"))


async def redeem(site: Server, rp: Rp, callback: str, verifier: str) -> dict[str, Any]:
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == ["state-1"]
    async with httpx.AsyncClient(base_url=site.base) as http:
        r = await http.post("/token", data={"grant_type": "authorization_code", "code": query["code"][0],
                                            "redirect_uri": rp.redirect_uri, "code_verifier": verifier},
                            auth=(rp.client_id, rp.secret))
        assert r.status_code == 200, r.text
        tokens: dict[str, Any] = r.json()
        jwks = (await http.get("/jwks.json")).json()
    header = jwt.get_unverified_header(tokens["id_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    tokens["claims"] = jwt.decode(tokens["id_token"], jwt.PyJWK(key).key, algorithms=[header["alg"]],
                                  audience=rp.client_id, issuer=site.base)
    return tokens


def _text_of(path: str) -> str:
    return Path(path).read_text()


async def test_activation_code_to_passkey_login_consent_tokens_and_single_sign_on(
        site: Server, context: BrowserContext, page: Page) -> None:
    add_person(site)
    rp_a = add_client(site, "tax.agency-a.example", "Vergi portalı")
    rp_b = add_client(site, "social.agency-b.example", "Sosial müdafiə")
    caught: list[str] = []
    await catch_redirects(context, rp_a, caught)
    await catch_redirects(context, rp_b, caught)
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)

    await enroll(page, site, activation_code(site))

    verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp_a, challenge, acr_values=ACR_SUBSTANTIAL))
    await page.wait_for_selector("#passkey-button")
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/consent$"))
    assert "Vergi portalı" in await page.inner_text("#consent-agency")
    before = len(caught)
    await page.click("#consent-allow", no_wait_after=True)
    first = await redeem(site, rp_a, await arrival(caught, rp_a, before), verifier)
    assert first["claims"]["acr"] == ACR_SUBSTANTIAL
    assert "hwk" in first["claims"]["amr"] and "mfa" in first["claims"]["amr"]
    assert first["claims"]["nonce"] == "nonce-1" and first["claims"]["sid"]

    # a second agency: single sign-on (no login page), its own consent, the same login session
    verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp_b, challenge))
    await page.wait_for_url(re.compile(r"/consent$"))
    before = len(caught)
    await page.click("#consent-allow", no_wait_after=True)
    second = await redeem(site, rp_b, await arrival(caught, rp_b, before), verifier)
    assert second["claims"]["auth_time"] == first["claims"]["auth_time"]
    assert second["claims"]["sid"] == first["claims"]["sid"]
    assert second["claims"]["sub"] != first["claims"]["sub"]  # pairwise: different sectors

    # the relying party's side with only ACAR_ISSUER set: userinfo, refresh rotation with strict reuse detection
    # (RFC 9700 section 4.14.2: a reused refresh token revokes its family), then logout ends single sign-on
    async with httpx.AsyncClient(base_url=site.base) as http:
        r = await http.get("/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"})
        assert r.status_code == 200 and r.json()["sub"] == first["claims"]["sub"], r.text
        rotated = await http.post("/token", data={"grant_type": "refresh_token",
                                                  "refresh_token": first["refresh_token"]},
                                  auth=(rp_a.client_id, rp_a.secret))
        assert rotated.status_code == 200 and rotated.json()["refresh_token"] != first["refresh_token"], rotated.text
        reused = await http.post("/token", data={"grant_type": "refresh_token",
                                                 "refresh_token": first["refresh_token"]},
                                 auth=(rp_a.client_id, rp_a.secret))
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        family = await http.post("/token", data={"grant_type": "refresh_token",
                                                 "refresh_token": rotated.json()["refresh_token"]},
                                 auth=(rp_a.client_id, rp_a.secret))
        assert family.status_code == 400 and family.json()["error"] == "invalid_grant"
    await page.goto(site.base + "/logout")
    await page.click("#logout-submit")
    await page.wait_for_selector("#logout-done")
    await page.goto(authorize_url(site, rp_b, pkce_pair()[1]))
    await page.wait_for_selector("#passkey-button")  # signed out: the login page again, no single sign-on

    # after the whole flow, the server's log holds its requests but no token, code, cookie, master key or
    # private key
    logs = site.log_path.read_text() if site.log_path else ""
    assert '"/webauthn/login/verify"' in logs and '"/token"' in logs
    secrets = [site_cookie["value"] for site_cookie in await context.cookies() if site_cookie["value"]]
    secrets += [parse_qs(urlsplit(url).query)["code"][0] for url in caught]
    for tokens in (first, second):
        secrets += [tokens[name] for name in ("access_token", "id_token", "refresh_token") if name in tokens]
        secrets += [tokens["access_token"].split(".")[2], tokens["id_token"].split(".")[2]]
    secrets.append(_text_of(site.env["ACAR_MASTER_KEY_FILE"]).strip())  # type: ignore[attr-defined]
    assert len(secrets) >= 10 and [value for value in secrets if value in logs] == []
    assert "PRIVATE KEY" not in logs


async def test_keyboard_only_login(site: Server, context: BrowserContext, page: Page) -> None:
    add_person(site)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    caught: list[str] = []
    await catch_redirects(context, rp, caught)
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await enroll(page, site, activation_code(site))
    await context.clear_cookies()  # a new visit: the login page, not single sign-on

    asked: list[str] = []  # the options endpoint's requests: the page came with its ceremony (api.routes.interaction)
    page.on("request", lambda request: asked.append(request.url) if "/webauthn/login/options" in request.url else None)
    _verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge))
    await page.wait_for_selector("#passkey-button")
    focused = []
    for _ in range(30):  # Tab through the page until the passkey button has the focus
        await page.keyboard.press("Tab")
        focused.append(await page.evaluate("document.activeElement.id"))
        if focused[-1] == "passkey-button":
            break
    assert focused[0] == "skip-link" and focused[-1] == "passkey-button", focused
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused button must show a visible focus indicator"
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/consent$"))
    assert asked == []
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "consent-allow":
            break
    before = len(caught)
    await page.keyboard.press("Enter")
    assert "code=" in await arrival(caught, rp, before)


AUTOFILL_WAITS = """(() => {
  const real = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = (options) => options && options.mediation === "conditional"
    ? new Promise((resolve, reject) => {
        window.autofillWaits = true;
        options.signal.addEventListener(
          "abort", () => reject(new DOMException("The operation was aborted.", "AbortError")));
      })
    : real(options);
})();"""
"""A citizen who does not pick from the autofill list: the conditional request waits until it is aborted (Chromium's
virtual authenticator answers a conditional request at once, as if the citizen had picked the passkey)."""


async def test_autofill_and_the_button_use_the_page_ceremony(site: Server, context: BrowserContext,
                                                            page: Page) -> None:
    """With conditional mediation (autofill) available, the page starts the autofill request with the ceremony it
    came with, and a passkey picked there logs in; a citizen who presses the button instead aborts that request,
    which was never answered, and the button prompts with the same ceremony. Neither asks /webauthn/login/options."""
    add_person(site)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    await catch_redirects(context, rp, [])
    await virtual_authenticator(page)
    await enroll(page, site, activation_code(site))
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/webauthn/login/options" in request.url else None)
    for picked_from_autofill in (True, False):
        await context.clear_cookies()
        if not picked_from_autofill:
            await context.add_init_script(AUTOFILL_WAITS)
        await page.goto(authorize_url(site, rp, pkce_pair()[1]))
        if not picked_from_autofill:
            await page.wait_for_selector("#passkey-button")
            assert await page.evaluate("PublicKeyCredential.isConditionalMediationAvailable()") is True
            for _ in range(100):  # the autofill request waits (page.evaluate: the page's CSP forbids eval)
                if await page.evaluate("window.autofillWaits === true"):
                    break
                await page.wait_for_timeout(50)
            await page.click("#passkey-button")
        await page.wait_for_url(re.compile(r"/consent$"))
    assert asked == []


async def test_refusals_a_citizen_can_meet(site: Server, context: BrowserContext, page: Page) -> None:
    add_person(site)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    await catch_redirects(context, rp, [])
    cdp, authenticator = await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)

    # wrong codes lock nothing: the field keeps what was typed, and the right code (typed loosely) still works
    code = activation_code(site)
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")
    await page.goto(site.base + "/language/en?next=/enroll")
    for _ in range(6):
        await page.fill("#activation-code", wrong)
        async with page.expect_navigation():
            await page.click("#enroll-submit")
        await page.wait_for_selector("#enroll-error")
        assert await page.input_value("#activation-code") == wrong  # the page came back with it
    assert "registration office" in (await page.inner_text("#enroll-error")).lower()
    await page.fill("#activation-code", code.lower().replace("-", " "))
    await page.click("#enroll-submit")
    await page.wait_for_selector("#enroll-accepted")
    await context.clear_cookies()  # forget this enrollment; the next code revokes its code

    # a new code works once; reusing it is refused
    code = activation_code(site)
    await enroll(page, site, code)
    await page.goto(site.base + "/enroll")
    await page.fill("#activation-code", code)
    await page.click("#enroll-submit")
    assert await page.query_selector("#enroll-error") is not None

    # counter regression: the authenticator's counter is set back; the login is refused, the key flagged
    _verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge))
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/consent$"))
    creds = (await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator}))["credentials"]
    assert len(creds) == 1
    cloned = {**creds[0], "signCount": 0}
    await cdp.send("WebAuthn.removeCredential", {"authenticatorId": authenticator,
                                                 "credentialId": creds[0]["credentialId"]})
    await cdp.send("WebAuthn.addCredential", {"authenticatorId": authenticator, "credential": cloned})
    await context.clear_cookies()
    await page.goto(authorize_url(site, rp, challenge))
    await page.click("#passkey-button")
    await page.wait_for_selector("#passkey-error:not(:empty)")
    assert "/interaction/" in page.url and not page.url.endswith("/consent")

    # a browser without WebAuthn gets a message instead of the button
    bare = await context.new_page()
    await bare.add_init_script("delete window.PublicKeyCredential;")
    await bare.goto(authorize_url(site, rp, challenge))
    await bare.wait_for_selector("#passkey-unavailable", state="visible")
    assert not await bare.is_visible("#passkey-button")


PAGES_WITHOUT_SESSION = ["/", "/enroll", "/account", "/authorize?client_id=unknown&redirect_uri=https://x.example/cb",
                         "/no/such/page", "/interaction/gone", "/help"]


async def test_axe_finds_no_violations_on_any_page_in_any_language(site: Server, context: BrowserContext,
                                                                  page: Page) -> None:
    add_person(site)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    await catch_redirects(context, rp, [])
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    report: dict[str, list[dict[str, Any]]] = {}

    async def check(label: str, lang: str) -> None:
        assert await page.get_attribute("html", "lang") == lang, label
        found = await axe_violations(page)
        if found:
            report[f"{lang} {label} {page.url}"] = found

    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        for path in PAGES_WITHOUT_SESSION:
            await page.goto(site.base + path)
            await check(path, lang)
        await page.goto(site.base + "/enroll")
        await page.fill("#activation-code", "WRNG-CODE-XXXX-YYYY-ZZZZ")
        await page.click("#enroll-submit")
        await check("enroll error", lang)
        _verifier, challenge = pkce_pair()
        await page.goto(authorize_url(site, rp, challenge, ui_locales=lang))
        await page.wait_for_selector("#passkey-button")
        await check("login", lang)
    # the enrollment step in each language (a code redeemed per language; the last one registers)
    for lang in ("az", "en", "ru"):
        await context.clear_cookies()  # forget the previous language's enrollment
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        await page.goto(site.base + "/enroll")
        await page.fill("#activation-code", activation_code(site))  # a new code revokes the earlier ones
        await page.click("#enroll-submit")
        await page.wait_for_selector("#enroll-accepted")
        await check("enroll passkey step", lang)
    await page.fill("#passkey-name", "Telefon")
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/enroll/done$"))
    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        await page.goto(site.base + "/enroll/done")
        await check("enroll done", lang)
        _verifier, challenge = pkce_pair()
        await page.goto(authorize_url(site, rp, challenge, prompt="consent"))
        if "/consent" not in page.url:
            await page.click("#passkey-button")
            await page.wait_for_url(re.compile(r"/consent$"))
        await check("consent", lang)
        await page.goto(site.base + "/account")
        await check("account", lang)
        await page.goto(site.base + "/logout")
        await check("logout confirmation", lang)
    await page.click("#logout-submit")
    await page.wait_for_selector("#logout-done")
    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        await page.goto(site.base + "/logout")
        await page.wait_for_selector("#logout-done")
        await check("signed out", lang)
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]


async def test_a_failed_passkey_prompt_points_to_enrollment_and_help(site: Server, context: BrowserContext,
                                                                    page: Page) -> None:
    """navigator.credentials.get rejects (NotAllowedError: this authenticator holds no passkey for Açar): the page
    says there may be no passkey on this device and links to enrollment and to help; axe-core in each language."""
    add_person(site)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    await catch_redirects(context, rp, [])
    await virtual_authenticator(page)  # no credential on it
    await context.add_init_script(NO_CONDITIONAL_UI)
    messages = {"az": "bu cihazda Açar hesabınız üçün giriş açarı yoxdur",
                "en": "there is no passkey for your Açar account on this device",
                "ru": "на этом устройстве нет ключа доступа"}
    report: dict[str, list[dict[str, Any]]] = {}
    for lang, words in messages.items():
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        _verifier, challenge = pkce_pair()
        await page.goto(authorize_url(site, rp, challenge))
        await page.wait_for_selector("#passkey-button")
        assert not await page.is_visible("#passkey-help")
        await page.click("#passkey-button")
        await page.wait_for_selector("#passkey-help", state="visible")
        assert words in await page.inner_text("#passkey-error"), lang
        pending_id = await page.get_attribute("#passkey", "data-pending-id")
        assert await page.get_attribute("#passkey-help-enroll", "href") == f"/enroll?interaction={pending_id}"
        report.update({f"{lang} login": v for v in [await axe_violations(page)] if v})
        await page.click("#passkey-help-link")
        await page.wait_for_url(re.compile(r"/help#no-passkey$"))
        assert await page.get_attribute("html", "lang") == lang
        report.update({f"{lang} help": v for v in [await axe_violations(page)] if v})
        # trying again hides the help until the next failure
        await page.go_back()
        await page.wait_for_selector("#passkey-button")
        assert not await page.is_visible("#passkey-help")
    # the page's ceremony serves its first prompt only: a second try asks the options endpoint for a new one, and
    # so does the first prompt of a page open for half its challenge's life
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/webauthn/login/options" in request.url else None)
    _verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge))
    await page.click("#passkey-button")
    await page.wait_for_selector("#passkey-help", state="visible")
    assert asked == []
    async with page.expect_request(lambda request: "/webauthn/login/options" in request.url):
        await page.click("#passkey-button")
    await page.wait_for_selector("#passkey-help", state="visible")
    await page.add_init_script("performance.now = function () { return 151000; };")  # 300 s challenges
    await page.reload()
    await page.wait_for_selector("#passkey-button")
    async with page.expect_request(lambda request: "/webauthn/login/options" in request.url):
        await page.click("#passkey-button")
    await page.wait_for_selector("#passkey-help", state="visible")
    assert len(asked) == 2, asked
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]


async def test_enrollment_started_from_a_sign_in_returns_to_it(site: Server, context: BrowserContext,
                                                              page: Page) -> None:
    """From a service's sign-in page to the activation code and back: the new passkey (named after the browser and
    device) signs in at once; axe-core on the pages of the way in each language."""
    add_person(site)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    caught: list[str] = []
    await catch_redirects(context, rp, caught)
    await virtual_authenticator(page)
    await context.add_init_script(NO_CONDITIONAL_UI)
    report: dict[str, list[dict[str, Any]]] = {}

    verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge))
    await page.wait_for_selector("#passkey-button")
    sign_in = page.url
    await page.click("#enroll-link")
    await page.wait_for_selector("#activation-code")
    await page.fill("#activation-code", activation_code(site))
    await page.click("#enroll-submit")
    await page.wait_for_selector("#enroll-accepted")
    await page.click("#passkey-button")  # the name left empty
    await page.wait_for_url(sign_in)
    assert await page.is_visible("#login-enrolled")
    for lang in ("az", "en", "ru"):
        await context.add_cookies([{"name": "acar_lang", "value": lang, "url": site.base}])
        await page.goto(sign_in)
        await page.wait_for_selector("#login-enrolled")
        report.update({f"{lang} login after enrollment": v for v in [await axe_violations(page)] if v})
    await context.add_cookies([{"name": "acar_lang", "value": "az", "url": site.base}])
    await page.click("#passkey-button")
    await page.wait_for_url(re.compile(r"/consent$"))
    before = len(caught)
    await page.click("#consent-allow", no_wait_after=True)
    tokens = await redeem(site, rp, await arrival(caught, rp, before), verifier)
    assert tokens["claims"]["acr"] == ACR_SUBSTANTIAL

    await page.goto(site.base + "/account")
    assert (await page.inner_text("#credential-1-name")).strip() == "Linux cihazında Chrome"  # headless Chromium
    assert report == {}, json.dumps(report, indent=1, ensure_ascii=False)[:4000]
