"""ID-card login end to end in process (ASGI, real database, the generated ID-card PKI with its real `openssl ocsp`
responder process: tests.idcard_pki): a Web eID token signed by the card's key, or the certificate of a mutual-TLS
connection or of a trusted proxy's header, ending in an OIDC code and an ID token at level high; every refusal with
its machine code and an audit event, and nothing else written."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import Services, build_passkeys
from api.settings import Settings, SettingsError
from idp.sql.card_login import nonce_key
from idp.sql.models import AuthorizationRequest, LoginSession, Person, WebEidChallenge
from tests.idcard_pki import CARD_POLICY, Card, IdCardPki, idcard_pki
from tests.oidc_tools import ISSUER, Registered, authorization_params, consent, pkce_pair, redeem, register_client
from tests.passkey_tools import events, refused, rows
from tests.webauthn_authenticator import CSRF, AttestationCa, attested_authenticator, passkey_login

FIN = "5ABC123"
PROXY = ("10.20.30.40", 41000)
"""A reverse proxy's address (in ACAR_TRUSTED_PROXIES below)."""
STRANGER = ("203.0.113.9", 52000)
HEADER = "X-SSL-Client-Cert"
MODEL = bytes.fromhex("2fc0579f811347eab116bb5a8db9202a")
HIGH_AMR = ["hwk", "mfa", "pin", "sc"]


# --- the world ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdCardPki]:
    with idcard_pki(tmp_path_factory.mktemp("idcard")) as built:
        yield built


@pytest.fixture
def settings(settings: Settings, pki: IdCardPki) -> Settings:
    """The test settings with the ID-card PKI's root and issuing CA, its policy required, a trusted proxy network and
    the proxy's certificate header."""
    trust = pki.write_trust()
    return settings.model_copy(update={
        "idcard_trust_anchors": [trust.anchors], "idcard_intermediates": [trust.intermediates],
        "idcard_required_policies": [CARD_POLICY], "trusted_proxies": ["10.0.0.0/8"],
        "idcard_client_cert_header": HEADER.lower()})


@pytest.fixture(autouse=True)
def responder_running(pki: IdCardPki) -> Iterator[None]:
    """Every test starts with the OCSP responder up (one test stops it)."""
    pki.responder.start()
    yield
    pki.responder.start()


def browser(app: ASGIApp, client: tuple[str, int] = ("127.0.0.1", 50000)) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client), base_url=ISSUER)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(app) as c:
        yield c


@pytest.fixture
async def rp(initialized: Services) -> Registered:
    return await register_client(initialized)


async def person(services: Services, **kw: Any) -> str:
    from idp.sql.persons import PersonService

    kw.setdefault("fin", FIN)
    async with services.sessions() as session, session.begin():
        return (await PersonService(session).add(given_name="Aygün", family_name="Məmmədova", actor="test",
                                                 **kw)).id


@dataclass
class Started:
    pending_id: str
    csrf: str
    verifier: str
    params: dict[str, str]


async def start(services: Services, http: httpx.AsyncClient, rp: Registered, **extra: str) -> Started:
    """GET /authorize at level high up to the login page: the pending request's id and CSRF token."""
    verifier, challenge = pkce_pair()
    params = authorization_params(rp, challenge, acr_values=services.settings.acr_high, **extra)
    r = await http.get("/authorize", params=params)
    assert r.status_code == 303, r.text
    pending_id = r.headers["location"].split("/")[2]
    async with services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None
        return Started(pending_id, row.csrf_token, verifier, params)


def json_headers(started: Started) -> dict[str, str]:
    return {CSRF: started.csrf, "Origin": ISSUER}


async def challenge(http: httpx.AsyncClient, started: Started) -> str:
    r = await http.post("/idcard/webeid/challenge", json={"pending_id": started.pending_id},
                        headers=json_headers(started))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"nonce", "expires_at"} and len(body["nonce"]) == 44
    return str(body["nonce"])


async def webeid_login(http: httpx.AsyncClient, started: Started, nonce: object, token: object) -> httpx.Response:
    return await http.post("/idcard/webeid/login", json={"pending_id": started.pending_id, "nonce": nonce,
                                                         "token": token}, headers=json_headers(started))


async def id_token_claims(http: httpx.AsyncClient, services: Services, rp: Registered, token: str) -> dict[str, Any]:
    jwks = (await http.get("/jwks.json")).json()
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = {k.key_id: k for k in pyjwt.PyJWKSet.from_dict(jwks).keys}[kid]
    claims: dict[str, Any] = pyjwt.decode(token, key=key.key, algorithms=["ES256"], audience=rp.client_id,
                                          issuer=services.settings.issuer,
                                          options={"require": ["exp", "iat", "sub", "acr", "amr", "auth_time"]})
    return claims


