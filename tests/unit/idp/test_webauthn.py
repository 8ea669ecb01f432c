"""Passkeys end to end in process (ASGI, real database): enrollment, registration, login into a pending
authorization request, tokens; and every refusal, each with its machine code and nothing changed."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from api.deps import Services, build_passkeys
from idp.core.webauthn import login_level, login_method
from idp.sql.models import AuthorizationRequest, LoginSession, WebAuthnChallenge, WebAuthnCredential, WebAuthnUser
from idp.sql.store import SqlOidcStore
from storage.base import utcnow
from storage.direct import SessionTransaction
from tests.oidc_tools import (
    Registered,
    asgi_browser,
    authorization_params,
    consent,
    pkce_pair,
    redeem,
    register_client,
    register_person,
)
from tests.passkey_tools import ORIGIN, TABLES, events, issue_code, refused, rows
from tests.webauthn_authenticator import (
    CSRF,
    AttestationCa,
    SoftwareAuthenticator,
    attested_authenticator,
    enroll_with_code,
    login_options,
    passkey_login,
)

FIN_A, FIN_B = "5ABCD12", "6XYZ789"


# --- helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
async def other_browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(app) as c:
        yield c


async def enrolled(services: Services, http: httpx.AsyncClient, fin: str = FIN_A,
                   authenticator: SoftwareAuthenticator | None = None, **create: Any) -> SoftwareAuthenticator:
    """A registered person with one passkey on `authenticator`."""
    person_id = await register_person(services, fin)
    authenticator = authenticator or SoftwareAuthenticator()
    r = await enroll_with_code(http, await issue_code(services, person_id), authenticator, **create)
    assert r.status_code == 201, r.text
    http.cookies.clear()  # a fresh browser state for what follows
    return authenticator


@dataclass
class Started:
    pending_id: str
    csrf: str
    verifier: str
    params: dict[str, str]


async def start(services: Services, http: httpx.AsyncClient, rp: Registered, **extra: str | None) -> Started:
    """GET /authorize up to the login interaction: the pending request's id and CSRF token."""
    verifier, challenge = pkce_pair()
    params = authorization_params(rp, challenge, **extra)
    r = await http.get("/authorize", params=params)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith("/interaction/") and not location.endswith("/consent"), location
    pending_id = location.split("/")[2]
    async with services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None
        return Started(pending_id, row.csrf_token, verifier, params)


async def pre_consent(services: Services, rp: Registered, fin: str = FIN_A) -> None:
    async with services.sessions() as session, session.begin():
        from idp.sql.models import Person

        person_id = (await session.execute(select(Person.id).where(Person.fin == fin))).scalar_one()
        await SqlOidcStore(SessionTransaction(session)).save_consent(
            person_id, rp.client_id, frozenset({"openid", "profile"}),
            frozenset({"sub", "name", "given_name", "family_name"}), utcnow())


async def credential_row(services: Services, credential_id: str) -> WebAuthnCredential:
    async with services.sessions() as session:
        row = await session.get(WebAuthnCredential, credential_id)
        assert row is not None
        return row


async def id_token_claims(http: httpx.AsyncClient, services: Services, rp: Registered, token: str) -> dict[str, Any]:
    jwks = (await http.get("/jwks.json")).json()
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = {k.key_id: k for k in pyjwt.PyJWKSet.from_dict(jwks).keys}[kid]
    claims: dict[str, Any] = pyjwt.decode(token, key=key.key, algorithms=["ES256"], audience=rp.client_id,
                                          issuer=services.settings.issuer,
                                          options={"require": ["exp", "iat", "sub", "acr", "amr"]})
    return claims


def query(location: str) -> dict[str, str]:
    from urllib.parse import parse_qs, urlsplit

    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# --- the whole path ---------------------------------------------------------------------------------------

