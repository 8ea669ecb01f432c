"""Activation codes and enrollments (idp.sql.enrollment) through the /webauthn/enrollment endpoints, and the
enrollment admin API (POST /admin/enrollment-codes)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re

import httpx
import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from fastapi import FastAPI
from sqlalchemy import select, update

from api.auth import mint_admin_token
from api.deps import Services
from idp.sql import enrollment as enrollment_module
from idp.sql.enrollment import (
    ALPHABET,
    CodeUsed,
    EnrollmentService,
    code_lookup,
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
CODE_RE = re.compile(rf"^[{ALPHABET}]{{4}}(-[{ALPHABET}]{{4}}){{4}}$")


async def code_row(services: Services, code: str) -> ActivationCode:
    async with services.sessions() as session:
        row = (await session.execute(select(ActivationCode).where(
            ActivationCode.lookup == code_lookup(normalize_code(code))))).scalar_one_or_none()
        assert row is not None
        return row


def wrong(code: str) -> str:
    """The same code with its last character changed."""
    last = code[-1]
    return code[:-1] + (ALPHABET[(ALPHABET.index(last) + 1) % len(ALPHABET)])


class ScryptSpy:
    """Counts the scrypt derivations idp.sql.enrollment runs (the real ones, in whatever thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = enrollment_module._scrypt

        def counting(salt: bytes) -> Scrypt:
            self.calls += 1
            return real(salt)

        monkeypatch.setattr(enrollment_module, "_scrypt", counting)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


async def test_issued_codes_are_hashed_single_and_audited(initialized: Services) -> None:
    person_id = await register_person(initialized, FIN)
    first = await issue_code(initialized, person_id)
    second = await issue_code(initialized, person_id)
    for code in (first, second):
        assert CODE_RE.fullmatch(code), code
        assert not set(code) & set("ILOU")
    row = await code_row(initialized, second)
    scheme, salt, digest = row.secret_hash.split("$")
    assert scheme == "scrypt" and len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert verify_secret(row.secret_hash, normalize_code(second))
    assert normalize_code(second) not in row.secret_hash
    hours = (row.expires_at - row.created_at).total_seconds() / 3600
    assert hours == initialized.settings.activation_code_lifetime_hours
    assert (await code_row(initialized, first)).revoked_at is not None  # the newer code replaces it
    issued = await events(initialized, "enrollment.code_issued")
    assert [e.actor for e in issued] == ["officer-1", "officer-1"] and issued[1].detail["revoked_codes"] == 1
    for event in issued:
        for code in (first, second):
            for group in code.split("-"):
                assert group not in json.dumps(event.detail)
    assert format_code("ABCDEFGHJKMNPQRSTVWX") == "ABCD-EFGH-JKMN-PQRS-TVWX"


async def test_codes_have_no_public_part(initialized: Services) -> None:
    """The row is found by a hash of the whole code: no group of the code is the row's id or its lookup key, so
    nothing shorter than the whole code can be guessed on its own (100 bits, see idp.sql.enrollment)."""
    person_id = await register_person(initialized, FIN)
    codes = [await issue_code(initialized, person_id) for _ in range(3)]
    for code in codes:
        row = await code_row(initialized, code)
        assert ALPHABET.isupper() and len(set(ALPHABET)) == 32 and len(normalize_code(code)) == 20  # 5 bits each
        for group in code.split("-"):
            assert group not in row.id and group not in (row.lookup or "")
        assert row.lookup == code_lookup(normalize_code(code)) and len(row.lookup) == 16
    # typeable: case, spaces and dashes do not matter; Crockford's look-alikes read as the digits they resemble
    code = codes[-1]
    assert normalize_code(" " + code.lower().replace("-", " ") + " ") == normalize_code(code)
    assert normalize_code("ILO-ilo") == "110110"


async def test_every_refusal_is_the_same_answer(initialized: Services, client: httpx.AsyncClient, app: FastAPI,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown, wrong, malformed, revoked, expired, used and open elsewhere: one status, one body, byte for byte, and
    one scrypt each (a dummy one when no row matches), so neither the answer nor the work tells them apart."""
    spy = ScryptSpy(monkeypatch)
    person_id = await register_person(initialized, FIN)
    revoked = await issue_code(initialized, person_id)
    code = await issue_code(initialized, person_id)
    used = await issue_code(initialized, await register_person(initialized, "6ABCD12"))
    r = await enroll_with_code(client, used, SoftwareAuthenticator())
    assert r.status_code == 201, r.text
    expired = await issue_code(initialized, await register_person(initialized, "7ABCD12"))
    async with initialized.sessions() as session, session.begin():
        await session.execute(update(ActivationCode).where(
            ActivationCode.lookup == code_lookup(normalize_code(expired))).values(
            expires_at=utcnow() - dt.timedelta(seconds=1)))
    open_elsewhere = await issue_code(initialized, await register_person(initialized, "8ABCD12"))
    async with asgi_browser(app) as other:
        assert (await other.post("/webauthn/enrollment", json={"code": open_elsewhere})).status_code == 201
    spy.take()
    answers = {}
    kinds = {"unknown": "2222-2222-2222-2222-2222", "wrong": wrong(code), "malformed": "ABCD",
             "old format": "ABCD-EFGH-JKMN-PQRS", "revoked": revoked, "expired": expired, "used": used,
             "open elsewhere": open_elsewhere}
    for kind, value in kinds.items():
        async with asgi_browser(app) as browser:
            r = await browser.post("/webauthn/enrollment", json={"code": value})
        request_id = r.json()["request_id"].encode()  # the one part that differs per request, whatever it answers
        answers[kind] = (r.status_code, r.headers["content-type"], r.content.replace(request_id, b"<id>"))
        assert spy.take() == 1, kind
    assert len(set(answers.values())) == 1, answers
    refused(r, 400, "code_invalid")
    assert (await client.post("/webauthn/enrollment", json={"code": code})).status_code == 201


async def test_strangers_cannot_lock_a_code(initialized: Services, client: httpx.AsyncClient, app: FastAPI) -> None:
    """Wrong guesses count against nobody's code: after many of them the person's code still works, and the
    guesses wrote nothing (the rate limiter in front of the route bounds them, the code's entropy defeats them)."""
    person_id = await register_person(initialized, FIN)
    code = await issue_code(initialized, person_id)
    before = await rows(initialized)
    async with asgi_browser(app) as stranger:
        # three times the old lockout, under the per-IP budget (ACAR_RATE_LIMIT_ENROLLMENT); each guess another
        # code, as a guesser's are (the per-code budget limits retries of one code)
        for guess in range(15):
            typed = code[:-2] + ALPHABET[guess] + ALPHABET[guess + 1]
            if normalize_code(typed) != normalize_code(code):
                refused(await stranger.post("/webauthn/enrollment", json={"code": typed}), 400, "code_invalid")
    assert await rows(initialized) == before
    r = await enroll_with_code(client, code.lower().replace("-", " "), SoftwareAuthenticator())
    assert r.status_code == 201, r.text


async def test_refusals_of_a_right_code_are_audited_with_their_reason(initialized: Services,
                                                                      client: httpx.AsyncClient) -> None:
    """The citizen sees one answer; the registration office finds the reason in the audit trail."""
    person_id = await register_person(initialized, FIN)
    old = await issue_code(initialized, person_id)
    code = await issue_code(initialized, person_id)
    refused(await client.post("/webauthn/enrollment", json={"code": old}), 400, "code_invalid")
    async with initialized.sessions() as session, session.begin():
        await session.execute(update(ActivationCode).where(
            ActivationCode.lookup == code_lookup(normalize_code(code))).values(
            expires_at=utcnow() - dt.timedelta(seconds=1)))
    before = await rows(initialized)
    refused(await client.post("/webauthn/enrollment", json={"code": code}), 400, "code_invalid")
    assert await rows(initialized) == before

    code = await issue_code(initialized, person_id)
    r = await enroll_with_code(client, code, SoftwareAuthenticator())
    assert r.status_code == 201, r.text
    before = await rows(initialized)
    refused(await client.post("/webauthn/enrollment", json={"code": code}), 400, "code_invalid")
    assert await rows(initialized) == before
    assert (await code_row(initialized, code)).used_at is not None
    refusals = await events(initialized, "enrollment.code_refused")
    assert [(e.subject, e.detail["reason"]) for e in refusals] == [
        (person_id, "revoked"), (person_id, "expired"), (person_id, "used")]
    assert refusals[0].detail["code_id"] == (await code_row(initialized, old)).id


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
        refused(await other.post("/webauthn/enrollment", json={"code": code}), 400, "code_invalid")
        [refusal] = await events(initialized, "enrollment.code_refused")
        assert refusal.detail["reason"] == "open_elsewhere"
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
    assert set(issued) == {"code", "code_id", "expires_at", "person", "credentials_revoked"}
    assert CODE_RE.fullmatch(issued["code"]) and issued["credentials_revoked"] == 0
    assert issued["person"] == {"id": person_id, "fin": FIN, "given_name": "Aysel", "family_name": "Məmmədova"}
    assert dt.datetime.fromisoformat(issued["expires_at"]) > utcnow() + dt.timedelta(hours=71)
    [event] = await events(initialized, "enrollment.code_issued")
    assert event.actor == "admin:officer-7" and issued["code"][5:] not in json.dumps(event.detail)
    row = await code_row(initialized, issued["code"])
    assert row.person_id == person_id and row.id == issued["code_id"] == event.detail["code_id"]

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