async def finish(http: httpx.AsyncClient, services: Services, rp: Registered, started: Started,
                 location: str) -> dict[str, Any]:
    """From the login's next step (consent) to the ID token's claims."""
    assert urlsplit(location).path == f"/interaction/{started.pending_id}/consent", location
    r = await consent(http, location)
    assert r.status_code == 303, r.text
    answer = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
    assert answer["state"] == started.params["state"]
    r = await redeem(http, rp, answer["code"], started.verifier)
    assert r.status_code == 200, r.text
    claims = await id_token_claims(http, services, rp, r.json()["id_token"])
    assert claims["nonce"] == started.params["nonce"]
    return claims


async def persons(services: Services) -> int:
    async with services.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Person))).scalar_one())


async def nonce_used(services: Services, nonce: str) -> bool:
    async with services.sessions() as session:
        row = await session.get(WebEidChallenge, nonce_key(nonce))
        assert row is not None
        return row.used_at is not None


async def refused_events(services: Services) -> list[dict[str, Any]]:
    return [dict(event.detail) for event in await events(services, "login.card.refused")]


# --- Web eID: the whole path --------------------------------------------------------------------------------

async def test_webeid_login_to_id_token_at_level_high(initialized: Services, http: httpx.AsyncClient,
                                                      rp: Registered, pki: IdCardPki) -> None:
    person_id = await person(initialized)
    card = pki.card(fin=FIN)
    started = await start(initialized, http, rp)
    page = await http.get(f"/interaction/{started.pending_id}")
    assert page.status_code == 200, page.text
    # the mTLS form posts to the issuer behind the proxy (no mTLS listener here): CSP form-action allows it
    assert f"form-action 'self' {ISSUER}" in page.headers["content-security-policy"].replace(
        " https://agency.example", "")

    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    assert "acar_session" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    claims = await finish(http, initialized, rp, started, r.json()["redirect"])
    assert claims["acr"] == initialized.settings.acr_high == "http://eidas.europa.eu/LoA/high"
    assert {"sc", "hwk"} <= set(claims["amr"]) and sorted(claims["amr"]) == HIGH_AMR

    async with initialized.sessions() as session:
        [login] = (await session.execute(select(LoginSession))).scalars().all()
    assert (login.person_id, login.level, sorted(login.amr)) == (person_id, "high", HIGH_AMR)
    [succeeded] = await events(initialized, "login.card.succeeded")
    assert succeeded.actor == person_id and succeeded.subject == card.fingerprint
    assert succeeded.detail["method"] == "idcard-webeid" and succeeded.detail["fingerprint"] == card.fingerprint
    assert succeeded.detail["revocation"] == "good" and "Issuing CA" in succeeded.detail["issuer"]
    assert await nonce_used(initialized, nonce)

    # the same token and nonce again (a replay, from another browser): refused, audited, nothing written
    http.cookies.clear()
    again = await start(initialized, http, rp)
    before = await rows(initialized)
    r = await webeid_login(http, again, nonce, card.token(origin=ISSUER, nonce=nonce))
    refused(r, 400, "webeid_challenge_invalid")
    assert await rows(initialized) == before
    assert (await refused_events(initialized))[-1] == {"method": "idcard-webeid", "code": "webeid_challenge_invalid"}


async def test_webeid_login_then_the_representation_choice(initialized: Services, http: httpx.AsyncClient,
                                                             pki: IdCardPki) -> None:
    """Representation at login after an ID-card login (docs/registry.md): the login's next step is the choice,
    and the chosen entity is in the ID token."""
    from idp.sql.registry import EntityService, MandateService

    rp = await register_client(initialized, scopes=("openid", "profile", "represents"))
    await person(initialized)
    async with initialized.sessions() as session, session.begin():
        await EntityService(session).add(voen="1400057421", name="Açar Texnologiya MMC", legal_form="MMC",
                                         actor="test")
        mandate = await MandateService(session).grant(fin=FIN, voen="1400057421", powers=["represent_at_login"],
                                                      granted_by="officer-1", granted_via="officer", actor="test")
    started = await start(initialized, http, rp, scope="openid profile represents")
    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, pki.card(fin=FIN).token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    location = r.json()["redirect"]
    assert location == f"/interaction/{started.pending_id}/represent"
    page = await http.get(location)
    assert page.status_code == 200 and "1400057421" in page.text
    r = await http.post(location, data={"csrf_token": started.csrf, "represents": mandate.id})
    assert r.status_code == 303, r.text
    claims = await finish(http, initialized, rp, started, r.headers["location"])
    assert claims["represents"] == {"voen": "1400057421", "name": "Açar Texnologiya MMC",
                                    "powers": ["represent_at_login"]}


