"""Representation at login (issue 16, docs/registry.md): through real HTTP on the in-process app, the development
login, the representation page, the token endpoint and userinfo; PyJWT on the JWK Set as the independent verifier
of the ID token. A client registered for the `represents` scope and requesting it may receive the claim; the page
offers only the person's mandates valid now with the power represent_at_login, of active entities."""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from api.deps import Services
from idp.sql.models import AuthorizationRequest, Grant, Mandate
from idp.sql.registry import EntityService, MandateService
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.oidc_tools import (
    FIN,
    Registered,
    asgi_browser,
    authorization_params,
    dev_login,
    hidden,
    pkce_pair,
    redeem,
    refresh,
    register_client,
    register_person,
)

SCOPE = "openid profile represents"
DAY = dt.timedelta(days=1)


@dataclass
class World:
    person_id: str
    offered: dict[str, str]
    """VÖEN -> mandate id of the two mandates the page must offer."""
    not_offered: dict[str, str]
    """Why not -> the VÖEN of a mandate the page must not offer."""
    mandate_ids: dict[str, str]
    """VÖEN -> mandate id, for every mandate."""


ENTITIES = {
    "1400057421": ("Açar Texnologiya MMC", ["represent_at_login", "sign_declarations"]),
    "1400057431": ("Xəzər Logistika ASC", ["represent_at_login"]),
    "1400057441": ("Köhnə Ticarət MMC", ["represent_at_login"]),  # expired
    "1400057451": ("Gələcək Layihələr MMC", ["represent_at_login"]),  # not yet begun
    "1400057461": ("Ləğv Olunmuş Etibar MMC", ["represent_at_login"]),  # mandate revoked
    "1400057471": ("Dayandırılmış Şirkət ASC", ["represent_at_login"]),  # entity suspended
    "1400057481": ("Yalnız İmza MMC", ["sign_declarations"]),  # without the power
}


async def build_world(services: Services, person_id: str) -> World:
    now = utcnow()
    ids: dict[str, str] = {}
    async with services.sessions() as session, session.begin():
        entities, mandates = EntityService(session), MandateService(session)
        for voen, (name, powers) in ENTITIES.items():
            await entities.add(voen=voen, name=name, legal_form="MMC", actor="test")
            start = now - DAY
            if voen == "1400057451":
                start = now + DAY
            ids[voen] = (await mandates.grant(fin=FIN, voen=voen, powers=powers, valid_from=start,
                                              granted_by="officer-1", granted_via="officer", actor="test")).id
        await mandates.revoke(ids["1400057461"], actor="test")
        await entities.set_status("1400057471", "suspended", actor="test")
        expired = await session.get(Mandate, ids["1400057441"])
        assert expired is not None
        expired.valid_from, expired.valid_to = now - 10 * DAY, now - DAY  # granted long ago, ended yesterday
    return World(person_id, offered={v: ids[v] for v in ("1400057421", "1400057431")},
                 not_offered={"expired": "1400057441", "not yet begun": "1400057451", "revoked": "1400057461",
                              "entity suspended": "1400057471", "without the power": "1400057481"},
                 mandate_ids=ids)


@pytest.fixture
async def world(initialized: Services) -> World:
    return await build_world(initialized, await register_person(initialized))


@pytest.fixture
async def rp(initialized: Services) -> Registered:
    return await register_client(initialized, name="Vergi portalı",
                                 scopes=("openid", "profile", "fin", "offline_access", "represents"))


@dataclass
class Walk:
    response: httpx.Response
    pages: list[str]
    verifier: str
    params: dict[str, str]
    represent_page: str = ""

    @property
    def code(self) -> str:
        assert self.response.status_code == 303, (self.response.status_code, self.response.text[:400])
        location = self.response.headers["location"]
        found = re.search(r"[?&]code=([^&]+)", location)
        assert found, location
        return found.group(1)


async def walk(http: httpx.AsyncClient, rp: Registered, *, scope: str = SCOPE, choice: str | None = "self",
               **extra: str) -> Walk:
    """/authorize, the development login, the representation page (answered with `choice`: "self", a mandate id,
    or None to stop there) and consent, up to the first answer that leaves Açar."""
    verifier, challenge = pkce_pair()
    params = authorization_params(rp, challenge, scope=scope, **extra)
    response = await http.get("/authorize", params=params)
    pages: list[str] = []
    page_html = ""
    for _ in range(6):
        location = response.headers.get("location", "") if response.status_code == 303 else ""
        if not location.startswith("/interaction/"):
            break
        if location.endswith("/represent"):
            pages.append("represent")
            page = await http.get(location)
            assert page.status_code == 200, page.text
            page_html = page.text
            if choice is None:
                break
            response = await http.post(location, data={"csrf_token": hidden(page.text, "csrf_token"),
                                                       "represents": choice})
        elif location.endswith("/consent"):
            pages.append("consent")
            page = await http.get(location)
            response = await http.post(location, data={"csrf_token": hidden(page.text, "csrf_token"),
                                                       "decision": "allow"})
        else:
            pages.append("login")
            response = await dev_login(http, location)
    return Walk(response, pages, verifier, params, page_html)


