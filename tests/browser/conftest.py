"""Real-browser tests: Debian's Chromium, headless, driven by Playwright (the PyPI package's driver, with
executable_path: no browser is ever downloaded), against a real `acar serve` on http://localhost:PORT.

One browser process serves the whole session; each test gets a fresh context (cookies, virtual
authenticators). WebAuthn runs against a CDP virtual authenticator (ctap2, internal transport, resident keys,
user verification). axe-core comes from tests/browser/node_modules (npm ci, pinned by package-lock.json).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, CDPSession, Page, async_playwright

from api.deps import Services
from tests.functional.helpers import Server
from tests.local_http import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
AXE = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (run it as root)", pytrace=False)
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make browser-deps`", pytrace=False)
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@contextlib.contextmanager
def serving_site(cli_env: dict[str, str], tmp_path: Path, **settings: str) -> Iterator[Server]:
    """A real `acar serve` on http://localhost:PORT with the development login on and `settings` (ACAR_* names)
    beside it. Only ACAR_ISSUER places it: the WebAuthn RP ID and origin follow the issuer."""
    port = free_port()
    env = {**cli_env, "ACAR_ISSUER": f"http://localhost:{port}", "ACAR_DEV_LOGIN": "true", **settings}
    server = Server(env, port=port, log_path=tmp_path / "server.log", init=True)
    server.env = env  # type: ignore[attr-defined]
    server.wait_ready()
    server.base = f"http://localhost:{port}"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def site(cli_env: dict[str, str], services: Services, tmp_path: Path) -> Iterator[Server]:
    """`serving_site` with the access log on (the end-to-end test reads it)."""
    with serving_site(cli_env, tmp_path, ACAR_ACCESS_LOG="true", ACAR_LOG_LEVEL="INFO") as server:
        yield server


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(locale="az-AZ")
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


async def virtual_authenticator(page: Page, **options: Any) -> tuple[CDPSession, str]:
    """Attach a CDP virtual authenticator (WebAuthn.addVirtualAuthenticator) to the page's target."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    opts = {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
            "isUserVerified": True, "automaticPresenceSimulation": True, **options}
    found = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": opts})
    return cdp, str(found["authenticatorId"])


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core (WCAG 2.0/2.1 A and AA rules) on the current page; evaluate() is not subject to the page's
    CSP, so the strict script-src 'self' stays in force for the page itself."""
    await page.evaluate(AXE.read_text())
    result = await page.evaluate(
        "() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"]]