async def test_login_page_offers_the_mtls_listener(initialized: Services, http: httpx.AsyncClient,
                                                   rp: Registered) -> None:
    """With an mTLS listener (ACAR_MTLS_PUBLIC_URL), the login page's form posts there, and its CSP form-action
    allows that origin (browsers apply form-action to the submission)."""
    initialized.settings.mtls_public_url = "https://localhost:8443"
    started = await start(initialized, http, rp)
    page = await http.get(f"/interaction/{started.pending_id}")
    assert page.status_code == 200, page.text
    assert f'action="https://localhost:8443/idcard/tls/{started.pending_id}"' in page.text
    form_action = page.headers["content-security-policy"].split("form-action ")[1].split(";")[0].split()
    assert form_action == ["'self'", "https://agency.example", "https://localhost:8443"]


async def test_rsa_and_p384_cards(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                  pki: IdCardPki) -> None:
    """ES384 (P-384 cards) and RS256 (RSA cards) tokens, as the Web eID app makes them."""
    from cryptography.hazmat.primitives.asymmetric import ec

    await person(initialized)
    for card in (pki.card(fin=FIN, curve=ec.SECP384R1()), pki.card(fin=FIN, rsa_bits=2048)):
        started = await start(initialized, http, rp)
        nonce = await challenge(http, started)
        r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
        assert r.status_code == 200, r.text
    assert len(await events(initialized, "login.card.succeeded")) == 2


# --- Web eID: refusals --------------------------------------------------------------------------------------

CARDS = {
    "expired": (lambda p: p.expired_card(fin=FIN), 400, "certificate_expired"),
    "not_yet_valid": (lambda p: p.not_yet_valid_card(fin=FIN), 400, "certificate_not_yet_valid"),
    "revoked": (lambda p: p.revoked_card(fin=FIN), 403, "certificate_revoked"),
    "unknown_ca": (lambda p: p.unknown_ca_card(fin=FIN), 403, "certificate_untrusted"),
    "forged_issuer": (lambda p: p.forged_issuer_card(fin=FIN), 403, "certificate_untrusted"),
    "forged_issuer_eddsa": (lambda p: p.card(fin=FIN, issuer="forged-ed25519"), 403, "certificate_untrusted"),
    "key_usage": (lambda p: p.non_repudiation_card(fin=FIN), 403, "certificate_wrong_usage"),
    "eku": (lambda p: p.email_protection_card(fin=FIN), 403, "certificate_wrong_usage"),
    "self_signed": (lambda p: p.self_signed_card(fin=FIN), 403, "certificate_self_signed"),
    "policy": (lambda p: p.no_policy_card(fin=FIN), 403, "certificate_policy_missing"),
    "serial_malformed": (lambda p: p.malformed_serial_card(), 400, "certificate_malformed"),
    "tax_number": (lambda p: p.card(serial_number="TINAZ-1234567890"), 403, "certificate_identifier_unsupported"),
    "foreign_personal_number": (lambda p: p.card(serial_number="PNOEE-38001085718"), 403,
                                "certificate_identifier_unsupported"),
    "no_serial_number": (lambda p: p.card(serial_number=None), 403, "certificate_identifier_unsupported"),
}


async def refused_webeid(services: Services, http: httpx.AsyncClient, started: Started, nonce: object,
                         token: object, *, expected: tuple[int, str], fingerprint: str | None = None) -> None:
    """The login is refused with `expected` (status, code); the refusal's audit event is committed and nothing else
    is written."""
    status, code = expected
    before, people, audited = await rows(services), await persons(services), len(await refused_events(services))
    r = await webeid_login(http, started, nonce, token)
    refused(r, status, code)
    assert "set-cookie" not in r.headers
    assert await rows(services) == before and await persons(services) == people
    found = await refused_events(services)
    assert len(found) == audited + 1
    expected = {"method": "idcard-webeid", "code": code}
    if fingerprint is not None:
        expected["fingerprint"] = fingerprint
    assert found[-1] == expected
    if isinstance(nonce, str) and code != "webeid_challenge_invalid":
        assert await nonce_used(services, nonce)  # used up before the token was looked at


@pytest.mark.parametrize("kind", list(CARDS))
async def test_certificate_refused(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                   pki: IdCardPki, kind: str) -> None:
    make, status, code = CARDS[kind]
    await person(initialized)
    card: Card = make(pki)
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, card.token(origin=ISSUER, nonce=nonce),
                         expected=(status, code), fingerprint=card.fingerprint)
    # the nonce stays used: the same card, corrected or not, needs a new challenge
    refused(await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce)), 400,
            "webeid_challenge_invalid")


