"""Activation codes and enrollments (idp.sql.enrollment) through the /webauthn/enrollment endpoints, and the
enrollment admin API (POST /admin/enrollment-codes)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from api.auth import mint_admin_token
from api.deps import Services
from idp.sql.enrollment import (
    ALPHABET,
    CodeUsed,
    EnrollmentService,
    format_code,
    normalize_code,
    verify_secret,
)
from idp.sql.models import ActivationCode, Enrollment, WebAuthnCredential
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.oidc_tools import asgi_browser, register_person
from tests.passkey_tools import ORIGIN, events, issue_code, refused, rows
from tests.webauthn_authenticator import CSRF, SoftwareAuthenticator, enroll_with_code

FIN = "5ABCD12"
CODE_RE = re.compile(rf"^[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{3}}$")


async def code_row(services: Services, code: str) -> ActivationCode:
    async with services.sessions() as session:
        row = await session.get(ActivationCode, code[:4])
        assert row is not None
        return row


def wrong(code: str) -> str:
    """The same code with its last character changed."""
    last = code[-1]
    return code[:-1] + (ALPHABET[(ALPHABET.index(last) + 1) % len(ALPHABET)])


async def test_issued_codes_are_hashed_single_and_audited(initialized: Services) -> None:
    person_id = await register_person(initialized, FIN)
    first = await issue_code(initialized, person_id)
    second = await issue_code(initialized, person_id)
    for code in (first, second):
        assert CODE_RE.fullmatch(code), code
        assert not set(code) & set("01OI")
    row = await code_row(initialized, second)
    scheme, salt, digest = row.secret_hash.split("$")
    assert scheme == "scrypt" and len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert verify_secret(row.secret_hash, normalize_code(second)[4:])
    assert second[5:] not in row.secret_hash
    assert row.max_attempts == initialized.settings.activation_code_max_attempts
    hours = (row.expires_at - row.created_at).total_seconds() / 3600
    assert hours == initialized.settings.activation_code_lifetime_hours
    assert (await code_row(initialized, first)).revoked_at is not None  # the newer code replaces it
    issued = await events(initialized, "enrollment.code_issued")
    assert [e.actor for e in issued] == ["officer-1", "officer-1"] and issued[1].detail["revoked_codes"] == 1
    for event in issued:
        assert normalize_code(first)[4:] not in json.dumps(event.detail)
        assert normalize_code(second)[4:] not in json.dumps(event.detail)
    assert format_code("ABCDEFGHJKLMNPQR") == "ABCD-EFGH-JKLM-NPQR"


async def test_wrong_codes_count_and_lock(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN)
    code = await issue_code(initialized, person_id)
    before = await rows(initialized)
    refused(await client.post("/webauthn/enrollment", json={"code": ""}), 400, "invalid_request")
    for unknown in ("2222-2222-2222-2222", "ABCD", "0000-0000-0000-0000", code + "A"):
        refused(await client.post("/webauthn/enrollment", json={"code": unknown}), 400, "code_invalid")
    assert await rows(initialized) == before  # unknown or malformed codes write nothing
    assert await events(initialized, "enrollment.code_failed") == []

    max_attempts = initialized.settings.activation_code_max_attempts
    for attempt in range(1, max_attempts):
        body = refused(await client.post("/webauthn/enrollment", json={"code": wrong(code)}), 400, "code_invalid")
        assert f"{max_attempts - attempt} attempt" in body["detail"]
        assert (await code_row(initialized, code)).attempts == attempt
    body = refused(await client.post("/webauthn/enrollment", json={"code": wrong(code)}), 403, "code_locked")
    assert "ask the registration office for a new code" in body["detail"]
    row = await code_row(initialized, code)
    assert row.locked_at is not None and row.attempts == max_attempts
    # locked for good, even with the right secret
    body = refused(await client.post("/webauthn/enrollment", json={"code": code}), 403, "code_locked")
    assert "registration office" in body["detail"]
    assert len(await events(initialized, "enrollment.code_failed")) == max_attempts - 1
    [locked] = await events(initialized, "enrollment.code_locked")
    assert locked.subject == person_id and locked.detail["code_id"] == code[:4]
    assert "acar_enroll" not in client.cookies


async def test_expired_revoked_and_reused_codes(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN)
    old = await issue_code(initialized, person_id)
    code = await issue_code(initialized, person_id)
    refused(await client.post("/webauthn/enrollment", json={"code": old}), 400, "code_revoked")
    async with initialized.sessions() as session, session.begin():
        await session.execute(update(ActivationCode).where(ActivationCode.id == code[:4]).values(
            expires_at=utcnow() - dt.timedelta(seconds=1)))
    before = await rows(initialized)
    refused(await client.post("/webauthn/enrollment", json={"code": code}), 400, "code_expired")
    assert await rows(initialized) == before

    code = await issue_code(initialized, person_id)
    r = await enroll_with_code(client, code, SoftwareAuthenticator())
    assert r.status_code == 201, r.text
    before = await rows(initialized)
    refused(await client.post("/webauthn/enrollment", json={"code": code}), 400, "code_used")
    assert await rows(initialized) == before
    assert (await code_row(initialized, code)).used_at is not None


async def test_one_browser_at_a_time(initialized: Services, client: httpx.AsyncClient, app: FastAPI) -> None:
    person_id = await register_person(initialized, FIN)
    code = await issue_code(initialized, person_id)
    r = await client.post("/webauthn/enrollment", json={"code": code})
    assert r.status_code == 201
    csrf = r.json()["csrf_token"]
    state = (await client.get("/webauthn/enrollment")).json()
    assert state["csrf_token"] == csrf and state["display_name"] == "Aysel Məmmədova"
    async with asgi_browser(app) as other:
        refused(await other.get("/webauthn/enrollment"), 401, "enrollment_required")
        body = refused(await other.post("/webauthn/enrollment", json={"code": code}), 400, "code_used")
        assert "another browser" in body["detail"]
        # a failed registration does not use the code up
        options = (await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf})).json()
        authenticator = SoftwareAuthenticator()
        r = await client.post("/webauthn/register/verify", json={
            "ceremony": options["ceremony"], "credential": authenticator.create(options["publicKey"],
                                                                                user_verified=False)},
            headers={CSRF: csrf})
        refused(r, 400, "user_verification_required")
        assert (await code_row(initialized, code)).used_at is None
        # once the first browser's enrollment has expired, another browser may use the code
        async with initialized.sessions() as session, session.begin():
            await session.execute(update(Enrollment).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        refused(await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf}), 401,
                "login_required")
        r = await enroll_with_code(other, code, authenticator)
        assert r.status_code == 201, r.text


async def test_a_new_code_closes_open_enrollments(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN)
    code = await issue_code(initialized, person_id)
    r = await client.post("/webauthn/enrollment", json={"code": code})
    csrf = r.json()["csrf_token"]
    options = (await client.post("/webauthn/register/options", json={}, headers={CSRF: csrf})).json()
    await issue_code(initialized, person_id)
    r = await client.post("/webauthn/register/verify", json={
        "ceremony": options["ceremony"], "credential": SoftwareAuthenticator().create(options["publicKey"])},
        headers={CSRF: csrf})
    refused(r, 401, "login_required")
    async with initialized.sessions() as session:
        assert (await session.execute(select(WebAuthnCredential.id))).first() is None


async def test_complete_is_single_use(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN)
    code = await issue_code(initialized, person_id)
    async with initialized.sessions() as session, session.begin():
        service = EnrollmentService(session, initialized.enrollment_policy, clock=utcnow)
        started = await service.redeem(code)
        assert await service.current(started.cookie) == started.enrollment
        await service.complete(started.enrollment, credential="c1")
        with pytest.raises(CodeUsed):
            await service.complete(started.enrollment, credential="c2")
        assert await service.current(started.cookie) is None


async def test_origin_is_checked_when_typing_a_code(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN)
    code = await issue_code(initialized, person_id)
    before = await rows(initialized)
    refused(await client.post("/webauthn/enrollment", json={"code": code}, headers={"Origin": "https://evil.example"}),
            403, "wrong_origin")
    refused(await client.post("/webauthn/enrollment", data={"code": code}), 400, "invalid_request")  # a form post
    assert await rows(initialized) == before
    r = await client.post("/webauthn/enrollment", json={"code": code}, headers={"Origin": ORIGIN})
    assert r.status_code == 201
    cookie = r.headers["set-cookie"]
    assert "acar_enroll=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


# --- the admin API -----------------------------------------------------------------------------------------

async def bearer(services: Services, scope: str) -> dict[str, str]:
    minted = await mint_admin_token(services, subject="officer-7", scopes=set(scope.split()), ttl_seconds=600)
    return {"Authorization": f"Bearer {minted['access_token']}"}


async def test_admin_issues_codes(initialized: Services, client: httpx.AsyncClient) -> None:
    person_id = await register_person(initialized, FIN)
    body = {"fin": FIN.lower()}
    r = await client.post("/admin/enrollment-codes", json=body)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = await client.post("/admin/enrollment-codes", json=body, headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    r = await client.post("/admin/enrollment-codes", json=body, headers=await bearer(initialized, "acar:cert:revoke"))
    assert r.status_code == 403 and "acar:enroll" in r.json()["detail"]
    assert await events(initialized, "enrollment.code_issued") == []

    headers = await bearer(initialized, "acar:enroll")
    r = await client.post("/admin/enrollment-codes", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    issued = r.json()
    assert set(issued) == {"code", "expires_at", "person", "credentials_revoked"}
    assert CODE_RE.fullmatch(issued["code"]) and issued["credentials_revoked"] == 0
    assert issued["person"] == {"id": person_id, "fin": FIN, "given_name": "Aysel", "family_name": "Məmmədova"}
    assert dt.datetime.fromisoformat(issued["expires_at"]) > utcnow() + dt.timedelta(hours=71)
    [event] = await events(initialized, "enrollment.code_issued")
    assert event.actor == "admin:officer-7" and issued["code"][5:] not in json.dumps(event.detail)

    r = await client.post("/admin/enrollment-codes", json={"fin": "7QWE123"}, headers=headers)
    assert r.status_code == 404 and r.json()["type"] == "urn:acar:problem:person_not_found"
    r = await client.post("/admin/enrollment-codes", json={"fin": "12"}, headers=headers)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    for bad in ({}, {"fin": FIN, "extra": 1}, {"fin": FIN, "revoke_credentials": "maybe"}, {"fin": ""}):
        r = await client.post("/admin/enrollment-codes", json=bad, headers=headers)
        assert r.status_code == 422 and r.json()["type"] == "urn:acar:problem:invalid_request", (bad, r.text)
    r = await client.post("/admin/enrollment-codes", json=body, headers=await bearer(initialized, "acar:admin"))
    assert r.status_code == 201


async def test_admin_recovery_revokes_credentials(initialized: Services, client: httpx.AsyncClient,
                                                  app: FastAPI) -> None:
    person_id = await register_person(initialized, FIN)
    r = await enroll_with_code(client, await issue_code(initialized, person_id), SoftwareAuthenticator())
    assert r.status_code == 201
    credential_id = r.json()["credential_id"]
    r = await client.post("/admin/enrollment-codes", json={"fin": FIN, "revoke_credentials": True},
                          headers=await bearer(initialized, "acar:enroll"))
    assert r.status_code == 201 and r.json()["credentials_revoked"] == 1
    async with initialized.sessions() as session:
        row = await session.get(WebAuthnCredential, credential_id)
        assert row is not None and row.revoked_at is not None
        removed = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "webauthn.removed"))
                   ).scalar_one()
    assert removed.actor == "admin:officer-7" and removed.detail["person"] == person_id
    async with asgi_browser(app) as fresh:
        r = await enroll_with_code(fresh, r.json()["code"], SoftwareAuthenticator())
        assert r.status_code == 201, r.text


async def test_enroll_scope_is_delegable(initialized: Services, client: httpx.AsyncClient) -> None:
    await register_person(initialized, FIN)
    r = await client.post("/admin/tokens", headers=await bearer(initialized, "acar:admin acar:token:mint"),
                          json={"subject": "registrar", "scope": "acar:enroll", "ttl_seconds": 300})
    assert r.status_code == 200, r.text
    r = await client.post("/admin/enrollment-codes", json={"fin": FIN},
                          headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert r.status_code == 201