async def id_token_claims(http: httpx.AsyncClient, services: Services, rp: Registered, token: str) -> dict[str, Any]:
    """The ID token verified by PyJWT (not Açar's code) on the published JWK Set."""
    jwks = (await http.get("/jwks.json")).json()
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = {k.key_id: k for k in pyjwt.PyJWKSet.from_dict(jwks).keys}[kid]
    claims: dict[str, Any] = pyjwt.decode(token, key=key.key, algorithms=["ES256"], audience=rp.client_id,
                                          issuer=services.settings.issuer,
                                          options={"require": ["exp", "iat", "sub", "auth_time"]})
    return claims


async def tokens(http: httpx.AsyncClient, rp: Registered, done: Walk) -> dict[str, Any]:
    r = await redeem(http, rp, done.code, done.verifier)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def userinfo(http: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await http.get("/userinfo", headers={"Authorization": "Bearer " + access_token})


async def events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)
                                           .order_by(AuditEvent.occurred_at))).scalars())


async def grant_represents(services: Services, rp: Registered) -> list[object]:
    async with services.sessions() as session:
        return list((await session.execute(select(Grant.represents).where(Grant.client_id == rp.client_id)))
                    .scalars())


# --- what is offered --------------------------------------------------------------------------------------------

async def test_the_page_offers_exactly_the_valid_mandates_to_represent_at_login(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    done = await walk(http, rp, choice=None, ui_locales="en")
    assert done.pages == ["login", "represent"]
    page = done.represent_page
    for voen, mandate_id in world.offered.items():
        assert ENTITIES[voen][0] in page and voen in page and f'value="{mandate_id}"' in page
    assert 'value="self"' in page and "sign declarations" in page
    for why, voen in world.not_offered.items():
        assert ENTITIES[voen][0] not in page and voen not in page, why
        assert world.mandate_ids[voen] not in page, why
    assert page.count('type="radio"') == 3  # myself and the two entities


async def test_choosing_myself_gives_no_claim(http: httpx.AsyncClient, initialized: Services, rp: Registered,
                                              world: World) -> None:
    done = await walk(http, rp, choice="self")
    assert done.pages == ["login", "represent", "consent"]
    body = await tokens(http, rp, done)
    claims = await id_token_claims(http, initialized, rp, body["id_token"])
    assert "represents" not in claims
    info = await userinfo(http, body["access_token"])
    assert info.status_code == 200 and "represents" not in info.json()
    assert await grant_represents(initialized, rp) == [None]
    chosen = await events(initialized, "login.representation_chosen")
    assert [(e.actor, e.subject, e.detail) for e in chosen] == [(world.person_id, rp.client_id, {"as": "self"})]


async def test_choosing_an_entity_puts_it_in_the_id_token_and_userinfo(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    voen = "1400057421"
    done = await walk(http, rp, choice=world.offered[voen])
    body = await tokens(http, rp, done)
    expected = {"voen": voen, "name": "Açar Texnologiya MMC", "powers": ["represent_at_login", "sign_declarations"]}
    claims = await id_token_claims(http, initialized, rp, body["id_token"])
    assert claims["represents"] == expected
    assert claims["nonce"] == done.params["nonce"]
    info = await userinfo(http, body["access_token"])
    assert info.status_code == 200, info.text
    assert info.json()["represents"] == expected and info.json()["sub"] == claims["sub"]
    # a refresh while the mandate is valid keeps claiming it
    again = await refresh(http, rp, body["refresh_token"])
    assert again.status_code == 200, again.text
    assert (await id_token_claims(http, initialized, rp, again.json()["id_token"]))["represents"] == expected
    # a refresh narrowed to scopes without `represents` does not carry it
    narrowed = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token":
                                               again.json()["refresh_token"], "scope": "openid profile"},
                               auth=(rp.client_id, rp.secret or ""))
    assert narrowed.status_code == 200, narrowed.text
    assert "represents" not in await id_token_claims(http, initialized, rp, narrowed.json()["id_token"])
    stored = await grant_represents(initialized, rp)
    assert stored == [{"mandate_id": world.offered[voen], **expected}]
    chosen = await events(initialized, "login.representation_chosen")
    assert [e.detail for e in chosen] == [{"as": "entity", "voen": voen, "mandate": world.offered[voen]}]