async def test_ocsp_unreachable_fails_closed(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                             pki: IdCardPki) -> None:
    await person(initialized)
    card = pki.card(fin=FIN)
    pki.responder.stop()  # connection refused at the URL the certificate names
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, card.token(origin=ISSUER, nonce=nonce),
                         expected=(503, "revocation_unavailable"), fingerprint=card.fingerprint)


async def test_soft_fail_is_accepted_and_audited(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                                 pki: IdCardPki) -> None:
    """ACAR_IDCARD_REVOCATION_SOFT_FAIL: an outage of every revocation source lets the card in, audited."""
    initialized.settings.idcard_revocation_soft_fail = True
    await person(initialized)
    card = pki.card(fin=FIN)
    pki.responder.stop()
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    [succeeded] = await events(initialized, "login.card.succeeded")
    assert succeeded.detail["revocation"] == "soft-fail"


async def test_signature_for_another_origin_or_nonce(initialized: Services, http: httpx.AsyncClient,
                                                     rp: Registered, pki: IdCardPki) -> None:
    await person(initialized)
    card = pki.card(fin=FIN)
    for origin in ("https://evil.example", ISSUER + "/", "http://localhost:8001"):
        started = await start(initialized, http, rp)
        nonce = await challenge(http, started)
        await refused_webeid(initialized, http, started, nonce, card.token(origin=origin, nonce=nonce),
                             expected=(403, "webeid_signature_invalid"), fingerprint=card.fingerprint)
    # a signature over another (also issued) nonce
    started = await start(initialized, http, rp)
    nonce, other = await challenge(http, started), await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, card.token(origin=ISSUER, nonce=other),
                         expected=(403, "webeid_signature_invalid"), fingerprint=card.fingerprint)


async def test_nonce_of_another_sign_in(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                        pki: IdCardPki) -> None:
    await person(initialized)
    card = pki.card(fin=FIN)
    first, second = await start(initialized, http, rp), await start(initialized, http, rp)
    nonce = await challenge(http, first)
    await refused_webeid(initialized, http, second, nonce, card.token(origin=ISSUER, nonce=nonce),
                         expected=(400, "webeid_challenge_invalid"))
    assert not await nonce_used(initialized, nonce)  # presented for another sign-in: not its own to use up


async def test_expired_nonce(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                             pki: IdCardPki) -> None:
    await person(initialized)
    card = pki.card(fin=FIN)
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    async with initialized.sessions() as session, session.begin():
        row = await session.get(WebEidChallenge, nonce_key(nonce))
        assert row is not None
        row.expires_at = row.created_at - dt.timedelta(seconds=1)
    await refused_webeid(initialized, http, started, nonce, card.token(origin=ISSUER, nonce=nonce),
                         expected=(400, "webeid_challenge_invalid"))


async def test_bad_inputs_are_specific_problems(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                                pki: IdCardPki) -> None:
    """Whatever a client sends gets a specific problem, never a 500."""
    await person(initialized)
    card = pki.card(fin=FIN)
    started = await start(initialized, http, rp)
    headers = json_headers(started)
    for path in ("/idcard/webeid/challenge", "/idcard/webeid/login"):
        refused(await http.post(path, content="{}", headers=headers), 400, "invalid_request")  # not JSON typed
        refused(await http.post(path, content="[", headers={**headers, "Content-Type": "application/json"}), 400,
                "invalid_request")
        refused(await http.post(path, content=b"\xff\xfe", headers={**headers, "Content-Type": "application/json"}),
                400, "invalid_request")
        refused(await http.post(path, json=[1], headers=headers), 400, "invalid_request")
        refused(await http.post(path, json={"pending_id": 5}, headers=headers), 400, "invalid_request")
        deep = f'{{"pending_id": "{started.pending_id}", "token": {"[" * 30_000 + "]" * 30_000}}}'
        refused(await http.post(path, content=deep, headers={**headers, "Content-Type": "application/json"}), 400,
                "invalid_request")  # nesting past the recursion limit (once a 500)
        refused(await http.post(path, json={"pending_id": "a" * 5000}, headers=headers), 400, "invalid_request")
        refused(await http.post(path, json={"pending_id": started.pending_id, "padding": "x" * 70_000},
                                headers=headers), 400, "invalid_request")
        refused(await http.post(path, json={"pending_id": "no-such-request"}, headers=headers), 400,
                "request_expired")
        refused(await http.post(path, json={"pending_id": started.pending_id}, headers={CSRF: "wrong"}), 403,
                "csrf")
        refused(await http.post(path, json={"pending_id": started.pending_id},
                                headers={**headers, "Origin": "https://evil.example"}), 403, "wrong_origin")
    good = card.token(origin=ISSUER, nonce="x")
    tokens: list[tuple[object, object, int, str]] = [
        (None, good, 400, "webeid_challenge_invalid"),  # no nonce
        (5, good, 400, "webeid_challenge_invalid"),
        ("A" * 44, good, 400, "webeid_challenge_invalid"),  # never issued
    ]
    for nonce, token, status, code in tokens:
        await refused_webeid(initialized, http, started, nonce, token, expected=(status, code))
    malformed: list[object] = [
        None, "a string", [good], {}, {**good, "format": "web-eid:2"}, {**good, "algorithm": "none"},
        {**good, "algorithm": "HS256"}, {**good, "unverifiedCertificate": "not base64!"},
        {**good, "unverifiedCertificate": "AAAA"}, {**good, "signature": 5}, {**good, "signature": "%%%"},
        {k: v for k, v in good.items() if k != "signature"},
    ]
    for token in malformed:
        nonce = await challenge(http, started)
        r = await webeid_login(http, started, nonce, token)
        assert r.status_code in (400, 403), (token, r.status_code, r.text)
        assert r.json()["code"] in ("webeid_token_malformed", "certificate_malformed", "webeid_signature_invalid"), (
            token, r.text)
        assert await nonce_used(initialized, nonce)


