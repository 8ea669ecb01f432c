"""The authorization-code flow in process (ASGI), end to end: authorize, login, consent, token, userinfo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.deps import Services
from tests.oidc_tools import consent, dev_login, pkce_pair, register_client, register_person


@pytest.fixture
async def dev_app(initialized: Services) -> AsyncIterator[FastAPI]:
    initialized.settings.dev_login = True
    application = create_app(services=initialized)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dev_app), base_url="http://localhost:8000") as c:
        yield c


async def test_code_flow(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    await register_person(initialized)
    verifier, challenge = pkce_pair()
    r = await http.get("/authorize", params={
        "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "response_type": "code",
        "scope": "openid profile fin", "nonce": "n-1", "state": "s-1", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert r.status_code == 303, r.text
    r = await dev_login(http, r.headers["location"])
    assert r.status_code == 303, r.text
    assert r.headers["location"].endswith("/consent")
    r = await consent(http, r.headers["location"])
    assert r.status_code == 303, r.text
    q = parse_qs(urlsplit(r.headers["location"]).query)
    assert q["state"] == ["s-1"]
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": q["code"][0],
                                        "redirect_uri": rp.redirect_uri, "code_verifier": verifier},
                        auth=(rp.client_id, rp.secret or ""))
    assert r.status_code == 200, r.text
    body = r.json()
    u = await http.get("/userinfo", headers={"Authorization": "Bearer " + body["access_token"]})
    assert u.status_code == 200, u.text
    assert u.json()["fin"] == "5ABCD12"
