"""The authorization-code flow in process (ASGI), end to end: authorize, login, consent, token, userinfo."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from api.deps import Services
from tests.oidc_tools import (
    Registered,
    asgi_browser,
    consent,
    dev_login,
    hidden,
    pkce_pair,
    register_client,
    register_person,
)


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


async def _login_and_consent(http: httpx.AsyncClient, rp: Registered, scope: str = "openid profile") -> str:
    verifier, challenge = pkce_pair()
    r = await http.get("/authorize", params={
        "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "response_type": "code",
        "scope": scope, "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    location = r.headers["location"]
    if not location.endswith("/consent") and "/interaction/" in location:
        r = await dev_login(http, location)
        location = r.headers["location"]
    if location.endswith("/consent"):
        r = await consent(http, location)
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": rp.redirect_uri, "code_verifier": verifier},
                        auth=(rp.client_id, rp.secret or ""))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


async def test_consents_are_listed_and_withdrawal_revokes_the_clients_tokens(
        initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name="Tax portal")
    await register_person(initialized)
    assert (await http.get("/account/consents")).status_code == 401  # no session yet
    token = await _login_and_consent(http, rp, "openid profile fin")
    listed = (await http.get("/account/consents")).json()["consents"]
    assert [(c["client_name"], c["scopes"]) for c in listed] == [("Tax portal", ["fin", "openid", "profile"])]
    assert set(listed[0]["claims"]) == {"sub", "name", "given_name", "family_name", "fin"}
    # a cross-site page cannot withdraw it; the citizen can
    assert (await http.delete(f"/account/consents/{rp.client_id}",
                              headers={"Origin": "https://evil.example"})).status_code == 403
    assert (await http.delete(f"/account/consents/{rp.client_id}")).status_code == 204
    assert (await http.delete(f"/account/consents/{rp.client_id}")).status_code == 404
    assert (await http.get("/account/consents")).json()["consents"] == []
    r = await http.get("/userinfo", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    # the next authorization asks for consent again
    _verifier, challenge = pkce_pair()
    r = await http.get("/authorize", params={
        "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "response_type": "code", "scope": "openid",
        "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    assert r.headers["location"].endswith("/consent")


async def test_an_id_token_algorithm_without_keys_is_refused_at_registration(initialized: Services) -> None:
    from idp.core.errors import InvalidClientMetadata
    from idp.sql.clients import ClientRegistration, ClientRegistry

    async with initialized.sessions() as session:
        registry = ClientRegistry(session, signing_algs=initialized.settings.token_key_algorithms)
        with pytest.raises(InvalidClientMetadata, match="^id_token_alg: "):
            await registry.add(ClientRegistration(name="x", redirect_uris=["https://x.example/cb"],
                                                  id_token_alg="EdDSA"), actor="test")


async def test_interactions_are_bound_to_the_browser_that_made_the_request(
        initialized: Services, http: httpx.AsyncClient, dev_app: FastAPI) -> None:
    """Login CSRF: another browser (the victim's) cannot complete a request started by an attacker, even with the
    login page's CSRF token."""
    rp = await register_client(initialized)
    await register_person(initialized)
    _verifier, challenge = pkce_pair()
    r = await http.get("/authorize", params={
        "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "response_type": "code", "scope": "openid",
        "nonce": "n", "code_challenge": challenge, "code_challenge_method": "S256"})
    location = r.headers["location"]
    assert "acar_browser" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    page = await http.get(location)
    token = hidden(page.text, "csrf_token")
    async with asgi_browser(dev_app) as victim:
        assert (await victim.get(location)).status_code == 400
        r = await victim.post(location + "/dev-login", data={"csrf_token": token, "fin": "5ABCD12", "level": "low"})
        assert r.status_code == 400 and "set-cookie" not in r.headers
        r = await victim.post("/webauthn/login/options", json={"pending_id": location.rsplit("/", 1)[1]},
                              headers={"X-CSRF-Token": token})
        assert r.status_code in (400, 404) and r.headers["content-type"].startswith("application/problem+json")
    # the browser that made the request still can
    r = await http.post(location + "/dev-login", data={"csrf_token": token, "fin": "5ABCD12", "level": "low"})
    assert r.status_code == 303 and r.headers["location"].endswith("/consent")