async def test_rate_limited(initialized: Services, http: httpx.AsyncClient, rp: Registered, pki: IdCardPki) -> None:
    from api.deps import build_ratelimits

    initialized.ratelimits = build_ratelimits(initialized.settings.model_copy(update={
        "rate_limit_card_challenge": "2/minute", "rate_limit_card_login": "1/minute"}), initialized.audit_log)
    started = await start(initialized, http, rp)
    await challenge(http, started)
    await challenge(http, started)
    r = await http.post("/idcard/webeid/challenge", json={"pending_id": started.pending_id},
                        headers=json_headers(started))
    refused(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0
    await webeid_login(http, started, "x", {})
    refused(await webeid_login(http, started, "x", {}), 429, "rate_limited")


# --- who the card names -----------------------------------------------------------------------------------

async def test_unknown_holder_without_and_with_auto_provisioning(initialized: Services, http: httpx.AsyncClient,
                                                                 rp: Registered, pki: IdCardPki) -> None:
    card = pki.card(fin="7QWE890", given_name="Rəşad", surname="Əliyev")
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, card.token(origin=ISSUER, nonce=nonce),
                         expected=(403, "card_holder_unknown"), fingerprint=card.fingerprint)
    assert await events(initialized, "person.registered") == []

    initialized.settings.idcard_auto_provision = True
    await initialized.card.aclose()  # the service is built again with the setting
    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    async with initialized.sessions() as session:
        [registered] = (await session.execute(select(Person).where(Person.fin == "7QWE890"))).scalars().all()
    assert (registered.given_name, registered.family_name, registered.category, registered.document_number) == (
        "Rəşad", "Əliyev", "citizen", None)
    [event] = await events(initialized, "person.registered")
    assert event.subject == registered.id and event.actor == "idcard"
    assert event.detail == {"category": "citizen", "has_fin": True, "source": "idcard",
                            "fingerprint": card.fingerprint}
    [succeeded] = await events(initialized, "login.card.succeeded")
    assert succeeded.actor == registered.id
    # the next login finds the person: no second registration
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    assert (await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))).status_code == 200
    assert len(await events(initialized, "person.registered")) == 1


async def test_foreign_resident_by_document(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                            pki: IdCardPki) -> None:
    """IDCAZ-<number> is the document with issuing country AZE (ISO 3166-1 alpha-3, as the persons table holds it);
    a PASxx- certificate does not log into a person registered by an identity card of the same number."""
    person_id = await person(initialized, fin=None, category="foreigner", document_type="residence_permit",
                             document_country="AZE", document_number="AA1234567")
    card = pki.foreign_card("IDC", "AZ-AA1234567")
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    assert (await events(initialized, "login.card.succeeded"))[-1].actor == person_id

    passport = pki.foreign_card("PAS", "AZ-AA1234567")
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, passport.token(origin=ISSUER, nonce=nonce),
                         expected=(403, "card_holder_unknown"), fingerprint=passport.fingerprint)


async def test_foreigner_auto_provisioned(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                          pki: IdCardPki) -> None:
    initialized.settings.idcard_auto_provision = True
    card = pki.foreign_card("PAS", "TR-U12345678", given_name="Emre", surname="Yılmaz")
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    async with initialized.sessions() as session:
        [registered] = (await session.execute(select(Person))).scalars().all()
    assert (registered.fin, registered.category, registered.document_type, registered.document_country,
            registered.document_number, registered.given_name, registered.family_name) == (
        None, "foreigner", "passport", "TUR", "U12345678", "Emre", "Yılmaz")


# --- mutual TLS -----------------------------------------------------------------------------------------------

