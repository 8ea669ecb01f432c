"""Suspending a person stops them at once (issue 16, docs/registry.md "When a person stops being active"), through
real HTTP on both databases: a citizen signed in at a client with a back-channel logout URI holds an access token,
a refresh token (offline_access too) and an activation code; an officer at /officer (or `acar person set-status`,
or the admin API) suspends them; then the refresh token answers invalid_grant, userinfo 401 invalid_token,
introspection {"active": false}, /account the sign-in page, the activation code is refused, and the client's
back-channel endpoint receives a logout token for the session. Making the person active again revives nothing.
An activation code or an open enrollment that slipped through is refused with a translated person_inactive, and
nothing is written."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt
from fastapi import FastAPI
from sqlalchemy import select, update

from api.auth import mint_admin_token
from api.deps import Services
from idp.sql.enrollment import EnrollmentService
from idp.sql.models import ActivationCode, Enrollment, Grant, LoginSession, LogoutDelivery, Person
from idp.sql.roles import REGISTRATION_OFFICER, RoleService
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.functional.helpers import InProcessAcar
from tests.local_http import free_port
from tests.oidc_tools import (
    LogoutReceiver,
    Registered,
    asgi_browser,
    hidden,
    introspect,
    logout_receiver,
    refresh,
    register_client,
    register_person,
    tokens_for,
)
from tests.unit.api.test_pages import check_page, t
from tests.webauthn_authenticator import CSRF

OFFICER_FIN, CITIZEN_FIN = "5ABCD12", "7XYZ123"
SCOPE = "openid profile offline_access"


async def _wait_for(received: list[str], count: int = 1, seconds: float = 10) -> None:
    """Until the back-channel endpoint received `count` logout tokens (the app's worker sends them meanwhile)."""
    for _ in range(int(seconds / 0.05)):
        if len(received) >= count:
            return
        await asyncio.sleep(0.05)


async def _issue_code(services: Services, person_id: str) -> str:
    """An activation code issued as the officer's screen issues one (EnrollmentService.issue)."""
    policy = services.enrollment_policy
    async with services.sessions() as session, session.begin():
        issued = await EnrollmentService(session, policy, clock=utcnow).issue(person_id, issued_by="officer:test")
    return issued.code


async def _events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)
                                           .order_by(AuditEvent.id))).scalars())


async def _sign_in_officer(services: Services, officer: httpx.AsyncClient, rp: Registered) -> str:
    officer_id = await register_person(services, OFFICER_FIN)
    async with services.sessions() as session, session.begin():
        await RoleService(session).grant(fin=OFFICER_FIN, role=REGISTRATION_OFFICER, agency_voen=None, actor="test")
    await tokens_for(officer, rp, fin=OFFICER_FIN)  # signs in (development login, level substantial)
    return officer_id


