"""ID-card login with a certificate of Açar's own CA (the development anchor) while the issuer is https: the
certificate names the built-in OCSP responder and CRLs under the PKI base URL derived from the issuer
(http://localhost/pki/..., a port `acar serve` over TLS does not listen on), so its revocation status must come from
the built-in PKI in process (keys.fetchers, api.deps.CardLogins passing the PkiService as `CardPolicy.local`).

Asserted through the real app (ASGI, real database, the CA made as `acar init` makes it, certificates issued as
`acar cert issue --profile authentication` issues them): a Web eID login succeeds with revocation "good" answered by
the built-in OCSP responder, a revoked certificate is refused `certificate_revoked`, and the same certificate
checked without the in-process PKI is refused `revocation_unavailable` (nothing answers at those URLs: the failure
this module guards against).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID
from fastapi import FastAPI
from sqlalchemy import select

from api.deps import Services
from api.settings import Settings
from idp.core.certificates import CardPolicy, CertificateVerifier
from idp.core.errors import RevocationUnavailable
from idp.sql.models import LoginSession
from keys.ca import ISSUING, ROOT
from keys.profiles import NaturalPerson, Profile
from tests.idcard_pki import Card
from tests.local_http import free_port
from tests.oidc_tools import Registered, authorization_params, consent, pkce_pair, redeem, register_client
from tests.passkey_tools import events, refused
from tests.pki_tools import initialize_pki
from tests.webauthn_authenticator import CSRF

HTTPS_ISSUER = "https://localhost:8443"
"""An https issuer: its PKI base URL is then http://localhost (port 80), where nothing of Açar listens."""
FIN = "5ABC12D"
HIGH_AMR = ["hwk", "mfa", "pin", "sc"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with an https issuer and no configured ID-card anchor: in development the built-in CA is
    the anchor (api.deps.CardLogins.trust)."""
    assert not settings.idcard_trust_anchors
    return settings.model_copy(update={"issuer": HTTPS_ISSUER})


@pytest.fixture
async def pki_ready(initialized: Services) -> Services:
    """The built-in CA hierarchy, OCSP responder certificate and first CRLs (`acar init` in development)."""
    await initialize_pki(initialized)
    return initialized


@pytest.fixture
async def http(app: FastAPI, pki_ready: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
                                 base_url=HTTPS_ISSUER) as client:
        yield client


async def card(services: Services) -> Card:
    """An authentication certificate of the built-in issuing CA for a key the test keeps (the card's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = NaturalPerson.create(fin=FIN, given_name="Aysel", surname="Məmmədova")
    async with services.sessions() as session, session.begin():
        issued = await services.pki.ca.issue(session, profile=Profile.AUTHENTICATION, subject=subject,
                                             public_key=key.public_key(), days=None, actor="test")
    return Card(certificate=x509.load_der_x509_certificate(issued.der), key=key, fin=FIN)


async def person(services: Services) -> str:
    from idp.sql.persons import PersonService

    async with services.sessions() as session, session.begin():
        return (await PersonService(session).add(fin=FIN, given_name="Aysel", family_name="Məmmədova",
                                                 actor="test")).id


async def start(services: Services, http: httpx.AsyncClient, rp: Registered) -> tuple[str, str, str, dict[str, str]]:
    """GET /authorize at level high up to the login page: pending id, its CSRF token, the PKCE verifier, params."""
    from idp.sql.models import AuthorizationRequest

    verifier, challenge = pkce_pair()
    params = authorization_params(rp, challenge, acr_values=services.settings.acr_high)
    r = await http.get("/authorize", params=params)
    assert r.status_code == 303, r.text
    pending_id = r.headers["location"].split("/")[2]
    async with services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None
        return pending_id, row.csrf_token, verifier, params


async def webeid_login(http: httpx.AsyncClient, services: Services, rp: Registered, holder: Card
                       ) -> tuple[httpx.Response, str, dict[str, str]]:
    """Challenge and Web eID login with `holder`'s card on the https origin: the login answer, verifier, params."""
    pending_id, csrf, verifier, params = await start(services, http, rp)
    headers = {CSRF: csrf, "Origin": HTTPS_ISSUER}
    r = await http.post("/idcard/webeid/challenge", json={"pending_id": pending_id}, headers=headers)
    assert r.status_code == 200, r.text
    nonce = r.json()["nonce"]
    r = await http.post("/idcard/webeid/login", headers=headers, json={
        "pending_id": pending_id, "nonce": nonce, "token": holder.token(origin=HTTPS_ISSUER, nonce=nonce)})
    return r, verifier, params


def pki_urls(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """The AIA OCSP URLs and CRL distribution point URLs the certificate names."""
    aia = certificate.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_INFORMATION_ACCESS).value
    ocsp = [str(d.access_location.value) for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
    points = certificate.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    crls = [str(name.value) for point in points for name in point.full_name or ()]
    return ocsp, crls


async def test_a_builtin_ca_card_logs_in_with_its_status_from_the_builtin_responder(
        pki_ready: Services, http: httpx.AsyncClient) -> None:
    services = pki_ready
    assert services.settings.resolved_pki_base_url == "http://localhost"
    rp = await register_client(services)
    person_id = await person(services)
    holder = await card(services)
    assert pki_urls(holder.certificate) == (["http://localhost/pki/ocsp"], ["http://localhost/pki/crl/issuing.crl"])

    r, verifier, params = await webeid_login(http, services, rp, holder)
    assert r.status_code == 200, r.text
    [succeeded] = await events(services, "login.card.succeeded")
    assert succeeded.actor == person_id and succeeded.subject == holder.fingerprint
    assert succeeded.detail["method"] == "idcard-webeid" and succeeded.detail["revocation"] == "good"
    assert succeeded.detail["issuer"] == holder.certificate.issuer.rfc4514_string()
    card_service = await services.card.service()
    assert card_service is not None
    verified = await card_service.certificates.verify(holder.der)  # the verdict the login cached
    assert (verified.revocation, verified.revocation_source) == ("good", "ocsp")

    # the login goes on to an ID token at level high, as with a national card
    location = r.json()["redirect"]
    r = await consent(http, location)
    assert r.status_code == 303, r.text
    answer = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
    assert answer["state"] == params["state"]
    r = await redeem(http, rp, answer["code"], verifier)
    assert r.status_code == 200, r.text
    async with services.sessions() as session:
        [login] = (await session.execute(select(LoginSession))).scalars().all()
    assert (login.person_id, login.level, sorted(login.amr)) == (person_id, "high", HIGH_AMR)


async def test_a_revoked_builtin_ca_card_is_refused_certificate_revoked(
        pki_ready: Services, http: httpx.AsyncClient) -> None:
    services = pki_ready
    rp = await register_client(services)
    await person(services)
    holder = await card(services)
    async with services.sessions() as session, session.begin():
        await services.pki.revoke(session, f"{holder.serial_number:x}", "keyCompromise", actor="test")

    r, _, _ = await webeid_login(http, services, rp, holder)
    refused(r, 403, "certificate_revoked")
    [event] = await events(services, "login.card.refused")
    assert event.detail == {"method": "idcard-webeid", "code": "certificate_revoked", "fingerprint": holder.fingerprint}
    assert not await events(services, "login.card.succeeded")


async def test_without_the_builtin_pki_in_process_the_status_is_unavailable(pki_ready: Services) -> None:
    """The same certificate and anchors, the built-in PKI not passed as `local`: its URLs are asked over HTTP,
    nothing answers there, and the card is refused fail-closed (what every built-in card met before). With it, the
    built-in responder answers even when ACAR_IDCARD_OCSP_URL names another (dead) responder: the override is for
    the national responder, not for Açar's own."""
    services = pki_ready
    holder = await card(services)
    policy = CardPolicy(anchors=(await services.pki.ca_certificate(ROOT),),
                        intermediates=(await services.pki.ca_certificate(ISSUING),), fetch_timeout=2.0)
    verifier = CertificateVerifier(policy, clock=lambda: dt.datetime.now(dt.UTC))
    try:
        with pytest.raises(RevocationUnavailable):
            await verifier.verify(holder.der)
        local = CertificateVerifier(CardPolicy(anchors=policy.anchors, intermediates=policy.intermediates,
                                               ocsp_url=f"http://127.0.0.1:{free_port()}/ocsp", fetch_timeout=2.0,
                                               local=services.pki),
                                    clock=lambda: dt.datetime.now(dt.UTC))
        verified = await local.verify(holder.der)
        assert (verified.revocation, verified.revocation_source) == ("good", "ocsp")
        await local.aclose()
    finally:
        await verifier.aclose()