def with_tls_client_certificate(app: ASGIApp, chain: list[str]) -> ASGIApp:
    """`app` as api.server runs it on the mTLS listener: each request's scope carries the ASGI TLS extension with
    the connection's client certificate chain (PEM, leaf first; the TLS handshake itself is api.server's test)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**scope.get("extensions", {}), "tls": {
                "client_cert_chain": chain, "tls_version": 0x0304, "cipher_suite": 0x1301}}}
        await app(scope, receive, send)

    return wrapped


async def tls_form(http: httpx.AsyncClient, started: Started, *, headers: dict[str, str] | None = None,
                   csrf: str | None = None) -> httpx.Response:
    return await http.post(f"/idcard/tls/{started.pending_id}", data={"csrf_token": csrf or started.csrf},
                           headers=headers or {})


async def test_tls_client_certificate(initialized: Services, app: FastAPI, rp: Registered, pki: IdCardPki) -> None:
    person_id = await person(initialized)
    card = pki.card(fin=FIN)
    issuing = pki.issuing_certificate.public_bytes(serialization.Encoding.PEM).decode()
    async with browser(with_tls_client_certificate(app, [card.pem, issuing])) as http:
        started = await start(initialized, http, rp)
        r = await tls_form(http, started)
        assert r.status_code == 303, r.text
        location = r.headers["location"]
        assert location == f"{ISSUER}/interaction/{started.pending_id}/consent"  # back on the issuer's origin
        claims = await finish(http, initialized, rp, started, location)
    assert claims["acr"] == initialized.settings.acr_high and sorted(claims["amr"]) == HIGH_AMR
    [succeeded] = await events(initialized, "login.card.succeeded")
    assert succeeded.actor == person_id and succeeded.detail["method"] == "idcard-tls"


async def test_tls_revoked_certificate_is_refused_with_a_page(initialized: Services, app: FastAPI,
                                                              rp: Registered, pki: IdCardPki) -> None:
    """The handshake accepted it (OpenSSL checks no revocation): the application refuses it."""
    await person(initialized)
    card = pki.revoked_card(fin=FIN)
    async with browser(with_tls_client_certificate(app, [card.pem])) as http:
        started = await start(initialized, http, rp)
        before = await rows(initialized)
        r = await tls_form(http, started, headers={"Accept": "text/html"})
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), r.text
        assert "certificate_revoked" in r.text and "set-cookie" not in r.headers
        assert await rows(initialized) == before
        # the same form without its CSRF token: the expired-form page, nothing audited
        r = await tls_form(http, started, csrf="wrong")
        assert r.status_code == 403 and "certificate_revoked" not in r.text
    assert await refused_events(initialized) == [{"method": "idcard-tls", "code": "certificate_revoked",
                                                  "fingerprint": card.fingerprint}]


async def test_header_from_a_trusted_proxy(initialized: Services, app: FastAPI, rp: Registered,
                                           pki: IdCardPki) -> None:
    """nginx's $ssl_client_escaped_cert (URL-encoded PEM) in ACAR_IDCARD_CLIENT_CERT_HEADER, from a proxy of
    ACAR_TRUSTED_PROXIES."""
    person_id = await person(initialized)
    card = pki.card(fin=FIN)
    async with browser(app, PROXY) as http:
        started = await start(initialized, http, rp)
        r = await tls_form(http, started, headers={HEADER: quote(card.pem, safe="")})
        assert r.status_code == 303, r.text
        claims = await finish(http, initialized, rp, started, r.headers["location"])
    assert claims["acr"] == initialized.settings.acr_high and {"sc", "hwk"} <= set(claims["amr"])
    [succeeded] = await events(initialized, "login.card.succeeded")
    assert succeeded.actor == person_id and succeeded.detail["method"] == "idcard-tls"
    assert await events(initialized, "login.card.forwarded_header_ignored") == []


async def test_header_from_anyone_else_is_ignored_and_audited(initialized: Services, app: FastAPI,
                                                              rp: Registered, pki: IdCardPki) -> None:
    await person(initialized)
    card = pki.card(fin=FIN)
    async with browser(app, STRANGER) as http:
        started = await start(initialized, http, rp)
        before = await rows(initialized)
        r = await tls_form(http, started, headers={HEADER: quote(card.pem, safe="")})
        assert r.status_code == 403 and "forwarded_certificate_refused" in r.text, r.text
        assert "set-cookie" not in r.headers and await rows(initialized) == before
        # and without any certificate
        r = await tls_form(http, started)
        assert r.status_code == 400 and "certificate_missing" in r.text, r.text
    [ignored] = await events(initialized, "login.card.forwarded_header_ignored")
    assert ignored.detail == {"peer": STRANGER[0], "header": HEADER.lower()}
    assert await refused_events(initialized) == [{"method": "idcard-tls", "code": "forwarded_certificate_refused"},
                                                 {"method": "idcard-tls", "code": "certificate_missing"}]
    assert await events(initialized, "login.card.succeeded") == []


@pytest.mark.parametrize("value", ["not a certificate", "%ZZ", "%FF%FE",
                                   "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", "x" * 20_000])
async def test_malformed_forwarded_certificates(initialized: Services, app: FastAPI, rp: Registered,
                                                value: str) -> None:
    async with browser(app, PROXY) as http:
        started = await start(initialized, http, rp)
        r = await tls_form(http, started, headers={HEADER: value})
    assert r.status_code == 400 and "certificate_malformed" in r.text, r.text
    assert (await refused_events(initialized))[-1]["code"] == "certificate_malformed"


async def test_forwarded_certificate_of_a_foreign_signature_algorithm(initialized: Services, app: FastAPI,
                                                                      rp: Registered, pki: IdCardPki) -> None:
    """A certificate naming the trusted issuing CA but signed with Ed25519 (the CA's key is EC) from a trusted
    proxy: refused as untrusted with its page and audit event (pyhanko-certvalidator's key-type assertion once made
    it a 500)."""
    await person(initialized)
    card = pki.card(fin=FIN, issuer="forged-ed25519")
    async with browser(app, PROXY) as http:
        started = await start(initialized, http, rp)
        r = await tls_form(http, started, headers={HEADER: quote(card.pem, safe="")})
    assert r.status_code == 403 and "certificate_untrusted" in r.text, r.text
    assert (await refused_events(initialized))[-1] == {"method": "idcard-tls", "code": "certificate_untrusted",
                                                       "fingerprint": card.fingerprint}


# --- enrollment by certificate ----------------------------------------------------------------------------

async def test_card_session_registers_a_passkey_at_level_high(initialized: Services, http: httpx.AsyncClient,
                                                              rp: Registered, pki: IdCardPki,
                                                              tmp_path: Path) -> None:
    """Signed in with the ID card (level high, amr sc), the person registers a passkey with no activation code: it
    reaches level high (an attested, device-bound model), audited as enrollment by certificate."""
    vendor = AttestationCa()
    roots = tmp_path / "attestation-roots.pem"
    roots.write_bytes(vendor.pem)
    initialized.passkeys = build_passkeys(initialized.settings.model_copy(update={
        "webauthn_attestation_roots_file": roots, "webauthn_aaguid_allowlist": [str(uuid.UUID(bytes=MODEL))]}))
    person_id = await person(initialized)
    card = pki.card(fin=FIN)
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    r = await webeid_login(http, started, nonce, card.token(origin=ISSUER, nonce=nonce))
    assert r.status_code == 200, r.text
    await finish(http, initialized, rp, started, r.json()["redirect"])

    csrf = (await http.get("/webauthn/credentials")).json()["csrf_token"]
    r = await http.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    assert r.status_code == 200, r.text
    device = attested_authenticator(vendor, aaguid=MODEL)
    r = await http.post("/webauthn/register/verify", json={
        "ceremony": r.json()["ceremony"], "credential": device.create(r.json()["publicKey"]), "name": "Phone"},
        headers={CSRF: csrf})
    assert r.status_code == 201, r.text
    assert r.json()["level"] == "high" and r.json()["redirect"] == "/account"
    [enrolled] = await events(initialized, "enrollment.by_certificate")
    assert enrolled.actor == person_id and enrolled.detail["level"] == "high"
    assert await events(initialized, "enrollment.code_issued") == []

    # the passkey alone now signs in at level high
    http.cookies.clear()
    started = await start(initialized, http, rp)
    r = await passkey_login(http, started.pending_id, started.csrf, device)
    assert r.status_code == 200, r.text
    redirect = r.json()["redirect"]
    assert "code=" in redirect, redirect  # consent was given during the card login
    answer = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    r = await redeem(http, rp, answer["code"], started.verifier)
    claims = await id_token_claims(http, initialized, rp, r.json()["id_token"])
    assert claims["acr"] == initialized.settings.acr_high and claims["amr"] == ["hwk", "mfa"]

    # a second passkey registered from this passkey session (no card): no enrollment by certificate
    csrf = (await http.get("/webauthn/credentials")).json()["csrf_token"]
    r = await http.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
    r = await http.post("/webauthn/register/verify", json={
        "ceremony": r.json()["ceremony"],
        "credential": attested_authenticator(vendor, aaguid=MODEL).create(r.json()["publicKey"])},
        headers={CSRF: csrf})
    assert r.status_code == 201, r.text
    assert len(await events(initialized, "enrollment.by_certificate")) == 1


# --- configuration ----------------------------------------------------------------------------------------

@pytest.mark.nodb
def test_production_refuses_the_header_without_trusted_proxies(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_bytes(b"k" * 32)
    base = {"env": "production", "issuer": "https://login.example.az",
            "database_url": "postgresql+asyncpg://acar@db/acar", "master_key_file": key,
            "certificate_policy_oid": "1.3.6.1.4.1.55555.1.1", "tsa_policy_oid": "1.3.6.1.4.1.55555.1.2",
            "pairwise_salt": "s" * 40, "idcard_client_cert_header": "X-SSL-Client-Cert"}
    with pytest.raises(SettingsError, match="ACAR_IDCARD_CLIENT_CERT_HEADER .* needs ACAR_TRUSTED_PROXIES"):
        Settings(**base).check_production()
    Settings(**base, trusted_proxies=["10.0.0.0/8"]).check_production()



@pytest.mark.nodb
@pytest.mark.parametrize(("name", "value"), [
    ("idcard_client_cert_header", "X SSL"), ("idcard_client_cert_header", "x-forwarded-for"),
    ("idcard_required_policies", ["not-an-oid"]), ("idcard_ocsp_url", "ftp://ocsp.example"),
    ("idcard_challenge_seconds", 5),
    ("rate_limit_card_login", "often"), ("idcard_trust_anchors", ["/no/such/file.pem"]),
])
def test_settings_refused(name: str, value: object) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(**{name: value})  # type: ignore[arg-type]


@pytest.mark.nodb
def test_the_webeid_origin_is_the_issuers_as_a_browser_writes_it() -> None:
    """The token signs the login page's origin, the issuer's, as the browser serialises it (RFC 6454 section 6.2:
    lowercase, no default port): an issuer written otherwise still offers card login (an upper-case host once made
    every login page a 500)."""
    for written in ("https://Login.Example.AZ", "https://login.example.az:443/", "HTTPS://LOGIN.example.az/"):
        assert Settings(issuer=written).issuer_origin == "https://login.example.az"
    assert Settings(issuer="https://login.example.az:8443").issuer_origin == "https://login.example.az:8443"


async def test_no_anchor_no_card_login(services: Services, tmp_path: Path) -> None:
    """Development without configured anchors: the built-in CA's root once `acar init` made it, else nothing."""
    from api.deps import CardLogins

    bare = services.settings.model_copy(update={"idcard_trust_anchors": [], "idcard_intermediates": []})
    card = CardLogins(bare, services.pki)
    assert await card.service() is None  # no built-in CA yet
    async with services.sessions() as session, session.begin():
        await services.pki.initialize(session, actor="test", create_hierarchy=True)
    card = CardLogins(bare, services.pki)
    try:
        anchors, intermediates = await card.trust()
        assert anchors == (await services.pki.ca_certificate("root"),)
        assert intermediates == (await services.pki.ca_certificate("issuing"),)
        assert await card.service() is not None
    finally:
        await card.aclose()
    production = CardLogins(bare.model_copy(update={"env": "production"}), services.pki)
    assert await production.service() is None


async def test_an_anchor_file_broken_since_start_up(services: Services, pki: IdCardPki, tmp_path: Path) -> None:
    """The file was read at start-up (api.settings); removed since, ID-card login is off (no 500) and trust() names
    the file (what the mTLS listener's start refuses)."""
    from api.deps import CardLogins

    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(pki.root_certificate.public_bytes(serialization.Encoding.PEM))
    settings = services.settings.model_copy(update={"idcard_trust_anchors": [anchors]})
    anchors.unlink()
    card = CardLogins(settings, services.pki)
    assert await card.service() is None
    with pytest.raises(ValueError, match=r"anchors\.pem"):
        await card.trust()


@pytest.mark.parametrize("status", ["suspended", "deceased"])
async def test_inactive_holder_is_refused(initialized: Services, http: httpx.AsyncClient, rp: Registered,
                                          pki: IdCardPki, status: str) -> None:
    """A registered card holder whose registry status is not active cannot log in, by FIN or by document, even with
    a valid card: card_holder_inactive (403), the refusal audited, no session."""
    await person(initialized, status=status)
    card = pki.card()
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, card.token(origin=ISSUER, nonce=nonce),
                         expected=(403, "card_holder_inactive"), fingerprint=card.fingerprint)
    await person(initialized, fin=None, category="foreigner", document_type="residence_permit",
                 document_country="AZE", document_number="AA1234567", status=status)
    resident = pki.foreign_card("IDC", "AZ-AA1234567")
    started = await start(initialized, http, rp)
    nonce = await challenge(http, started)
    await refused_webeid(initialized, http, started, nonce, resident.token(origin=ISSUER, nonce=nonce),
                         expected=(403, "card_holder_inactive"), fingerprint=resident.fingerprint)
