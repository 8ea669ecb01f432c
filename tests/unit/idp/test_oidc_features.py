"""OpenID Connect features beyond the negatives, in process: remembered consent and prompt=consent, the claims
parameter, at_hash per algorithm, the audit trail, the session cookie over https."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from api.app import create_app
from api.deps import Services, build_services
from api.i18n import CATALOGS
from api.settings import Settings
from storage.audit import AuditEvent
from tests.oidc_tools import (
    FIN,
    ISSUER,
    asgi_browser,
    authorization_params,
    authorize,
    expected_at_hash,
    hidden,
    introspect,
    pkce_pair,
    redeem,
    refresh,
    register_client,
    register_person,
    tokens_for,
)

ACR_HIGH = "http://eidas.europa.eu/LoA/high"


@pytest.fixture
def settings(database_url: str, master_key_file: Path, tmp_path: Path) -> Settings:
    """The test settings, with token keys for every ID token algorithm a client may register."""
    return Settings(env="development", issuer=ISSUER, data_dir=tmp_path, database_url=database_url,
                    master_key_file=master_key_file, key_cache_seconds=0, dev_login=True,
                    token_key_algorithms=["ES256", "RS256", "EdDSA"], refresh_reuse_grace_seconds=10)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(app, headers={"Accept-Language": "en"}) as c:
        yield c


def consent_attributes(html: str) -> list[str]:
    """The attributes a consent page lists (its <ul id="consent-attributes">)."""
    found = re.search(r'<ul id="consent-attributes"[^>]*>(.*?)</ul>', html, re.S)
    assert found, "no attribute list on the consent page"
    return [unescape(item) for item in re.findall(r"<li>(.*?)</li>", found.group(1))]


def claim_text(claim: str) -> str:
    return CATALOGS["en"]["claim." + claim]


async def verify_id_token(http: httpx.AsyncClient, token: str, client_id: str, alg: str = "ES256") -> dict[str, Any]:
    """PyJWT against the published JWKS (the relying party's check, not Açar's own verifier)."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in (await http.get("/jwks.json")).json()["keys"] if k["kid"] == kid)
    return dict(jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[alg], audience=client_id, issuer=ISSUER))




# --- consent ------------------------------------------------------------------------------------------------

async def test_consent_is_remembered_and_prompt_consent_asks_again(initialized: Services,
                                                                   http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    other = await register_client(initialized, name="Other", redirect_uris=("https://other.example/cb",))
    await register_person(initialized)
    _, challenge = pkce_pair()
    assert (await authorize(http, authorization_params(rp, challenge))).pages == ["login", "consent"]
    again = await authorize(http, authorization_params(rp, challenge))
    assert again.pages == [] and "code" in again.query
    assert (await authorize(http, authorization_params(rp, challenge, prompt="consent"))).pages == ["consent"]
    # consent covers what was consented: a new scope asks again, the old ones stay remembered
    assert (await authorize(http, authorization_params(rp, challenge, scope="openid fin"))).pages == ["consent"]
    assert (await authorize(http, authorization_params(rp, challenge, scope="openid profile fin"))).pages == []
    # consent is per client; without interaction it is consent_required
    silent = await authorize(http, authorization_params(other, challenge, prompt="none"))
    assert silent.pages == [] and silent.query["error"] == "consent_required"


async def test_authorization_request_by_post(initialized: Services, http: httpx.AsyncClient) -> None:
    """OIDC Core 3.1.2.1: the authorization endpoint takes POST (form) as well as GET."""
    rp = await register_client(initialized)
    await register_person(initialized)
    _, challenge = pkce_pair()
    params = authorization_params(rp, challenge)
    r = await http.post("/authorize", data=params)
    assert r.status_code == 303 and r.headers["location"].startswith("/interaction/")


# --- the claims parameter ----------------------------------------------------------------------------------

async def test_claims_parameter_essential_claims_in_the_id_token(initialized: Services,
                                                                 http: httpx.AsyncClient) -> None:
    allowed = await register_client(initialized)  # registered for fin
    not_allowed = await register_client(initialized, name="No FIN", redirect_uris=("https://nofin.example/cb",),
                                        scopes=("openid", "profile"))
    await register_person(initialized)
    claims = json.dumps({"id_token": {"fin": {"essential": True}, "given_name": None}})
    verifier, challenge = pkce_pair()
    # the consent page names the FIN, and the ID token carries it once consented
    params = authorization_params(allowed, challenge, scope="openid", claims=claims)
    shown = await authorize(http, params, decision=None)
    assert shown.pages == ["login", "consent"]
    page = await http.get(shown.response.headers["location"])
    assert {claim_text("fin"), claim_text("given_name")} <= set(consent_attributes(page.text))
    r = await http.post(shown.response.headers["location"],
                        data={"csrf_token": hidden(page.text, "csrf_token"), "decision": "allow"})
    code = dict(x.split("=", 1) for x in r.headers["location"].partition("?")[2].split("&"))["code"]
    tokens = (await redeem(http, allowed, code, verifier)).json()
    id_claims = await verify_id_token(http, tokens["id_token"], allowed.client_id)
    assert id_claims["fin"] == FIN and id_claims["given_name"] == "Aysel" and "family_name" not in id_claims
    # claims asked for in the ID token are not added to userinfo (OIDC Core 5.5)
    userinfo = (await http.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})).json()
    assert userinfo == {"sub": id_claims["sub"]}
    # a client not registered for fin: the consent page does not offer it and the ID token never carries it
    verifier, challenge = pkce_pair()
    shown = await authorize(http, authorization_params(not_allowed, challenge, claims=claims), decision=None)
    page = await http.get(shown.response.headers["location"])
    assert claim_text("given_name") in consent_attributes(page.text)
    assert claim_text("fin") not in consent_attributes(page.text)
    r = await http.post(shown.response.headers["location"],
                        data={"csrf_token": hidden(page.text, "csrf_token"), "decision": "allow"})
    code = dict(x.split("=", 1) for x in r.headers["location"].partition("?")[2].split("&"))["code"]
    tokens = (await redeem(http, not_allowed, code, verifier)).json()
    id_claims = await verify_id_token(http, tokens["id_token"], not_allowed.client_id)
    assert "fin" not in id_claims and id_claims["given_name"] == "Aysel"
    # userinfo members of the claims parameter are released there (birthdate, registered, consented)
    tokens = await tokens_for(http, allowed, scope="openid",
                              claims=json.dumps({"userinfo": {"birthdate": {"essential": True}}}))
    userinfo = (await http.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})).json()
    assert userinfo["birthdate"] == "1990-05-17" and "fin" not in userinfo


