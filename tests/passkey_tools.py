"""Shared helpers for the passkey and enrollment suites: activation codes, the rows and audit events a ceremony may
change, and the problem answers of the passkey endpoints."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select, text

from api.deps import Services
from idp.sql.enrollment import EnrollmentService
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.oidc_tools import ISSUER, asgi_browser, register_person
from tests.webauthn_authenticator import AttestationCa, SoftwareAuthenticator, attested_authenticator, enroll_with_code

ORIGIN = ISSUER
"""The WebAuthn origin of the test settings: the issuer's."""
TABLES = ("sessions", "grants", "authorization_codes", "authorization_requests", "consents", "webauthn_credentials",
          "webauthn_users", "activation_codes", "enrollments")


async def issue_code(services: Services, person_id: str) -> str:
    """An activation code for the person, as an officer issues it."""
    async with services.sessions() as session, session.begin():
        issued = await EnrollmentService(session, services.enrollment_policy, clock=utcnow).issue(
            person_id, issued_by="officer-1")
    return issued.code


async def rows(services: Services) -> dict[str, list[tuple[str, ...]]]:
    """Every row of the tables a login or registration may change (ceremony challenges and audit events aside)."""
    out = {}
    async with services.engine.connect() as conn:
        for table in TABLES:
            result = await conn.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608 - names from a constant
            out[table] = sorted(tuple(repr(v) for v in row) for row in result.all())
    return out


async def events(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)
                                            .order_by(AuditEvent.occurred_at))).scalars().all())


def refused(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A problem answer (application/problem+json) with this status and machine code; its body."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["type"] == f"urn:acar:problem:{code}", body
    assert body["detail"]
    return body


async def enrolled_attested(services: Services, app: Any, vendor: AttestationCa, fin: str, aaguid: bytes
                            ) -> SoftwareAuthenticator:
    """A person registered with `fin` who enrolled one passkey attested by `vendor` (model `aaguid`) with an
    activation code, through the app's enrollment pages: the authenticator that holds it."""
    person_id = await register_person(services, fin)
    authenticator = attested_authenticator(vendor, aaguid=aaguid)
    async with asgi_browser(app) as browser:
        r = await enroll_with_code(browser, await issue_code(services, person_id), authenticator)
        assert r.status_code == 201, r.text
    return authenticator