async def _userinfo(http: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await http.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


async def _enroll_code(http: httpx.AsyncClient, code: str, lang: str = "en") -> httpx.Response:
    page = await http.get("/enroll", headers={"Accept-Language": lang})
    assert page.status_code == 200, page.text[:500]
    return await http.post("/enroll", data={"csrf_token": hidden(page.text, "csrf_token"), "code": code},
                           headers={"Accept-Language": lang})


async def test_an_officer_suspends_a_citizen_and_everything_they_hold_stops(
        initialized: Services, dev_app: FastAPI) -> None:
    port = free_port()
    rp = await register_client(initialized, name="Vergi portalı",
                               backchannel_logout_uri=f"http://127.0.0.1:{port}/backchannel")
    citizen_id = await register_person(initialized, CITIZEN_FIN)
    with logout_receiver(port) as receiver:
        async with asgi_browser(dev_app) as officer, asgi_browser(dev_app) as citizen, \
                asgi_browser(dev_app) as phone:
            officer_id, sids = await _suspended_by_an_officer(
                initialized, rp, citizen_id=citizen_id, receiver=receiver, officer=officer, citizen=citizen,
                phone=phone)
    async with initialized.sessions() as session:
        open_sessions = (await session.execute(select(LoginSession.sid).where(
            LoginSession.person_id == citizen_id, LoginSession.ended_at.is_(None)))).scalars().all()
        grants = (await session.execute(select(Grant.revoked_reason).where(Grant.person_id == citizen_id))
                  ).scalars().all()
        codes = (await session.execute(select(ActivationCode.revoked_at).where(
            ActivationCode.person_id == citizen_id))).scalars().all()
    assert open_sessions == [] and grants and set(grants) == {"person suspended"}
    assert codes and all(revoked is not None for revoked in codes)
    [ended] = await _events(initialized, "person.sessions_ended")
    assert ended.actor == f"officer:{officer_id}"
    assert ended.subject == citizen_id
    assert ended.detail == {"reason": "person suspended", "sessions": 2, "grants": 2, "backchannel": 2,
                            "activation_codes": 1}
    session_ended = [e for e in await _events(initialized, "session.ended") if e.subject in sids]
    assert len(session_ended) == 2 and all(e.detail["reason"] == "person suspended" for e in session_ended)


async def _suspended_by_an_officer(initialized: Services, rp: Registered, *, citizen_id: str, receiver: LogoutReceiver,
                                   officer: httpx.AsyncClient, citizen: httpx.AsyncClient,
                                   phone: httpx.AsyncClient) -> tuple[str, set[str]]:
    """Two sessions of the citizen with tokens and an activation code; an officer suspends them; everything they held
    is refused. Returns the officer's person id and the two sessions' sids."""
    officer_id = await _sign_in_officer(initialized, officer, rp)
    tokens = await tokens_for(citizen, rp, fin=CITIZEN_FIN, scope=SCOPE)
    on_phone = await tokens_for(phone, rp, fin=CITIZEN_FIN, scope="openid profile")
    code = await _issue_code(initialized, citizen_id)
    assert (await citizen.get("/account")).status_code == 200
    assert (await _userinfo(citizen, tokens["access_token"])).status_code == 200
    assert (await introspect(citizen, rp, tokens["refresh_token"]))["active"] is True
    sids = {jwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"],
            jwt.decode(on_phone["id_token"], options={"verify_signature": False})["sid"]}

    page = await officer.get("/officer")
    r = await officer.post("/officer/persons/status", data={
        "csrf_token": hidden(page.text, "csrf_token"), "fin": CITIZEN_FIN, "status": "suspended"},
        headers={"Accept-Language": "az"})
    assert r.status_code == 200, r.text[:2000]
    check_page(r, "az")

    # the refresh tokens, offline_access included: invalid_grant (RFC 6749 section 5.2)
    for held in (tokens, on_phone):
        r = await refresh(citizen, rp, held["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
        # the access tokens: userinfo 401 invalid_token (RFC 6750 section 3.1), introspection inactive
        r = await _userinfo(citizen, held["access_token"])
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.headers
        assert await introspect(citizen, rp, held["access_token"]) == {"active": False}
        assert await introspect(citizen, rp, held["refresh_token"]) == {"active": False}
    # both browsers are signed out
    for browser in (citizen, phone):
        r = await browser.get("/account", headers={"Accept-Language": "ru"})
        assert r.status_code == 401 and t("ru", "account.signin.message") in check_page(r, "ru").text
    # the activation code issued before is refused (revoked: the one answer every refused code gets)
    r = await _enroll_code(citizen, code)
    assert r.status_code == 400 and t("en", "passkey.error.code_invalid") in check_page(r, "en").text
    # one logout token per session, each naming its session (Back-Channel Logout 1.0 section 2.4)
    await _wait_for(receiver.tokens, 2)
    claims = [jwt.decode(token, options={"verify_signature": False}) for token in receiver.tokens]
    assert {c["sid"] for c in claims} == sids and all(c["aud"] == rp.client_id for c in claims)
    return officer_id, sids



async def test_acar_set_status_suspends_and_active_again_revives_nothing(
        initialized: Services, dev_app: FastAPI, acar: InProcessAcar) -> None:
    port = free_port()
    rp = await register_client(initialized, name="Səhiyyə portalı",
                               backchannel_logout_uri=f"http://127.0.0.1:{port}/backchannel")
    citizen_id = await register_person(initialized, CITIZEN_FIN)
    async with asgi_browser(dev_app) as citizen:
        tokens = await tokens_for(citizen, rp, fin=CITIZEN_FIN, scope=SCOPE)
        result = acar.json("person", "set-status", CITIZEN_FIN.lower(), "deceased")
        assert result["status"] == "deceased"
        # the CLI queued the logout token; the server's worker sends it (here: its next pass)
        async with initialized.sessions() as session:
            [queued] = (await session.execute(select(LogoutDelivery).where(
                LogoutDelivery.client_id == rp.client_id))).scalars().all()
        assert queued.sub == jwt.decode(tokens["id_token"], options={"verify_signature": False})["sub"]
        with logout_receiver(port) as receiver:
            dev_app.state.backchannel.kick()
            await _wait_for(receiver.tokens)
            assert len(receiver.tokens) == 1

        assert acar.json("person", "set-status", CITIZEN_FIN, "active")["status"] == "active"
        # nothing held before comes back: the old session, its refresh and access tokens stay dead
        assert (await citizen.get("/account")).status_code == 401
        r = await refresh(citizen, rp, tokens["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        assert (await _userinfo(citizen, tokens["access_token"])).status_code == 401
        assert await introspect(citizen, rp, tokens["access_token"]) == {"active": False}
        # a new sign-in works as for anyone active
        fresh = await tokens_for(citizen, rp, fin=CITIZEN_FIN, scope=SCOPE)
        assert (await _userinfo(citizen, fresh["access_token"])).status_code == 200
    [ended] = await _events(initialized, "person.sessions_ended")
    assert ended.actor == "cli" and ended.subject == citizen_id and ended.detail["reason"] == "person deceased"
    assert ended.detail["sessions"] == 1 and ended.detail["backchannel"] == 1


async def test_the_admin_api_suspends_too(initialized: Services, dev_app: FastAPI) -> None:
    rp = await register_client(initialized, name="Vergi portalı")
    await register_person(initialized, CITIZEN_FIN)
    minted = await mint_admin_token(initialized, subject="ops", scopes={"acar:admin"}, ttl_seconds=600)
    token = minted["access_token"]
    async with asgi_browser(dev_app) as citizen:
        tokens = await tokens_for(citizen, rp, fin=CITIZEN_FIN, scope=SCOPE)
        r = await citizen.post(f"/admin/persons/{CITIZEN_FIN}/status", json={"status": "suspended"},
                               headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["status"] == "suspended", r.text
        r = await refresh(citizen, rp, tokens["refresh_token"])
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        assert (await citizen.get("/account")).status_code == 401
    [ended] = await _events(initialized, "person.sessions_ended")
    assert ended.actor == "admin:ops" and ended.detail["grants"] == 1


async def test_a_code_or_an_enrollment_that_slipped_through_is_refused(
        initialized: Services, dev_app: FastAPI) -> None:
    """Suspending a person revokes their codes; a code issued or an enrollment opened while the status changed by
    another way (here: the row written directly) is refused with the translated person_inactive, writing nothing."""
    citizen_id = await register_person(initialized, CITIZEN_FIN)
    async with asgi_browser(dev_app) as browser:
        opened = await _issue_code(initialized, citizen_id)
        r = await browser.post("/webauthn/enrollment", json={"code": opened})
        assert r.status_code == 201, r.text
        csrf = r.json()["csrf_token"]
        code = await _issue_code(initialized, citizen_id)  # revokes the first; the open enrollment dies with it ...
        async with asgi_browser(dev_app) as other:
            r = await other.post("/webauthn/enrollment", json={"code": code})
            assert r.status_code == 201, r.text
            other_csrf = r.json()["csrf_token"]
            async with initialized.sessions() as session, session.begin():
                await session.execute(update(Person).where(Person.id == citizen_id).values(status="suspended"))
            before = await _counts(initialized)
            # ... the one opened before the status changed: every step refused, 403 person_inactive
            r = await other.post("/webauthn/register/options", json={}, headers={CSRF: other_csrf})
            assert r.status_code == 403 and r.json()["code"] == "person_inactive", r.text
            r = await other.get("/webauthn/enrollment")
            assert r.status_code == 403 and r.json()["code"] == "person_inactive", r.text
            for lang in ("az", "en", "ru"):
                r = await other.get("/enroll", headers={"Accept-Language": lang})
                assert r.status_code == 403
                assert t(lang, "enroll.error.person_inactive") in check_page(r, lang).text
            assert await _counts(initialized) == before
        r = await browser.post("/webauthn/register/options", json={}, headers={CSRF: csrf})
        assert r.status_code in (401, 403), r.text
        # a live code of a person who is not active: the holder is told why (translated), no enrollment opens
        fresh = await _issue_code(initialized, citizen_id)
        before = await _counts(initialized)
        for lang in ("az", "en", "ru"):
            async with asgi_browser(dev_app) as third:
                r = await _enroll_code(third, fresh, lang)
                assert r.status_code == 403, r.text[:500]
                assert t(lang, "enroll.error.person_inactive") in check_page(r, lang).text
        after = await _counts(initialized)
        assert after["enrollments"] == before["enrollments"]
        assert after["used_codes"] == before["used_codes"] == 0
        r = await browser.post("/webauthn/enrollment", json={"code": fresh})
        assert r.status_code == 403 and r.json()["code"] == "person_inactive", r.text
    refused = [e.detail["reason"] for e in await _events(initialized, "enrollment.code_refused")]
    assert refused == ["person_inactive"] * 4


async def _counts(services: Services) -> dict[str, Any]:
    async with services.sessions() as session:
        enrollments = len((await session.execute(select(Enrollment.id))).all())
        used = len((await session.execute(select(ActivationCode.id).where(ActivationCode.used_at.is_not(None)))
                    ).all())
        audit = len((await session.execute(select(AuditEvent.id))).all())
    return {"enrollments": enrollments, "used_codes": used, "audit": audit}
