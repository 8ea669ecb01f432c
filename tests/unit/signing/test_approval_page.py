"""The signer's approval page end to end in process (ASGI, real database for persons, sessions, passkeys and the
audit trail; the signing requests in tests.approval_tools.MemoryApprovalStore, held to the SQL store's answers in
tests/functional/test_signing_approval.py): sign in through the ordinary login and back, the page and its previews,
approval with a WebAuthn assertion over the derived challenge, and every refusal with nothing changed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.deps import Services, build_approval
from api.routes.approval import CSRF_PURPOSE
from idp.core.sessions import csrf_for_session
from idp.sql.models import AuthorizationRequest
from signing.core.approval import derive_challenge
from signing.core.preview import PNG_SIGNATURE, PreviewPolicy, PreviewRenderer, png_size
from tests.approval_tools import MemoryApprovalStore, build_pdf, flate_bomb, text_page, text_pdf
from tests.oidc_tools import ISSUER, register_client
from tests.passkey_tools import ORIGIN, enrolled_attested, events
from tests.pki_tools import initialize_pki
from tests.replay import Replays
from tests.unit.idp.test_webauthn import MODEL, require_attestation
from tests.webauthn_authenticator import (
    CSRF,
    AttestationCa,
    SoftwareAuthenticator,
    passkey_login,
)

FIN_SIGNER, FIN_OTHER = "5ABCD12", "6XYZ789"
DOC_1 = text_pdf("Bəyannamə", "Page two", "Page three")
DOC_2 = text_pdf("Müqavilə")


@dataclass
class World:
    services: Services
    store: MemoryApprovalStore
    client_id: str
    signer: SoftwareAuthenticator
    other: SoftwareAuthenticator

    def add(self, request_id: str | None = None, **kw: Any) -> str:
        request_id = request_id or secrets.token_urlsafe(18)
        kw.setdefault("signer_fin", FIN_SIGNER)
        kw.setdefault("documents", [("bəyannamə.pdf", DOC_1, 3), ("müqavilə.pdf", DOC_2, 1)])
        self.store.add(request_id, client_id=self.client_id, **kw)
        return request_id


@pytest.fixture(scope="module")
def vendor() -> AttestationCa:
    """The authenticators' vendor, trusted for MODEL: one for the module, so a replayed passkey's attestation
    chains to the root this test trusts."""
    return AttestationCa()


async def enrolled(services: Services, app: FastAPI, fin: str, vendor: AttestationCa,
                   replays: Replays) -> SoftwareAuthenticator:
    """A person with one attested, device-bound passkey (it reaches level high): enrolled with an activation code
    the first time, its rows replayed after that (tests/replay.py); a test gets its own copy of the authenticator."""
    async def enroll() -> SoftwareAuthenticator:
        return await enrolled_attested(services, app, vendor, fin, MODEL)

    return await replays.run(services, f"approval page: {fin} enrolled", enroll)


@pytest.fixture
async def world(initialized: Services, app: FastAPI, vendor: AttestationCa, tmp_path: Path,
                replays: Replays) -> AsyncIterator[World]:
    require_attestation(initialized, vendor, tmp_path, [MODEL])
    store = MemoryApprovalStore()
    wired = initialized.approval
    await initialize_pki(initialized, replays)  # an approved request is signed with the signer's own key, by the CA
    initialized.approval = dataclasses.replace(
        build_approval(initialized.settings, initialized.pki, initialized.key_store), stores=lambda tx: store,
        previews=PreviewRenderer(PreviewPolicy(max_side=400)), level="high")
    rp = await register_client(initialized, name="Vergilər Nazirliyi")
    signer = await enrolled(initialized, app, FIN_SIGNER, vendor, replays)
    other = await enrolled(initialized, app, FIN_OTHER, vendor, replays)
    yield World(initialized, store, rp.client_id, signer, other)
    initialized.approval = wired


async def sign_in(world: World, browser: httpx.AsyncClient, request_id: str,
                  authenticator: SoftwareAuthenticator) -> httpx.Response:
    """Open /sign/<id>, go through the login it sends the browser to with `authenticator`'s passkey, and come back:
    the approval page's answer."""
    r = await browser.get(f"/sign/{request_id}")
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert re.fullmatch(r"/interaction/[A-Za-z0-9_-]+", location), location
    pending_id = location.rsplit("/", 1)[1]
    page = await browser.get(location)
    assert page.status_code == 200 and "Vergilər Nazirliyi" in page.text
    async with world.services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None and row.params["return_to"] == f"/sign/{request_id}"
        csrf = row.csrf_token
    r = await passkey_login(browser, pending_id, csrf, authenticator)
    assert r.status_code == 200, r.text
    assert r.json() == {"redirect": f"{ISSUER}/sign/{request_id}"}
    async with world.services.sessions() as session:
        assert await session.get(AuthorizationRequest, pending_id) is None  # used up, issued nothing
    return await browser.get(f"/sign/{request_id}")


