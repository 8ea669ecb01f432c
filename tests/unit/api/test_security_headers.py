"""The security headers of every response (api.middleware.SecurityHeaders): JSON and other non-page answers
get a restrictive Content-Security-Policy and nosniff, pages keep their own policy and get
Cross-Origin-Opener-Policy; all get X-Frame-Options and the Permissions-Policy, and HSTS on an https issuer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.deps import Services
from tests.oidc_tools import asgi_browser

PERMISSIONS = ("camera=(), microphone=(), geolocation=(), publickey-credentials-get=(self), "
               "publickey-credentials-create=(self)")


def common(r: httpx.Response) -> None:
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["permissions-policy"] == PERMISSIONS
    assert len(r.headers.get_list("content-security-policy")) == 1
    assert r.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_json_answers_carry_a_restrictive_policy(client: httpx.AsyncClient) -> None:
    answers = [await client.get("/.well-known/openid-configuration"), await client.get("/jwks.json"),
               await client.post("/token", data={"grant_type": "nonsense"}),  # RFC 6749 error JSON
               await client.get("/no/such/api"),  # problem+json
               await client.get("/healthz")]
    for r in answers:
        assert "json" in r.headers["content-type"], r.headers["content-type"]
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert "cross-origin-opener-policy" not in r.headers
        assert "strict-transport-security" not in r.headers  # an http issuer
        common(r)


async def test_pages_keep_their_own_policy(client: httpx.AsyncClient) -> None:
    for path in ("/enroll", "/account"):
        r = await client.get(path)
        assert r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cross-origin-opener-policy"] == "same-origin"
        common(r)


@pytest.fixture
async def https_client(initialized: Services) -> AsyncIterator[httpx.AsyncClient]:
    initialized.settings.issuer = "https://login.gov.az"
    application: FastAPI = create_app(services=initialized)
    async with application.router.lifespan_context(application), asgi_browser(application) as c:
        yield c


async def test_an_https_issuer_sends_hsts(https_client: httpx.AsyncClient) -> None:
    for path in ("/jwks.json", "/enroll"):
        r = await https_client.get(path)
        assert r.status_code == 200
        max_age, *rest = r.headers["strict-transport-security"].split(";")
        assert int(max_age.strip().removeprefix("max-age=")) >= 365 * 86400
        assert [d.strip() for d in rest] == ["includeSubDomains"]