async def test_code_enrollment_registration_login_consent_tokens(initialized: Services, client: httpx.AsyncClient,
                                                                 app: FastAPI, vendor: AttestationCa,
                                                                 tmp_path: Path) -> None:
    """Level high: the authenticator's packed attestation chains to a configured vendor root."""
    settings = initialized.settings
    require_attestation(initialized, vendor, tmp_path)
    person_id = await register_person(initialized, FIN_A)
    code = await issue_code(initialized, person_id)
    authenticator = attested_authenticator(vendor, aaguid=MODEL)

    # the code opens an enrollment in this browser; the passkey registered there completes it
    r = await client.post("/webauthn/enrollment", json={"code": code.lower().replace("-", " ")})
    assert r.status_code == 201, r.text
    assert r.json()["display_name"] == "Aysel Məmmədova" and r.headers["cache-control"] == "no-store"
    assert "acar_enroll" in client.cookies
    csrf = r.json()["csrf_token"]
    r = await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert r.status_code == 200, r.text
    options = r.json()["publicKey"]
    assert options["rp"] == {"id": "localhost", "name": "Açar"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert options["attestation"] == "direct" and options["excludeCredentials"] == []
    assert options["pubKeyCredParams"][0] == {"type": "public-key", "alg": -7}
    assert len(pyjwt.utils.base64url_decode(options["challenge"])) == 32
    assert options["user"]["name"] == "Aysel Məmmədova"
    handle = pyjwt.utils.base64url_decode(options["user"]["id"])
    assert len(handle) == 32 and FIN_A.encode() not in handle
    response = authenticator.create(options)
    r = await client.post("/webauthn/register/verify", json={"ceremony": r.json()["ceremony"],
                                                            "credential": response, "name": "My laptop"},
                          headers={CSRF: csrf})
    assert r.status_code == 201, r.text
    registered = r.json()
    assert registered == {"credential_id": response["id"], "name": "My laptop", "level": "high",
                          "redirect": "/enroll/done"}
    assert "acar_enroll" not in client.cookies  # the enrollment cookie is cleared
    row = await credential_row(initialized, response["id"])
    assert (row.person_id, row.aaguid, row.attestation_format, row.user_verified, row.attested,
            row.backup_eligible, row.max_level, row.sign_count) == (
        person_id, str(uuid.UUID(bytes=MODEL)), "packed", True, True, False, "high", 1)
    assert row.transports == ["internal", "hybrid"]
    [issued] = await events(initialized, "enrollment.code_issued")
    [completed] = await events(initialized, "enrollment.completed")
    assert completed.subject == issued.detail["code_id"] and issued.detail["code_id"] not in code
    assert len(await events(initialized, "webauthn.registered")) == 1
    # the code is used up
    r = await client.post("/webauthn/enrollment", json={"code": code})
    refused(r, 400, "code_invalid")

    # a relying party asks for level high; the passkey signs in usernameless
    rp = await register_client(initialized)
    started = await start(initialized, client, rp, acr_values=settings.acr_high, scope="openid profile")
    options = await login_options(client, started.pending_id, started.csrf)
    assert options["publicKey"]["allowCredentials"] == [] and options["publicKey"]["rpId"] == "localhost"
    assert options["publicKey"]["userVerification"] == "required"
    assertion = authenticator.get(options["publicKey"])
    r = await client.post("/webauthn/login/verify", json={"ceremony": options["ceremony"],
                                                         "pending_id": started.pending_id, "credential": assertion},
                          headers={CSRF: started.csrf, "Origin": ORIGIN})
    assert r.status_code == 200, r.text
    assert r.json() == {"redirect": f"/interaction/{started.pending_id}/consent"}
    assert "acar_session" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    r = await consent(client, r.json()["redirect"])
    assert r.status_code == 303, r.text
    answer = query(r.headers["location"])
    assert answer["state"] == started.params["state"] and answer["iss"] == settings.issuer
    r = await redeem(client, rp, answer["code"], started.verifier)
    assert r.status_code == 200, r.text
    claims = await id_token_claims(client, initialized, rp, r.json()["id_token"])
    assert claims["acr"] == settings.acr_high and claims["amr"] == ["hwk", "mfa"]
    assert claims["nonce"] == started.params["nonce"]
    row = await credential_row(initialized, response["id"])
    assert row.sign_count == 2 and row.last_used_at is not None
    [login] = await events(initialized, "webauthn.login")
    assert login.actor == person_id and login.detail == {"level": "high", "amr": ["hwk", "mfa"]}

    # single sign-on: the next request of the client needs no login
    _verifier, challenge = pkce_pair()
    r = await client.get("/authorize", params=authorization_params(rp, challenge, acr_values=settings.acr_high))
    assert r.status_code == 303 and "code=" in r.headers["location"]


async def test_synced_passkey_without_high_request(initialized: Services, client: httpx.AsyncClient) -> None:
    """A synced (backup-eligible) passkey reaches substantial: amr swk; form_post answers with a form to build."""
    authenticator = await enrolled(initialized, client, backup_eligible=True, backed_up=True)
    rp = await register_client(initialized)
    await pre_consent(initialized, rp)
    started = await start(initialized, client, rp, response_mode="form_post")
    options = await login_options(client, started.pending_id, started.csrf)
    assert options["publicKey"]["userVerification"] == "preferred"
    r = await passkey_login(client, started.pending_id, started.csrf, authenticator)
    assert r.status_code == 200, r.text
    form = r.json()["form_post"]
    assert form["action"] == rp.redirect_uri and set(form["params"]) == {"code", "state", "iss"}
    r = await redeem(client, rp, form["params"]["code"], started.verifier)
    claims = await id_token_claims(client, initialized, rp, r.json()["id_token"])
    assert claims["acr"] == initialized.settings.acr_substantial and claims["amr"] == ["swk", "mfa"]


def test_levels_and_amr() -> None:
    cases = [  # user_verified, backup_eligible, attested -> level (no attestation: never high, docs/assurance.md)
        (True, False, True, "high"), (True, False, False, "substantial"), (True, True, True, "substantial"),
        (False, False, True, "low"), (False, True, False, "low")]
    for uv, be, attested, level in cases:
        assert login_level(user_verified=uv, backup_eligible=be, attested=attested, max_level="high") == level
    assert login_level(user_verified=True, backup_eligible=False, attested=True,
                       max_level="substantial") == "substantial"
    assert login_method("high", user_verified=True, backup_eligible=False).amr == ("hwk", "mfa")
    assert login_method("substantial", user_verified=True, backup_eligible=True).amr == ("swk", "mfa")
    assert login_method("low", user_verified=False, backup_eligible=False).amr == ("hwk", "user")
    assert login_method("low", user_verified=False, backup_eligible=False).name == "passkey"


# --- login refusals: each with its code, nothing changed ------------------------------------------------------

@pytest.fixture
async def ready(initialized: Services, client: httpx.AsyncClient) -> tuple[SoftwareAuthenticator, Registered]:
    authenticator = await enrolled(initialized, client)
    rp = await register_client(initialized)
    await pre_consent(initialized, rp)
    return authenticator, rp


async def refused_login(services: Services, http: httpx.AsyncClient, rp: Registered,
                        authenticator: SoftwareAuthenticator, expected: tuple[int, str], *,
                        acr: str | None = None, **get: Any) -> None:
    status, code = expected
    started = await start(services, http, rp, acr_values=acr)
    before = await rows(services)
    r = await passkey_login(http, started.pending_id, started.csrf, authenticator, **get)
    refused(r, status, code)
    assert "set-cookie" not in r.headers
    assert await rows(services) == before
    assert (await events(services, "webauthn.login_failed"))[-1].detail == {"code": code}


@pytest.mark.parametrize(("get", "expected"), [
    ({"rp_id": "evil.example"}, (400, "verification_failed")),
    ({"origin": "https://evil.example"}, (403, "wrong_origin")),  # clientDataJSON's origin (section 7.2 step 13)
    ({"origin": "http://localhost:8001"}, (403, "wrong_origin")),
    ({"omit_user_handle": True}, (400, "wrong_user")),
])
async def test_assertion_refused(initialized: Services, client: httpx.AsyncClient,
                                 ready: tuple[SoftwareAuthenticator, Registered], get: dict[str, Any],
                                 expected: tuple[int, str]) -> None:
    authenticator, rp = ready
    await refused_login(initialized, client, rp, authenticator, expected, **get)


@pytest.mark.parametrize("status", ["suspended", "deceased"])
async def test_inactive_person_is_refused(initialized: Services, client: httpx.AsyncClient,
                                          ready: tuple[SoftwareAuthenticator, Registered], status: str) -> None:
    """A sound passkey of a person who is suspended or deceased in the registry logs in nobody: person_inactive
    (403), webauthn.login_failed, no session, the counter unchanged; once active again, the same passkey works."""
    from idp.sql.persons import PersonService

    authenticator, rp = ready
    async with initialized.sessions() as session, session.begin():
        await PersonService(session).set_status(FIN_A, status, actor="test")
    await refused_login(initialized, client, rp, authenticator, (403, "person_inactive"))
    async with initialized.sessions() as session, session.begin():
        await PersonService(session).set_status(FIN_A, "active", actor="test")
    started = await start(initialized, client, rp)
    r = await passkey_login(client, started.pending_id, started.csrf, authenticator)
    assert r.status_code == 200, r.text


async def test_bad_signature_is_refused(initialized: Services, client: httpx.AsyncClient,
                                        ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    authenticator, rp = ready
    started = await start(initialized, client, rp)
    options = await login_options(client, started.pending_id, started.csrf)
    assertion = authenticator.get(options["publicKey"])
    other = authenticator.get({**options["publicKey"], "challenge": "AAAA"})
    assertion["response"]["signature"] = other["response"]["signature"]
    before = await rows(initialized)
    r = await client.post("/webauthn/login/verify", json={"ceremony": options["ceremony"], "credential": assertion,
                                                         "pending_id": started.pending_id},
                          headers={CSRF: started.csrf})
    refused(r, 400, "verification_failed")
    assert await rows(initialized) == before


async def test_client_data_nested_too_deeply_is_refused(initialized: Services, client: httpx.AsyncClient,
                                                         ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    """clientDataJSON "[[[[..." past the recursion limit (json.loads in the origin check and in py_webauthn's
    verification): verification_failed, once a 500."""
    authenticator, rp = ready
    started = await start(initialized, client, rp)
    options = await login_options(client, started.pending_id, started.csrf)
    assertion = authenticator.get(options["publicKey"])
    assertion["response"]["clientDataJSON"] = base64.urlsafe_b64encode(b"[" * 30_000).rstrip(b"=").decode()
    before = await rows(initialized)
    r = await client.post("/webauthn/login/verify", json={"ceremony": options["ceremony"], "credential": assertion,
                                                         "pending_id": started.pending_id},
                          headers={CSRF: started.csrf})
    assert "nested too deeply" in refused(r, 400, "verification_failed")["detail"]
    assert await rows(initialized) == before


def page_ceremony(page: str) -> dict[str, Any] | None:
    """The passkey ceremony a login page comes with (#passkey-options), as its script reads it."""
    import json
    import re

    found = re.search(r'<script type="application/json" id="passkey-options">(.*?)</script>', page)
    return dict(json.loads(found.group(1))) if found else None


async def test_the_login_page_comes_with_a_ceremony(initialized: Services, client: httpx.AsyncClient,
                                                    ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    """The page's ceremony (api.routes.interaction) logs in without asking /webauthn/login/options, once; each
    view of the page makes a new one, bound to its sign-in request like the endpoint's, and spends the endpoint's
    budget: with none left the page still answers, without a ceremony."""
    authenticator, rp = ready
    started = await start(initialized, client, rp)
    r = await client.get(f"/interaction/{started.pending_id}")
    assert r.status_code == 200
    first = page_ceremony(r.text)
    assert first is not None and first["publicKey"]["rpId"] == "localhost"
    second = page_ceremony((await client.get(f"/interaction/{started.pending_id}")).text)
    assert second is not None and second["ceremony"] != first["ceremony"]
    assert second["publicKey"]["challenge"] != first["publicKey"]["challenge"]
    body = {"ceremony": first["ceremony"], "pending_id": started.pending_id,
            "credential": authenticator.get(first["publicKey"])}
    r = await client.post("/webauthn/login/verify", json=body, headers={CSRF: started.csrf})
    assert r.status_code == 200 and "code=" in r.json()["redirect"], r.text
    client.cookies.clear()
    started = await start(initialized, client, rp)  # the same ceremony for another request: used already
    r = await client.post("/webauthn/login/verify", json={**body, "pending_id": started.pending_id},
                          headers={CSRF: started.csrf})
    refused(r, 400, "challenge_used")
    r = await client.post("/webauthn/login/verify", json={  # another request's page ceremony: refused
        "ceremony": second["ceremony"], "pending_id": started.pending_id,
        "credential": authenticator.get(second["publicKey"])}, headers={CSRF: started.csrf})
    refused(r, 400, "invalid_request")

    budget = initialized.ratelimits.budgets.passkey_options
    for _ in range(budget.limits[0].amount):
        await initialized.ratelimits.limiter.hit(budget, "ip:127.0.0.1")
    async with initialized.sessions() as session:
        before = len((await session.execute(select(WebAuthnChallenge.id))).all())
    r = await client.get(f"/interaction/{started.pending_id}")
    assert r.status_code == 200 and 'id="passkey-button"' in r.text and page_ceremony(r.text) is None
    async with initialized.sessions() as session:
        assert len((await session.execute(select(WebAuthnChallenge.id))).all()) == before
    r = await client.post("/webauthn/login/options", json={"pending_id": started.pending_id},
                          headers={CSRF: started.csrf})
    assert r.status_code == 429, r.text


async def test_reused_and_expired_challenges(initialized: Services, client: httpx.AsyncClient,
                                             ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    authenticator, rp = ready
    started = await start(initialized, client, rp)
    options = await login_options(client, started.pending_id, started.csrf)
    body = {"ceremony": options["ceremony"], "pending_id": started.pending_id,
            "credential": authenticator.get(options["publicKey"], user_verified=False)}
    headers = {CSRF: started.csrf}
    r = await client.post("/webauthn/login/verify", json={**body, "pending_id": "x" * 30}, headers=headers)
    refused(r, 400, "request_expired")  # nothing consumed: the request is checked first
    r = await client.post("/webauthn/login/verify", json=body, headers=headers)
    assert r.status_code == 200, r.text
    # the same ceremony (and even the same signed response) cannot be used twice
    client.cookies.clear()
    started = await start(initialized, client, rp)
    before = await rows(initialized)
    r = await client.post("/webauthn/login/verify", json={**body, "pending_id": started.pending_id},
                          headers={CSRF: started.csrf})
    refused(r, 400, "challenge_used")
    assert await rows(initialized) == before

    options = await login_options(client, started.pending_id, started.csrf)
    async with initialized.sessions() as session, session.begin():
        await session.execute(update(WebAuthnChallenge).where(WebAuthnChallenge.id == options["ceremony"]).values(
            expires_at=utcnow() - dt.timedelta(seconds=1)))
    before = await rows(initialized)
    r = await client.post("/webauthn/login/verify", json={
        "ceremony": options["ceremony"], "pending_id": started.pending_id,
        "credential": authenticator.get(options["publicKey"])}, headers={CSRF: started.csrf})
    refused(r, 400, "challenge_expired")
    assert await rows(initialized) == before
    r = await client.post("/webauthn/login/verify", json={
        "ceremony": "unknown-ceremony", "pending_id": started.pending_id,
        "credential": authenticator.get(options["publicKey"])}, headers={CSRF: started.csrf})
    refused(r, 400, "challenge_expired")
    # a ceremony of another sign-in request is refused (and consumed)
    other = await login_options(client, started.pending_id, started.csrf)
    started2 = await start(initialized, client, rp)
    r = await client.post("/webauthn/login/verify", json={
        "ceremony": other["ceremony"], "pending_id": started2.pending_id,
        "credential": authenticator.get(other["publicKey"])}, headers={CSRF: started2.csrf})
    refused(r, 400, "invalid_request")
    async with initialized.sessions() as session:
        used = (await session.get(WebAuthnChallenge, other["ceremony"]))
        assert used is not None and used.used_at is not None


async def test_credential_of_another_user(initialized: Services, client: httpx.AsyncClient,
                                          ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    """Bob's credential presented with Alice's user handle (or a random one) is refused."""
    alice, rp = ready
    bob = await enrolled(initialized, client, FIN_B)
    alice_handle = next(iter(alice.credentials.values())).user_handle
    await refused_login(initialized, client, rp, bob, (400, "wrong_user"), user_handle=alice_handle)
    await refused_login(initialized, client, rp, bob, (400, "wrong_user"), user_handle=uuid.uuid4().bytes * 2)
    stranger = SoftwareAuthenticator()
    stranger.create({"rp": {"id": "localhost"}, "user": {"id": "AAAA"}, "challenge": "AAAA"})
    await refused_login(initialized, client, rp, stranger, (400, "unknown_credential"))


async def test_user_verification_missing_when_high_is_asked(
        initialized: Services, client: httpx.AsyncClient, ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    authenticator, rp = ready
    settings = initialized.settings
    await refused_login(initialized, client, rp, authenticator, (400, "user_verification_required"),
                        acr=settings.acr_high, user_verified=False)
    await refused_login(initialized, client, rp, authenticator, (400, "user_verification_required"),
                        acr=settings.acr_substantial, user_verified=False)
    # without an acr request a presence-only login is level low (amr "user")
    started = await start(initialized, client, rp)
    r = await passkey_login(client, started.pending_id, started.csrf, authenticator, user_verified=False)
    assert r.status_code == 200, r.text
    r = await redeem(client, rp, query(r.json()["redirect"])["code"], started.verifier)
    claims = await id_token_claims(client, initialized, rp, r.json()["id_token"])
    assert claims["acr"] == settings.acr_low and claims["amr"] == ["hwk", "user"]


async def test_synced_passkey_cannot_reach_high(initialized: Services, client: httpx.AsyncClient) -> None:
    authenticator = await enrolled(initialized, client, backup_eligible=True)
    rp = await register_client(initialized)
    await refused_login(initialized, client, rp, authenticator, (400, "insufficient_level"),
                        acr=initialized.settings.acr_high)


async def test_counter_regression_flags_the_credential(initialized: Services, client: httpx.AsyncClient,
                                                      ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    authenticator, rp = ready
    credential_id = next(iter(authenticator.credentials))
    started = await start(initialized, client, rp)
    r = await passkey_login(client, started.pending_id, started.csrf, authenticator, counter=10)
    assert r.status_code == 200, r.text
    client.cookies.clear()
    started = await start(initialized, client, rp)
    before = await rows(initialized)
    r = await passkey_login(client, started.pending_id, started.csrf, authenticator, counter=10)  # a clone's
    refused(r, 403, "counter_regression")
    after = await rows(initialized)
    assert {t for t in TABLES if after[t] != before[t]} == {"webauthn_credentials"}
    row = await credential_row(initialized, credential_id)
    assert row.flagged_at is not None and row.sign_count == 10
    [event] = await events(initialized, "webauthn.counter_regression")
    assert event.detail == {"stored": 10, "received": 10}
    # a flagged credential never logs in again, even with a counter that goes up
    await refused_login(initialized, client, rp, authenticator, (403, "credential_flagged"), counter=11)


async def test_zero_counters_are_not_a_regression(initialized: Services, client: httpx.AsyncClient) -> None:
    authenticator = await enrolled(initialized, client, authenticator=SoftwareAuthenticator(counter_step=0))
    rp = await register_client(initialized)
    await pre_consent(initialized, rp)
    for _ in range(2):
        client.cookies.clear()
        started = await start(initialized, client, rp)
        r = await passkey_login(client, started.pending_id, started.csrf, authenticator)
        assert r.status_code == 200, r.text


async def test_csrf_and_origin(initialized: Services, client: httpx.AsyncClient,
                               ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    authenticator, rp = ready
    started = await start(initialized, client, rp)
    options = await login_options(client, started.pending_id, started.csrf)
    body = {"ceremony": options["ceremony"], "pending_id": started.pending_id,
            "credential": authenticator.get(options["publicKey"])}
    async with initialized.sessions() as session:
        challenges = len((await session.execute(select(WebAuthnChallenge.id))).all())
    before = await rows(initialized)
    for headers, code in (({}, "csrf"), ({CSRF: ""}, "csrf"), ({CSRF: started.csrf + "x"}, "csrf"),
                          ({CSRF: started.csrf, "Origin": "https://evil.example"}, "wrong_origin"),
                          ({CSRF: started.csrf, "Origin": "null"}, "wrong_origin")):
        for path, payload in (("/webauthn/login/options", {"pending_id": started.pending_id}),
                              ("/webauthn/login/verify", body)):
            refused(await client.post(path, json=payload, headers=headers), 403, code)
    assert await rows(initialized) == before
    async with initialized.sessions() as session:
        assert len((await session.execute(select(WebAuthnChallenge.id))).all()) == challenges
        assert (await session.get(WebAuthnChallenge, options["ceremony"])).used_at is None  # type: ignore[union-attr]
    r = await client.post("/webauthn/login/verify", json=body, headers={CSRF: started.csrf, "Origin": ORIGIN})
    assert r.status_code == 200, r.text


async def test_malformed_bodies(initialized: Services, client: httpx.AsyncClient,
                                ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    _authenticator, rp = ready
    started = await start(initialized, client, rp)
    headers = {CSRF: started.csrf}
    refused(await client.post("/webauthn/login/options", content="{}", headers=headers), 400, "invalid_request")
    refused(await client.post("/webauthn/login/options", content="[", headers={
        **headers, "Content-Type": "application/json"}), 400, "invalid_request")
    refused(await client.post("/webauthn/login/options", json=[1], headers=headers), 400, "invalid_request")
    refused(await client.post("/webauthn/login/options", json={"pending_id": 5}, headers=headers), 400,
            "invalid_request")
    refused(await client.post("/webauthn/login/options", json={"pending_id": "a" * 5000}, headers=headers), 400,
            "invalid_request")
    options = await login_options(client, started.pending_id, started.csrf)
    refused(await client.post("/webauthn/login/verify", json={
        "ceremony": options["ceremony"], "pending_id": started.pending_id, "credential": "x"}, headers=headers),
        400, "invalid_request")
    refused(await client.post("/webauthn/login/verify", json={
        "ceremony": options["ceremony"], "pending_id": started.pending_id, "credential": {"id": "x"}},
        headers=headers), 400, "invalid_request")
    refused(await client.post("/webauthn/login/verify", json={
        "ceremony": options["ceremony"], "pending_id": started.pending_id, "credential": {"id": "x"}},
        headers=headers), 400, "challenge_used")  # the malformed attempt consumed it
    big = {"pending_id": started.pending_id, "padding": "x" * 70_000}
    refused(await client.post("/webauthn/login/options", json=big, headers=headers), 400, "invalid_request")


# --- credentials: management, removal, registration from a session ----------------------------------------

async def signed_in(services: Services, http: httpx.AsyncClient, rp: Registered,
                    authenticator: SoftwareAuthenticator) -> str:
    """Log in with the passkey; returns the account CSRF token (GET /webauthn/credentials)."""
    started = await start(services, http, rp)
    r = await passkey_login(http, started.pending_id, started.csrf, authenticator)
    assert r.status_code == 200, r.text
    r = await http.get("/webauthn/credentials")
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


async def test_list_rename_remove(initialized: Services, client: httpx.AsyncClient, other_browser: httpx.AsyncClient,
                                  ready: tuple[SoftwareAuthenticator, Registered]) -> None:
    authenticator, rp = ready
    credential_id = next(iter(authenticator.credentials))
    refused(await client.get("/webauthn/credentials"), 401, "login_required")
    csrf = await signed_in(initialized, client, rp, authenticator)
    [listed] = (await client.get("/webauthn/credentials")).json()["credentials"]
    assert listed["id"] == credential_id and listed["level"] == "substantial" and listed["synced"] is False
    assert listed["flagged"] is False and listed["last_used_at"] is not None

    path = f"/webauthn/credentials/{credential_id}"
    refused(await client.patch(path, json={"name": "Work key"}), 403, "csrf")
    refused(await client.patch(path, json={"name": "x" * 101}, headers={CSRF: csrf}), 400, "invalid_request")
    refused(await client.patch(path, json={"name": "bad\x00name"}, headers={CSRF: csrf}), 400, "invalid_request")
    r = await client.patch(path, json={"name": "  Work   key "}, headers={CSRF: csrf})
    assert r.status_code == 200 and r.json()["name"] == "Work key"
    assert (await credential_row(initialized, credential_id)).name == "Work key"
    # a blank name: the numbered default in the page's language (the person's other passkeys: none)
    r = await client.patch(path, json={"name": " "}, headers={CSRF: csrf, "Accept-Language": "ru"})
    assert r.status_code == 200 and r.json()["name"] == "Ключ доступа 1"
    # another person cannot touch it
    bob = await enrolled(initialized, other_browser, FIN_B)
    bob_csrf = await signed_in(initialized, other_browser, rp, bob)
    refused(await other_browser.delete(path, headers={CSRF: bob_csrf}), 404, "credential_not_found")
    refused(await client.delete(path, headers={CSRF: csrf, "Origin": "https://evil.example"}), 403, "wrong_origin")
    assert (await credential_row(initialized, credential_id)).revoked_at is None

    r = await client.delete(path, headers={CSRF: csrf})
    assert r.status_code == 204
    assert (await client.get("/webauthn/credentials")).json()["credentials"] == []
    refused(await client.delete(path, headers={CSRF: csrf}), 404, "credential_not_found")
    assert [e.event_type for e in await events(initialized, "webauthn.renamed")] == ["webauthn.renamed"] * 2
    assert len(await events(initialized, "webauthn.removed")) == 1
    # a removed credential never logs in again
    client.cookies.clear()
    await refused_login(initialized, client, rp, authenticator, (400, "credential_removed"))


async def test_registration_from_a_session_is_capped_at_its_level(
        initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa, tmp_path: Path) -> None:
    """Signed in with a synced passkey (substantial), the person adds a device-bound, attested one: it reaches
    substantial only, since no registration office vouched for it."""
    require_attestation(initialized, vendor, tmp_path)
    synced = await enrolled(initialized, client, backup_eligible=True)
    rp = await register_client(initialized)
    await pre_consent(initialized, rp)
    csrf = await signed_in(initialized, client, rp, synced)
    refused(await client.post("/webauthn/register/options", json={}), 403, "csrf")
    r = await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert r.status_code == 200, r.text
    options = r.json()
    assert [c["id"] for c in options["publicKey"]["excludeCredentials"]] == list(synced.credentials)
    with pytest.raises(ValueError, match="InvalidStateError"):
        synced.create(options["publicKey"])
    device = attested_authenticator(vendor, aaguid=MODEL)
    r = await client.post("/webauthn/register/verify", json={
        "ceremony": options["ceremony"], "credential": device.create(options["publicKey"])}, headers={CSRF: csrf})
    assert r.status_code == 201, r.text
    assert r.json()["level"] == "substantial" and r.json()["redirect"] == "/account"
    # no name, and a client that names no browser or device: numbered after the person's passkeys, in Azerbaijani
    assert r.json()["name"] == f"Giriş açarı {len(synced.credentials) + 1}"
    client.cookies.clear()
    await refused_login(initialized, client, rp, device, (400, "insufficient_level"), acr=initialized.settings.acr_high)


async def test_registration_refusals(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN_A)
    code = await issue_code(initialized, person_id)
    refused(await client.post("/webauthn/register/options", json={}), 401, "login_required")
    r = await client.post("/webauthn/enrollment", json={"code": code})
    csrf = r.json()["csrf_token"]
    authenticator = SoftwareAuthenticator()

    async def attempt(**create: Any) -> httpx.Response:
        r = await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
        assert r.status_code == 200, r.text
        return await client.post("/webauthn/register/verify", json={
            "ceremony": r.json()["ceremony"], "credential": authenticator.create(r.json()["publicKey"], **create)},
            headers={CSRF: csrf})

    before = await rows(initialized)
    refused(await attempt(user_verified=False), 400, "user_verification_required")
    refused(await attempt(origin="https://evil.example"), 403, "wrong_origin")
    refused(await attempt(rp_id="evil.example"), 400, "verification_failed")
    refused(await client.post("/webauthn/register/options", json={}, headers={CSRF: "wrong"}), 403, "csrf")
    refused(await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf, "Origin": "https://a.b"}),
            403, "wrong_origin")
    after = await rows(initialized)
    assert {t for t in TABLES if after[t] != before[t]} == {"webauthn_users"}  # the user handle was made
    assert [e.detail["code"] for e in await events(initialized, "webauthn.registration_failed")] == [
        "user_verification_required", "wrong_origin", "verification_failed"]
    # the enrollment is still open: a good registration completes it
    r = await attempt()
    assert r.status_code == 201, r.text
    refused(await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf}), 401, "login_required")


# --- attestation (level high requires an attested, allow-listed authenticator model) ---------------------------

@pytest.fixture
def vendor() -> AttestationCa:
    return AttestationCa()


MODEL = bytes.fromhex("2fc0579f811347eab116bb5a8db9202a")


def require_attestation(services: Services, ca: AttestationCa, tmp_path: Path,
                        aaguids: list[bytes] | None = None) -> None:
    """Trust `ca` (ACAR_WEBAUTHN_ATTESTATION_ROOTS_FILE) for these models only (ACAR_WEBAUTHN_AAGUID_ALLOWLIST)."""
    roots = tmp_path / "attestation-roots.pem"
    roots.write_bytes(ca.pem)
    services.passkeys = build_passkeys(services.settings.model_copy(update={
        "webauthn_attestation_roots_file": roots,
        "webauthn_aaguid_allowlist": [str(uuid.UUID(bytes=a)) for a in aaguids or []]}))


@pytest.mark.parametrize(("make", "attested"), [
    ("vendor", True),
    ("forged", False),  # a certificate that does not chain to the vendor root
    ("self", False),  # packed self attestation
    ("none", False),
    ("unlisted", False),  # a good chain for a model that is not allow-listed
    ("mismatch", False),  # the certificate names another AAGUID than the authenticator data
])
async def test_attestation(initialized: Services, client: httpx.AsyncClient, vendor: AttestationCa, *, make: str,
                           attested: bool, tmp_path: Path) -> None:
    require_attestation(initialized, vendor, tmp_path, [MODEL])
    if make == "vendor":
        authenticator = attested_authenticator(vendor, aaguid=MODEL)
    elif make == "forged":
        authenticator = attested_authenticator(vendor, aaguid=MODEL, forged=True)
    elif make == "unlisted":
        authenticator = attested_authenticator(vendor, aaguid=bytes(range(16)))
    elif make == "mismatch":
        authenticator = attested_authenticator(vendor, aaguid=bytes(range(16)))
        authenticator.aaguid = MODEL
    else:
        authenticator = SoftwareAuthenticator(aaguid=MODEL, attestation="packed-self" if make == "self" else "none")
    person_id = await register_person(initialized, FIN_A)
    r = await client.post("/webauthn/enrollment", json={"code": await issue_code(initialized, person_id)})
    csrf = r.json()["csrf_token"]
    r = await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert r.json()["publicKey"]["attestation"] == "direct"
    response = authenticator.create(r.json()["publicKey"])
    r = await client.post("/webauthn/register/verify", json={"ceremony": r.json()["ceremony"],
                                                            "credential": response}, headers={CSRF: csrf})
    assert r.status_code == 201, r.text
    assert r.json()["level"] == ("high" if attested else "substantial")
    row = await credential_row(initialized, response["id"])
    assert row.attested is attested
    assert row.attestation_format == ("none" if make == "none" else "packed")

    client.cookies.clear()
    rp = await register_client(initialized)
    await pre_consent(initialized, rp)
    if attested:
        started = await start(initialized, client, rp, acr_values=initialized.settings.acr_high)
        r = await passkey_login(client, started.pending_id, started.csrf, authenticator)
        assert r.status_code == 200, r.text
    else:
        await refused_login(initialized, client, rp, authenticator, (400, "insufficient_level"),
                            acr=initialized.settings.acr_high)


async def test_user_handles_are_random_and_stable(initialized: Services, client: httpx.AsyncClient) -> None:
    await enrolled(initialized, client, FIN_A)
    await enrolled(initialized, client, FIN_B)
    async with initialized.sessions() as session:
        handles = (await session.execute(select(WebAuthnUser.user_handle))).scalars().all()
        sessions = (await session.execute(select(LoginSession.id))).scalars().all()
    assert len(set(handles)) == 2 and all(len(h) == 43 for h in handles)
    assert sessions == []  # enrollment signs nobody in
