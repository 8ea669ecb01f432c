"""The citizen's account page (issue 16) through real HTTP on the real tables (both databases): the access record
written by a real code flow, userinfo and introspection (and by nothing that failed); ending another session makes
it unusable; withdrawing a consent revokes the client's tokens; the JSON export holds everything the page shows and
nothing about another person; a citizen naming another's session or signed document by id gets 404 and changes
nothing; the client's stated purpose set by `acar client add --purpose` and the admin API."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from api.auth import mint_admin_token
from api.deps import Services
from idp.sql.models import AccessRecord, Grant, LoginSession
from signing.sql.models import SigningDocument, SigningRequest
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.functional.helpers import InProcessAcar
from tests.oidc_tools import (
    Registered,
    asgi_browser,
    authorization_params,
    consent,
    dev_login,
    hidden,
    introspect,
    pkce_pair,
    redeem,
    refresh,
    register_client,
    register_person,
)
from tests.unit.api.test_pages import add_credential, check_page, t

FIN_A, FIN_B = "5ABCD12", "7XYZW34"
PURPOSE = "Vergi bəyannamələrinin qəbulu (Vergi Məcəlləsi, maddə 33)"


async def _sign_in_and_tokens(http: httpx.AsyncClient, rp: Registered, fin: str,
                              scope: str = "openid profile fin") -> dict[str, Any]:
    """The browser `http` signs in as `fin` (development login), consents, and `rp` redeems the code."""
    verifier, challenge = pkce_pair()
    response = await http.get("/authorize", params=authorization_params(rp, challenge, scope=scope))
    for _ in range(6):
        location = response.headers.get("location", "") if response.status_code == 303 else ""
        if not location.startswith("/interaction/"):
            break
        response = await (consent(http, location) if location.endswith("/consent")
                          else dev_login(http, location, fin=fin))
    assert response.status_code == 303, response.text
    code = re.search(r"[?&]code=([^&]+)", response.headers["location"]).group(1)  # type: ignore[union-attr]
    r = await redeem(http, rp, code, verifier)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _records(services: Services, person_id: str) -> list[AccessRecord]:
    async with services.sessions() as session:
        return list((await session.execute(select(AccessRecord).where(AccessRecord.person_id == person_id)
                                           .order_by(AccessRecord.occurred_at, AccessRecord.kind))).scalars())


def _session_forms(html: str) -> list[str]:
    return re.findall(r'action="/account/sessions/([^/"]+)/end"', html)


async def test_the_access_record_follows_a_code_flow_userinfo_and_introspection(
        initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name="Vergi portalı", purpose=PURPOSE)
    silent = await register_client(initialized, name="Səssiz portal", redirect_uris=("https://silent.example/cb",))
    person = await register_person(initialized, FIN_A)
    tokens = await _sign_in_and_tokens(http, rp, FIN_A, scope="openid profile fin offline_access")
    [issued] = await _records(initialized, person)
    assert (issued.client_id, issued.kind, issued.purpose) == (rp.client_id, "token", PURPOSE)
    assert issued.scopes == ["fin", "offline_access", "openid", "profile"] and issued.claims == []

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = await http.get("/userinfo", headers=bearer)
    assert r.status_code == 200 and r.json()["fin"] == FIN_A
    assert (await introspect(http, rp, tokens["access_token"]))["active"] is True
    assert (await introspect(http, rp, tokens["refresh_token"]))["active"] is True
    refreshed = await refresh(http, rp, tokens["refresh_token"])
    assert refreshed.status_code == 200
    rows = await _records(initialized, person)
    kinds = sorted(r.kind for r in rows)
    assert kinds == ["introspection", "introspection", "token", "token", "userinfo"], kinds
    [userinfo] = [r for r in rows if r.kind == "userinfo"]
    assert {"fin", "given_name", "family_name"} <= set(userinfo.claims), userinfo.claims
    assert all(r.purpose == PURPOSE and r.client_id == rp.client_id for r in rows)

    # what fails leaves no record: a bad token, an inactive or foreign token, the client without a purpose
    before = len(rows)
    assert (await http.get("/userinfo", headers={"Authorization": "Bearer x.y.z"})).status_code == 401
    assert (await introspect(http, rp, "not-a-token"))["active"] is False
    assert (await introspect(http, silent, refreshed.json()["access_token"]))["active"] is False
    assert len(await _records(initialized, person)) == before

    # the other client states no purpose: the page says so; the latest comes first
    await _sign_in_and_tokens(http, silent, FIN_A)
    r = await http.get("/account", headers={"Accept-Language": "en"})
    page = check_page(r, "en")
    assert t("en", "account.access.no_purpose") in page.text and PURPOSE in page.text
    rows_html = re.findall(r'<tr role="row" id="access-row-\d+">(.*?)</tr>', r.text, re.S)
    assert len(rows_html) == before + 1 and "Səssiz portal" in rows_html[0] and "Vergi portalı" in rows_html[-1]
    assert t("en", "account.access.kind.userinfo") in page.text
    assert t("en", "account.access.kind.introspection") in page.text


async def test_the_access_record_is_paged(initialized: Services, http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name="Vergi portalı")
    person = await register_person(initialized, FIN_A)
    tokens = await _sign_in_and_tokens(http, rp, FIN_A)
    for _ in range(21):
        assert (await introspect(http, rp, tokens["access_token"]))["active"] is True
    assert len(await _records(initialized, person)) == 22
    r = await http.get("/account", headers={"Accept-Language": "ru"})
    assert len(re.findall(r'id="access-row-\d+"', r.text)) == 20
    assert t("ru", "account.access.page_of", page="1", pages="2") in check_page(r, "ru").text
    r = await http.get("/account?page=2", headers={"Accept-Language": "az"})
    assert len(re.findall(r'id="access-row-\d+"', r.text)) == 2 and 'id="access-newer"' in r.text
    for odd in ("0", "-1", "x", "9" * 40, "٣"):  # not a page: the first page (the last when past the end)
        r = await http.get("/account", params={"page": odd})
        assert r.status_code == 200 and len(re.findall(r'id="access-row-\d+"', r.text)) in (20, 2), odd


async def test_ending_another_session_makes_it_unusable(initialized: Services, dev_app: FastAPI,
                                                        http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name="Vergi portalı")
    await register_person(initialized, FIN_A)
    person_b = await register_person(initialized, FIN_B)
    await _sign_in_and_tokens(http, rp, FIN_A)
    async with asgi_browser(dev_app) as phone, asgi_browser(dev_app) as stranger:
        on_phone = await _sign_in_and_tokens(phone, rp, FIN_A)
        await _sign_in_and_tokens(stranger, rp, FIN_B)
        r = await http.get("/account", headers={"Accept-Language": "az"})
        page = check_page(r, "az")
        assert t("az", "account.sessions.current") in page.text and 'id="session-1-logout"' in r.text
        [other_sid] = _session_forms(r.text)  # the current session has the sign-out link instead of a form
        token = hidden(r.text, "csrf_token")
        own_sid = await _current_sid(initialized, exclude={other_sid}, person_b=person_b)
        async with initialized.sessions() as session:
            [stranger_sid] = (await session.execute(select(LoginSession.sid).where(
                LoginSession.person_id == person_b))).scalars().all()
        assert stranger_sid not in r.text

        # another person's session: 404, nothing changes
        r = await http.post(f"/account/sessions/{stranger_sid}/end", data={"csrf_token": token},
                            headers={"Accept-Language": "en"})
        assert r.status_code == 404 and check_page(r, "en").alerts == [t("en", "account.error.session_not_found")]
        assert (await stranger.get("/account")).status_code == 200
        # without the form's token: 403, nothing changes
        r = await http.post(f"/account/sessions/{other_sid}/end", data={"csrf_token": "x" * 43})
        assert r.status_code == 403 and (await phone.get("/account")).status_code == 200

        r = await http.post(f"/account/sessions/{other_sid}/end", data={"csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == "/account?done=session_ended"
        page = check_page(await http.get(r.headers["location"], headers={"Accept-Language": "ru"}), "ru")
        assert t("ru", "account.done.session_ended") in page.text
        assert (await phone.get("/account")).status_code == 401  # the phone is signed out
        r = await refresh(phone, rp, on_phone["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"  # its grants are revoked
        r = await phone.get("/userinfo", headers={"Authorization": f"Bearer {on_phone['access_token']}"})
        assert r.status_code == 401
        r = await http.post(f"/account/sessions/{other_sid}/end", data={"csrf_token": token})
        assert r.status_code == 404  # already ended
        assert _session_forms((await http.get("/account")).text) == []  # only this browser's own is left
        # the current session is ended by signing out (/logout), not here
        r = await http.post(f"/account/sessions/{own_sid}/end", data={"csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == "/logout"
        assert (await http.get("/account")).status_code == 200
        assert (await stranger.get("/account")).status_code == 200
    async with initialized.sessions() as session:
        ended = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "session.ended"))).scalars()
        assert [e.subject for e in ended] == [other_sid]


async def _current_sid(services: Services, *, exclude: set[str], person_b: str) -> str:
    async with services.sessions() as session:
        [sid] = [s for s in (await session.execute(select(LoginSession.sid).where(
            LoginSession.ended_at.is_(None), LoginSession.person_id != person_b))).scalars() if s not in exclude]
    return str(sid)


async def test_withdrawing_a_consent_revokes_the_clients_tokens(initialized: Services,
                                                                 http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name="Vergi portalı")
    person = await register_person(initialized, FIN_A)
    tokens = await _sign_in_and_tokens(http, rp, FIN_A, scope="openid profile offline_access")
    r = await http.get("/account")
    assert "Vergi portalı" in r.text
    r = await http.post(f"/account/consents/{rp.client_id}/withdraw", data={"csrf_token": hidden(r.text, "csrf_token")})
    assert r.status_code == 303 and r.headers["location"] == "/account?done=withdrawn"
    assert (await refresh(http, rp, tokens["refresh_token"])).status_code == 400
    r = await http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 401
    page = check_page(await http.get("/account", headers={"Accept-Language": "en"}), "en")
    assert t("en", "account.consents.none") in page.text
    assert t("en", "account.done.withdrawn") not in page.text
    async with initialized.sessions() as session:
        grants = (await session.execute(select(Grant).where(Grant.person_id == person))).scalars().all()
    assert grants and all(g.revoked_at is not None for g in grants)
    assert len(await _records(initialized, person)) == 1  # the record of what was released stays


async def _signature(services: Services, *, request_id: str, client_id: str, fin: str, filename: str,
                     signed: bytes | None, purged: bool = False) -> None:
    """A finished sign-mode request of `fin` as the signing tables hold it (the real signing flow and the report
    of a real signature: tests/functional/test_account_signatures.py)."""
    now = utcnow()
    async with services.sessions() as session, session.begin():
        session.add(SigningRequest(id=request_id, client_id=client_id, mode="sign", signer_fin=fin, level="B-T",
                                   state="completed", reason="Bəyannamə 2026", created_at=now, updated_at=now,
                                   expires_at=now + dt.timedelta(hours=1), finished_at=now,
                                   purged_at=now if purged else None))
        await session.flush()
        session.add(SigningDocument(request_id=request_id, n=1, filename=filename, pages=1, size=100,
                                    sha256="a" * 64, findings=[], content=None, state="signed", signed=signed,
                                    signed_sha256="b" * 64, signed_at=now))


async def test_the_export_holds_what_the_page_shows_and_nothing_of_another(
        initialized: Services, dev_app: FastAPI, http: httpx.AsyncClient) -> None:
    mine = await register_client(initialized, name="Vergi portalı", purpose=PURPOSE)
    theirs = await register_client(initialized, name="Səhiyyə portalı", redirect_uris=("https://health.example/cb",),
                                   purpose="Tibbi qeydlər")
    person_a = await register_person(initialized, FIN_A)
    person_b = await register_person(initialized, FIN_B)
    await add_credential(initialized, person_a, "cred-a", "Telefonum")
    await add_credential(initialized, person_b, "cred-b", "Onun açarı")
    await _signature(initialized, request_id="r" * 32, client_id=mine.client_id, fin=FIN_A,
                     filename="menim.pdf", signed=None, purged=True)
    await _signature(initialized, request_id="s" * 32, client_id=theirs.client_id, fin=FIN_B,
                     filename="onun.pdf", signed=None, purged=True)
    tokens = await _sign_in_and_tokens(http, mine, FIN_A)
    await http.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    async with asgi_browser(dev_app) as other:
        theirs_tokens = await _sign_in_and_tokens(other, theirs, FIN_B)
        await other.get("/userinfo", headers={"Authorization": f"Bearer {theirs_tokens['access_token']}"})
        other_export = await other.get("/account/export")
    assert other_export.status_code == 200

    page = await http.get("/account", headers={"Accept-Language": "en"})
    r = await http.get("/account/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store" and "attachment" in r.headers["content-disposition"]
    data = json.loads(r.text)
    assert set(data) == {"exported_at", "person", "sessions", "passkeys", "consents", "signatures", "access_record",
                         "companies_directed", "mandates_granted_as_director"}
    assert data["companies_directed"] == [] and data["mandates_granted_as_director"] == []
    assert data["person"]["fin"] == FIN_A and data["person"]["given_name"] == "Aysel"
    # everything the page shows
    assert [p["name"] for p in data["passkeys"]] == ["Telefonum"] and "Telefonum" in page.text
    assert [c["client_name"] for c in data["consents"]] == ["Vergi portalı"]
    [session] = data["sessions"]
    assert session["current"] is True and t("en", "account.sessions.current") in page.text
    [signature] = data["signatures"]
    assert signature["filename"] == "menim.pdf" and "menim.pdf" in page.text
    assert signature["client_name"] == "Vergi portalı" and signature["purged_at"] is not None
    assert t("en", "account.signatures.purged") in page.text
    assert sorted(a["kind"] for a in data["access_record"]) == ["token", "userinfo"]
    assert all(a["purpose"] == PURPOSE and a["client_name"] == "Vergi portalı" for a in data["access_record"])
    assert len(re.findall(r'id="access-row-\d+"', page.text)) == len(data["access_record"])
    # nothing of the other person
    for foreign in (FIN_B, person_b, "Onun açarı", "onun.pdf", "s" * 32, "Səhiyyə portalı", "Tibbi qeydlər",
                    theirs.client_id):
        assert foreign not in r.text, foreign
    async with initialized.sessions() as session:
        other_sids = (await session.execute(select(LoginSession.sid).where(
            LoginSession.person_id == person_b))).scalars().all()
    assert other_sids and not any(s in r.text for s in other_sids)
    theirs_data = json.loads(other_export.text)
    assert theirs_data["person"]["fin"] == FIN_B and FIN_A not in other_export.text
    assert "menim.pdf" not in other_export.text and [s["filename"] for s in theirs_data["signatures"]] == ["onun.pdf"]
    # the export is audited; without a session there is none
    async with initialized.sessions() as session:
        events = (await session.execute(select(AuditEvent.actor).where(
            AuditEvent.event_type == "account.exported"))).scalars().all()
    assert sorted(events) == sorted([person_a, person_b])
    async with asgi_browser(dev_app) as nobody:
        r = await nobody.get("/account/export")
        assert r.status_code == 401 and "application/json" not in r.headers["content-type"]


async def test_another_persons_signed_document_is_not_found(initialized: Services, dev_app: FastAPI,
                                                            http: httpx.AsyncClient) -> None:
    rp = await register_client(initialized, name="Vergi portalı")
    await register_person(initialized, FIN_A)
    await register_person(initialized, FIN_B)
    await _signature(initialized, request_id="t" * 32, client_id=rp.client_id, fin=FIN_B, filename="onun.pdf",
                     signed=b"%PDF-1.7 not really", purged=False)
    await _sign_in_and_tokens(http, rp, FIN_A)
    for path in (f"/account/signatures/{'t' * 32}/1/report", f"/account/signatures/{'t' * 32}/2/report",
                 "/account/signatures/nope/1/report", f"/account/signatures/{'x' * 40}/1/report"):
        r = await http.get(path, headers={"Accept-Language": "ru"})
        assert r.status_code == 404, path
        assert t("ru", "account.error.signature_not_found") in check_page(r, "ru").text
    async with initialized.sessions() as session:
        validations = (await session.execute(select(AuditEvent).where(
            AuditEvent.event_type == "validation.performed"))).scalars().all()
    assert validations == []  # nothing was validated for them
    r = await http.get("/account")
    assert "onun.pdf" not in r.text


async def test_a_clients_purpose_from_the_cli_and_the_admin_api(acar: InProcessAcar, initialized: Services,
                                                                client: httpx.AsyncClient) -> None:
    added = acar.json("client", "add", "--name", "Vergi portalı", "--redirect-uri", "https://portal.example/cb",
                      "--purpose", f"  {PURPOSE}  ")
    assert added["purpose"] == PURPOSE
    assert acar.json("client", "show", added["client_id"])["purpose"] == PURPOSE
    bad = acar("client", "add", "--name", "X", "--redirect-uri", "https://x.example/cb", "--purpose", "a\x07b",
               check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "purpose" in bad.stderr
    assert len(acar.json("client", "list")) == 1
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:client:manage"}, ttl_seconds=600)
    headers = {"Authorization": f"Bearer {minted['access_token']}"}
    r = await client.post("/admin/clients", headers=headers, json={
        "name": "Portal", "redirect_uris": ["https://portal.example/cb"], "purpose": "Sosial yardım"})
    assert r.status_code == 201 and r.json()["purpose"] == "Sosial yardım"
    r = await client.post("/admin/clients", headers=headers, json={
        "name": "Portal", "redirect_uris": ["https://portal.example/cb"], "purpose": "x" * 501})
    assert r.status_code == 422
    r = await client.post("/admin/clients", headers=headers, json={
        "name": "Portal 2", "redirect_uris": ["https://portal.example/cb"]})
    assert r.status_code == 201 and r.json()["purpose"] is None