async def test_discovery_names_the_scope_and_the_claim(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/.well-known/openid-configuration")).json()
    assert "represents" in doc["claims_supported"] and "represents" in doc["scopes_supported"]


# --- who is asked -----------------------------------------------------------------------------------------------

async def test_a_client_not_registered_for_represents_gets_no_page_and_no_claim(
        http: httpx.AsyncClient, initialized: Services, world: World) -> None:
    plain = await register_client(initialized, name="Kitabxana", redirect_uris=("https://library.example/cb",))
    done = await walk(http, plain, scope="openid profile", choice=None)
    assert done.pages == ["login", "consent"]
    body = await tokens(http, plain, done)
    assert "represents" not in await id_token_claims(http, initialized, plain, body["id_token"])
    assert "represents" not in (await userinfo(http, body["access_token"])).json()
    # asking for the scope it is not registered for is invalid_scope, as for any other scope
    refused = await walk(http, plain, scope=SCOPE, choice=None)
    assert refused.pages == [] and "error=invalid_scope" in refused.response.headers["location"]
    assert await events(initialized, "login.representation_chosen") == []


async def test_a_registered_client_not_requesting_represents_gets_no_page(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    done = await walk(http, rp, scope="openid profile", choice=None)
    assert done.pages == ["login", "consent"]
    body = await tokens(http, rp, done)
    assert "represents" not in await id_token_claims(http, initialized, rp, body["id_token"])


async def test_a_person_without_mandates_is_not_asked(http: httpx.AsyncClient, initialized: Services,
                                                      rp: Registered) -> None:
    await register_person(initialized)
    done = await walk(http, rp, choice=None)
    assert done.pages == ["login", "consent"]
    body = await tokens(http, rp, done)
    assert "represents" not in await id_token_claims(http, initialized, rp, body["id_token"])


async def test_prompt_none_cannot_ask_and_answers_interaction_required(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    await walk(http, rp, choice="self")  # a session and consent exist; the choice is per authorization
    done = await walk(http, rp, choice=None, prompt="none")
    assert done.pages == [] and "error=interaction_required" in done.response.headers["location"]


# --- forged and stale choices -----------------------------------------------------------------------------------

async def pending_params(services: Services, pending_id: str) -> dict[str, Any] | None:
    async with services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        return dict(row.params) if row is not None else None


@pytest.mark.parametrize("why", ["expired", "not yet begun", "revoked", "entity suspended", "without the power",
                                 "unknown", "another person's"])
async def test_a_forged_choice_is_refused_and_changes_nothing(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World, why: str) -> None:
    done = await walk(http, rp, choice=None)
    location = f"/interaction/{done.represent_page.split('/interaction/')[1].split('/')[0]}/represent"
    pending_id = location.split("/")[2]
    if why == "unknown":
        forged = secrets.token_hex(18)
    elif why == "another person's":
        other = await register_person(initialized, fin="7XYZ123")
        async with initialized.sessions() as session, session.begin():
            forged = (await MandateService(session).grant(
                fin="7XYZ123", voen="1400057431", powers=["represent_at_login"], granted_by="officer-1",
                granted_via="officer", actor="test")).id
        assert other
    else:
        forged = world.mandate_ids[world.not_offered[why]]
    before = await pending_params(initialized, pending_id)
    r = await http.post(location, data={"csrf_token": hidden(done.represent_page, "csrf_token"),
                                        "represents": forged})
    assert r.status_code == 400 and "text/html" in r.headers["content-type"]
    assert "no valid mandate" in r.text or "mandate" in r.text.lower()
    assert await pending_params(initialized, pending_id) == before  # nothing chosen, the request still waits
    assert await events(initialized, "login.representation_chosen") == []
    assert await grant_represents(initialized, rp) == []
    # the honest choice still completes the request
    page = await http.get(location)
    assert page.status_code == 200
    ok = await http.post(location, data={"csrf_token": hidden(page.text, "csrf_token"),
                                         "represents": world.offered["1400057431"]})
    assert ok.status_code == 303 and ok.headers["location"].endswith("/consent")


async def test_the_choice_needs_the_requests_csrf_token_and_one_value(
        http: httpx.AsyncClient, dev_app: FastAPI, initialized: Services, rp: Registered, world: World) -> None:
    done = await walk(http, rp, choice=None)
    pending_id = done.represent_page.split("/interaction/")[1].split("/")[0]
    location = f"/interaction/{pending_id}/represent"
    before = await pending_params(initialized, pending_id)
    no_token = await http.post(location, data={"represents": "self"})
    assert no_token.status_code == 403
    csrf = hidden(done.represent_page, "csrf_token")
    wrong = await http.post(location, data={"csrf_token": csrf[::-1], "represents": "self"})
    assert wrong.status_code == 403
    missing = await http.post(location, data={"csrf_token": csrf})
    repeated = await http.post(location, content=f"csrf_token={csrf}&represents=self&represents=self",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert missing.status_code == repeated.status_code == 400
    assert await pending_params(initialized, pending_id) == before
    # another browser (no binding cookie) cannot answer it either
    async with asgi_browser(dev_app) as stranger:
        stolen = await stranger.post(location, data={"csrf_token": csrf, "represents": "self"})
    assert stolen.status_code == 400 and await pending_params(initialized, pending_id) == before


async def test_a_mandate_revoked_between_login_and_refresh_ends_the_authorization(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    voen = "1400057431"
    done = await walk(http, rp, choice=world.offered[voen])
    body = await tokens(http, rp, done)
    async with initialized.sessions() as session, session.begin():
        await MandateService(session).revoke(world.offered[voen], actor="officer-1")
    r = await refresh(http, rp, body["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "mandate" in r.json()["error_description"]
    async with initialized.sessions() as session:
        grant = (await session.execute(select(Grant).where(Grant.client_id == rp.client_id))).scalar_one()
        assert grant.revoked_at is not None and grant.revoked_reason == "representation mandate no longer valid"
    info = await userinfo(http, body["access_token"])
    assert info.status_code == 401 and "represents" not in info.text
    # the refresh token stays refused (the grant is revoked), with or without the mandate
    assert (await refresh(http, rp, body["refresh_token"])).status_code == 400


async def test_an_entity_suspended_after_the_code_refuses_the_code(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    voen = "1400057421"
    done = await walk(http, rp, choice=world.offered[voen])
    async with initialized.sessions() as session, session.begin():
        await EntityService(session).set_status(voen, "suspended", actor="test")
    r = await redeem(http, rp, done.code, done.verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "id_token" not in r.text


async def test_the_token_store_reads_mandates_by_the_registrys_rule(initialized: Services, world: World) -> None:
    """idp.sql.store reads valid mandates with Core statements of its own (the token endpoint's unit of work): at
    every instant they are those of MandateService.valid with the power represent_at_login."""
    now = utcnow()
    for at in (now, now - 5 * DAY, now - DAY - dt.timedelta(seconds=1), now + 2 * DAY):
        async with initialized.sessions() as session:
            registry = [m.id for m in await MandateService(session).valid(world.person_id, at=at,
                                                                          power="represent_at_login")]
        async with initialized.oidc.unit_of_work(reading=True) as unit:
            store = [r.mandate_id for r in await unit.oidc.representations(world.person_id, at)]
            one = {m: await unit.oidc.representation(world.person_id, m, at) is not None
                   for m in world.mandate_ids.values()}
        assert store == registry, at
        assert {m for m, valid in one.items() if valid} == set(registry), at


class CallRecorder:
    """The request's real store, recording the name of every method the token endpoint calls on it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def recorded(*args: Any, **kw: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kw)
        return recorded


async def refresh_calls(services: Services, rp: Registered, refresh_token: str) -> list[str]:
    basic = "Basic " + base64.b64encode(f"{rp.client_id}:{rp.secret}".encode()).decode()
    provider = services.oidc
    async with provider.unit_of_work() as unit:
        store = CallRecorder(unit.oidc)
        await provider.grants.token({"grant_type": "refresh_token", "refresh_token": refresh_token}, basic, store)
    return list(store.calls)


async def test_grants_without_representation_read_no_mandate_at_the_token_endpoint(
        http: httpx.AsyncClient, initialized: Services, rp: Registered, world: World) -> None:
    """The token endpoint is benchmarked (issue 11): a grant without a representation pays no query for it; one with
    a representation reads its mandate once per token."""
    plain = await tokens(http, rp, await walk(http, rp, scope="openid profile"))
    myself = await tokens(http, rp, await walk(http, rp, choice="self"))
    entity = await tokens(http, rp, await walk(http, rp, choice=world.offered["1400057421"]))
    without = await refresh_calls(initialized, rp, plain["refresh_token"])
    assert "representation" not in without and "representations" not in without
    assert await refresh_calls(initialized, rp, myself["refresh_token"]) == without
    with_entity = await refresh_calls(initialized, rp, entity["refresh_token"])
    assert with_entity.count("representation") == 1
    assert [c for c in with_entity if c != "representation"] == without
