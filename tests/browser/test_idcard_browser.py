"""ID-card login in a real browser: the login page's ID-card button talking to the Web eID browser extension
(api/static/webeid.js, api/static/idcard.js), through to an OIDC code and tokens at level high; the page without
the extension; the refusals a card holder can meet; axe-core on the login page in Azerbaijani, English and Russian.

Chromium has no Web eID extension and no card reader here, so the test emulates the extension in the page: a
content-script-like shim, injected before the page's own scripts (Playwright's add_init_script, which is CDP
Page.addScriptToEvaluateOnNewDocument and runs whatever the page's Content-Security-Policy says), answers the
window messages exactly as the extension's content script does (web-eid:authenticate -> web-eid:authenticate-ack,
then -success with the token or -failure with a serialised error). It signs hash(origin) || hash(nonce) with the test
card's private key through WebCrypto: ECDSA P-384 with SHA-384 gives the raw r||s (IEEE P1363) signature Web eID
sends. The card, its issuing CA and root, and the OCSP responder (a real `openssl ocsp` process) come from
tests.idcard_pki; the server trusts that root (ACAR_IDCARD_TRUST_ANCHORS) and checks revocation over OCSP.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import BrowserContext, Page

from api.i18n import CATALOGS
from tests.browser.conftest import axe_violations, serving_site
from tests.browser.test_passkeys_browser import (
    NO_CONDITIONAL_UI,
    add_client,
    add_person,
    arrival,
    authorize_url,
    catch_redirects,
    redeem,
)
from tests.functional.helpers import Server
from tests.idcard_pki import APP_VERSION, CARD_POLICY, WEBEID_FORMAT, Card, IdCardPki, idcard_pki
from tests.oidc_tools import pkce_pair

pytestmark = pytest.mark.one_pass("sqlite")  # pages in Chromium: tests/conftest.py pytest_collection_modifyitems

FIN = "5CARD15"
ACR_HIGH = "http://eidas.europa.eu/LoA/high"
CERT_HEADER = "X-Client-Cert"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdCardPki]:
    """The ID-card PKI and its OCSP responder process, one per module."""
    with idcard_pki(tmp_path_factory.mktemp("idcard-pki")) as built:
        yield built


@pytest.fixture
def site(cli_env: dict[str, str], pki: IdCardPki, tmp_path: Path) -> Iterator[Server]:
    """A real `acar serve` on http://localhost:PORT (as tests.browser.conftest's) that trusts the test ID-card PKI,
    requires its card policy and checks revocation over its OCSP responder (fail closed). The client-certificate
    header is set so that the page also offers the mutual-TLS form (posting to the issuer, as behind a proxy)."""
    trust = pki.write_trust(tmp_path)
    with serving_site(cli_env, tmp_path, ACAR_IDCARD_TRUST_ANCHORS=json.dumps([str(trust.anchors)]),
                      ACAR_IDCARD_INTERMEDIATES=json.dumps([str(trust.intermediates)]),
                      ACAR_IDCARD_REQUIRED_POLICIES=json.dumps([CARD_POLICY]),
                      ACAR_IDCARD_CLIENT_CERT_HEADER=CERT_HEADER) as server:
        yield server


# --- the emulated Web eID extension --------------------------------------------------------------------------------

_SHIM = """
(() => {
  // The Web eID extension's content script, emulated: it listens on the page's window for "web-eid:" requests from
  // this very window, acknowledges at once, then answers with the token or a serialised error.
  const CARD = %(card)s;
  const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const base64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)));
  const record = (request) => {  // kept across the page's navigations (same origin, same tab)
    const seen = JSON.parse(sessionStorage.getItem("webeid-requests") || "[]");
    sessionStorage.setItem("webeid-requests", JSON.stringify([...seen, request]));
  };
  async function token(nonce) {
    const key = await crypto.subtle.importKey("pkcs8", bytes(CARD.pkcs8), {name: "ECDSA", namedCurve: "P-384"},
                                              false, ["sign"]);
    const encoder = new TextEncoder();
    const originHash = new Uint8Array(await crypto.subtle.digest("SHA-384", encoder.encode(location.origin)));
    const nonceHash = new Uint8Array(await crypto.subtle.digest("SHA-384", encoder.encode(nonce)));
    const signed = new Uint8Array(originHash.length + nonceHash.length);
    signed.set(originHash, 0);
    signed.set(nonceHash, originHash.length);
    // WebCrypto ECDSA signatures are raw r||s (IEEE P1363), as Web eID sends them
    const signature = await crypto.subtle.sign({name: "ECDSA", hash: "SHA-384"}, key, signed);
    return {unverifiedCertificate: CARD.certificate, algorithm: "ES384", signature: base64(signature),
            format: CARD.format, appVersion: CARD.appVersion};
  }
  window.addEventListener("message", async (event) => {
    if (event.source !== window || !event.data || event.data.action !== "web-eid:authenticate") {
      return;
    }
    record(event.data);
    window.postMessage({action: "web-eid:authenticate-ack"}, event.origin);
    if (CARD.fail) {
      window.postMessage({action: "web-eid:authenticate-failure",
                          error: {code: CARD.fail, message: CARD.message || CARD.fail, name: "Error"}},
                         event.origin);
      return;
    }
    try {
      window.postMessage({action: "web-eid:authenticate-success", ...(await token(event.data.challengeNonce))},
                         event.origin);
    } catch (error) {
      window.postMessage({action: "web-eid:authenticate-failure",
                          error: {code: "ERR_WEBEID_NATIVE_FATAL", message: String(error)}}, event.origin);
    }
  });
})();
"""


def extension(card: Card | None, *, fail: str | None = None, message: str | None = None) -> str:
    """The shim for `card` (a P-384 card: its PKCS#8 key and DER certificate), or one that fails with the error code
    `fail` (and the application's `message`)."""
    data: dict[str, Any] = {"format": WEBEID_FORMAT, "appVersion": APP_VERSION, "fail": fail, "message": message}
    if card is not None:
        assert isinstance(card.key, ec.EllipticCurvePrivateKey) and card.key.curve.name == "secp384r1"
        pkcs8 = card.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
        data.update(pkcs8=base64.b64encode(pkcs8).decode(), certificate=base64.b64encode(card.der).decode())
    return _SHIM % {"card": json.dumps(data)}


def text(lang: str, key: str) -> str:
    """A catalog text as the browser's innerText gives it (no-break spaces as spaces)."""
    return " ".join(CATALOGS[lang][key].split())


async def error_text(page: Page) -> str:
    await page.wait_for_selector("#idcard-error:not(:empty)", timeout=15_000)
    return " ".join((await page.inner_text("#idcard-error")).split())


async def tab_to(page: Page, element_id: str) -> list[str]:
    focused: list[str] = []
    for _ in range(40):  # Tab through the page until the element has the focus
        await page.keyboard.press("Tab")
        focused.append(await page.evaluate("document.activeElement.id"))
        if focused[-1] == element_id:
            break
    return focused


# --- the tests -------------------------------------------------------------------------------------------------------

async def test_keyboard_only_id_card_login_to_a_code_at_level_high(site: Server, pki: IdCardPki,
                                                                   context: BrowserContext, page: Page) -> None:
    add_person(site, FIN)
    card = pki.card(fin=FIN, curve=ec.SECP384R1())
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    caught: list[str] = []
    await catch_redirects(context, rp, caught)
    await context.add_init_script(NO_CONDITIONAL_UI)
    await page.add_init_script(extension(card))

    verifier, challenge = pkce_pair()
    await page.goto(authorize_url(site, rp, challenge, acr_values=ACR_HIGH))
    await page.wait_for_selector("#idcard-button")
    assert await page.is_visible("#passkey-button") and await page.is_visible("#idcard-button")  # side by side
    focused = await tab_to(page, "idcard-button")
    assert focused[0] == "skip-link" and focused[-1] == "idcard-button", focused
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused button must show a visible focus indicator"
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/consent$"), timeout=30_000)
    # the extension was asked as the library asks: the server's nonce, the page's language, protocol version 2
    sent = json.loads(await page.evaluate("sessionStorage.getItem('webeid-requests')"))
    assert len(sent) == 1 and sent[0]["options"] == {"lang": "az"} and sent[0]["libraryVersion"] == "2.0.0"
    assert len(sent[0]["challengeNonce"]) == 44
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "consent-allow":
            break
    before = len(caught)
    await page.keyboard.press("Enter")
    tokens = await redeem(site, rp, await arrival(caught, rp, before), verifier)
    assert tokens["claims"]["acr"] == ACR_HIGH
    assert {"sc", "hwk", "pin", "mfa"} <= set(tokens["claims"]["amr"])


async def test_what_the_page_says_when_the_card_cannot_be_used(site: Server, pki: IdCardPki,
                                                               context: BrowserContext, page: Page) -> None:
    """No extension (no acknowledgement), no Web eID application, the Web eID window closed, no card read in time, a
    blocked PIN, and the server's refusals (a revoked card, an unknown card holder): each a translated message in the
    live region, the button ready for another try; then the mutual-TLS form's refusal page."""
    add_person(site, FIN)
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    await catch_redirects(context, rp, [])
    await context.add_init_script(NO_CONDITIONAL_UI)
    _verifier, challenge = pkce_pair()
    login = authorize_url(site, rp, challenge, acr_values=ACR_HIGH)

    # no extension: nothing acknowledges the request
    await page.goto(login)
    await page.click("#idcard-button")
    assert await error_text(page) == text("az", "card.error.no_extension")
    assert await page.get_attribute("#idcard-error", "role") == "alert"
    assert await page.get_attribute("#idcard-needs", "open") is not None  # what is needed, with the install link
    assert await page.get_attribute("#idcard-button", "aria-disabled") is None  # ready for another try

    cases = [(extension(None, fail="ERR_WEBEID_USER_CANCELLED"), "card.error.cancelled"),
             (extension(None, fail="ERR_WEBEID_USER_TIMEOUT"), "card.error.no_card"),
             (extension(None, fail="ERR_WEBEID_NATIVE_UNAVAILABLE"), "card.error.no_app"),
             (extension(None, fail="ERR_WEBEID_NATIVE_FATAL", message="Verify PIN failed: PIN_BLOCKED"),
              "card.error.pin_blocked"),
             (extension(pki.revoked_card(fin=FIN, curve=ec.SECP384R1())), "card.error.certificate_revoked"),
             (extension(pki.card(fin="9NOBODY", curve=ec.SECP384R1())), "card.error.card_holder_unknown")]
    for shim, key in cases:
        tab = await context.new_page()
        await tab.add_init_script(shim)
        await tab.goto(login)
        await tab.click("#idcard-button")
        assert await error_text(tab) == text("az", key), key
        assert "/interaction/" in tab.url
        await tab.close()

    # the mutual-TLS form without a certificate: the translated refusal page (api.rendering.card_error_page)
    await page.goto(login)
    async with page.expect_navigation():
        await page.click("#idcard-tls-submit")
    assert " ".join((await page.inner_text("#error-message")).split()) == text("az", "card.error.certificate_missing")
    assert await page.inner_text("#error-code") and "certificate_missing" in await page.inner_text("#error-code")


async def test_axe_finds_no_violations_on_the_login_page_in_any_language(site: Server, context: BrowserContext,
                                                                         page: Page) -> None:
    """The login page with both methods, before and after a refusal (the message shown, the needs list open), in
    each language; the message in that language."""
    rp = add_client(site, "tax.agency-a.example", "Vergi portalı")
    await catch_redirects(context, rp, [])
    await context.add_init_script(NO_CONDITIONAL_UI)
    report: dict[str, list[dict[str, Any]]] = {}
    for lang in ("az", "en", "ru"):
        _verifier, challenge = pkce_pair()
        await page.goto(authorize_url(site, rp, challenge, ui_locales=lang))
        await page.wait_for_selector("#idcard-button")
        assert await page.get_attribute("html", "lang") == lang
        assert await page.is_visible("#idcard-tls-submit")
        report.update({f"{lang} login": v for v in [await axe_violations(page)] if v})
        await page.focus("#idcard-button")
        await page.keyboard.press("Enter")
        assert await error_text(page) == text(lang, "card.error.no_extension")
        report.update({f"{lang} login, no extension": v for v in [await axe_violations(page)] if v})
    assert report == {}