def data_csrf(html: str) -> str:
    found = re.search(r'data-csrf="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def options(browser: httpx.AsyncClient, request_id: str, csrf: str) -> dict[str, Any]:
    r = await browser.post(f"/sign/{request_id}/options", json={}, headers={CSRF: csrf, "Origin": ORIGIN})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def approve(browser: httpx.AsyncClient, request_id: str, csrf: str, ceremony: str,
                  credential: dict[str, Any]) -> httpx.Response:
    return await browser.post(f"/sign/{request_id}/approve", json={"ceremony": ceremony, "credential": credential},
                              headers={CSRF: csrf, "Origin": ORIGIN})


# --- the whole path -----------------------------------------------------------------------------------------------

async def test_sign_in_see_preview_approve(world: World, client: httpx.AsyncClient) -> None:
    request_id = world.add()
    page = await sign_in(world, client, request_id, world.signer)
    assert page.status_code == 200, page.text
    html = page.text
    digest_1, digest_2 = (d.sha256 for d in world.store.requests[request_id].documents)
    for text in ("Vergilər Nazirliyi", "Tax declaration 2026", "bəyannamə.pdf", "müqavilə.pdf", digest_1, digest_2):
        assert text in html, text
    assert html.count('<img src="/sign/') == 4  # every page of both documents
    assert 'alt="bəyannamə.pdf, səhifə 2 / 3"' in html  # the page's language: az by default
    assert '<h2 id="sign-documents-heading">İmzalanacaq 2 sənəd</h2>' in html.replace("\u00a0", " ")  # test_plurals
    assert page.headers["content-security-policy"].startswith("default-src 'none'")

    r = await client.get(f"/sign/{request_id}/documents/1/pages/2.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(PNG_SIGNATURE) and max(png_size(r.content) or (0, 0)) == 400
    assert (await client.get(f"/sign/{request_id}/documents/1/pages/4.png")).status_code == 404
    assert (await client.get(f"/sign/{request_id}/documents/3/pages/1.png")).status_code == 404

    csrf = data_csrf(html)
    begun = await options(client, request_id, csrf)
    public_key = begun["publicKey"]
    expected = derive_challenge(request_id, [digest_1, digest_2])
    assert public_key["challenge"] == expected.base64url
    assert public_key["userVerification"] == "required"
    assert [c["id"] for c in public_key["allowCredentials"]] == list(world.signer.credentials)
    credential = world.signer.get(public_key)
    r = await approve(client, request_id, csrf, begun["ceremony"], credential)
    assert r.status_code == 200, r.text
    assert r.json() == {"redirect": f"/sign/{request_id}"}
    assert world.store.state(request_id) == "approved"
    assert world.store.jobs == [(request_id, 1), (request_id, 2)]
    [(event, actor, subject, detail)] = world.store.events
    assert (event, subject) == ("signing.request.approved", request_id)
    assert detail["credential"] == credential["id"] and detail["challenge"] == expected.base64url
    assert detail["level"] == "high" and [d["sha256"] for d in detail["documents"]] == [digest_1, digest_2]
    assert detail["key_id"] == world.store.keys[request_id]  # the signer's own key, made on this first approval
    [assertion] = await events(world.services, "webauthn.assertion")
    assert assertion.actor == actor and assertion.detail["binding"] == f"sign:{request_id}"

    # decided: the page says so, and a second approval changes nothing
    r = await client.get(f"/sign/{request_id}", headers={"Accept-Language": "en"})
    assert r.status_code == 409 and "You approved the documents" in r.text
    r = await approve(client, request_id, csrf, begun["ceremony"], credential)
    assert r.status_code == 409 and r.json()["code"] == "request_not_pending"
    assert world.store.writes == [(request_id, "approved")]


async def test_an_assertion_without_user_handle(world: World, client: httpx.AsyncClient) -> None:
    """The signer is identified before the ceremony (allowCredentials names their passkeys), so an authenticator
    may leave userHandle out (WebAuthn Level 2 section 7.2 step 6)."""
    request_id = world.add()
    page = await sign_in(world, client, request_id, world.signer)
    csrf = data_csrf(page.text)
    begun = await options(client, request_id, csrf)
    r = await approve(client, request_id, csrf, begun["ceremony"],
                      world.signer.get(begun["publicKey"], omit_user_handle=True))
    assert r.status_code == 200, r.text
    assert world.store.state(request_id) == "approved"


async def test_a_hostile_page_is_refused_with_its_reason(world: World, client: httpx.AsyncClient) -> None:
    """A decompression bomb on page 1: the preview is a problem naming the bound, the other pages still render."""
    assert world.services.approval is not None
    world.services.approval.previews = PreviewRenderer(PreviewPolicy(max_side=400, cpu_seconds=1))
    bomb = build_pdf([((595, 842), flate_bomb(1 << 30), b"FlateDecode"), text_page("fine")])
    request_id = world.add(documents=[("bomb.pdf", bomb, 2)])
    await sign_in(world, client, request_id, world.signer)
    r = await client.get(f"/sign/{request_id}/documents/1/pages/1.png")
    assert r.status_code == 422 and r.json()["code"] == "preview_limit_exceeded", r.text
    r = await client.get(f"/sign/{request_id}/documents/1/pages/2.png")
    assert r.status_code == 200 and r.content.startswith(PNG_SIGNATURE)


async def test_reject(world: World, client: httpx.AsyncClient) -> None:
    request_id = world.add()
    page = await sign_in(world, client, request_id, world.signer)
    r = await client.post(f"/sign/{request_id}/reject", data={"csrf_token": data_csrf(page.text)})
    assert r.status_code == 303 and r.headers["location"] == f"/sign/{request_id}"
    assert world.store.state(request_id) == "rejected" and world.store.jobs == []
    [(event, _, subject, _)] = world.store.events
    assert (event, subject) == ("signing.request.rejected", request_id)
    r = await client.get(f"/sign/{request_id}", headers={"Accept-Language": "ru"})
    assert r.status_code == 409 and "Этот запрос отклонён" in r.text


async def test_the_documents_heading_counts_in_each_language(world: World, client: httpx.AsyncClient) -> None:
    """The heading's noun agrees with the number of documents (api.i18n plural forms, Babel's CLDR rules)."""
    one = world.add(documents=[("müqavilə.pdf", DOC_2, 1)])
    await sign_in(world, client, one, world.signer)
    two = world.add()
    for request_id, lang, heading in [(one, "ru", "1 документ на подпись"), (two, "ru", "2 документа на подпись"),
                                      (one, "en", "1 document to sign"), (two, "en", "2 documents to sign"),
                                      (one, "az", "İmzalanacaq 1 sənəd")]:
        r = await client.get(f"/sign/{request_id}", headers={"Accept-Language": lang})
        assert r.status_code == 200, r.text
        assert f'<h2 id="sign-documents-heading">{heading}</h2>' in r.text.replace("\u00a0", " "), (lang, heading)


async def test_reject_needs_the_form_token(world: World, client: httpx.AsyncClient) -> None:
    request_id = world.add()
    await sign_in(world, client, request_id, world.signer)
    r = await client.post(f"/sign/{request_id}/reject", data={"csrf_token": "forged"})
    assert r.status_code == 403 and world.store.state(request_id) == "pending" and world.store.writes == []


# --- refusals: nothing changes ------------------------------------------------------------------------------------

async def test_an_assertion_for_another_request_is_refused(world: World, client: httpx.AsyncClient) -> None:
    first, second = world.add(), world.add(documents=[("other.pdf", text_pdf("Another"), 1)])
    page = await sign_in(world, client, first, world.signer)
    csrf = data_csrf(page.text)
    # the ceremony of the second request, presented to the first
    begun = await options(client, second, csrf)
    credential = world.signer.get(begun["publicKey"])
    r = await approve(client, first, csrf, begun["ceremony"], credential)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
    # the first request's ceremony, but the authenticator signed the second request's challenge
    begun = await options(client, first, csrf)
    forged = dict(begun["publicKey"], challenge=derive_challenge(
        second, [d.sha256 for d in world.store.requests[second].documents]).base64url)
    credential = world.signer.get(forged)
    r = await approve(client, first, csrf, begun["ceremony"], credential)
    assert r.status_code == 400 and r.json()["code"] == "verification_failed", r.text
    assert world.store.state(first) == world.store.state(second) == "pending"
    assert world.store.writes == [] and world.store.jobs == [] and world.store.events == []


async def test_documents_changed_after_the_options_are_refused(world: World, client: httpx.AsyncClient) -> None:
    """The challenge is derived again at approval from the request as it is then: the ceremony's stored challenge
    (the documents as they were) no longer matches."""
    request_id = world.add()
    page = await sign_in(world, client, request_id, world.signer)
    csrf = data_csrf(page.text)
    begun = await options(client, request_id, csrf)
    credential = world.signer.get(begun["publicKey"])
    request = world.store.requests[request_id]
    changed = dataclasses.replace(request.documents[1], sha256="0" * 64)
    world.store.requests[request_id] = dataclasses.replace(request, documents=(request.documents[0], changed))
    r = await approve(client, request_id, csrf, begun["ceremony"], credential)
    assert r.status_code == 400 and r.json()["code"] == "approval_challenge_mismatch", r.text
    assert world.store.state(request_id) == "pending" and world.store.writes == [] and world.store.events == []


async def test_another_person_is_refused(world: World, client: httpx.AsyncClient) -> None:
    request_id = world.add()
    page = await sign_in(world, client, request_id, world.other)
    assert page.status_code == 403 and "başqa şəxsə ünvanlanıb" in page.text
    assert 'href="/logout" id="sign-logout"' in page.text  # the way to sign in as the signer
    assert "data-csrf" not in page.text and "/pages/1.png" not in page.text
    assert (await client.get(f"/sign/{request_id}/documents/1/pages/1.png")).status_code == 403
    csrf = csrf_for_session(client.cookies["acar_session"], CSRF_PURPOSE)
    r = await client.post(f"/sign/{request_id}/options", json={}, headers={CSRF: csrf, "Origin": ORIGIN})
    assert r.status_code == 403 and r.json()["code"] == "wrong_signer"
    r = await client.post(f"/sign/{request_id}/reject", data={"csrf_token": csrf})
    assert r.status_code == 403
    assert world.store.state(request_id) == "pending" and world.store.writes == []


async def test_the_signers_passkey_in_another_persons_session_is_refused(world: World,
                                                                        client: httpx.AsyncClient) -> None:
    """The other person, signed in, cannot approve with the signer's passkey either: the options already refuse,
    and an assertion of the signer's credential in their session is not theirs (WrongUser)."""
    request_id = world.add(signer_fin=FIN_OTHER)
    page = await sign_in(world, client, request_id, world.other)
    csrf = data_csrf(page.text)
    begun = await options(client, request_id, csrf)
    stolen = world.signer.get(dict(begun["publicKey"], allowCredentials=[]))
    r = await approve(client, request_id, csrf, begun["ceremony"], stolen)
    assert r.status_code == 400 and r.json()["code"] == "wrong_user", r.text
    assert world.store.state(request_id) == "pending" and world.store.writes == []


@pytest.mark.parametrize("lang", ["az", "en", "ru"])
async def test_unknown_expired_and_decided_requests_get_a_page(world: World, client: httpx.AsyncClient,
                                                               lang: str) -> None:
    headers = {"Accept-Language": lang}
    r = await client.get("/sign/no-such-request", headers=headers)
    assert r.status_code == 404 and r.headers["content-language"] == lang and 'id="sign-state"' in r.text
    r = await client.get("/sign/" + "x" * 300, headers=headers)
    assert r.status_code == 404
    done = world.add(state="completed")
    r = await client.get(f"/sign/{done}", headers=headers)
    assert r.status_code == 409 and 'id="sign-state"' in r.text
    expired = world.add(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    r = await client.get(f"/sign/{expired}", headers=headers)  # said before any sign-in
    assert r.status_code == 410 and 'id="sign-state"' in r.text
    assert world.store.writes == []


async def test_a_request_expiring_after_the_page_opened(world: World, client: httpx.AsyncClient) -> None:
    request_id = world.add()
    page = await sign_in(world, client, request_id, world.signer)
    begun = await options(client, request_id, data_csrf(page.text))
    request = world.store.requests[request_id]
    world.store.requests[request_id] = dataclasses.replace(
        request, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    r = await approve(client, request_id, data_csrf(page.text), begun["ceremony"], world.signer.get(begun["publicKey"]))
    assert r.status_code == 410 and r.json()["code"] == "signing_request_expired", r.text
    assert world.store.writes == []


async def test_a_session_below_the_level_goes_through_the_login(world: World, http: httpx.AsyncClient) -> None:
    """A development login at level substantial is not enough: the page sends the browser to log in again."""
    request_id = world.add()
    r = await http.get(f"/sign/{request_id}")
    pending_id = r.headers["location"].rsplit("/", 1)[1]
    async with world.services.sessions() as session:
        row = await session.get(AuthorizationRequest, pending_id)
        assert row is not None
        csrf = row.csrf_token
    r = await http.post(f"/interaction/{pending_id}/dev-login",
                        data={"csrf_token": csrf, "fin": FIN_SIGNER, "level": "substantial"})
    assert r.status_code == 303 and r.headers["location"] == f"/interaction/{pending_id}"
    r = await http.get(f"/sign/{request_id}")
    assert r.status_code == 303 and r.headers["location"].startswith("/interaction/")
    r = await http.post(f"/interaction/{pending_id}/dev-login",
                        data={"csrf_token": csrf, "fin": FIN_SIGNER, "level": "high"})
    assert r.status_code == 303 and r.headers["location"] == f"{ISSUER}/sign/{request_id}"
    r = await http.get(f"/sign/{request_id}")
    assert r.status_code == 200 and "bəyannamə.pdf" in r.text