async def test_essential_acr_in_the_claims_parameter_steps_up(initialized: Services,
                                                              http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    await register_person(initialized)
    await tokens_for(http, rp)  # logged in at substantial
    claims = json.dumps({"id_token": {"acr": {"essential": True, "values": [ACR_HIGH]}}})
    verifier, challenge = pkce_pair()
    done = await authorize(http, authorization_params(rp, challenge, claims=claims), level="high")
    assert done.pages == ["login"]
    tokens = (await redeem(http, rp, done.query["code"], verifier)).json()
    assert (await verify_id_token(http, tokens["id_token"], rp.client_id))["acr"] == ACR_HIGH


# --- at_hash ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", [
    "ES256",
    "RS256",
    "EdDSA",
])
async def test_at_hash(initialized: Services, http: httpx.AsyncClient, alg: str) -> None:
    rp = await register_client(initialized, id_token_alg=alg)
    await register_person(initialized)
    tokens = await tokens_for(http, rp)
    claims = await verify_id_token(http, tokens["id_token"], rp.client_id, alg=alg)
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == alg
    assert claims["at_hash"] == expected_at_hash(tokens["access_token"], alg)


# --- audit trail --------------------------------------------------------------------------------------------

async def test_audit_events(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    api = await register_client(initialized, name="API", redirect_uris=(), grant_types=("client_credentials",),
                                scopes=("api:read",))
    person_id = await register_person(initialized)
    tokens = await tokens_for(http, rp)
    sid = (await verify_id_token(http, tokens["id_token"], rp.client_id))["sid"]
    rotated = (await refresh(http, rp, tokens["refresh_token"])).json()
    cc = await http.post("/token", data={"grant_type": "client_credentials"}, auth=(api.client_id, api.secret or ""))
    assert cc.status_code == 200, cc.text
    r = await http.post("/revoke", data={"token": rotated["refresh_token"]}, auth=(rp.client_id, rp.secret or ""))
    assert r.status_code == 200
    tokens = await tokens_for(http, rp)  # a second authorization in the same session
    r = await http.get("/logout", params={"id_token_hint": tokens["id_token"]})
    assert r.status_code == 200, r.text
    async with initialized.sessions() as session:
        events = list((await session.execute(select(AuditEvent).order_by(AuditEvent.occurred_at))).scalars())
    by_type: dict[str, list[AuditEvent]] = {}
    for event in events:
        by_type.setdefault(event.event_type, []).append(event)
    (started,) = by_type["session.started"]
    assert started.actor == person_id and started.subject == sid and started.request_id
    (consented,) = by_type["consent.granted"]
    assert consented.actor == person_id and consented.subject == rp.client_id
    assert set(consented.detail["scopes"]) == {"openid", "profile"}
    issued = by_type["token.issued"]
    assert {e.detail["grant_type"] for e in issued} == {"authorization_code", "client_credentials"}
    assert all(e.actor in (rp.client_id, api.client_id) for e in issued)
    assert any(e.actor == rp.client_id and e.subject == person_id for e in issued)
    assert by_type["token.refreshed"][0].actor == rp.client_id
    (revoked,) = by_type["grant.revoked"]
    assert revoked.actor == rp.client_id and revoked.detail["reason"] == "refresh token revoked by client"
    (ended,) = by_type["session.ended"]
    assert ended.actor == person_id and ended.subject == sid
    # the trail never holds a token, a code or a secret
    dumped = json.dumps([[e.actor, e.subject, e.detail] for e in events])
    for secret in (tokens["access_token"], tokens["refresh_token"], tokens["id_token"], rotated["refresh_token"],
                   cc.json()["access_token"], rp.secret, api.secret):
        assert secret and secret not in dumped


# --- the session cookie over https ---------------------------------------------------------------------------

@pytest.fixture
async def https_http(initialized: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The same database and keys, served for an https issuer."""
    svc = build_services(initialized.settings.model_copy(update={"issuer": "https://login.example.test"}))
    application = create_app(services=svc)
    try:
        async with application.router.lifespan_context(application), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="https://login.example.test") as c:
            yield c
    finally:
        await svc.close()


async def test_session_cookie_over_https(initialized: Services, https_http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    await register_person(initialized)
    verifier, challenge = pkce_pair()
    done = await authorize(https_http, authorization_params(rp, challenge), decision=None)
    assert done.pages == ["login", "consent"]
    cookie = next(c for c in https_http.cookies.jar if c.name == "__Host-acar_session")
    assert cookie.secure and cookie.path == "/" and not cookie.domain_specified
    assert cookie.has_nonstandard_attr("HttpOnly")
    page = await https_http.get(done.response.headers["location"])
    r = await https_http.post(done.response.headers["location"],
                              data={"csrf_token": hidden(page.text, "csrf_token"), "decision": "allow"})
    code = dict(x.split("=", 1) for x in r.headers["location"].partition("?")[2].split("&"))["code"]
    token = await https_http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": rp.redirect_uri, "code_verifier": verifier},
                                  auth=(rp.client_id, rp.secret or ""))
    r = await https_http.get("/logout", params={"id_token_hint": token.json()["id_token"]})
    assert r.status_code == 200
    # a browser drops a __Host- cookie only when the deleting Set-Cookie is Secure with Path=/ (RFC 6265bis 4.1.3.2)
    (deletion,) = [h for h in r.headers.get_list("set-cookie") if h.startswith("__Host-acar_session=")]
    attributes = {a.strip().split("=")[0].lower() for a in deletion.split(";")[1:]}
    assert {"secure", "path", "max-age"} <= attributes and "domain" not in attributes, deletion
    assert "path=/" in deletion.lower().replace(" ", "")


# --- RP-initiated logout without a hint: the user confirms ---------------------------------------------------

async def test_logout_without_hint_asks_the_user(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, post_logout_redirect_uris=["https://agency.example/bye"])
    await register_person(initialized)
    tokens = await tokens_for(http, rp)
    r = await http.get("/logout", params={"client_id": rp.client_id, "state": "st",
                                          "post_logout_redirect_uri": "https://agency.example/bye"})
    assert r.status_code == 200 and 'action="/logout/confirm"' in r.text
    assert (await introspect(http, rp, tokens["access_token"]))["active"] is True  # nothing ended yet
    form = {name: hidden(r.text, name) for name in ("csrf_token", "client_id", "state", "post_logout_redirect_uri")}
    forged = await http.post("/logout/confirm", data={**form, "csrf_token": "forged"})
    assert forged.status_code == 403
    assert (await introspect(http, rp, tokens["access_token"]))["active"] is True
    r = await http.post("/logout/confirm", data=form)
    assert r.status_code == 303 and r.headers["location"] == "https://agency.example/bye?state=st"
    assert (await introspect(http, rp, tokens["access_token"])) == {"active": False}
    _, challenge = pkce_pair()
    silent = await authorize(http, authorization_params(rp, challenge, prompt="none"))
    assert silent.query["error"] == "login_required"
